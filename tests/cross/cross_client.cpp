// A C++ client for the cross-language tests (tests/python/test_cross_language.py): calls the
// Python object at argv[1] in every way the API offers and prints "ok <check>" for each check
// that held, or "FAIL <check>: <why>" and exits 1 at the first that did not.
#include <atomic>
#include <coroutine>
#include <future>
#include <iostream>
#include <string>

#include "tether/tether.hpp"

namespace {

using tether::ErrorKind;
using tether::RemoteError;
using tether::Value;

struct Failed {
  std::string why;
};

void expect(bool condition, const std::string& why) {
  if (!condition) throw Failed{why};
}

template <typename F>
void check(const char* name, F body) {
  try {
    body();
  } catch (const Failed& f) {
    std::cout << "FAIL " << name << ": " << f.why << std::endl;
    std::exit(1);
  } catch (const std::exception& e) {
    std::cout << "FAIL " << name << ": unexpected exception: " << e.what() << std::endl;
    std::exit(1);
  }
  std::cout << "ok " << name << std::endl;
}

template <typename F>
RemoteError error_of(F call) {
  try {
    call();
  } catch (const RemoteError& e) {
    return e;
  }
  throw Failed{"the call did not fail"};
}

struct Task {
  struct promise_type {
    Task get_return_object() { return {}; }
    std::suspend_never initial_suspend() { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::terminate(); }
  };
};

Task sum_of_two(tether::Proxy py, std::promise<std::int64_t>& out) {
  std::int64_t a = co_await py.call_async<std::int64_t>("add", 20, 1);
  std::int64_t b = co_await py.call_async<std::int64_t>("async_double", a);
  out.set_value(b);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: cross_client URI" << std::endl;
    return 2;
  }
  tether::Client client(tether::ClientOptions{.timeout = std::chrono::seconds(10)});
  tether::Proxy py = client.proxy(argv[1]);

  check("sync", [&] { expect(py.call<std::int64_t>("add", 2, 3) == 5, "add(2, 3) != 5"); });
  check("values", [&] {
    Value v = Value{Value(), true, -7, 2.5, "text", Value::bytes("raw"), Value::tuple({1, 2}), Value::set({"a"}),
                    Value::dict({{Value("k"), Value{1, 2}}}), tether::BigInt::from_string("123456789012345678901234567890"),
                    Value::bytes(std::string(100000, 'z'))};
    Value back = py.call("echo", v);
    expect(back == v, "echo returned " + back.repr().substr(0, 200));
  });
  check("async", [&] {
    std::vector<tether::Future<std::int64_t>> futures;
    for (int i = 0; i < 200; ++i) futures.push_back(py.call_async<std::int64_t>("add", i, 1));
    for (int i = 0; i < 200; ++i) expect(futures[i].get() == i + 1, "future " + std::to_string(i));
  });
  check("coroutine", [&] {
    std::promise<std::int64_t> result;
    sum_of_two(py, result);
    expect(result.get_future().get() == 42, "co_await chain did not give 42");
  });
  check("oneway", [&] {
    py.oneway("remember", "first");
    py.oneway("remember", "second");
    auto seen = py.call<std::vector<std::string>>("seen_items");
    expect(seen == std::vector<std::string>{"first", "second"}, "the oneway calls did not arrive in order");
  });
  check("stream", [&] {
    std::int64_t expected = 0;
    for (std::int64_t item : py.stream<std::int64_t>("count", 300)) expect(item == expected++, "item out of order");
    expect(expected == 300, "stream ended early at " + std::to_string(expected));
  });
  check("remote_exception", [&] {
    auto e = error_of([&] { py.call("fail"); });
    expect(e.kind() == ErrorKind::failed, "kind");
    expect(e.remote_type() == "builtins.KeyError", "type " + e.remote_type());
    expect(e.message().find("missing") != std::string::npos, "message " + e.message());
    expect(e.traceback().find("in fail") != std::string::npos, "traceback " + e.traceback());
  });
  check("python_type_error", [&] {
    auto e = error_of([&] { py.call("add", 1, "x"); });
    expect(e.remote_type() == "builtins.TypeError", "type " + e.remote_type());
    expect(py.call<std::int64_t>("add", 1, 1) == 2, "the connection stopped working");
  });
  check("missing_method", [&] {
    auto e = error_of([&] { py.call("no_such_method"); });
    expect(e.kind() == ErrorKind::unimplemented, "kind " + std::string(tether::to_string(e.kind())));
  });
  check("callback", [&] {
    std::atomic<int> calls{0};
    auto callback = std::make_shared<tether::Servant>(tether::Servant::function([&calls](std::int64_t i) {
      ++calls;
      return i * 10;
    }));
    auto results = py.call<std::vector<std::int64_t>>("call_back", Value::callback(callback), 3);
    expect(results == std::vector<std::int64_t>{0, 10, 20}, "callback results");
    expect(calls == 3, "the callback ran " + std::to_string(calls.load()) + " times here");
  });
  check("timeout", [&] {
    auto e = error_of([&] { py.with_timeout(std::chrono::milliseconds(100)).call("slow", 1.0); });
    expect(e.kind() == ErrorKind::timeout, "kind " + std::string(tether::to_string(e.kind())));
  });
  return 0;
}
