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
    wire::OutFrame frame;
    frame.header.type = wire::MessageType::request;
    frame.header.encoding = wire::Encoding::msgpack;
    if (oneway) frame.header.flags |= wire::kOneway;
    frame.meta = object + '\0' + method;
    wire::ByteSink sink{&frame.payload};
    wire::Packer packer(sink);
    packer.pack_array(2);
    pack_args(packer);
    packer.pack_nil();
    auto waiting = std::make_shared<rpc::WaitingSink>();
    auto id = client_->call(std::move(frame), oneway ? nullptr : waiting);
    if (!id) return id.error();
    if (oneway) return wire::Frame{};
    auto outcome = waiting->wait(rpc::Clock::now() + std::chrono::seconds(10));
    if (!outcome) return Error{ErrorKind::timeout, "no answer within 10 s"};
    return std::move(*outcome);
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
