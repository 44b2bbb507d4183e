// Node: clients and their objects (see node.hpp); tasks and workers are in node_tasks.cpp.
#include "cluster/node_internal.hpp"

#include <unistd.h>

namespace tether::cluster {

using service::Call;
using service::ReplyBuilder;

Result<ObjectId> id_of(Call& call, const msgpack::object* value, std::string_view what) {
  if (!value) return Error{ErrorKind::bad_request, std::string(what) + " is missing"};
  auto bytes = call.bytes_of(*value, what);
  if (!bytes) return bytes.error();
  auto id = ObjectId::from_bytes(std::span(reinterpret_cast<const std::uint8_t*>(bytes->data()), bytes->size()));
  if (!id) return Error{ErrorKind::bad_request, std::string(what) + " must be a 16-byte id"};
  return *id;
}

Result<std::vector<ObjectId>> ids_of(Call& call, const msgpack::object* value, std::string_view what) {
  std::vector<ObjectId> ids;
  if (!value || value->type == msgpack::type::NIL) return ids;
  auto array = service::as_array(value, what);
  if (!array) return array.error();
  for (std::uint32_t i = 0; i < (*array)->size; ++i) {
    auto id = id_of(call, &(*array)->ptr[i], what);
    if (!id) return id.error();
    ids.push_back(*id);
  }
  return ids;
}

void pack_id(wire::Packer& packer, const ObjectId& id) {
  packer.pack_bin(ObjectId::kSize);
  packer.pack_bin_body(reinterpret_cast<const char*>(id.bytes.data()), ObjectId::kSize);
}

Node::Node(asio::io_context& io, NodeOptions options, store::ObjectStore& store)
    : Service("node"),
      io_(io),
      options_(std::move(options)),
      store_(store),
      objects_(store),
      processes_(io, [this](int pid, const std::string& description) { on_process_exit(pid, description); }),
      reaper_(io),
      available_(options_.resources),
      reporter_(io) {
  objects_.on_free = [this](const ObjectId& id, const ObjectValue& value) { on_object_freed(id, value); };
  processes_.on_line = [this](int stream, const std::string& line) { on_worker_output(stream, line); };
  if (options_.max_task_workers == 0) {
    auto cpus = options_.resources.count("CPU") ? options_.resources.at("CPU") : 1.0;
    options_.max_task_workers = static_cast<std::size_t>(std::max(1.0, cpus)) * 2 + 2;
  }
  add_methods();
  for (std::size_t i = 0; i < options_.prestart_workers; ++i) start_worker(std::nullopt);
  arm_reaper();
}

Node::~Node() { stop_workers(std::chrono::milliseconds(0)); }

void Node::stop_workers(std::chrono::milliseconds grace) {
  stopping_ = true;
  reaper_.cancel();
  reporter_.cancel();
  // Closing runs on_connection_closed at once, which removes the worker or peer: collect first.
  std::vector<std::shared_ptr<rpc::Connection>> connections;
  for (auto& [id, worker] : workers_)
    if (worker->connection) connections.push_back(worker->connection);
  for (auto& [id, peer] : peers_)
    if (peer->connection) connections.push_back(peer->connection);
  for (auto& connection : connections) connection->close("the node is shutting down");
  processes_.stop_all(grace);
}

void Node::add_methods() {
  // Any request may carry the keyword argument release=[ids]: releases the client gathered, sent
  // with its next request instead of in a message of their own. They apply after the request, so
  // they can only make objects live longer than asked, never shorter.
  auto bind = [this](void (Node::*method)(Call&&)) {
    return [this, method](Call&& call) {
      const auto* piggybacked = call.kwarg("release");
      auto releases = piggybacked ? ids_of(call, piggybacked, "release") : Result<std::vector<ObjectId>>(std::vector<ObjectId>{});
      auto connection_id = call.connection().id();
      (this->*method)(std::move(call));
      if (releases && !releases->empty()) release_ids(connection_id, *releases);
    };
  };
  add_method("hello", bind(&Node::hello));
  add_method("put", bind(&Node::put));
  add_method("create", bind(&Node::create));
  add_method("seal", bind(&Node::seal));
  add_method("get", bind(&Node::get));
  add_method("wait", bind(&Node::wait));
  add_method("retain", bind(&Node::retain), true);
  add_method("release", bind(&Node::release), true);
  add_method("unmapped", bind(&Node::unmapped), true);
  add_method("register_function", bind(&Node::register_function), true);
  add_method("get_function", bind(&Node::get_function));
  add_method("status", bind(&Node::status));
  add_method("shutdown", bind(&Node::shutdown));
  add_method("submit", bind(&Node::submit));
  add_method("create_actor", bind(&Node::create_actor));
  add_method("actor_call", bind(&Node::actor_call));
  add_method("get_actor", bind(&Node::get_actor));
  add_method("kill_actor", bind(&Node::kill_actor));
  add_method("cancel", bind(&Node::cancel));
  add_method("blocked", bind(&Node::blocked), true);
  add_method("unblocked", bind(&Node::unblocked), true);
  add_method("join", bind(&Node::join));
  add_method("peer", bind(&Node::peer), true);
  add_method("report", bind(&Node::report));
  add_method("fetch", bind(&Node::fetch));
  add_method("name_actor", bind(&Node::name_actor));
  add_method("unname_actor", bind(&Node::unname_actor), true);
  add_method("actor_dead", bind(&Node::actor_dead), true);
  add_method("output", bind(&Node::output), true);
}

Node::Client* Node::client_of(const Call& call) {
  auto it = clients_.find(call.connection().id());
  return it == clients_.end() ? nullptr : it->second.get();
}

// hello(kind, pid, worker_id=None, runner=None) -> {node_id, client, session, store_prefix, resources}
void Node::hello(Call&& call) {
  auto kind = service::as_str(call.param(0, "kind"), "node.hello: argument 'kind'");
  auto pid = service::as_u64(call.param(1, "pid"), "node.hello: argument 'pid'");
  if (!kind) return call.fail(kind.error());
  if (!pid) return call.fail(pid.error());
  if (*kind != "driver" && *kind != "worker")
    return call.fail(ErrorKind::bad_request, "node.hello: kind must be 'driver' or 'worker'");
  if (client_of(call)) return call.fail(ErrorKind::bad_request, "node.hello: this connection already said hello");
  auto client = std::make_unique<Client>();
  client->connection_id = call.connection().id();
  client->connection = call.connection_ptr();
  client->kind = std::string(*kind);
  client->number = next_client_number_++;
  client->pid = static_cast<int>(*pid);
  // A driver that gives an exported object gets the workers' output lines (node_output.cpp).
  if (const auto* sink = call.kwarg("output"); sink && sink->type == msgpack::type::POSITIVE_INTEGER) client->output_sink = sink->via.u64;
  if (*kind == "worker") {
    auto worker_id = service::as_u64(call.param(2, "worker_id"), "node.hello: argument 'worker_id'");
    auto runner = service::as_u64(call.param(3, "runner"), "node.hello: argument 'runner'");
    if (!worker_id) return call.fail(worker_id.error());
    if (!runner) return call.fail(runner.error());
    auto it = workers_.find(*worker_id);
    if (it == workers_.end() || it->second->connection)
      return call.fail(ErrorKind::denied, "node.hello: no worker " + std::to_string(*worker_id) + " is expected");
    client->worker_id = *worker_id;
    it->second->connection = call.connection_ptr();
    it->second->runner = *runner;
  }
  ReplyBuilder reply;
  auto& p = reply.packer();
  p.pack_map(5);
  wire::pack_str(p, "node_id");
  p.pack_uint32(options_.node_id);
  wire::pack_str(p, "client");
  p.pack_uint32(client->number);
  wire::pack_str(p, "session");
  wire::pack_str(p, options_.session);
  wire::pack_str(p, "store_prefix");
  wire::pack_str(p, "/tether-" + options_.session + "-");
  wire::pack_str(p, "resources");
  reply.pack_resources(options_.resources);
  auto worker_id = client->worker_id;
  clients_[client->connection_id] = std::move(client);
  call.reply(std::move(reply));
  if (worker_id) on_worker_registered(*workers_.at(worker_id));
}

// put(id, data, contained=None): a value small enough to travel inline; the caller holds it.
void Node::put(Call&& call) {
  auto* client = client_of(call);
  if (!client) return call.fail(ErrorKind::denied, "node.put: say hello first");
  auto id = id_of(call, call.param(0, "id"), "node.put: argument 'id'");
  if (!id) return call.fail(id.error());
  auto data = call.bytes_of(call.param(1, "data") ? *call.param(1, "data") : msgpack::object(), "node.put: argument 'data'");
  if (!data) return call.fail(data.error());
  auto contained = ids_of(call, call.param(2, "contained"), "node.put: argument 'contained'");
  if (!contained) return call.fail(contained.error());
  if (objects_.contains(*id)) return call.fail(ErrorKind::bad_request, "node.put: object " + id->hex() + " exists already");
  adopt_foreign(*contained);
  objects_.add_pending(*id);
  objects_.hold(*id, client->connection_id);
  objects_.set_ready(*id, ObjectValue::inline_value(*data), *contained);
  call.reply_nil();
}

// create(id, size, hold=True) -> shm name: room in the store for a large value the caller writes.
void Node::create(Call&& call) {
  auto* client = client_of(call);
  if (!client) return call.fail(ErrorKind::denied, "node.create: say hello first");
  auto id = id_of(call, call.param(0, "id"), "node.create: argument 'id'");
  auto size = service::as_u64(call.param(1, "size"), "node.create: argument 'size'");
  if (!id) return call.fail(id.error());
  if (!size) return call.fail(size.error());
  const auto* hold_arg = call.param(2, "hold");
  bool hold = !hold_arg || hold_arg->type != msgpack::type::BOOLEAN || hold_arg->via.boolean;
  if (objects_.is_ready(*id)) return call.fail(ErrorKind::bad_request, "node.create: object " + id->hex() + " exists already");
  auto segment = store_.create(*id, *size, true);
  if (!segment)
    return call.fail(segment.error().kind, segment.error().message,
                     segment.error().kind == ErrorKind::overloaded ? "tether.ObjectStoreFullError" : "");
  client->unsealed.insert(*id);
  if (hold) {
    objects_.add_pending(*id);
    objects_.hold(*id, client->connection_id);
  }
  ReplyBuilder reply;
  wire::pack_str(reply.packer(), segment->shm_name);
  call.reply(std::move(reply));
}

// seal(id, contained=None, ready=True): the caller wrote the value; with ready it can be read now
// (a put), else a task's reply will say so (a task's return).
void Node::seal(Call&& call) {
  auto id = id_of(call, call.param(0, "id"), "node.seal: argument 'id'");
  if (!id) return call.fail(id.error());
  auto contained = ids_of(call, call.param(1, "contained"), "node.seal: argument 'contained'");
  if (!contained) return call.fail(contained.error());
  const auto* ready_arg = call.param(2, "ready");
  bool ready = !ready_arg || ready_arg->type != msgpack::type::BOOLEAN || ready_arg->via.boolean;
  auto sealed = store_.seal(*id);
  if (!sealed) return call.fail(sealed.error());
  if (auto* client = client_of(call)) client->unsealed.erase(*id);
  if (ready) {
    adopt_foreign(*contained);
    auto info = store_.info(*id);
    objects_.set_ready(*id, ObjectValue::in_store(info ? info->size : 0), *contained);
  }
  call.reply_nil();
}

// One object as a reply value: {"inline": bytes} | {"shm": [name, size, pinned]} | {"error": bytes} |
// {"failure": [type, message]} | {"remote": size} (in another node's store: node.get brings it
// here); for another node, {"at": [node, size]} instead of "shm" and "remote".
void Node::pack_value(ReplyBuilder& reply, const ObjectId& id, Client* reader, bool for_peer) {
  auto& p = reply.packer();
  const auto* value = objects_.value(id);
  p.pack_map(1);
  if (!value) {
    wire::pack_str(p, "failure");
    p.pack_array(2);
    wire::pack_str(p, "ObjectFreedError");
    wire::pack_str(p, "object " + id.hex() + " was freed (no reference to it remained) or never existed");
    return;
  }
  switch (value->kind) {
    case ObjectValue::Kind::inline_bytes:
      wire::pack_str(p, "inline");
      reply.pack_bytes(*value->bytes, value->bytes);
      return;
    case ObjectValue::Kind::error:
      wire::pack_str(p, "error");
      reply.pack_bytes(*value->bytes, value->bytes);
      return;
    case ObjectValue::Kind::failure:
      wire::pack_str(p, "failure");
      p.pack_array(2);
      wire::pack_str(p, value->failure_type);
      wire::pack_str(p, value->failure_message);
      return;
    case ObjectValue::Kind::shared_memory:
      break;
  }
  if (for_peer) {
    wire::pack_str(p, "at");
    p.pack_array(2);
    p.pack_uint32(value->node ? value->node : options_.node_id);
    p.pack_uint64(value->size);
    return;
  }
  if (!reader && needs_fetch(id)) {  // in another node's store: the client asks node.get, which fetches it
    wire::pack_str(p, "remote");
    p.pack_uint64(value->size);
    return;
  }
  // For a reader (node.get) the object stays in memory until the reader says it unmapped it;
  // other answers are not pinned, and a reader that finds the segment gone asks node.get.
  auto segment = reader ? store_.open_and_pin(id) : store_.open(id);
  if (segment && reader) ++reader->pinned_for_reading[id];
  if (!segment) {
    wire::pack_str(p, "failure");
    p.pack_array(2);
    wire::pack_str(p, "ObjectLostError");
    wire::pack_str(p, "object " + id.hex() + " could not be read from the store: " + segment.error().message);
    return;
  }
  wire::pack_str(p, "shm");
  p.pack_array(3);
  wire::pack_str(p, segment->shm_name);
  p.pack_uint64(segment->size);
  p.pack(reader != nullptr);  // pinned for the reader: it sends unmapped when done
}

namespace {

// The optional timeout argument at `index`: seconds, or nil for none.
Result<std::optional<double>> timeout_of(const Call& call, std::size_t index, std::string_view what) {
  const auto* value = call.param(index, "timeout");
  if (!value || value->type == msgpack::type::NIL) return std::optional<double>();
  auto seconds = service::as_number(value, what);
  if (!seconds) return seconds.error();
  return std::optional<double>(*seconds);
}

}  // namespace

// Runs `done(timed_out)` once `needed` of `ids` are ready, or when `timeout` passes first.
void Node::wait_for_objects(std::vector<ObjectId> ids, std::size_t needed, std::optional<double> timeout,
                            std::function<void(bool timed_out)> done) {
  auto waiter = std::make_shared<ObjectWaiter>();
  waiter->ids = std::move(ids);
  waiter->needed = needed;
  auto timer = timeout ? std::make_shared<asio::steady_timer>(io_) : nullptr;
  waiter->done = [timer, done = std::move(done)](bool timed_out) {
    if (timer) timer->cancel();
    done(timed_out);
  };
  objects_.wait(waiter);
  if (!timer || waiter->finished) return;
  timer->expires_after(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(*timeout)));
  timer->async_wait([waiter](std::error_code ec) {
    if (ec || waiter->finished) return;
    waiter->finished = true;
    waiter->done(true);
  });
}

// get(ids, timeout=None) -> [value, ...] once all are ready, or {"timeout": True}. Objects in
// another node's store are fetched into ours first; another node gets where they are instead.
void Node::get(Call&& call) {
  auto ids = ids_of(call, call.param(0, "ids"), "node.get: argument 'ids'");
  if (!ids) return call.fail(ids.error());
  auto timeout = timeout_of(call, 1, "node.get: argument 'timeout'");
  if (!timeout) return call.fail(timeout.error());
  auto* client = client_of(call);
  bool for_peer = client && client->peer;
  adopt_foreign(*ids);
  for (const auto& id : *ids) objects_.pin(id);  // until answered
  auto pending_call = std::make_shared<Call>(std::move(call));
  auto needed = ids->size();
  auto answer = [this, pending_call, for_peer, ids = *ids](bool timed_out) {
    ReplyBuilder reply;
    if (timed_out) {
      reply.packer().pack_map(1);
      wire::pack_str(reply.packer(), "timeout");
      reply.packer().pack_true();
    } else {
      reply.packer().pack_array(static_cast<std::uint32_t>(ids.size()));
      for (const auto& id : ids) pack_value(reply, id, for_peer ? nullptr : client_of(*pending_call), for_peer);
    }
    pending_call->reply(std::move(reply));
    for (const auto& id : ids) objects_.unpin(id);
  };
  wait_for_objects(*ids, needed, *timeout, [this, answer, for_peer, ids = *ids](bool timed_out) {
    if (timed_out || for_peer) return answer(timed_out);
    fetch_objects(ids, [answer](const std::string&) { answer(false); });  // what failed reads as lost
  });
}

// wait(ids, num_returns, timeout=None) -> indices of the ready ids (at least num_returns unless
// the timeout passed first).
void Node::wait(Call&& call) {
  auto ids = ids_of(call, call.param(0, "ids"), "node.wait: argument 'ids'");
  if (!ids) return call.fail(ids.error());
  auto needed = service::as_u64(call.param(1, "num_returns"), "node.wait: argument 'num_returns'");
  if (!needed) return call.fail(needed.error());
  if (*needed > ids->size()) return call.fail(ErrorKind::bad_request, "node.wait: num_returns is larger than the number of ids");
  auto timeout = timeout_of(call, 2, "node.wait: argument 'timeout'");
  if (!timeout) return call.fail(timeout.error());
  adopt_foreign(*ids);
  auto pending_call = std::make_shared<Call>(std::move(call));
  wait_for_objects(*ids, *needed, *timeout, [this, pending_call, ids = *ids](bool) {
    std::vector<std::uint32_t> ready;
    for (std::uint32_t i = 0; i < ids.size(); ++i)
      if (objects_.is_ready(ids[i]) || !objects_.contains(ids[i])) ready.push_back(i);
    ReplyBuilder reply;
    reply.packer().pack(ready);
    pending_call->reply(std::move(reply));
  });
}

// retain(ids) / release(ids), oneway: the client gained or dropped its last local reference.
void Node::retain(Call&& call) {
  auto* client = client_of(call);
  auto ids = ids_of(call, call.param(0, "ids"), "node.retain: argument 'ids'");
  if (!client || !ids) return;
  adopt_foreign(*ids);
  for (const auto& id : *ids) objects_.hold(id, client->connection_id);
}

void Node::release(Call&& call) {
  auto ids = ids_of(call, call.param(0, "ids"), "node.release: argument 'ids'");
  if (ids) release_ids(call.connection().id(), *ids);
}

void Node::release_ids(std::uint64_t connection_id, const std::vector<ObjectId>& ids) {
  if (!clients_.count(connection_id)) return;
  for (const auto& id : ids) objects_.release(id, connection_id);
}

// unmapped(ids), oneway: the client dropped its mapping of objects node.get gave it.
void Node::unmapped(Call&& call) {
  auto* client = client_of(call);
  auto ids = ids_of(call, call.param(0, "ids"), "node.unmapped: argument 'ids'");
  if (!client || !ids) return;
  for (const auto& id : *ids) {
    auto it = client->pinned_for_reading.find(id);
    if (it == client->pinned_for_reading.end()) continue;
    store_.unpin(id);
    if (--it->second == 0) client->pinned_for_reading.erase(it);
  }
}

// register_function(id, blob), oneway: a pickled function or class that tasks name by id.
void Node::register_function(Call&& call) {
  auto id = call.param(0, "id") ? call.bytes_of(*call.param(0, "id"), "id") : Result<std::span<const std::byte>>(Error{});
  auto blob = call.param(1, "blob") ? call.bytes_of(*call.param(1, "blob"), "blob") : Result<std::span<const std::byte>>(Error{});
  if (!id || !blob) return;
  std::string key(reinterpret_cast<const char*>(id->data()), id->size());
  if (!functions_.count(key)) functions_[key] = std::make_shared<const std::vector<std::byte>>(blob->begin(), blob->end());
}

// get_function(id) -> blob
void Node::get_function(Call&& call) {
  const auto* arg = call.param(0, "id");
  auto id = arg ? call.bytes_of(*arg, "node.get_function: argument 'id'") : Result<std::span<const std::byte>>(Error{ErrorKind::bad_request, "node.get_function: argument 'id' is missing"});
  if (!id) return call.fail(id.error());
  auto it = functions_.find(std::string(reinterpret_cast<const char*>(id->data()), id->size()));
  if (it == functions_.end()) return call.fail(ErrorKind::failed, "no function with this id was registered on this node", "builtins.LookupError");
  ReplyBuilder reply;
  reply.pack_bytes(*it->second, it->second);
  call.reply(std::move(reply));
}

// status() -> a map describing the node: resources, workers, objects, actors.
void Node::status(Call&& call) {
  ReplyBuilder reply;
  auto& p = reply.packer();
  auto stats = store_.stats();
  p.pack_map(8);
  wire::pack_str(p, "node_id");
  p.pack_uint32(options_.node_id);
  wire::pack_str(p, "nodes");
  pack_directory(reply);
  wire::pack_str(p, "resources");
  reply.pack_resources(options_.resources);
  wire::pack_str(p, "available");
  reply.pack_resources(available_);
  wire::pack_str(p, "workers");
  p.pack_array(static_cast<std::uint32_t>(workers_.size()));
  static const char* states[] = {"starting", "idle", "busy", "actor", "dead"};
  for (const auto& [id, worker] : workers_) {
    p.pack_map(3);
    wire::pack_str(p, "id");
    p.pack_uint64(id);
    wire::pack_str(p, "pid");
    p.pack_int(worker->pid);
    wire::pack_str(p, "state");
    wire::pack_str(p, states[static_cast<int>(worker->state)]);
  }
  wire::pack_str(p, "objects");
  p.pack_map(4);
  wire::pack_str(p, "count");
  p.pack_uint64(objects_.size());
  wire::pack_str(p, "store_used");
  p.pack_uint64(stats.used_bytes);
  wire::pack_str(p, "store_capacity");
  p.pack_uint64(stats.capacity_bytes);
  wire::pack_str(p, "spilled");
  p.pack_uint64(stats.spilled_objects);
  wire::pack_str(p, "actors");
  p.pack_array(static_cast<std::uint32_t>(actors_.size()));
  static const char* actor_states[] = {"pending", "alive", "restarting", "dead"};
  for (const auto& [id, actor] : actors_) {
    p.pack_map(3);
    wire::pack_str(p, "class");
    wire::pack_str(p, actor->class_name);
    wire::pack_str(p, "name");
    wire::pack_str(p, actor->name);
    wire::pack_str(p, "state");
    wire::pack_str(p, actor_states[static_cast<int>(actor->state)]);
  }
  wire::pack_str(p, "clients");
  p.pack_uint64(clients_.size());
  call.reply(std::move(reply));
}

void Node::shutdown(Call&& call) {
  call.reply_nil();
  if (options_.on_shutdown_requested) asio::post(io_, options_.on_shutdown_requested);
}

void Node::on_connection_closed(rpc::Connection& connection) {
  auto it = clients_.find(connection.id());
  if (it == clients_.end()) return;
  auto client = std::move(it->second);
  clients_.erase(it);
  drop_client(*client);
}

void Node::drop_client(Client& client) {
  for (const auto& [id, count] : client.pinned_for_reading)
    for (std::uint32_t i = 0; i < count; ++i) store_.unpin(id);
  // What it was still writing is lost: nobody can finish it. (A task's return also gets its
  // task's failure; a put's object gets this one.)
  for (const auto& id : client.unsealed) {
    store_.remove(id);
    if (objects_.contains(id) && !objects_.is_ready(id) && !tasks_producing(id))
      objects_.set_ready(id, ObjectValue::failure("ObjectLostError", "the process writing object " + id.hex() + " disconnected"), {});
  }
  objects_.release_client(client.connection_id);
  if (client.peer) on_peer_lost(client.peer, "its connection closed");
  if (client.worker_id) on_worker_lost(client.worker_id, "its connection closed");
  // Actors a driver created die with it unless detached.
  for (auto& [id, actor] : actors_)
    if (actor->owner == client.connection_id && !actor->detached && actor->state != Actor::State::dead) {
      actor->killed = true;  // final: restarts are for failures of the actor, not the end of its owner
      actor_died(*actor, "its creator disconnected");
    }
}

}  // namespace tether::cluster
