// C++ client and server of tether and of ZeroC Ice 3.7 (C++11 mapping), for bench/ice_bench.py:
//   tether_bench_ice server tether|ice        prints "READY <uri or proxy>", serves until stdin closes
//   tether_bench_ice client tether|ice ADDR   prints "RESULT sync=<calls/s> async=<calls/s> bytes=<MB/s>"
// Each case warms up, then keeps the best of 3 timed runs. The same calls on both: echo a 64-bit
// int one call after another; N such calls in flight at once (futures / AMI); echo 1 MiB of bytes.
#include <Ice/Ice.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <iostream>
#include <string>
#include <vector>

#include "Bench.h"
#include "tether/tether.hpp"

namespace {

constexpr int kSyncCalls = 20000;
constexpr int kAsyncCalls = 50000;
constexpr std::size_t kBytes = 1 << 20;
constexpr int kBytesCalls = 300;

double best_rate(int count, const std::function<void(int)>& run) {
  run(count / 10);  // warm-up
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto start = std::chrono::steady_clock::now();
    run(count);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, count / seconds);
  }
  return best;
}

void wait_for_stdin_to_close() {
  for (std::string line; std::getline(std::cin, line);) {
  }
}

void check(bool ok, const char* what) {
  if (!ok) {
    std::cerr << "benchmark check failed: " << what << std::endl;
    std::exit(1);
  }
}

void report(double sync, double async, double bytes_calls) {
  std::printf("RESULT sync=%.0f async=%.0f bytes=%.1f\n", sync, async, bytes_calls * 2 * kBytes / 1e6);
}

// ---- tether ----

int tether_server() {
  tether::Server server({.host = "127.0.0.1", .port = 0});
  tether::Servant echo;
  echo.method("echo_long", [](std::int64_t x) { return x; }).method("echo_bytes", [](tether::Bytes b) { return b; });
  std::cout << "READY " << server.add("echo", std::move(echo)) << std::endl;
  wait_for_stdin_to_close();
  return 0;
}

int tether_client(const std::string& uri) {
  tether::Client client;
  auto echo = client.proxy(uri);
  double sync = best_rate(kSyncCalls, [&](int n) {
    for (int i = 0; i < n; ++i) check(echo.call<std::int64_t>("echo_long", i) == i, "echo_long");
  });
  double async = best_rate(kAsyncCalls, [&](int n) {
    std::vector<tether::Future<std::int64_t>> futures;
    futures.reserve(n);
    for (int i = 0; i < n; ++i) futures.push_back(echo.call_async<std::int64_t>("echo_long", i));
    for (int i = 0; i < n; ++i) check(futures[i].get() == i, "async echo_long");
  });
  tether::Bytes payload(std::vector<std::byte>(kBytes, std::byte{7}));
  double bytes = best_rate(kBytesCalls, [&](int n) {
    for (int i = 0; i < n; ++i) check(echo.call<tether::Bytes>("echo_bytes", payload).size() == kBytes, "echo_bytes");
  });
  report(sync, async, bytes);
  return 0;
}

// ---- Ice ----

class EchoI : public Bench::Echo {
 public:
  long long echoLong(long long x, const Ice::Current&) override { return x; }
  Bench::ByteSeq echoBytes(Bench::ByteSeq data, const Ice::Current&) override { return data; }
};

Ice::InitializationData ice_settings() {
  Ice::InitializationData data;
  data.properties = Ice::createProperties();
  data.properties->setProperty("Ice.MessageSizeMax", "0");  // 1 MiB is Ice's default limit
  return data;
}

int ice_server() {
  Ice::CommunicatorHolder ice(ice_settings());
  auto adapter = ice->createObjectAdapterWithEndpoints("Bench", "tcp -h 127.0.0.1 -p 0");
  auto proxy = adapter->add(std::make_shared<EchoI>(), Ice::stringToIdentity("echo"));
  adapter->activate();
  std::cout << "READY " << proxy->ice_toString() << std::endl;
  wait_for_stdin_to_close();
  return 0;
}

int ice_client(const std::string& address) {
  Ice::CommunicatorHolder ice(ice_settings());
  auto echo = Ice::checkedCast<Bench::EchoPrx>(ice->stringToProxy(address));
  check(echo != nullptr, "checkedCast");
  double sync = best_rate(kSyncCalls, [&](int n) {
    for (int i = 0; i < n; ++i) check(echo->echoLong(i) == i, "echoLong");
  });
  double async = best_rate(kAsyncCalls, [&](int n) {
    std::vector<std::future<long long>> futures;
    futures.reserve(n);
    for (int i = 0; i < n; ++i) futures.push_back(echo->echoLongAsync(i));
    for (int i = 0; i < n; ++i) check(futures[i].get() == i, "async echoLong");
  });
  Bench::ByteSeq payload(kBytes, 7);
  double bytes = best_rate(kBytesCalls, [&](int n) {
    for (int i = 0; i < n; ++i) check(echo->echoBytes(payload).size() == kBytes, "echoBytes");
  });
  report(sync, async, bytes);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "", system = argc > 2 ? argv[2] : "";
  if (mode == "server" && system == "tether") return tether_server();
  if (mode == "server" && system == "ice") return ice_server();
  if (mode == "client" && argc > 3 && system == "tether") return tether_client(argv[3]);
  if (mode == "client" && argc > 3 && system == "ice") return ice_client(argv[3]);
  std::cerr << "usage: tether_bench_ice server tether|ice | client tether|ice ADDRESS" << std::endl;
  return 2;
}
