// The coordination services of a Python tether.Server (see coordination.hpp).
#include "python/coordination.hpp"

#include <future>

#include "groups/groups.hpp"
#include "topics/topics.hpp"
#include "tuplespace/tuple_space.hpp"

namespace tether::python {

struct CoordinationServices::Services {
  std::unique_ptr<tuplespace::TupleSpaces> spaces;
  std::unique_ptr<topics::Topics> topics;
  std::unique_ptr<groups::Groups> groups;
};

namespace {
void run_on(rpc::Runtime& runtime, const std::function<void()>& work) {
  std::promise<void> done;
  asio::post(runtime.executor(), [&] {
    work();
    done.set_value();
  });
  done.get_future().get();
}

std::string_view object_of(const wire::Frame& frame) {
  std::string_view meta = frame.meta;
  return meta.substr(0, meta.find('\0'));
}
}  // namespace

CoordinationServices::CoordinationServices()
    : runtime_(std::make_shared<rpc::Runtime>(1)), host_(std::make_shared<service::ServiceHost>()), services_(std::make_unique<Services>()) {
  run_on(*runtime_, [this] {  // the services and their timers belong to their thread
    services_->spaces = std::make_unique<tuplespace::TupleSpaces>(runtime_->context());
    services_->topics = std::make_unique<topics::Topics>();
    services_->groups = std::make_unique<groups::Groups>(runtime_->context());
    host_->add(*services_->spaces);
    host_->add(*services_->topics);
    host_->add(*services_->groups);
  });
}

CoordinationServices::~CoordinationServices() { stop(); }

void CoordinationServices::stop() {
  if (!services_) return;
  run_on(*runtime_, [this] { services_.reset(); });
  runtime_->stop(std::chrono::milliseconds(1000));
}

bool CoordinationServices::serves(const wire::Frame& frame) const {
  auto object = object_of(frame);
  return object == "tuplespace" || object == "topics" || object == "groups";
}

void CoordinationServices::handle(const std::shared_ptr<rpc::Connection>& connection, std::vector<wire::Frame>&& frames) {
  auto batch = std::make_shared<std::vector<wire::Frame>>(std::move(frames));
  asio::post(runtime_->executor(), [this, connection, batch] {
    if (!services_) return;  // stopped: the server is closing
    for (auto& frame : *batch) host_->on_request(connection, std::move(frame));
  });
}

void CoordinationServices::connection_closed(const std::shared_ptr<rpc::Connection>& connection) {
  asio::post(runtime_->executor(), [this, connection] {
    if (services_) host_->on_closed(*connection, Error{ErrorKind::disconnected, "closed"});
  });
}

void RoutingHandler::on_request(const std::shared_ptr<rpc::Connection>& connection, wire::Frame&& frame) {
  std::vector<wire::Frame> one;
  one.push_back(std::move(frame));
  queue_requests(connection, std::move(one));
  run_queued();
}

void RoutingHandler::queue_requests(const std::shared_ptr<rpc::Connection>& connection, std::vector<wire::Frame>&& frames) {
  std::vector<wire::Frame> for_python, for_services;
  for (auto& frame : frames) (services_->serves(frame) ? for_services : for_python).push_back(std::move(frame));
  if (!for_services.empty()) services_->handle(connection, std::move(for_services));
  if (!for_python.empty()) python_->queue_requests(connection, std::move(for_python));
}

void RoutingHandler::on_closed(rpc::Connection& connection, const Error& error) {
  services_->connection_closed(connection.shared_from_this());
  python_->on_closed(connection, error);
}

}  // namespace tether::python
