// Node: tasks, workers and actors (see node.hpp). A task waits for its dependencies, then for
// resources and an idle worker; its worker's reply makes its returns ready and answers its caller.
#include "cluster/node_internal.hpp"

#include <signal.h>

#include <iostream>

namespace tether::cluster {

using service::Call;
using service::ReplyBuilder;

namespace {

std::string text_of(const msgpack::object* value) {
  return value && value->type == msgpack::type::STR ? std::string(value->via.str.ptr, value->via.str.size) : std::string();
}

}  // namespace

Result<Resources> resources_of(const msgpack::object* value, std::string_view what) {
  Resources resources;
  if (!value || value->type == msgpack::type::NIL) return resources;
  auto map = service::as_map(value, what);
  if (!map) return map.error();
  for (std::uint32_t i = 0; i < (*map)->size; ++i) {
    auto name = service::as_str(&(*map)->ptr[i].key, std::string(what) + " key");
    auto amount = service::as_number(&(*map)->ptr[i].val, std::string(what) + " amount");
    if (!name) return name.error();
    if (!amount) return amount.error();
    if (*amount < 0) return Error{ErrorKind::bad_request, std::string(what) + ": amounts must not be negative"};
    if (*amount > 0) resources[std::string(*name)] = *amount;
  }
  return resources;
}

std::string describe_resources(const Resources& resources) {
  std::string text = "{";
  for (const auto& [name, amount] : resources) {
    if (text.size() > 1) text += ", ";
    text += name + ": " + std::to_string(amount).substr(0, std::to_string(amount).find('.') + 3);
  }
  return text + "}";
}

namespace {

// Delivers a worker's answer to one task back to the node, on the io thread.
class TaskReplySink final : public rpc::ReplySink {
 public:
  using Handler = std::function<void(Result<wire::Frame>)>;
  explicit TaskReplySink(Handler handler) : handler_(std::move(handler)) {}
  void on_frame(wire::Frame&& frame) override { deliver(std::move(frame)); }
  void on_failure(const Error& error) override { deliver(error); }

 private:
  void deliver(Result<wire::Frame> outcome) {
    if (auto handler = std::exchange(handler_, nullptr)) handler(std::move(outcome));
  }
  Handler handler_;
};

}  // namespace

// ---- parsing ----

Result<Node::TaskPtr> Node::parse_task(Call& call, Client& submitter, bool actor_method) {
  auto spec = service::as_map(call.param(0, "spec"), "node." + call.method().substr(5) + ": argument 'spec'");
  if (!spec) return spec.error();
  const auto& map = **spec;
  auto task = std::make_shared<Task>();
  auto id = id_of(call, service::field(map, "id"), "spec['id']");
  if (!id) return id.error();
  task->id = *id;
  task->submitter = submitter.connection_id;
  task->from_peer = submitter.peer != 0;
  task->name = text_of(service::field(map, "name"));
  if (!actor_method) {
    const auto* function = service::field(map, "function");
    auto bytes = function ? call.bytes_of(*function, "spec['function']") : Result<std::span<const std::byte>>(Error{ErrorKind::bad_request, "spec['function'] is missing"});
    if (!bytes) return bytes.error();
    task->function.assign(reinterpret_cast<const char*>(bytes->data()), bytes->size());
    if (!functions_.count(task->function))
      return Error{ErrorKind::bad_request, "spec['function'] names no registered function (register_function first)"};
  } else {
    auto actor = id_of(call, service::field(map, "actor"), "spec['actor']");
    auto method = service::as_str(service::field(map, "method"), "spec['method']");
    if (!actor) return actor.error();
    if (!method) return method.error();
    task->actor = *actor;
    task->method = std::string(*method);
  }
  const auto* args = service::field(map, "args");
  auto arg_bytes = args ? call.bytes_of(*args, "spec['args']") : Result<std::span<const std::byte>>(Error{ErrorKind::bad_request, "spec['args'] is missing"});
  if (!arg_bytes) return arg_bytes.error();
  task->args = std::make_shared<const std::vector<std::byte>>(arg_bytes->begin(), arg_bytes->end());
  auto deps = ids_of(call, service::field(map, "deps"), "spec['deps']");
  auto contained = ids_of(call, service::field(map, "contained"), "spec['contained']");
  auto returns = ids_of(call, service::field(map, "returns"), "spec['returns']");
  auto resources = resources_of(service::field(map, "resources"), "spec['resources']");
  if (!deps) return deps.error();
  if (!contained) return contained.error();
  if (!returns) return returns.error();
  if (!resources) return resources.error();
  task->deps = std::move(*deps);
  task->contained = std::move(*contained);
  task->returns = std::move(*returns);
  task->resources = std::move(*resources);
  if (const auto* retries = service::field(map, "max_retries"); retries && retries->type == msgpack::type::POSITIVE_INTEGER)
    task->max_retries = retries->via.u64;
  for (const auto& r : task->returns) {
    // A node we asked for r may retry its task here after the node that ran it died.
    bool retried_here = task->from_peer && r.node() == submitter.peer && awaits_from_owner(r);
    if (objects_.contains(r) && !retried_here) return Error{ErrorKind::bad_request, "return id " + r.hex() + " is in use"};
  }
  if (tasks_.count(task->id)) return Error{ErrorKind::bad_request, "task id " + task->id.hex() + " is in use"};
  if (task->from_peer) adopt_dep_values(call, service::field(map, "dep_values"), task->deps);
  return task;
}

// Makes the task's returns exist (held by the submitter) and keeps its arguments alive.
void Node::when_dependencies_ready(const TaskPtr& task, std::function<void()> next) {
  adopt_foreign(task->deps);
  adopt_foreign(task->contained);
  for (const auto& r : task->returns) {
    produce_here(r);
    objects_.add_pending(r);
    objects_.hold(r, task->submitter);
  }
  for (const auto& d : task->deps) objects_.pin(d);
  for (const auto& c : task->contained) objects_.pin(c);
  tasks_[task->id] = task;
  wait_for_objects(task->deps, task->deps.size(), std::nullopt, [next = std::move(next)](bool) { next(); });
}

// submit(spec) -> [value per return], when the task is done.
void Node::submit(Call&& call) {
  auto* client = client_of(call);
  if (!client) return call.fail(ErrorKind::denied, "node.submit: say hello first");
  auto task = parse_task(call, *client, false);
  if (!task) return call.fail(task.error());
  (*task)->caller.emplace(std::move(call));
  // A task from another node runs here; others may go to any node with room.
  if ((*task)->from_peer ? !fits_node((*task)->resources) : !fits_cluster((*task)->resources)) {
    when_dependencies_ready(*task, [] {});
    return fail_task(*task, {"ResourceUnavailableError", "task " + (*task)->name + " needs " + describe_resources((*task)->resources) +
                                                             " but no node has that: " + describe_cluster()});
  }
  when_dependencies_ready(*task, [this, task = *task] {
    if (task->finished) return;
    enqueue(task);
    schedule();
  });
}

bool Node::fits_node(const Resources& wanted) const { return fits_in(options_.resources, wanted); }

bool fits_in(const Resources& have, const Resources& wanted) {
  for (const auto& [name, amount] : wanted) {
    auto it = have.find(name);
    if (it == have.end() || it->second + 1e-9 < amount) return false;
  }
  return true;
}

bool Node::fits(const Resources& wanted) const { return fits_in(available_, wanted); }

void Node::take(const Resources& wanted, Resources& held) {
  for (const auto& [name, amount] : wanted) {
    available_[name] -= amount;
    held[name] += amount;
  }
}

void Node::give_back(Resources& held) {
  for (const auto& [name, amount] : held) available_[name] += amount;
  held.clear();
}

// ---- scheduling ----

void Node::enqueue(const TaskPtr& task, bool front) {
  if (task->kind == Task::Kind::actor_create) {
    ready_actors_.push_back(task);
    return;
  }
  auto& queue = ready_by_shape_[task->resources];
  if (front) queue.push_front(task);
  else queue.push_back(task);
}

// Runs what can run now. Tasks wait in one FIFO queue per resource shape, so a pass costs the
// number of shapes plus the tasks it starts, not the length of the backlog.
void Node::schedule() {
  for (auto it = ready_actors_.begin(); it != ready_actors_.end();) {
    const auto task = *it;
    if (task->finished) {
      it = ready_actors_.erase(it);
    } else if (fits(task->resources)) {
      auto& actor = *actors_.at(task->actor);
      take(task->resources, actor.held);
      it = ready_actors_.erase(it);
      start_worker(actor.id);
    } else {
      ++it;
    }
  }
  std::vector<Worker*> idle;
  for (auto& [id, worker] : workers_)
    if (worker->state == Worker::State::idle) idle.push_back(worker.get());
  std::size_t waiting_for_worker = 0;
  for (auto shape = ready_by_shape_.begin(); shape != ready_by_shape_.end();) {
    auto& queue = shape->second;
    while (!queue.empty()) {
      auto task = queue.front();
      if (task->finished) {
        queue.pop_front();
        continue;
      }
      if (!fits(shape->first)) break;
      if (idle.empty()) {
        waiting_for_worker += queue.size();
        break;
      }
      queue.pop_front();
      Worker* worker = idle.back();
      idle.pop_back();
      take(task->resources, worker->held);
      worker->state = Worker::State::busy;
      worker->task = task;
      run_on(*worker, task);
    }
    shape = queue.empty() ? ready_by_shape_.erase(shape) : std::next(shape);
  }
  if (!peers_.empty()) forward_what_does_not_fit();
  std::size_t task_workers = 0;
  for (const auto& [id, worker] : workers_)
    if (!worker->actor && worker->state != Worker::State::dead && !worker->blocked) ++task_workers;
  while (waiting_for_worker > starting_task_workers_ && task_workers < options_.max_task_workers) {
    start_worker(std::nullopt);
    ++task_workers;
  }
}

// Tasks that have no room here now go to nodes that have (a task is sent on once at most).
void Node::forward_what_does_not_fit() {
  for (auto shape = ready_by_shape_.begin(); shape != ready_by_shape_.end();) {
    auto& queue = shape->second;
    while (!queue.empty() && !fits(shape->first)) {
      auto task = queue.front();
      if (task->finished) {
        queue.pop_front();
        continue;
      }
      Peer* peer = task->from_peer ? nullptr : peer_for(shape->first);
      if (!peer) break;
      queue.pop_front();
      forward_task(*peer, task);
    }
    shape = queue.empty() ? ready_by_shape_.erase(shape) : std::next(shape);
  }
}

void Node::start_worker(std::optional<ObjectId> for_actor) {
  auto worker = std::make_unique<Worker>();
  worker->id = next_worker_id_++;
  std::string label = "worker " + std::to_string(worker->id);
  // The node sends a task worker one task at a time: its second slot runs the calls other
  // services make into it meanwhile (a group's events, a topic's messages to a waiting task).
  std::uint64_t threads = 2;
  if (for_actor) {
    auto& actor = *actors_.at(*for_actor);
    actor.worker = worker->id;
    worker->actor = *for_actor;
    label = actor.class_name + (actor.name.empty() ? "" : " " + actor.name);
    threads = std::max<std::uint64_t>(actor.max_concurrency, 1);
  }
  std::vector<std::string> env = {"TETHER_NODE_URI=" + options_.node_uri, "TETHER_SECRET=" + options_.secret,
                                  "TETHER_WORKER_ID=" + std::to_string(worker->id),
                                  "TETHER_CALLBACK_THREADS=" + std::to_string(threads)};
  auto pid = processes_.spawn({options_.python, "-u", "-m", "tether._private.worker"}, env, label);
  if (!pid) {
    std::cerr << "tetherd: cannot start a worker: " << pid.error().message << std::endl;
    if (for_actor) actor_died(*actors_.at(*for_actor), "its worker process could not start: " + pid.error().message);
    return;
  }
  worker->pid = *pid;
  if (!for_actor) ++starting_task_workers_;
  workers_[worker->id] = std::move(worker);
}

void Node::on_worker_registered(Worker& worker) {
  if (worker.actor) {
    worker.state = Worker::State::actor;
    return start_actor(*actors_.at(*worker.actor));
  }
  if (starting_task_workers_ > 0) --starting_task_workers_;
  failed_worker_starts_ = 0;
  worker.state = Worker::State::idle;
  worker.idle_since = Clock::now();
  schedule();
}

// blocked() / unblocked(), oneway, from a worker whose task waits for objects in get or wait: its
// resources go to other tasks meanwhile (a task that waits for the tasks it submitted must not
// keep the CPUs they need), and come back when it runs again, even if that oversubscribes a while.
void Node::blocked(Call&& call) {
  auto* client = client_of(call);
  auto it = client ? workers_.find(client->worker_id) : workers_.end();
  if (it == workers_.end() || it->second->state != Worker::State::busy || it->second->blocked) return;
  auto& worker = *it->second;
  worker.blocked = true;
  worker.lent = worker.held;
  give_back(worker.held);
  schedule();
}

void Node::unblocked(Call&& call) {
  auto* client = client_of(call);
  auto it = client ? workers_.find(client->worker_id) : workers_.end();
  if (it == workers_.end() || !it->second->blocked) return;
  auto& worker = *it->second;
  worker.blocked = false;
  take(worker.lent, worker.held);
  worker.lent.clear();
}

// ---- running ----

void Node::run_on(Worker& worker, const TaskPtr& task) {
  static const char* kinds[] = {"function", "actor_create", "actor_method"};
  // Arguments in other nodes' stores come here first; the worker waits for them.
  for (const auto& dep : task->deps) {
    if (!needs_fetch(dep)) continue;
    auto worker_id = worker.id;
    return fetch_objects(task->deps, [this, worker_id, task](const std::string& error) {
      auto it = workers_.find(worker_id);
      if (it == workers_.end() || task->finished) return;
      if (error.empty()) return run_on(*it->second, task);
      auto& reserved = *it->second;
      if (reserved.state == Worker::State::busy && reserved.task == task) {
        give_back(reserved.held);
        reserved.task = nullptr;
        reserved.state = Worker::State::idle;
      }
      fail_task(task, {"ObjectLostError", "an argument of " + task->name + " could not be read: " + error});
      schedule();
    });
  }
  task->worker = worker.id;
  ++task->attempts;
  ReplyBuilder request;
  auto& p = request.packer();
  p.pack_array(2);
  p.pack_array(1);
  p.pack_map(7);
  wire::pack_str(p, "kind");
  wire::pack_str(p, kinds[static_cast<int>(task->kind)]);
  wire::pack_str(p, "function");
  p.pack_bin(static_cast<std::uint32_t>(task->function.size()));
  p.pack_bin_body(task->function.data(), static_cast<std::uint32_t>(task->function.size()));
  wire::pack_str(p, "name");
  wire::pack_str(p, task->name);
  wire::pack_str(p, "method");
  wire::pack_str(p, task->method);
  wire::pack_str(p, "args");
  request.pack_bytes(*task->args, task->args);
  wire::pack_str(p, "deps");
  p.pack_array(static_cast<std::uint32_t>(task->deps.size()));
  for (const auto& dep : task->deps) {
    // A store object stays in memory while the task may still be mapping it.
    if (const auto* value = objects_.value(dep); value && value->kind == ObjectValue::Kind::shared_memory) {
      store_.pin(dep);
      task->store_pins.push_back(dep);
    }
    pack_value(request, dep, nullptr);
  }
  wire::pack_str(p, "returns");
  p.pack_array(static_cast<std::uint32_t>(task->returns.size()));
  for (const auto& r : task->returns) pack_id(p, r);
  p.pack_nil();
  auto frame = request.take_request("#" + std::to_string(worker.runner), "run");
  auto worker_id = worker.id;
  auto sink = std::make_shared<TaskReplySink>([this, worker_id, task](Result<wire::Frame> reply) {
    on_task_reply(worker_id, task, std::move(reply));
  });
  auto sent = worker.connection->call(std::move(frame), sink);
  if (!sent) on_worker_lost(worker_id, "a task could not be sent to it: " + sent.error().message);
}

void Node::on_task_reply(std::uint64_t worker_id, const TaskPtr& task, Result<wire::Frame> reply) {
  if (!reply) return on_worker_lost(worker_id, reply.error().message);
  auto it = workers_.find(worker_id);
  if (it != workers_.end() && it->second->state == Worker::State::busy && it->second->task == task) {
    auto& worker = *it->second;
    give_back(worker.held);
    worker.blocked = false;
    worker.lent.clear();
    worker.task = nullptr;
    worker.state = Worker::State::idle;
    worker.idle_since = Clock::now();
  }
  if (task->kind == Task::Kind::actor_method) {
    auto actor = actors_.find(task->actor);
    if (actor != actors_.end()) actor->second->in_flight.erase(task->id);
  }
  const auto& frame = reply.value();
  if (frame.header.type == wire::MessageType::error) {
    auto error = wire::unpack_error_body(frame.body_span());
    fail_task(task, {"WorkerError", "the worker could not run " + task->name + ": " + error.message});
  } else {
    auto body = wire::unpack_body(frame.body_span());
    std::vector<ObjectValue> values;
    std::vector<ObjectId> contained;
    bool understood = body && body->get().type == msgpack::type::MAP;
    if (understood) understood = read_task_result(body->get().via.map, task, values, contained);
    if (!understood) fail_task(task, {"WorkerError", "the worker's answer for " + task->name + " was not understood"});
    else if (task->kind == Task::Kind::actor_create) on_actor_created(task, values);
    else finish_task(task, values, contained);
  }
  schedule();
}

// {"values": [{"inline": b} | {"shm": [name, size]} | {"error": b, "text": s}], "contained": [ids]}
bool Node::read_task_result(const msgpack::object_map& map, const TaskPtr& task, std::vector<ObjectValue>& values,
                            std::vector<ObjectId>& contained) {
  const auto* list = service::field(map, "values");
  if (!list || list->type != msgpack::type::ARRAY) return false;
  for (std::uint32_t i = 0; i < list->via.array.size; ++i) {
    const auto& entry = list->via.array.ptr[i];
    if (entry.type != msgpack::type::MAP) return false;
    if (const auto* data = service::field(entry.via.map, "inline"); data && data->type == msgpack::type::BIN) {
      values.push_back(ObjectValue::inline_value(std::span(reinterpret_cast<const std::byte*>(data->via.bin.ptr), data->via.bin.size)));
    } else if (const auto* data = service::field(entry.via.map, "error"); data && data->type == msgpack::type::BIN) {
      auto value = ObjectValue::error_value(std::span(reinterpret_cast<const std::byte*>(data->via.bin.ptr), data->via.bin.size));
      value.failure_message = text_of(service::field(entry.via.map, "text"));
      values.push_back(std::move(value));
    } else if (const auto* shm = service::field(entry.via.map, "shm"); shm && shm->type == msgpack::type::ARRAY && shm->via.array.size == 2) {
      if (i >= task->returns.size()) return false;
      auto info = store_.info(task->returns[i]);
      if (!info || !info->sealed) return false;  // a worker cannot point at what it did not store
      values.push_back(ObjectValue::in_store(info->size));
    } else {
      return false;
    }
  }
  const auto* inner = service::field(map, "contained");
  if (inner && inner->type == msgpack::type::ARRAY) {
    for (std::uint32_t i = 0; i < inner->via.array.size; ++i) {
      const auto& v = inner->via.array.ptr[i];
      if (v.type != msgpack::type::BIN) return false;
      auto id = ObjectId::from_bytes(std::span(reinterpret_cast<const std::uint8_t*>(v.via.bin.ptr), v.via.bin.size));
      if (!id) return false;
      contained.push_back(*id);
    }
  }
  return true;
}

void Node::answer_caller(const TaskPtr& task) {
  if (!task->caller) return;
  ReplyBuilder reply;
  auto& p = reply.packer();
  if (task->from_peer) {  // another node's task: {"values": [...], "contained": [...]}
    p.pack_map(2);
    wire::pack_str(p, "contained");
    p.pack_array(static_cast<std::uint32_t>(task->result_contained.size()));
    for (const auto& c : task->result_contained) pack_id(p, c);
    wire::pack_str(p, "values");
  }
  p.pack_array(static_cast<std::uint32_t>(task->returns.size()));
  for (const auto& r : task->returns) pack_value(reply, r, nullptr, task->from_peer);
  task->caller->reply(std::move(reply));
  task->caller.reset();
}

void Node::release_arguments(const TaskPtr& task) {
  for (const auto& id : task->store_pins) store_.unpin(id);
  task->store_pins.clear();
  for (const auto& d : task->deps) objects_.unpin(d);
  for (const auto& c : task->contained) objects_.unpin(c);
  tasks_.erase(task->id);
}

void Node::finish_task(const TaskPtr& task, const std::vector<ObjectValue>& values, const std::vector<ObjectId>& contained) {
  if (task->finished) return;
  task->finished = true;
  if (task->cancelled) {
    task->finished = false;
    return fail_task(task, {"TaskCancelledError", "task " + task->name + " was cancelled"});
  }
  adopt_foreign(contained);
  task->result_contained = contained;
  // Answer first: the returns may be freed as soon as they are ready if nobody holds them.
  for (std::size_t i = 0; i < task->returns.size(); ++i) {
    auto value = i < values.size() ? values[i] : ObjectValue::failure("WorkerError", task->name + " returned fewer values than num_returns");
    const auto& r = task->returns[i];
    bool stored_here = value.kind == ObjectValue::Kind::shared_memory && value.node == 0;
    objects_.pin(r);
    // Each return keeps the contained objects alive.
    if (!objects_.set_ready(r, std::move(value), contained) && stored_here) drop_unused_copy(r);
  }
  answer_caller(task);
  for (const auto& r : task->returns) objects_.unpin(r);
  release_arguments(task);
}

bool Node::tasks_producing(const ObjectId& id) const {
  for (const auto& [task_id, task] : tasks_)
    for (const auto& r : task->returns)
      if (r == id) return true;
  return false;
}

// A return that was ready before its task ended: a node that retried the task here got its value
// from elsewhere first. The worker's copy in our store is then nobody's.
void Node::drop_unused_copy(const ObjectId& id) {
  const auto* kept = objects_.value(id);
  if (!kept || kept->kind != ObjectValue::Kind::shared_memory || kept->node != 0) store_.remove(id);
}

void Node::discard_stored_returns(const TaskPtr& task) {
  for (const auto& r : task->returns)
    if (!objects_.is_ready(r)) store_.remove(r);
}

void Node::fail_task(const TaskPtr& task, const Failure& failure) {
  if (task->finished) return;
  task->finished = true;
  discard_stored_returns(task);
  for (const auto& r : task->returns) {
    objects_.pin(r);
    objects_.set_ready(r, ObjectValue::failure(failure.type, failure.message), {});
  }
  if (task->kind == Task::Kind::actor_create && task->caller) {
    task->caller->fail(ErrorKind::failed, failure.message, "tether." + failure.type);
    task->caller.reset();
  }
  answer_caller(task);
  for (const auto& r : task->returns) objects_.unpin(r);
  release_arguments(task);
}

// ---- losing workers ----

void Node::on_process_exit(int pid, const std::string& description) {
  for (auto& [id, worker] : workers_)
    if (worker->pid == pid) return on_worker_lost(id, "its process " + description);
}

void Node::on_worker_lost(std::uint64_t worker_id, const std::string& why) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return;
  auto worker = std::move(it->second);
  workers_.erase(it);
  if (worker->state == Worker::State::starting && !worker->actor) {
    if (starting_task_workers_ > 0) --starting_task_workers_;
    // A worker that dies before it says hello would die again: after a few in a row, the tasks
    // waiting for one fail with the reason instead of waiting for ever.
    if (++failed_worker_starts_ >= 3) {
      failed_worker_starts_ = 0;
      auto waiting = std::move(ready_by_shape_);
      ready_by_shape_.clear();
      for (auto& [shape, queue] : waiting)
        for (auto& task : queue)
          fail_task(task, {"WorkerError", "worker processes cannot start (the last one " + why + "); see the daemon's output"});
    }
  }
  if (worker->connection) worker->connection->close("the worker is being replaced");
  processes_.signal(worker->pid, SIGKILL);  // a worker that lost its connection is not reused
  give_back(worker->held);
  if (auto task = worker->task) {
    std::string what = "the worker (pid " + std::to_string(worker->pid) + ") running " + task->name + " died: " + why;
    if (task->cancelled) fail_task(task, {"TaskCancelledError", "task " + task->name + " was cancelled"});
    else if (task->attempts <= task->max_retries) {
      discard_stored_returns(task);
      enqueue(task, true);
    }
    else fail_task(task, {"WorkerCrashedError", what + (task->max_retries ? " (after " + std::to_string(task->max_retries) + " retries)" : "")});
  }
  if (worker->actor) {
    auto actor = actors_.find(*worker->actor);
    if (actor != actors_.end() && actor->second->worker == worker_id) actor_died(*actor->second, "its worker process (pid " + std::to_string(worker->pid) + ") died: " + why);
  }
  schedule();
}

void Node::arm_reaper() {
  reaper_.expires_after(std::chrono::seconds(1));
  reaper_.async_wait([this](std::error_code ec) {
    if (ec) return;
    reap_idle_workers();
    arm_reaper();
  });
}

// Idle task workers beyond the prestarted ones leave after idle_worker_timeout.
void Node::reap_idle_workers() {
  std::size_t idle = 0;
  for (const auto& [id, worker] : workers_)
    if (worker->state == Worker::State::idle) ++idle;
  auto now = Clock::now();
  for (auto& [id, worker] : workers_) {
    if (idle <= options_.prestart_workers) break;
    if (worker->state != Worker::State::idle || now - worker->idle_since < options_.idle_worker_timeout) continue;
    worker->state = Worker::State::dead;  // never given work again; its exit removes it
    processes_.signal(worker->pid, SIGTERM);
    --idle;
  }
}

}  // namespace tether::cluster
