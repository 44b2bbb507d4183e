// Tuple spaces, topics and groups served by a Python tether.Server (coordination=True): the same
// C++ services as a cluster's head, on a thread of their own (they are single-threaded), next to
// the server's Python objects on the same listener.
#pragma once

#include <memory>
#include <set>
#include <string>

#include "python/pydispatch.hpp"
#include "rpc/runtime.hpp"
#include "service/service.hpp"

namespace tether::python {

class CoordinationServices;

// Routes each request to the C++ services (objects "tuplespace", "topics", "groups") or to the
// Python dispatcher (everything else), keeping each side's requests in stream order.
class RoutingHandler final : public rpc::RequestHandler {
 public:
  RoutingHandler(std::shared_ptr<Dispatcher> python, std::shared_ptr<CoordinationServices> services)
      : python_(std::move(python)), services_(std::move(services)) {}
  void on_open(rpc::Connection& connection) override { python_->on_open(connection); }
  void on_request(const std::shared_ptr<rpc::Connection>& connection, wire::Frame&& frame) override;
  bool queues_requests() const override { return true; }
  void queue_requests(const std::shared_ptr<rpc::Connection>& connection, std::vector<wire::Frame>&& frames) override;
  void run_queued() override { python_->run_queued(); }
  void on_cancel(rpc::Connection& connection, std::uint64_t id) override { python_->on_cancel(connection, id); }
  void on_credit(rpc::Connection& connection, std::uint64_t id, std::uint64_t count) override { python_->on_credit(connection, id, count); }
  void on_batch_end(rpc::Connection& connection) override { python_->on_batch_end(connection); }
  void on_closed(rpc::Connection& connection, const Error& error) override;

 private:
  std::shared_ptr<Dispatcher> python_;
  std::shared_ptr<CoordinationServices> services_;
};

class CoordinationServices {
 public:
  CoordinationServices();
  ~CoordinationServices();
  bool serves(const wire::Frame& frame) const;
  // Runs on the services' thread, in the order they were handed over.
  void handle(const std::shared_ptr<rpc::Connection>& connection, std::vector<wire::Frame>&& frames);
  void connection_closed(const std::shared_ptr<rpc::Connection>& connection);
  void stop();

 private:
  struct Services;
  std::shared_ptr<rpc::Runtime> runtime_;
  std::shared_ptr<service::ServiceHost> host_;
  std::unique_ptr<Services> services_;
};

}  // namespace tether::python
