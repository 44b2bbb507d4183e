// For tests: a client connected over the in-memory transport to a ServiceHost, calling its
// services with msgpack [args, kwargs] bodies and waiting for the answers.
#pragma once

#include <functional>
#include <future>
#include <memory>
#include <string>

#include "net/memory_transport.hpp"
#include "rpc/runtime.hpp"
#include "service/service.hpp"
#include "service/test_values.hpp"

namespace tether::service {

class TestClient {
 public:
  // Connects and completes the handshake; `host` serves the other end.
  TestClient(rpc::Runtime& runtime, std::shared_ptr<ServiceHost> host) {
    auto [a, b] = net::make_memory_pipe(runtime.executor());
    server_ = rpc::Connection::create(std::move(b), rpc::Connection::Role::server, {}, {}, std::move(host));
    client_ = rpc::Connection::create(std::move(a), rpc::Connection::Role::client, {}, {}, nullptr);
    std::promise<void> ready;
    server_->start([](const Result<rpc::Negotiated>&) {});
    client_->start([&](const Result<rpc::Negotiated>&) { ready.set_value(); });
    ready.get_future().get();
  }
  void close() { client_->close("done"); }

  // Calls object.method with the args packed by `pack_args` (which packs the args array); a
  // oneway call answers an empty frame at once.
  Result<wire::Frame> call(const std::string& object, const std::string& method,
                           const std::function<void(wire::Packer&)>& pack_args, bool oneway = false) {
    auto frame = testing::request_with(object, method, pack_args, {}, oneway);
    if (!oneway) return testing::call_and_wait(*client_, std::move(frame));
    auto id = client_->call(std::move(frame), nullptr);
    if (!id) return id.error();
    return wire::Frame{};
  }

 private:
  std::shared_ptr<rpc::Connection> client_, server_;
};

// Runs `work` on the runtime's io thread and waits for it (services live on that thread).
inline void run_on_io(rpc::Runtime& runtime, const std::function<void()>& work) {
  std::promise<void> done;
  asio::post(runtime.executor(), [&] {
    work();
    done.set_value();
  });
  done.get_future().get();
}

}  // namespace tether::service
