// The node daemon's "node" service: its clients (drivers and workers), their objects, the tasks
// they submit, the worker processes that run them and the actors that live in them. It runs on the
// daemon's one io thread, so its state needs no locks. docs/protocol.md ("Cluster services") lists
// its methods; docs/design.md shows the task and object paths.
#pragma once

#include <chrono>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <asio.hpp>

#include "cluster/child_processes.hpp"
#include "cluster/object_table.hpp"
#include "service/service.hpp"
#include "store/object_store.hpp"

namespace tether::cluster {

using Resources = std::map<std::string, double>;

struct NodeOptions {
  std::uint32_t node_id = 1;
  std::string session;              // hex name of this cluster session
  std::filesystem::path session_dir;
  std::string python;               // the interpreter that runs workers
  std::string node_uri;             // what workers connect to (the Unix socket)
  std::string secret;
  Resources resources;              // "CPU" and custom resources
  std::size_t prestart_workers = 0;
  std::size_t max_task_workers = 0;  // workers for tasks at once (0: derived from CPU)
  std::chrono::milliseconds idle_worker_timeout{30000};
  std::function<void()> on_shutdown_requested;
};

// A failure the daemon itself reports for an object (the Python side raises the named error).
struct Failure {
  std::string type;  // "WorkerCrashedError", "ActorDiedError", "TaskCancelledError", ...
  std::string message;
};

class Node final : public service::Service {
 public:
  Node(asio::io_context& io, NodeOptions options, store::ObjectStore& store);
  ~Node() override;
  void on_connection_closed(rpc::Connection& connection) override;
  // Stops every worker (blocking, bounded by `grace`).
  void stop_workers(std::chrono::milliseconds grace);

 private:
  struct Client;
  struct Worker;
  struct Task;
  struct Actor;
  using TaskPtr = std::shared_ptr<Task>;

  void add_methods();
  // clients and objects (node.cpp)
  void hello(service::Call&& call);
  void put(service::Call&& call);
  void create(service::Call&& call);
  void seal(service::Call&& call);
  void get(service::Call&& call);
  void wait(service::Call&& call);
  void retain(service::Call&& call);
  void release(service::Call&& call);
  void unmapped(service::Call&& call);
  void release_ids(std::uint64_t connection_id, const std::vector<ObjectId>& ids);
  void register_function(service::Call&& call);
  void get_function(service::Call&& call);
  void status(service::Call&& call);
  void shutdown(service::Call&& call);
  Client* client_of(const service::Call& call);
  void pack_value(service::ReplyBuilder& reply, const ObjectId& id, Client* reader);
  void wait_for_objects(std::vector<ObjectId> ids, std::size_t needed, std::optional<double> timeout,
                        std::function<void(bool timed_out)> done);
  void drop_client(Client& client);
  bool tasks_producing(const ObjectId& id) const;  // a task not finished returns it
  void discard_stored_returns(const TaskPtr& task);  // store objects a failed attempt left

  // tasks, workers, actors (node_tasks.cpp)
  void submit(service::Call&& call);
  void blocked(service::Call&& call);
  void unblocked(service::Call&& call);
  void create_actor(service::Call&& call);
  void actor_call(service::Call&& call);
  void get_actor(service::Call&& call);
  void kill_actor(service::Call&& call);
  void cancel(service::Call&& call);
  Result<TaskPtr> parse_task(service::Call& call, Client& submitter, bool actor_method);
  void when_dependencies_ready(const TaskPtr& task, std::function<void()> next);
  void enqueue(const TaskPtr& task, bool front = false);
  void schedule();
  bool fits(const Resources& wanted) const;
  bool fits_node(const Resources& wanted) const;  // could ever fit, once everything is free
  void take(const Resources& wanted, Resources& held);
  void give_back(Resources& held);
  void start_worker(std::optional<ObjectId> for_actor);
  void run_on(Worker& worker, const TaskPtr& task);
  void on_task_reply(std::uint64_t worker_id, const TaskPtr& task, Result<wire::Frame> reply);
  bool read_task_result(const msgpack::object_map& map, const TaskPtr& task, std::vector<ObjectValue>& values,
                        std::vector<ObjectId>& contained);
  void finish_task(const TaskPtr& task, const std::vector<ObjectValue>& values, const std::vector<ObjectId>& contained);
  void answer_caller(const TaskPtr& task);
  void release_arguments(const TaskPtr& task);
  void on_actor_created(const TaskPtr& creation, const std::vector<ObjectValue>& values);
  void fail_task(const TaskPtr& task, const Failure& failure);
  void on_worker_registered(Worker& worker);
  void on_worker_lost(std::uint64_t worker_id, const std::string& why);
  void on_process_exit(int pid, const std::string& description);
  void start_actor(Actor& actor);
  void dispatch_actor_calls(Actor& actor);
  void actor_died(Actor& actor, const std::string& why);
  void reap_idle_workers();
  void arm_reaper();

  asio::io_context& io_;
  NodeOptions options_;
  store::ObjectStore& store_;
  ObjectTable objects_;
  ChildProcesses processes_;
  asio::steady_timer reaper_;

  std::unordered_map<std::uint64_t, std::unique_ptr<Client>> clients_;  // by connection id
  std::map<std::uint64_t, std::unique_ptr<Worker>> workers_;            // by worker id
  std::uint64_t next_worker_id_ = 1;
  std::uint32_t next_client_number_ = 1;
  std::unordered_map<std::string, std::shared_ptr<const std::vector<std::byte>>> functions_;
  Resources available_;
  // Tasks whose dependencies are ready, waiting for resources and a worker.
  std::map<Resources, std::deque<TaskPtr>> ready_by_shape_;
  std::deque<TaskPtr> ready_actors_;  // actor creations: they need resources, not an idle worker
  std::unordered_map<ObjectId, TaskPtr> tasks_;              // every task not finished, by id
  std::map<ObjectId, std::unique_ptr<Actor>> actors_;
  std::map<std::string, ObjectId> named_actors_;
  std::size_t starting_task_workers_ = 0;
  std::size_t failed_worker_starts_ = 0;  // in a row: after a few, waiting tasks fail instead
};

}  // namespace tether::cluster
