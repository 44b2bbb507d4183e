// The records Node keeps about clients, workers, tasks and actors (shared by node.cpp and
// node_tasks.cpp; nothing else includes this).
#pragma once

#include <unordered_set>

#include "cluster/node.hpp"

namespace tether::cluster {

using Clock = std::chrono::steady_clock;

struct Node::Client {
  std::uint64_t connection_id = 0;
  std::weak_ptr<rpc::Connection> connection;
  std::string kind;          // "driver" or "worker"
  std::uint32_t number = 0;  // the middle 4 bytes of the ids this client makes
  int pid = 0;
  std::uint64_t worker_id = 0;
  std::uint32_t peer = 0;    // kind "node": the other node's id
  std::uint64_t output_sink = 0;   // a driver's exported object that prints workers' output lines
  std::uint64_t output_batches = 0;  // numbered, so it prints them in order
  // Store objects node.get gave it to map, pinned until it says it unmapped them (counted).
  std::unordered_map<ObjectId, std::uint32_t> pinned_for_reading;
  std::unordered_set<ObjectId> unsealed;            // store objects it created and has not sealed
};

struct Node::Worker {
  enum class State { starting, idle, busy, actor, dead };
  std::uint64_t id = 0;
  int pid = 0;
  State state = State::starting;
  std::shared_ptr<rpc::Connection> connection;
  std::uint64_t runner = 0;  // the object the worker exported to run tasks (called as "#<runner>")
  TaskPtr task;              // the task it runs (State::busy)
  Resources held;
  bool blocked = false;      // its task waits in get/wait: its resources are lent to other tasks
  Resources lent;
  std::optional<ObjectId> actor;
  Clock::time_point idle_since = Clock::now();
};

struct Node::Task {
  enum class Kind { function, actor_create, actor_method };
  Kind kind = Kind::function;
  ObjectId id;
  std::optional<service::Call> caller;  // answered when the task is done
  std::uint64_t submitter = 0;          // connection id of the client that submitted it
  std::string function;                 // function or class id (bytes)
  std::string name;                     // for messages: "module.function" or "Class.method"
  std::shared_ptr<const std::vector<std::byte>> args;
  std::vector<ObjectId> deps;       // top-level ObjectRef arguments, resolved before it runs
  std::vector<ObjectId> contained;  // ObjectRefs nested in the arguments, kept alive while it runs
  std::vector<ObjectId> returns;
  std::vector<ObjectId> store_pins;  // store objects pinned while its worker reads them
  Resources resources;
  std::uint64_t max_retries = 0;
  std::uint64_t attempts = 0;
  ObjectId actor;      // actor tasks
  std::string method;  // actor_method
  bool cancelled = false;
  bool finished = false;
  std::uint64_t worker = 0;
  bool from_peer = false;            // another node forwarded it: it runs here, it is not sent on
  std::uint32_t forwarded_to = 0;    // the node it was sent to (its answer is awaited)
  std::vector<ObjectId> result_contained;  // ObjectRefs inside its returns (told to a forwarding node)
};

struct Node::Peer {
  NodeInfo info;
  std::shared_ptr<rpc::Connection> connection;  // one per pair of nodes, used both ways
  bool connecting = false;
  bool ready = false;  // its node service is up: it reported to the head, or it connected to us
  bool listed = false;  // the head's directory named it (so it leaves when the directory stops naming it)
  Clock::time_point last_heard = Clock::now();  // its last report (the head)
  std::unordered_set<std::string> functions_sent;   // function ids it has from us
  std::unordered_map<ObjectId, TaskPtr> forwarded;  // tasks sent there, not answered yet
};

// An object coming from another node's store into ours, in pipelined chunks.
struct Node::Transfer {
  ObjectId id;
  std::uint32_t from = 0;
  std::uint64_t size = 0;
  std::uint64_t requested = 0;  // bytes asked for so far
  std::uint64_t received = 0;
  bool finished = false;
  std::vector<std::function<void(const std::string& error)>> waiters;
};

struct Node::Actor {
  enum class State { pending, alive, restarting, dead };
  ObjectId id;
  std::string name;  // the registered name, empty when anonymous
  std::string class_name;
  std::string class_function;
  std::vector<std::string> methods;
  TaskPtr creation;  // kept to re-run the constructor on restart
  Resources resources;
  Resources held;  // taken while the actor lives
  std::uint64_t max_restarts = 0;
  std::uint64_t restarts = 0;
  std::uint64_t max_concurrency = 1;
  bool detached = false;
  bool killed = false;      // tether.kill: never restarted
  std::uint64_t owner = 0;  // connection id of the creator (a non-detached actor dies with it)
  State state = State::pending;
  std::string death_reason;
  std::uint64_t worker = 0;
  std::uint32_t hosted_on = 0;  // another node runs it (only its resources are there): calls go there
  std::deque<TaskPtr> queued;                      // calls waiting for the actor to be alive
  std::unordered_map<ObjectId, TaskPtr> in_flight;  // calls sent to its worker
};

// Reads a 16-byte id (bin) or an error naming `what`.
Result<ObjectId> id_of(service::Call& call, const msgpack::object* value, std::string_view what);
Result<std::vector<ObjectId>> ids_of(service::Call& call, const msgpack::object* value, std::string_view what);
void pack_id(wire::Packer& packer, const ObjectId& id);
std::string describe_resources(const Resources& resources);  // "{CPU: 2.00, gpu: 1.00}"
bool fits_in(const Resources& have, const Resources& wanted);
Result<Resources> resources_of(const msgpack::object* value, std::string_view what);

}  // namespace tether::cluster
