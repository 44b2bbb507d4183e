// Node: the other nodes of the cluster (see node.hpp). The head keeps the directory of nodes
// (node.join, node.report); each pair of nodes shares one connection, used both ways. A node
// forwards a task it has no room for to a node that has; an object another node owns is asked of
// its owner; an object in another node's store is fetched from there in pipelined chunks.
#include "cluster/node_internal.hpp"

#include <iostream>

namespace tether::cluster {

using service::Call;
using service::ReceivedReply;
using service::ReplyBuilder;

namespace {

constexpr std::uint64_t kChunkBytes = 4ull << 20;  // one node.fetch answer
constexpr std::uint64_t kChunksInFlight = 4;        // per transfer: enough to keep a link busy
constexpr std::uint64_t kMaxFetchBytes = 64ull << 20;

// A request body is [args, kwargs]: begin_request opens the args array of `argc` values.
void begin_request(ReplyBuilder& request, std::uint32_t argc) {
  request.packer().pack_array(2);
  request.packer().pack_array(argc);
}

void end_request(ReplyBuilder& request) { request.packer().pack_nil(); }

void pack_ids_request(ReplyBuilder& request, const std::vector<ObjectId>& ids) {
  begin_request(request, 1);
  request.packer().pack_array(static_cast<std::uint32_t>(ids.size()));
  for (const auto& id : ids) pack_id(request.packer(), id);
  end_request(request);
}

Node::BytesOf bytes_in(const ReceivedReply& reply) {
  return [&reply](const msgpack::object& value) { return reply.bytes_of(value, "an object entry"); };
}

std::string str_of(const msgpack::object& value) {
  return value.type == msgpack::type::STR ? std::string(value.via.str.ptr, value.via.str.size) : std::string();
}

}  // namespace

// ---- the directory ----

Result<std::vector<NodeInfo>> Node::read_directory(const msgpack::object& nodes) {
  auto array = service::as_array(&nodes, "nodes");
  if (!array) return array.error();
  std::vector<NodeInfo> directory;
  for (std::uint32_t i = 0; i < (*array)->size; ++i) {
    const auto& row = (*array)->ptr[i];
    if (row.type != msgpack::type::ARRAY || row.via.array.size != 4 || row.via.array.ptr[0].type != msgpack::type::POSITIVE_INTEGER)
      return Error{ErrorKind::bad_request, "nodes: each row must be [id, address, resources, available]"};
    NodeInfo info;
    info.id = static_cast<std::uint32_t>(row.via.array.ptr[0].via.u64);
    info.address = str_of(row.via.array.ptr[1]);
    auto resources = resources_of(&row.via.array.ptr[2], "nodes: resources");
    auto available = resources_of(&row.via.array.ptr[3], "nodes: available");
    if (!resources) return resources.error();
    if (!available) return available.error();
    info.resources = std::move(*resources);
    info.available = std::move(*available);
    directory.push_back(std::move(info));
  }
  return directory;
}

void Node::pack_directory(ReplyBuilder& reply) const {
  auto& p = reply.packer();
  std::uint32_t rows = 1;
  for (const auto& [id, peer] : peers_) rows += peer->ready && !peer->info.address.empty() ? 1 : 0;
  p.pack_array(rows);
  auto row = [&](const NodeInfo& info) {
    p.pack_array(4);
    p.pack_uint32(info.id);
    wire::pack_str(p, info.address);
    reply.pack_resources(info.resources);
    reply.pack_resources(info.available);
  };
  row(NodeInfo{options_.node_id, options_.address, options_.resources, available_});
  for (const auto& [id, peer] : peers_)
    if (peer->ready && !peer->info.address.empty()) row(peer->info);
}

// join(address, resources) -> {node_id, nodes}: a node joins the cluster (the head only).
void Node::join(Call&& call) {
  if (!options_.head) return call.fail(ErrorKind::denied, "node.join: this node is not the head; join the head's address");
  if (client_of(call)) return call.fail(ErrorKind::bad_request, "node.join: this connection already introduced itself");
  auto address = service::as_str(call.param(0, "address"), "node.join: argument 'address'");
  if (!address) return call.fail(address.error());
  auto resources = resources_of(call.param(1, "resources"), "node.join: argument 'resources'");
  if (!resources) return call.fail(resources.error());
  NodeInfo info{next_node_id_++, std::string(*address), *resources, *resources};
  auto& peer = add_peer(info);
  register_peer_client(peer, call.connection_ptr());
  if (peers_.size() == 1) arm_reporter();  // the head's watch over the nodes' reports
  std::cerr << "tetherd: node " << info.id << " at " << info.address << " joined with " << describe_resources(info.resources) << std::endl;
  ReplyBuilder reply;
  reply.packer().pack_map(2);
  wire::pack_str(reply.packer(), "node_id");
  reply.packer().pack_uint32(info.id);
  wire::pack_str(reply.packer(), "nodes");
  pack_directory(reply);
  call.reply(std::move(reply));
  schedule();  // waiting tasks may fit the new node
}

// peer(node_id), oneway: introduces a connection from another node (the higher id connects).
void Node::peer(Call&& call) {
  auto id = service::as_u64(call.param(0, "node_id"), "node.peer: argument 'node_id'");
  if (!id || *id == 0 || *id == options_.node_id || client_of(call)) return call.connection().close("node.peer: bad introduction");
  auto node = static_cast<std::uint32_t>(*id);
  auto it = peers_.find(node);
  // The directory may name it only at our next report.
  auto& peer = it != peers_.end() ? *it->second : add_peer(NodeInfo{node, "", {}, {}});
  if (peer.connection && peer.connection->is_open()) return call.connection().close("node.peer: node already connected");
  register_peer_client(peer, call.connection_ptr());
  peer.ready = true;
  schedule();
}

// report(available) -> {nodes}: a node's load, answered with the directory (the head only).
void Node::report(Call&& call) {
  auto* client = client_of(call);
  if (!client || !client->peer) return call.fail(ErrorKind::denied, "node.report: join first");
  auto available = resources_of(call.param(0, "available"), "node.report: argument 'available'");
  if (!available) return call.fail(available.error());
  if (auto it = peers_.find(client->peer); it != peers_.end()) {
    it->second->info.available = *available;
    bool first = !it->second->ready;
    it->second->ready = true;  // listed, and given tasks, from its first report on
    it->second->last_heard = Clock::now();
    if (first && !waiting_to_restore_.empty()) restore_waiting_actors();  // kept actors it has room for
  }
  ReplyBuilder reply;
  reply.packer().pack_map(1);
  wire::pack_str(reply.packer(), "nodes");
  pack_directory(reply);
  call.reply(std::move(reply));
  schedule();
}

Node::Peer& Node::add_peer(const NodeInfo& info) {
  auto& peer = peers_[info.id];
  if (!peer) peer = std::make_unique<Peer>();
  peer->info = info;
  return *peer;
}

void Node::register_peer_client(Peer& peer, const std::shared_ptr<rpc::Connection>& connection) {
  peer.connection = connection;
  peer.connecting = false;
  auto client = std::make_unique<Client>();
  client->connection_id = connection->id();
  client->connection = connection;
  client->kind = "node";
  client->peer = peer.info.id;
  clients_[connection->id()] = std::move(client);
}

void Node::attach_to_head(std::shared_ptr<rpc::Connection> head, const std::vector<NodeInfo>& directory) {
  for (const auto& info : directory)
    if (info.id == 1) {
      auto& peer = add_peer(info);
      register_peer_client(peer, head);
      peer.ready = true;
    }
  update_directory(directory);
  arm_reporter();
}

void Node::update_directory(const std::vector<NodeInfo>& directory) {
  std::set<std::uint32_t> listed;
  for (const auto& info : directory) {
    if (info.id == options_.node_id) continue;
    listed.insert(info.id);
    auto it = peers_.find(info.id);
    auto& peer = it == peers_.end() ? add_peer(info) : *it->second;
    peer.ready = true;
    peer.listed = true;
    peer.info.address = info.address;
    peer.info.resources = info.resources;
    peer.info.available = info.available;
    // Of each pair, the node that joined later connects.
    if (!peer.connection && !peer.connecting && info.id < options_.node_id) connect_peer(peer);
  }
  // A node the head no longer lists has left, even if our connection to it looks alive (its
  // machine may be cut off); closing the connection runs on_peer_lost.
  std::vector<std::shared_ptr<rpc::Connection>> dropped;
  for (auto it = peers_.begin(); it != peers_.end();) {
    bool unlisted = !listed.count(it->first);
    if (unlisted && it->second->listed && it->second->connection) dropped.push_back(it->second->connection);
    bool gone = unlisted && !it->second->connection && !it->second->connecting;
    it = gone ? peers_.erase(it) : std::next(it);
  }
  for (auto& connection : dropped) connection->close("the head no longer lists this node");
}

void Node::drop_silent_nodes() {
  std::vector<std::pair<std::uint32_t, std::shared_ptr<rpc::Connection>>> silent;
  auto now = Clock::now();
  for (const auto& [id, peer] : peers_)
    if (peer->ready && peer->connection && now - peer->last_heard > options_.node_timeout) silent.emplace_back(id, peer->connection);
  for (auto& [id, connection] : silent) {
    std::cerr << "tetherd: node " << id << " sent no report for " << options_.node_timeout.count() << " ms" << std::endl;
    connection->close("no report for " + std::to_string(options_.node_timeout.count()) + " ms");
  }
}

void Node::connect_peer(Peer& peer) {
  if (!options_.connect || peer.info.address.empty()) return;
  peer.connecting = true;
  auto node = peer.info.id;
  options_.connect(peer.info.address, [this, node](Result<std::shared_ptr<rpc::Connection>> connection) {
    auto it = peers_.find(node);
    if (!connection) {
      std::cerr << "tetherd: cannot reach node " << node << ": " << connection.error().message << std::endl;
      if (it != peers_.end()) it->second->connecting = false;
      return;
    }
    if (it == peers_.end()) return (*connection)->close("that node left the cluster");
    on_peer_connected(node, std::move(*connection));
  });
}

void Node::on_peer_connected(std::uint32_t node, std::shared_ptr<rpc::Connection> connection) {
  ReplyBuilder hello;
  begin_request(hello, 1);
  hello.packer().pack_uint32(options_.node_id);
  end_request(hello);
  auto frame = hello.take_request("node", "peer");
  frame.header.flags |= wire::kOneway;
  connection->call(std::move(frame), nullptr);
  register_peer_client(*peers_.at(node), connection);
  schedule();
}

void Node::arm_reporter() {
  reporter_.expires_after(options_.report_interval);
  reporter_.async_wait([this](std::error_code ec) {
    if (ec) return;
    if (options_.head) drop_silent_nodes();
    else send_report();
    arm_reporter();
  });
}

void Node::send_report() {
  ReplyBuilder request;
  begin_request(request, 1);
  request.pack_resources(available_);
  end_request(request);
  send_to_peer(1, std::move(request), "report", [this](Result<ReceivedReply> reply) {
    if (!reply) return;
    const auto* nodes = service::field(reply->body().via.map, "nodes");
    if (reply->body().type != msgpack::type::MAP || !nodes) return;
    if (auto directory = read_directory(*nodes)) update_directory(*directory);
  });
}

void Node::on_peer_lost(std::uint32_t node, const std::string& why) {
  auto it = peers_.find(node);
  if (it == peers_.end()) return;
  std::cerr << "tetherd: node " << node << " left the cluster: " << why << std::endl;
  peers_.erase(it);  // tasks sent there fail with their connection and are retried or failed
  departed_.insert(node);
  std::erase_if(remote_names_, [node](const auto& entry) { return entry.second.node == node; });
  for (auto& [id, actor] : actors_)
    if (actor->hosted_on == node && actor->state != Actor::State::dead) {
      actor->killed = true;
      actor_died(*actor, "its node " + std::to_string(node) + " left the cluster (" + why + ")");
    }
  auto lost = objects_.lose_node(node, ObjectValue::failure("ObjectLostError", "the object was in the store of node " +
                                                                                   std::to_string(node) + ", which left the cluster (" + why + ")"));
  if (lost) std::cerr << "tetherd: " << lost << " objects were lost with node " << node << std::endl;
  if (!options_.head && node == 1) {
    std::cerr << "tetherd: the head is gone; this node stops" << std::endl;
    if (options_.on_shutdown_requested) asio::post(io_, options_.on_shutdown_requested);
  }
  schedule();
}

void Node::send_to_peer(std::uint32_t node, ReplyBuilder&& request, const std::string& method,
                        std::function<void(Result<ReceivedReply>)> handler) {
  auto it = peers_.find(node);
  auto connection = it == peers_.end() ? nullptr : it->second->connection;
  // A failure is reported later, never from inside this call: callers may be iterating queues.
  auto fail_later = [this, &handler](Error error) {
    if (handler) asio::post(io_, [handler, error] { handler(error); });
  };
  if (!connection || !connection->is_open())
    return fail_later(Error{ErrorKind::disconnected, "node " + std::to_string(node) + " is not connected to this node"});
  auto frame = request.take_request("node", method);
  if (!handler) frame.header.flags |= wire::kOneway;
  auto sink = handler ? std::make_shared<service::ReplyHandler>(handler) : nullptr;
  auto sent = connection->call(std::move(frame), sink);
  if (!sent) fail_later(sent.error());
}

void Node::send_ids(std::uint32_t node, const std::string& method, const std::vector<ObjectId>& ids,
                    std::function<void(Result<ReceivedReply>)> handler) {
  ReplyBuilder request;
  pack_ids_request(request, ids);
  send_to_peer(node, std::move(request), method, std::move(handler));
}

// ---- placing tasks on other nodes ----

bool Node::usable(const Peer& peer) { return peer.ready && peer.connection && peer.connection->is_open(); }

bool Node::fits_cluster(const Resources& wanted) const {
  if (fits_node(wanted)) return true;
  for (const auto& [id, peer] : peers_)
    if (usable(*peer) && fits_in(peer->info.resources, wanted)) return true;
  return false;
}

std::string Node::describe_cluster() const {
  std::string text = "node " + std::to_string(options_.node_id) + " has " + describe_resources(options_.resources);
  for (const auto& [id, peer] : peers_) text += ", node " + std::to_string(id) + " has " + describe_resources(peer->info.resources);
  return text;
}

Node::Peer* Node::peer_for(const Resources& shape) {
  Peer* best = nullptr;
  double best_cpus = -1;
  for (auto& [id, peer] : peers_) {
    if (!usable(*peer) || !fits_in(peer->info.available, shape)) continue;
    auto cpus = peer->info.available.count("CPU") ? peer->info.available.at("CPU") : 0.0;
    if (cpus > best_cpus) best = peer.get(), best_cpus = cpus;
  }
  return best;
}

// submit/actor_call on the other node, with the values of the arguments that are ready (the
// others it asks their owners for) and the retries left.
void Node::forward_task(Peer& peer, const TaskPtr& task) {
  task->forwarded_to = peer.info.id;
  ++task->attempts;
  peer.forwarded[task->id] = task;
  for (const auto& [name, amount] : task->resources) peer.info.available[name] -= amount;
  bool actor_method = task->kind == Task::Kind::actor_method;
  if (!actor_method && peer.functions_sent.insert(task->function).second) {
    ReplyBuilder registration;
    begin_request(registration, 2);
    registration.packer().pack_bin(static_cast<std::uint32_t>(task->function.size()));
    registration.packer().pack_bin_body(task->function.data(), static_cast<std::uint32_t>(task->function.size()));
    const auto& blob = *functions_.at(task->function);
    registration.pack_bytes(blob, functions_.at(task->function));
    end_request(registration);
    send_to_peer(peer.info.id, std::move(registration), "register_function", nullptr);
  }
  const Actor* created = task->kind == Task::Kind::actor_create ? actors_.at(task->actor).get() : nullptr;
  ReplyBuilder request;
  auto& p = request.packer();
  begin_request(request, 1);
  p.pack_map(created ? 14 : 10);
  if (created) {  // its name stays here (and at the head); its restarts happen there
    wire::pack_str(p, "max_restarts");
    p.pack_uint64(created->max_restarts);
    wire::pack_str(p, "max_concurrency");
    p.pack_uint64(created->max_concurrency);
    wire::pack_str(p, "detached");
    p.pack(created->detached);
    wire::pack_str(p, "methods");
    p.pack(created->methods);
  }
  wire::pack_str(p, "id");
  pack_id(p, task->id);
  wire::pack_str(p, "name");
  wire::pack_str(p, task->name);
  if (actor_method) {
    wire::pack_str(p, "actor");
    pack_id(p, task->actor);
    wire::pack_str(p, "method");
    wire::pack_str(p, task->method);
  } else {
    wire::pack_str(p, "function");
    p.pack_bin(static_cast<std::uint32_t>(task->function.size()));
    p.pack_bin_body(task->function.data(), static_cast<std::uint32_t>(task->function.size()));
    wire::pack_str(p, "max_retries");
    p.pack_uint64(task->max_retries + 1 >= task->attempts ? task->max_retries + 1 - task->attempts : 0);
  }
  wire::pack_str(p, "args");
  request.pack_bytes(*task->args, task->args);
  wire::pack_str(p, "deps");
  p.pack_array(static_cast<std::uint32_t>(task->deps.size()));
  for (const auto& d : task->deps) pack_id(p, d);
  wire::pack_str(p, "dep_values");
  p.pack_array(static_cast<std::uint32_t>(task->deps.size()));
  for (const auto& d : task->deps) {
    if (objects_.is_ready(d)) pack_value(request, d, nullptr, true);
    else p.pack_nil();
  }
  wire::pack_str(p, "contained");
  p.pack_array(static_cast<std::uint32_t>(task->contained.size()));
  for (const auto& c : task->contained) pack_id(p, c);
  wire::pack_str(p, "returns");
  p.pack_array(static_cast<std::uint32_t>(task->returns.size()));
  for (const auto& r : task->returns) pack_id(p, r);
  wire::pack_str(p, "resources");
  request.pack_resources(task->resources);
  end_request(request);
  auto node = peer.info.id;
  send_to_peer(node, std::move(request), actor_method ? "actor_call" : created ? "create_actor" : "submit",
               [this, node, task](Result<ReceivedReply> reply) { on_forwarded_reply(node, task, std::move(reply)); });
}

// The other node's answer: {"values": [entry per return], "contained": [ids]}.
void Node::on_forwarded_reply(std::uint32_t node, const TaskPtr& task, Result<ReceivedReply> reply) {
  if (auto it = peers_.find(node); it != peers_.end()) {
    it->second->forwarded.erase(task->id);
    for (const auto& [name, amount] : task->resources) it->second->info.available[name] += amount;
  }
  task->forwarded_to = 0;
  if (task->kind == Task::Kind::actor_create) return on_forwarded_creation(node, task, reply);
  if (task->finished) return;
  if (!reply) {
    bool node_lost = reply.error().kind == ErrorKind::disconnected;
    if (node_lost && !task->cancelled && task->kind == Task::Kind::function && task->attempts <= task->max_retries) {
      enqueue(task, true);  // another node, or this one, runs it again
      return schedule();
    }
    std::string what = node_lost ? "the node " + std::to_string(node) + " running " + task->name + " left the cluster: " + reply.error().message
                                 : "node " + std::to_string(node) + " could not run " + task->name + ": " + reply.error().message;
    return fail_task(task, {task->kind == Task::Kind::actor_method ? "ActorDiedError" : (node_lost ? "WorkerCrashedError" : "WorkerError"), what});
  }
  const auto& body = reply->body();
  const auto* values = body.type == msgpack::type::MAP ? service::field(body.via.map, "values") : nullptr;
  const auto* contained_ids = body.type == msgpack::type::MAP ? service::field(body.via.map, "contained") : nullptr;
  std::vector<ObjectValue> parsed;
  std::vector<ObjectId> contained;
  bool understood = values && values->type == msgpack::type::ARRAY;
  for (std::uint32_t i = 0; understood && i < values->via.array.size; ++i) {
    auto value = value_from_entry(values->via.array.ptr[i], bytes_in(*reply));
    understood = static_cast<bool>(value);
    if (understood) parsed.push_back(std::move(*value));
  }
  if (understood && contained_ids && contained_ids->type == msgpack::type::ARRAY) {
    for (std::uint32_t i = 0; understood && i < contained_ids->via.array.size; ++i) {
      const auto& v = contained_ids->via.array.ptr[i];
      auto id = v.type == msgpack::type::BIN ? ObjectId::from_bytes(std::span(reinterpret_cast<const std::uint8_t*>(v.via.bin.ptr), v.via.bin.size))
                                             : std::nullopt;
      understood = id.has_value();
      if (id) contained.push_back(*id);
    }
  }
  if (!understood) return fail_task(task, {"WorkerError", "node " + std::to_string(node) + "'s answer for " + task->name + " was not understood"});
  adopt_foreign(contained);  // before the other node lets go of them below
  finish_task(task, parsed, contained);
  // The other node keeps a return for us only while it is in its store; the rest it may drop.
  std::vector<ObjectId> drop;
  for (std::size_t i = 0; i < task->returns.size(); ++i)
    if (i >= parsed.size() || parsed[i].kind != ObjectValue::Kind::shared_memory || parsed[i].node != node) drop.push_back(task->returns[i]);
  if (!drop.empty()) send_ids(node, "release", drop, nullptr);
  schedule();
}

// The other node ran the constructor of an actor that lives there (nil), or could not.
void Node::on_forwarded_creation(std::uint32_t node, const TaskPtr& task, const Result<ReceivedReply>& reply) {
  auto it = actors_.find(task->actor);
  if (task->finished || it == actors_.end()) return;
  auto& actor = *it->second;
  if (!reply) {
    std::string why = "node " + std::to_string(node) + " could not start it: " + reply.error().message;
    if (task->caller) {
      task->caller->fail(ErrorKind::failed, "actor " + actor.class_name + ": " + why, "tether.ActorDiedError");
      task->caller.reset();
    }
    actor.killed = true;
    return actor_died(actor, why);
  }
  task->finished = true;
  release_arguments(task);
  actor.state = Actor::State::alive;
  if (task->caller) {
    task->caller->reply_nil();
    task->caller.reset();
  }
  dispatch_actor_calls(actor);
}

// ---- objects other nodes own or keep ----

// {"inline": b} | {"error": b, "text": s} | {"failure": [type, message]} | {"at": [node, size]}
Result<ObjectValue> Node::value_from_entry(const msgpack::object& entry, const BytesOf& bytes_of) const {
  if (entry.type != msgpack::type::MAP || entry.via.map.size == 0) return Error{ErrorKind::bad_request, "an object entry must be a map"};
  const auto& map = entry.via.map;
  if (const auto* data = service::field(map, "inline")) {
    auto bytes = bytes_of(*data);
    if (!bytes) return bytes.error();
    return ObjectValue::inline_value(*bytes);
  }
  if (const auto* data = service::field(map, "error")) {
    auto bytes = bytes_of(*data);
    if (!bytes) return bytes.error();
    auto value = ObjectValue::error_value(*bytes);
    if (const auto* text = service::field(map, "text")) value.failure_message = str_of(*text);
    return value;
  }
  if (const auto* failure = service::field(map, "failure"); failure && failure->type == msgpack::type::ARRAY && failure->via.array.size == 2)
    return ObjectValue::failure(str_of(failure->via.array.ptr[0]), str_of(failure->via.array.ptr[1]));
  if (const auto* at = service::field(map, "at"); at && at->type == msgpack::type::ARRAY && at->via.array.size == 2 &&
                                                  at->via.array.ptr[0].type == msgpack::type::POSITIVE_INTEGER &&
                                                  at->via.array.ptr[1].type == msgpack::type::POSITIVE_INTEGER) {
    auto node = static_cast<std::uint32_t>(at->via.array.ptr[0].via.u64);
    return ObjectValue::in_store(at->via.array.ptr[1].via.u64, node == options_.node_id ? 0 : node);
  }
  return Error{ErrorKind::bad_request, "an object entry must hold inline, error, failure or at"};
}

// A forwarded task's arguments that were ready where it came from: known here for as long as the
// task pins them (the forwarding node keeps them alive meanwhile).
void Node::adopt_dep_values(const Call& call, const msgpack::object* values, const std::vector<ObjectId>& deps) {
  if (!values || values->type != msgpack::type::ARRAY) return;
  auto count = std::min<std::size_t>(values->via.array.size, deps.size());
  for (std::size_t i = 0; i < count; ++i) {
    const auto& entry = values->via.array.ptr[i];
    if (entry.type == msgpack::type::NIL || objects_.contains(deps[i])) continue;
    auto value = value_from_entry(entry, [&call](const msgpack::object& v) { return call.bytes_of(v, "dep_values"); });
    if (!value) continue;
    objects_.add_pending(deps[i]);
    objects_.pin(deps[i]);  // kept until the task pins it
    objects_.set_ready(deps[i], std::move(*value), {});
    asio::post(io_, [this, id = deps[i]] { objects_.unpin(id); });
  }
}

// Objects other nodes own that a client here refers to: we hold a reference at the owner while
// any is alive here, and ask it for the value (it answers when the object is ready).
void Node::adopt_foreign(const std::vector<ObjectId>& ids) {
  for (const auto& id : ids) {
    auto owner = id.node();
    if (owner == options_.node_id || objects_.contains(id)) continue;
    auto it = peers_.find(owner);
    bool connected = it != peers_.end() && it->second->connection;
    if (!connected && !departed_.count(owner)) continue;  // no such node: an id nobody made
    objects_.add_pending(id);
    if (!connected) {
      // Answered after the caller took its hold, so the entry is not freed before it is read.
      asio::post(io_, [this, id, owner] {
        objects_.set_ready(id, ObjectValue::failure("ObjectLostError", "object " + id.hex() + " belongs to node " + std::to_string(owner) +
                                                                           ", which left the cluster"), {});
      });
      continue;
    }
    retained_at_owner_.insert(id);
    send_ids(owner, "retain", {id}, nullptr);
    send_ids(owner, "get", {id}, [this, id, owner](Result<ReceivedReply> reply) {
      if (!objects_.contains(id)) return;  // a task of ours made it and it is gone already
      Result<ObjectValue> value = reply ? Result<ObjectValue>(Error{}) : Result<ObjectValue>(reply.error());
      if (reply && reply->body().type == msgpack::type::ARRAY && reply->body().via.array.size == 1)
        value = value_from_entry(reply->body().via.array.ptr[0], bytes_in(*reply));
      else if (reply)
        value = Error{ErrorKind::bad_request, "not one entry"};
      if (!value)
        value = ObjectValue::failure("ObjectLostError", "object " + id.hex() + " could not be had from node " + std::to_string(owner) + ": " + value.error().message);
      objects_.set_ready(id, std::move(*value), {});
    });
  }
}

bool Node::awaits_from_owner(const ObjectId& id) const { return retained_at_owner_.count(id) && !objects_.is_ready(id); }

// The owner retried the task that makes `id` here (its first node died), so the value will be in
// our store, where the owner keeps it. Our reference at the owner would keep its entry, and so its
// reference to ours, alive for ever: we let it go. The owner's late answer to our "get" finds the
// entry ready and changes nothing.
void Node::produce_here(const ObjectId& id) {
  if (retained_at_owner_.erase(id)) send_ids(id.node(), "release", {id}, nullptr);
}

void Node::on_object_freed(const ObjectId& id, const ObjectValue& value) {
  if (retained_at_owner_.erase(id)) return send_ids(id.node(), "release", {id}, nullptr);
  // A return of a task we sent to another node, kept in that node's store for us.
  if (id.node() == options_.node_id && value.kind == ObjectValue::Kind::shared_memory && value.node != 0)
    send_ids(value.node, "release", {id}, nullptr);
}

// ---- moving objects between stores ----

bool Node::needs_fetch(const ObjectId& id) const {
  const auto* value = objects_.value(id);
  if (!value || value->kind != ObjectValue::Kind::shared_memory || value->node == 0) return false;
  auto info = store_.info(id);
  return !info || !info->sealed;
}

void Node::fetch_objects(const std::vector<ObjectId>& ids, std::function<void(const std::string& error)> done) {
  struct Progress {
    std::size_t left = 1;  // one for the loop below, so `done` cannot run before it ends
    std::string error;
    std::function<void(const std::string&)> done;
  };
  auto progress = std::make_shared<Progress>();
  progress->done = std::move(done);
  auto arrived = [progress](const std::string& error) {
    if (!error.empty() && progress->error.empty()) progress->error = error;
    if (--progress->left == 0) progress->done(progress->error);
  };
  for (const auto& id : ids) {
    if (!needs_fetch(id)) continue;
    ++progress->left;
    auto it = transfers_.find(id);
    if (it != transfers_.end()) {
      it->second->waiters.push_back(arrived);
      continue;
    }
    const auto* value = objects_.value(id);
    auto transfer = std::make_shared<Transfer>();
    transfer->id = id;
    transfer->from = value->node;
    transfer->size = value->size;
    transfer->waiters.push_back(arrived);
    store_.remove(id);  // an unsealed leftover of a failed transfer
    auto created = store_.create(id, transfer->size, false);
    if (!created) {
      finish_transfer(transfer, "no room for it in this node's store: " + created.error().message);
      continue;
    }
    transfers_[id] = transfer;
    request_chunks(transfer);
  }
  arrived("");
}

void Node::request_chunks(const std::shared_ptr<Transfer>& transfer) {
  if (transfer->size == 0) {
    auto sealed = store_.seal(transfer->id);
    return finish_transfer(transfer, sealed ? "" : sealed.error().message);
  }
  while (!transfer->finished && transfer->requested < transfer->size &&
         transfer->requested - transfer->received < kChunksInFlight * kChunkBytes) {
    auto offset = transfer->requested;
    auto length = std::min(kChunkBytes, transfer->size - offset);
    transfer->requested += length;
    ReplyBuilder request;
    begin_request(request, 3);
    pack_id(request.packer(), transfer->id);
    request.packer().pack_uint64(offset);
    request.packer().pack_uint64(length);
    end_request(request);
    send_to_peer(transfer->from, std::move(request), "fetch", [this, transfer, offset, length](Result<ReceivedReply> reply) {
      if (transfer->finished) return;
      if (!reply) return finish_transfer(transfer, reply.error().message);
      auto bytes = reply->bytes_of(reply->body(), "node.fetch answer");
      if (!bytes) return finish_transfer(transfer, bytes.error().message);
      if (bytes->size() != length) return finish_transfer(transfer, "node.fetch answered with the wrong length");
      auto written = store_.write(transfer->id, offset, *bytes);
      if (!written) return finish_transfer(transfer, written.error().message);
      transfer->received += length;
      if (transfer->received < transfer->size) return request_chunks(transfer);
      auto sealed = store_.seal(transfer->id);
      finish_transfer(transfer, sealed ? "" : sealed.error().message);
    });
  }
}

void Node::finish_transfer(const std::shared_ptr<Transfer>& transfer, const std::string& error) {
  if (std::exchange(transfer->finished, true)) return;
  transfers_.erase(transfer->id);
  if (!error.empty()) store_.remove(transfer->id);
  auto waiters = std::move(transfer->waiters);
  for (auto& waiter : waiters) waiter(error.empty() ? "" : "fetching object " + transfer->id.hex() + " from node " +
                                                               std::to_string(transfer->from) + " failed: " + error);
}

// fetch(id, offset, length) -> bytes: a chunk of a sealed object in this node's store.
void Node::fetch(Call&& call) {
  auto id = id_of(call, call.param(0, "id"), "node.fetch: argument 'id'");
  auto offset = service::as_u64(call.param(1, "offset"), "node.fetch: argument 'offset'");
  auto length = service::as_u64(call.param(2, "length"), "node.fetch: argument 'length'");
  if (!id) return call.fail(id.error());
  if (!offset) return call.fail(offset.error());
  if (!length) return call.fail(length.error());
  if (*length > kMaxFetchBytes) return call.fail(ErrorKind::bad_request, "node.fetch: at most 64 MiB at once");
  auto chunk = store_.read(*id, *offset, *length);
  if (!chunk) return call.fail(chunk.error());
  auto bytes = std::make_shared<std::vector<std::byte>>(std::move(*chunk));
  ReplyBuilder reply;
  reply.pack_bytes(*bytes, bytes);
  call.reply(std::move(reply));
}

}  // namespace tether::cluster
