// Node: actors (see node.hpp). An actor lives in its own worker process; calls from every caller
// queue in the daemon until it is alive and then go to its worker in order over one connection.
#include "cluster/node_internal.hpp"

#include <signal.h>

namespace tether::cluster {

using service::Call;
using service::ReplyBuilder;

// create_actor(spec) -> nil once the constructor ran. spec: {id, function (the class), name, args,
// deps, contained, resources, max_restarts, max_concurrency, actor_name, detached, methods}.
void Node::create_actor(Call&& call) {
  auto* client = client_of(call);
  if (!client) return call.fail(ErrorKind::denied, "node.create_actor: say hello first");
  auto parsed = parse_task(call, *client, false);
  if (!parsed) return call.fail(parsed.error());
  auto task = *parsed;
  const auto& map = call.param(0, "spec")->via.map;
  auto actor = std::make_unique<Actor>();
  actor->id = task->id;
  actor->class_name = task->name;
  actor->class_function = task->function;
  actor->resources = task->resources;
  actor->owner = client->connection_id;
  if (const auto* v = service::field(map, "max_restarts"); v && v->type == msgpack::type::POSITIVE_INTEGER) actor->max_restarts = v->via.u64;
  if (const auto* v = service::field(map, "max_concurrency"); v && v->type == msgpack::type::POSITIVE_INTEGER) actor->max_concurrency = std::max<std::uint64_t>(v->via.u64, 1);
  if (const auto* v = service::field(map, "detached"); v && v->type == msgpack::type::BOOLEAN) actor->detached = v->via.boolean;
  if (const auto* v = service::field(map, "actor_name"); v && v->type == msgpack::type::STR) actor->name.assign(v->via.str.ptr, v->via.str.size);
  if (const auto* v = service::field(map, "methods"); v && v->type == msgpack::type::ARRAY)
    for (std::uint32_t i = 0; i < v->via.array.size; ++i)
      if (v->via.array.ptr[i].type == msgpack::type::STR) actor->methods.emplace_back(v->via.array.ptr[i].via.str.ptr, v->via.array.ptr[i].via.str.size);
  if (actors_.count(actor->id)) return call.fail(ErrorKind::bad_request, "node.create_actor: actor id " + actor->id.hex() + " is in use");
  if (!actor->name.empty() && (named_actors_.count(actor->name) || remote_names_.count(actor->name)))
    return call.fail(ErrorKind::failed, "an actor named '" + actor->name + "' exists already", "builtins.ValueError");
  task->kind = Task::Kind::actor_create;
  // The node it lives on when this one does not have its resources.
  Peer* host = fits_node(task->resources) || task->from_peer ? nullptr : host_for_actor(task->resources);
  if (host) actor->hosted_on = host->info.id;
  if (!fits_node(task->resources) && !host) {
    // Kept as a dead actor, so its calls say why (the creator usually does not wait for this answer).
    std::string why = "it needs " + describe_resources(task->resources) + " but no node has that: " + describe_cluster();
    call.fail(ErrorKind::failed, "actor " + actor->class_name + ": " + why, "tether.ResourceUnavailableError");
    actor->state = Actor::State::dead;
    actor->death_reason = why;
    actors_[actor->id] = std::move(actor);
    return;
  }
  task->actor = actor->id;
  actor->creation = task;
  if (options_.head && !keep_actor(*actor))
    return call.fail(ErrorKind::failed, "detached actor " + actor->class_name + ": the state directory could not keep it");
  task->caller.emplace(std::move(call));
  if (actor->name.empty() || options_.head) return place_actor(std::move(actor));
  // Names are the cluster's: the head reserves this one first.
  ReplyBuilder request;
  auto& p = request.packer();
  p.pack_array(2);
  p.pack_array(2);
  wire::pack_str(p, actor->name);
  pack_actor_info(request, *actor);
  p.pack_nil();
  auto pending = std::make_shared<std::unique_ptr<Actor>>(std::move(actor));
  send_to_peer(1, std::move(request), "name_actor", [this, pending, task](Result<service::ReceivedReply> reply) {
    if (reply) return place_actor(std::move(*pending));
    task->caller->fail(ErrorKind::failed, reply.error().message, "builtins.ValueError");
    task->caller.reset();
  });
}

// Another node whose resources an actor fits, preferring one with them free now; nullptr if none.
Node::Peer* Node::host_for_actor(const Resources& wanted) {
  Peer* host = nullptr;
  for (auto& [node, peer] : peers_)
    if (usable(*peer) && fits_in(peer->info.resources, wanted) && (!host || fits_in(peer->info.available, wanted))) host = peer.get();
  return host;
}

// The actor is known here from now on; it starts here, or on the node that has its resources
// (this node then forwards its calls).
void Node::place_actor(std::unique_ptr<Actor> actor) {
  auto task = actor->creation;
  if (!actor->name.empty()) named_actors_[actor->name] = actor->id;
  auto& record = *actor;
  actors_[actor->id] = std::move(actor);
  if (record.hosted_on) {
    adopt_foreign(task->deps);
    adopt_foreign(task->contained);
    for (const auto& d : task->deps) objects_.pin(d);
    for (const auto& c : task->contained) objects_.pin(c);
    tasks_[task->id] = task;
    auto peer = peers_.find(record.hosted_on);
    if (peer == peers_.end()) return actor_died(record, "node " + std::to_string(record.hosted_on) + " left the cluster");
    return forward_task(*peer->second, task);
  }
  when_dependencies_ready(task, [this, task, &record] {
    if (record.state == Actor::State::dead) return;
    enqueue(task);
    schedule();
  });
}

void Node::pack_actor_info(ReplyBuilder& reply, const Actor& actor) {
  auto& p = reply.packer();
  p.pack_map(4);
  wire::pack_str(p, "id");
  pack_id(p, actor.id);
  wire::pack_str(p, "class_name");
  wire::pack_str(p, actor.class_name);
  wire::pack_str(p, "methods");
  p.pack(actor.methods);
  wire::pack_str(p, "max_concurrency");
  p.pack_uint64(actor.max_concurrency);
}

// name_actor(name, info) -> nil: reserves a name for an actor another node creates (the head only).
void Node::name_actor(Call&& call) {
  auto* client = client_of(call);
  auto name = service::as_str(call.param(0, "name"), "node.name_actor: argument 'name'");
  auto info = service::as_map(call.param(1, "info"), "node.name_actor: argument 'info'");
  if (!options_.head || !client || !client->peer) return call.fail(ErrorKind::denied, "node.name_actor: only nodes ask the head");
  if (!name) return call.fail(name.error());
  if (!info) return call.fail(info.error());
  std::string key(*name);
  if (named_actors_.count(key) || remote_names_.count(key))
    return call.fail(ErrorKind::failed, "an actor named '" + key + "' exists already", "builtins.ValueError");
  auto id = id_of(call, service::field(**info, "id"), "info['id']");
  if (!id) return call.fail(id.error());
  RemoteName entry;
  entry.node = client->peer;
  entry.id = *id;
  // Kept packed: get_actor answers with it as it is.
  ReplyBuilder packed;
  packed.packer().pack(*call.param(1, "info"));
  entry.info = std::make_shared<std::vector<std::byte>>(packed.take(0).payload);
  remote_names_[key] = std::move(entry);
  call.reply_nil();
}

// actor_dead(id, why), oneway: an actor this node placed on the caller's node died for good.
void Node::actor_dead(Call&& call) {
  auto* client = client_of(call);
  auto id = id_of(call, call.param(0, "id"), "id");
  auto why = service::as_str(call.param(1, "why"), "why");
  if (!client || !client->peer || !id || !why) return;
  auto it = actors_.find(*id);
  if (it == actors_.end() || it->second->hosted_on != client->peer || it->second->state == Actor::State::dead) return;
  it->second->killed = true;
  actor_died(*it->second, std::string(*why));
}

// unname_actor(name, id), oneway: the actor with that name died on another node.
void Node::unname_actor(Call&& call) {
  auto name = service::as_str(call.param(0, "name"), "name");
  auto id = id_of(call, call.param(1, "id"), "id");
  if (!name || !id) return;
  auto it = remote_names_.find(std::string(*name));
  if (it != remote_names_.end() && it->second.id == *id) remote_names_.erase(it);
}

void Node::start_actor(Actor& actor) {
  auto worker = workers_.find(actor.worker);
  if (worker == workers_.end()) return;
  run_on(*worker->second, actor.creation);
}

void Node::on_actor_created(const TaskPtr& creation, const std::vector<ObjectValue>& values) {
  auto it = actors_.find(creation->actor);
  if (it == actors_.end()) return;
  auto& actor = *it->second;
  if (!values.empty() && values[0].kind == ObjectValue::Kind::error) {
    std::string why = "its constructor raised " + values[0].failure_message;
    if (creation->caller) {
      creation->caller->fail(ErrorKind::failed, "actor " + actor.class_name + ": " + why, "tether.ActorDiedError");
      creation->caller.reset();
    }
    actor.killed = true;  // a constructor that raises would raise again
    return actor_died(actor, why);
  }
  actor.state = Actor::State::alive;
  if (creation->caller) {
    creation->caller->reply_nil();
    creation->caller.reset();
  }
  dispatch_actor_calls(actor);
}

// actor_call(spec) -> [value per return]. spec: {id, actor, method, name, args, deps, contained, returns}.
void Node::actor_call(Call&& call) {
  auto* client = client_of(call);
  if (!client) return call.fail(ErrorKind::denied, "node.actor_call: say hello first");
  auto parsed = parse_task(call, *client, true);
  if (!parsed) return call.fail(parsed.error());
  auto task = *parsed;
  task->kind = Task::Kind::actor_method;
  task->caller.emplace(std::move(call));
  auto it = actors_.find(task->actor);
  // An actor lives on the node of its creator: calls from elsewhere go there, in order.
  if (it == actors_.end() && !task->from_peer && task->actor.node() != node_id()) {
    auto peer = peers_.find(task->actor.node());
    when_dependencies_ready(task, [] {});
    if (peer == peers_.end() || !peer->second->connection)
      return fail_task(task, {"ActorDiedError", "actor " + task->actor.hex() + " lives on node " + std::to_string(task->actor.node()) +
                                                    ", which is not in the cluster"});
    return forward_task(*peer->second, task);
  }
  // Calls keep their submission order: each waits for its arguments, then for the calls before it.
  auto actor_id = task->actor;
  when_dependencies_ready(task, [this, actor_id] {
    auto found = actors_.find(actor_id);
    if (found != actors_.end()) dispatch_actor_calls(*found->second);
  });
  if (it == actors_.end())
    return fail_task(task, {"ActorDiedError", "no actor " + task->actor.hex() + " on this node"});
  if (it->second->state == Actor::State::dead)
    return fail_task(task, {"ActorDiedError", "actor " + it->second->class_name + " is dead: " + it->second->death_reason});
  it->second->queued.push_back(task);
  dispatch_actor_calls(*it->second);
}

void Node::dispatch_actor_calls(Actor& actor) {
  if (actor.state != Actor::State::alive) return;
  if (actor.hosted_on) {  // it lives on another node: calls go there in order
    auto peer = peers_.find(actor.hosted_on);
    while (!actor.queued.empty() && peer != peers_.end()) {
      auto task = actor.queued.front();
      actor.queued.pop_front();
      if (!task->finished) forward_task(*peer->second, task);
    }
    return;
  }
  auto worker = workers_.find(actor.worker);
  if (worker == workers_.end()) return;
  while (!actor.queued.empty()) {
    auto task = actor.queued.front();
    bool ready = true, fetching = false;
    for (const auto& d : task->deps) {
      ready = ready && (objects_.is_ready(d) || !objects_.contains(d));
      fetching = fetching || needs_fetch(d);
    }
    if (!ready) return;  // later calls wait behind it: order per actor is submission order
    if (fetching && !task->finished) {
      auto actor_id = actor.id;
      return fetch_objects(task->deps, [this, actor_id, task](const std::string& error) {
        if (!error.empty()) fail_task(task, {"ObjectLostError", "an argument of " + task->name + " could not be read: " + error});
        auto found = actors_.find(actor_id);
        if (found != actors_.end()) dispatch_actor_calls(*found->second);
      });
    }
    actor.queued.pop_front();
    if (task->finished) continue;
    actor.in_flight[task->id] = task;
    run_on(*worker->second, task);
  }
}

void Node::actor_died(Actor& actor, const std::string& why) {
  auto in_flight = std::move(actor.in_flight);
  actor.in_flight.clear();
  for (auto& [id, task] : in_flight)
    fail_task(task, {"ActorDiedError", "actor " + actor.class_name + " died while running " + task->method + ": " + why});
  give_back(actor.held);
  if (actor.hosted_on && actor.state != Actor::State::dead) {
    // Its node runs its restarts; here it dies when that node goes or its owner does.
    if (auto peer = peers_.find(actor.hosted_on); peer != peers_.end()) {
      ReplyBuilder request;
      request.packer().pack_array(2);
      request.packer().pack_array(1);
      pack_id(request.packer(), actor.id);
      request.packer().pack_nil();
      send_to_peer(actor.hosted_on, std::move(request), "kill_actor", nullptr);
    }
    actor.killed = true;
  }
  if (!actor.killed && actor.restarts < actor.max_restarts && actor.state != Actor::State::dead) {
    ++actor.restarts;
    actor.state = Actor::State::restarting;
    enqueue(actor.creation);  // the constructor runs again in a new worker
    return schedule();
  }
  actor.state = Actor::State::dead;
  actor.death_reason = why;
  forget_kept_actor(actor);
  // An actor another node placed here: that node's stand-in dies too (and gives its name back).
  if (auto owner = clients_.find(actor.owner); owner != clients_.end() && owner->second->peer) {
    ReplyBuilder request;
    request.packer().pack_array(2);
    request.packer().pack_array(2);
    pack_id(request.packer(), actor.id);
    wire::pack_str(request.packer(), why);
    request.packer().pack_nil();
    send_to_peer(owner->second->peer, std::move(request), "actor_dead", nullptr);
  }
  auto queued = std::move(actor.queued);
  actor.queued.clear();
  for (auto& task : queued) fail_task(task, {"ActorDiedError", "actor " + actor.class_name + " is dead: " + why});
  if (!actor.name.empty() && named_actors_.erase(actor.name) && !options_.head) {
    ReplyBuilder request;
    request.packer().pack_array(2);
    request.packer().pack_array(2);
    wire::pack_str(request.packer(), actor.name);
    pack_id(request.packer(), actor.id);
    request.packer().pack_nil();
    send_to_peer(1, std::move(request), "unname_actor", nullptr);
  }
  if (actor.creation && !actor.creation->finished) {
    if (actor.creation->caller) {
      actor.creation->caller->fail(ErrorKind::failed, "actor " + actor.class_name + " died: " + why, "tether.ActorDiedError");
      actor.creation->caller.reset();
    }
    actor.creation->finished = true;
    release_arguments(actor.creation);
  }
  auto worker = workers_.find(actor.worker);
  if (worker != workers_.end()) processes_.signal(worker->second->pid, SIGKILL);
}

// get_actor(name) -> {id, class_name, methods, max_concurrency}
void Node::get_actor(Call&& call) {
  auto name = service::as_str(call.param(0, "name"), "node.get_actor: argument 'name'");
  if (!name) return call.fail(name.error());
  auto it = named_actors_.find(std::string(*name));
  if (it == named_actors_.end() && !options_.head && peers_.count(1)) {
    // The head knows the names its own clients gave (drivers usually talk to the head).
    ReplyBuilder request;
    request.packer().pack_array(2);
    request.packer().pack_array(1);
    wire::pack_str(request.packer(), *name);
    request.packer().pack_nil();
    auto pending = std::make_shared<Call>(std::move(call));
    return send_to_peer(1, std::move(request), "get_actor", [pending](Result<service::ReceivedReply> reply) {
      if (!reply) return pending->fail(reply.error().kind, reply.error().message, "builtins.ValueError");
      ReplyBuilder answer;
      answer.packer().pack(reply->body());
      pending->reply(std::move(answer));
    });
  }
  if (auto remote = remote_names_.find(std::string(*name)); it == named_actors_.end() && remote != remote_names_.end()) {
    ReplyBuilder reply;
    auto info = remote->second.info;  // already msgpack: copied into the body as it is
    reply.packer().pack_bin_body(reinterpret_cast<const char*>(info->data()), static_cast<std::uint32_t>(info->size()));
    return call.reply(std::move(reply));
  }
  if (it == named_actors_.end())
    return call.fail(ErrorKind::failed, "no actor named '" + std::string(*name) + "' is alive", "builtins.ValueError");
  ReplyBuilder reply;
  pack_actor_info(reply, *actors_.at(it->second));
  call.reply(std::move(reply));
}

// kill_actor(id, no_restart=True)
void Node::kill_actor(Call&& call) {
  auto id = id_of(call, call.param(0, "id"), "node.kill_actor: argument 'id'");
  if (!id) return call.fail(id.error());
  auto it = actors_.find(*id);
  if (it == actors_.end() && id->node() != node_id() && peers_.count(id->node())) {
    ReplyBuilder request;  // the actor lives on its creator's node
    request.packer().pack_array(2);
    request.packer().pack_array(2);
    pack_id(request.packer(), *id);
    const auto* no_restart = call.param(1, "no_restart");
    request.packer().pack(!no_restart || no_restart->type != msgpack::type::BOOLEAN || no_restart->via.boolean);
    request.packer().pack_nil();
    auto pending = std::make_shared<Call>(std::move(call));
    return send_to_peer(id->node(), std::move(request), "kill_actor", [pending](Result<service::ReceivedReply> reply) {
      if (!reply) return pending->fail(reply.error().kind, reply.error().message, "builtins.ValueError");
      pending->reply_nil();
    });
  }
  if (it == actors_.end()) return call.fail(ErrorKind::failed, "no actor " + id->hex() + " on this node", "builtins.ValueError");
  auto& actor = *it->second;
  const auto* no_restart = call.param(1, "no_restart");
  bool final = !no_restart || no_restart->type != msgpack::type::BOOLEAN || no_restart->via.boolean;
  if (actor.hosted_on) {  // its node kills it (and restarts it unless final)
    ReplyBuilder request;
    request.packer().pack_array(2);
    request.packer().pack_array(2);
    pack_id(request.packer(), actor.id);
    request.packer().pack(final);
    request.packer().pack_nil();
    call.reply_nil();
    return send_to_peer(actor.hosted_on, std::move(request), "kill_actor", nullptr);
  }
  if (final) actor.killed = true;
  call.reply_nil();
  auto worker = workers_.find(actor.worker);
  if (worker != workers_.end()) on_worker_lost(actor.worker, "killed by tether.kill");
  else if (actor.state != Actor::State::dead) actor_died(actor, "killed by tether.kill");
}

// cancel(task_id, force=False): a task not yet running is dropped; a running one is killed with
// force, else its result is replaced by TaskCancelledError when it ends.
void Node::cancel(Call&& call) {
  auto id = id_of(call, call.param(0, "task_id"), "node.cancel: argument 'task_id'");
  if (!id) return call.fail(id.error());
  const auto* force_arg = call.param(1, "force");
  bool force = force_arg && force_arg->type == msgpack::type::BOOLEAN && force_arg->via.boolean;
  call.reply_nil();
  auto it = tasks_.find(*id);
  if (it == tasks_.end() || it->second->kind != Task::Kind::function) return;
  auto task = it->second;
  task->cancelled = true;
  if (task->forwarded_to) {  // the node running it cancels it and answers
    ReplyBuilder request;
    request.packer().pack_array(2);
    request.packer().pack_array(2);
    pack_id(request.packer(), *id);
    request.packer().pack(force);
    request.packer().pack_nil();
    return send_to_peer(task->forwarded_to, std::move(request), "cancel", nullptr);
  }
  bool running = false;
  for (auto& [worker_id, worker] : workers_)
    if (worker->task == task) {
      running = true;
      if (force) on_worker_lost(worker_id, "its task was cancelled with force=True");
      break;
    }
  if (!running) fail_task(task, {"TaskCancelledError", "task " + task->name + " was cancelled"});
}

}  // namespace tether::cluster
