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
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <asio.hpp>

#include "cluster/child_processes.hpp"
#include "cluster/object_table.hpp"
#include "service/service.hpp"
#include "state/state_store.hpp"
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
  // Several nodes: the head (node 1) keeps the directory of nodes; the others join it.
  bool head = true;
  std::string address;  // host:port where other nodes reach this node
  std::chrono::milliseconds report_interval{100};  // how often a node tells the head its load
  std::chrono::milliseconds node_timeout{10000};    // the head drops a node it has not heard from for this long
  // Opens a connection to another node (its requests to us go to our services); the callback
  // runs on the io thread. Empty: this node makes no connections (tests, a lone head).
  using Connected = std::function<void(Result<std::shared_ptr<rpc::Connection>>)>;
  std::function<void(const std::string& address, Connected)> connect;
};

// Another node as the directory lists it.
struct NodeInfo {
  std::uint32_t id = 0;
  std::string address;
  Resources resources;  // its total
  Resources available;  // as last reported
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
  // A node that is not the head: the connection it joined the head with, and the head's answer
  // to node.join (its directory). Call once, on the io thread, before clients arrive.
  void attach_to_head(std::shared_ptr<rpc::Connection> head, const std::vector<NodeInfo>& directory);
  // Reads the directory in an answer to node.join or node.report.
  static Result<std::vector<NodeInfo>> read_directory(const msgpack::object& nodes);
  // The daemon is stopping: actors that end from now on are not forgotten by the state directory.
  void mark_stopping() { stopping_ = true; }
  // Stops every worker (blocking, bounded by `grace`).
  void stop_workers(std::chrono::milliseconds grace);
  // The head with --state-dir: detached actors are kept in `store` while they live, and the ones
  // it holds are made again now (node_kept_actors.cpp). Call once, on the io thread, at start.
  void keep_actors_in(state::StateStore& store);

 public:
  using BytesOf = std::function<Result<std::span<const std::byte>>(const msgpack::object&)>;

 private:
  struct Client;
  struct Worker;
  struct Task;
  struct Actor;
  struct Peer;
  struct Transfer;
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
  // One object as a reply value. For a reader (a client's node.get) a store object stays pinned
  // until it says it unmapped it; for another node (`for_peer`) a store object is named by the
  // node that has it, to fetch from.
  void pack_value(service::ReplyBuilder& reply, const ObjectId& id, Client* reader, bool for_peer = false);
  void wait_for_objects(std::vector<ObjectId> ids, std::size_t needed, std::optional<double> timeout,
                        std::function<void(bool timed_out)> done);
  void drop_client(Client& client);
  bool tasks_producing(const ObjectId& id) const;  // a task not finished returns it
  void drop_unused_copy(const ObjectId& id);
  void discard_stored_returns(const TaskPtr& task);  // store objects a failed attempt left

  // tasks, workers, actors (node_tasks.cpp)
  void submit(service::Call&& call);
  void blocked(service::Call&& call);
  void unblocked(service::Call&& call);
  void create_actor(service::Call&& call);
  void place_actor(std::unique_ptr<Actor> actor);
  Peer* host_for_actor(const Resources& wanted);
  void pack_actor_info(service::ReplyBuilder& reply, const Actor& actor);
  void name_actor(service::Call&& call);
  void unname_actor(service::Call&& call);
  void actor_dead(service::Call&& call);
  void on_forwarded_creation(std::uint32_t node, const TaskPtr& task, const Result<service::ReceivedReply>& reply);
  void actor_call(service::Call&& call);
  void get_actor(service::Call&& call);
  void kill_actor(service::Call&& call);
  void cancel(service::Call&& call);
  Result<TaskPtr> parse_task(service::Call& call, Client& submitter, bool actor_method);
  void when_dependencies_ready(const TaskPtr& task, std::function<void()> next);
  void enqueue(const TaskPtr& task, bool front = false);
  void schedule();
  void forward_what_does_not_fit();
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

  // detached actors kept across a restart of the head (node_kept_actors.cpp)
  bool keep_actor(const Actor& actor);  // false: the store failed
  void forget_kept_actor(const Actor& actor);
  void forget_kept_actor_key(const std::string& key);
  Status restore_actor(const std::string& key, const std::string& record);
  void restore_waiting_actors();

  // other nodes (node_peers.cpp)
  void join(service::Call&& call);
  void peer(service::Call&& call);
  void report(service::Call&& call);
  void fetch(service::Call&& call);
  void pack_directory(service::ReplyBuilder& reply) const;
  // Workers' output (node_output.cpp): to the head, and to the drivers that asked for it.
  void on_worker_output(int stream, std::string line);
  void flush_output();
  void output(service::Call&& call);
  void update_directory(const std::vector<NodeInfo>& directory);
  Peer& add_peer(const NodeInfo& info);
  void connect_peer(Peer& peer);
  void on_peer_connected(std::uint32_t node, std::shared_ptr<rpc::Connection> connection);
  void register_peer_client(Peer& peer, const std::shared_ptr<rpc::Connection>& connection);
  void on_peer_lost(std::uint32_t node, const std::string& why);
  void arm_reporter();
  void send_report();
  void drop_silent_nodes();  // the head
  Peer* peer_for(const Resources& shape);   // a node with room for it now, or nullptr
  static bool usable(const Peer& peer);     // connected, and its node service is up
  bool fits_cluster(const Resources& wanted) const;
  std::string describe_cluster() const;
  void forward_task(Peer& peer, const TaskPtr& task);
  void on_forwarded_reply(std::uint32_t node, const TaskPtr& task, Result<service::ReceivedReply> reply);
  void adopt_dep_values(const service::Call& call, const msgpack::object* values, const std::vector<ObjectId>& deps);
  void adopt_foreign(const std::vector<ObjectId>& ids);  // ids other nodes own: ask their owners
  // A not-yet-ready id we asked its owner for; a task the owner sends us may still produce it.
  bool awaits_from_owner(const ObjectId& id) const;
  void produce_here(const ObjectId& id);  // such an id: this node's task makes it, not its owner
  Result<ObjectValue> value_from_entry(const msgpack::object& entry, const BytesOf& bytes_of) const;
  void on_object_freed(const ObjectId& id, const ObjectValue& value);
  bool needs_fetch(const ObjectId& id) const;  // in another node's store and not in ours
  // Brings objects from the stores of the nodes that have them into ours; done(error) once all
  // arrived (an empty message) or one could not.
  void fetch_objects(const std::vector<ObjectId>& ids, std::function<void(const std::string& error)> done);
  void request_chunks(const std::shared_ptr<Transfer>& transfer);
  void finish_transfer(const std::shared_ptr<Transfer>& transfer, const std::string& error);
  void send_to_peer(std::uint32_t node, service::ReplyBuilder&& request, const std::string& method,
                    std::function<void(Result<service::ReceivedReply>)> handler);
  void send_ids(std::uint32_t node, const std::string& method, const std::vector<ObjectId>& ids,
                std::function<void(Result<service::ReceivedReply>)> handler);
  std::uint32_t node_id() const { return options_.node_id; }

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
  std::map<std::uint32_t, std::unique_ptr<Peer>> peers_;  // other nodes, by node id
  std::uint32_t next_node_id_ = 2;                          // the head numbers the nodes that join
  std::set<std::uint32_t> departed_;                        // nodes that left: their objects are lost
  // The head: names of actors that live on other nodes, with their get_actor answer (packed).
  struct RemoteName {
    std::uint32_t node = 0;
    ObjectId id;
    std::shared_ptr<const std::vector<std::byte>> info;
  };
  std::map<std::string, RemoteName> remote_names_;
  std::unordered_set<ObjectId> retained_at_owner_;          // other nodes' objects we hold a reference to
  std::unordered_map<ObjectId, std::shared_ptr<Transfer>> transfers_;
  asio::steady_timer reporter_;
  std::vector<std::pair<int, std::string>> pending_output_;  // lines not yet sent on
  bool output_flush_posted_ = false;
  std::size_t starting_task_workers_ = 0;
  std::size_t failed_worker_starts_ = 0;  // in a row: after a few, waiting tasks fail instead
  state::StateStore* actor_store_ = nullptr;  // the head with --state-dir
  std::vector<std::unique_ptr<Actor>> waiting_to_restore_;  // kept actors no node has room for yet
  bool stopping_ = false;  // the daemon stops: its actors end, but kept ones are not forgotten
};

}  // namespace tether::cluster
