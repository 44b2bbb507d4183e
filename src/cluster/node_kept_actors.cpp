// Node: detached actors kept across a restart of the head (tetherd --state-dir). The head writes a
// detached actor's definition (its class, constructor arguments and options) to the state store
// before it starts the actor, erases it when the actor dies for good, and at start makes each kept
// actor again under the same id and name: its constructor runs anew, as on a restart. Actors whose
// constructor arguments hold ObjectRefs are not kept: their values live in the object store, which
// does not survive the head.
#include "cluster/node_internal.hpp"

#include <iostream>

namespace tether::cluster {
namespace {

constexpr std::string_view kKind = "actors";

std::string key_of(const ObjectId& id) { return std::string(reinterpret_cast<const char*>(id.bytes.data()), id.bytes.size()); }

template <typename Bytes>
void pack_bin(msgpack::packer<msgpack::sbuffer>& p, const Bytes& bytes) {
  p.pack_bin(static_cast<std::uint32_t>(bytes.size()));
  p.pack_bin_body(reinterpret_cast<const char*>(bytes.data()), static_cast<std::uint32_t>(bytes.size()));
}

std::string text_or_bin(const msgpack::object* value) {
  if (!value) return {};
  if (value->type == msgpack::type::STR) return std::string(value->via.str.ptr, value->via.str.size);
  if (value->type == msgpack::type::BIN) return std::string(value->via.bin.ptr, value->via.bin.size);
  return {};
}

std::uint64_t number_or(const msgpack::object* value, std::uint64_t otherwise) {
  return value && value->type == msgpack::type::POSITIVE_INTEGER ? value->via.u64 : otherwise;
}

}  // namespace

void Node::keep_actors_in(state::StateStore& store) {
  actor_store_ = &store;
  for (const auto& [key, value] : store.load(kKind)) {
    if (auto restored = restore_actor(key, value); !restored) {
      std::cerr << "tetherd: a kept actor could not be made again (" << restored.error().message << "); it is forgotten" << std::endl;
      forget_kept_actor_key(key);
    }
  }
  restore_waiting_actors();
}

bool Node::keep_actor(const Actor& actor) {
  if (!actor_store_ || !actor.detached) return true;
  const auto& task = *actor.creation;
  if (!task.deps.empty() || !task.contained.empty()) {
    std::cerr << "tetherd: detached actor " << actor.class_name << " (" << actor.id.hex()
              << ") is not kept in the state directory: its constructor arguments hold ObjectRefs" << std::endl;
    return true;
  }
  auto function = functions_.find(task.function);
  if (function == functions_.end()) return true;
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> p(buffer);
  p.pack_map(9);
  p.pack("class_name");
  p.pack(actor.class_name);
  p.pack("function_id");
  pack_bin(p, task.function);
  p.pack("function");
  pack_bin(p, *function->second);
  p.pack("args");
  pack_bin(p, *task.args);
  p.pack("resources");
  p.pack(actor.resources);
  p.pack("max_restarts");
  p.pack(actor.max_restarts);
  p.pack("max_concurrency");
  p.pack(actor.max_concurrency);
  p.pack("actor_name");
  p.pack(actor.name);
  p.pack("methods");
  p.pack(actor.methods);
  auto status = actor_store_->put(kKind, key_of(actor.id), std::string_view(buffer.data(), buffer.size()));
  if (!status) std::cerr << "tetherd: detached actor " << actor.id.hex() << " is not kept: " << status.error().message << std::endl;
  return status.ok();
}

void Node::forget_kept_actor(const Actor& actor) {
  if (actor_store_ && actor.detached && !stopping_) forget_kept_actor_key(key_of(actor.id));
}

void Node::forget_kept_actor_key(const std::string& key) {
  if (auto status = actor_store_->erase(kKind, key); !status)
    std::cerr << "tetherd: a dead actor's record stays in the state directory: " << status.error().message << std::endl;
}

Status Node::restore_actor(const std::string& key, const std::string& record) {
  auto id = ObjectId::from_bytes(std::span(reinterpret_cast<const std::uint8_t*>(key.data()), key.size()));
  if (!id) return Error{ErrorKind::bad_request, "the key is not an actor id"};
  msgpack::object_handle handle;
  try {
    handle = msgpack::unpack(record.data(), record.size());
  } catch (const std::exception& e) {
    return Error{ErrorKind::bad_request, std::string("unreadable record: ") + e.what()};
  }
  const auto& root = handle.get();
  if (root.type != msgpack::type::MAP) return Error{ErrorKind::bad_request, "a record must be a map"};
  const auto& map = root.via.map;
  auto actor = std::make_unique<Actor>();
  actor->id = *id;  // the same id: callers that kept a handle (or its name) find the same actor
  actor->detached = true;
  actor->class_name = text_or_bin(service::field(map, "class_name"));
  actor->name = text_or_bin(service::field(map, "actor_name"));
  actor->class_function = text_or_bin(service::field(map, "function_id"));
  auto function = text_or_bin(service::field(map, "function"));
  auto resources = resources_of(service::field(map, "resources"), "resources");
  if (actor->class_function.empty() || function.empty()) return Error{ErrorKind::bad_request, "the record has no class"};
  if (!resources) return resources.error();
  actor->resources = *resources;
  actor->max_restarts = number_or(service::field(map, "max_restarts"), 0);
  actor->max_concurrency = std::max<std::uint64_t>(number_or(service::field(map, "max_concurrency"), 1), 1);
  if (const auto* methods = service::field(map, "methods"); methods && methods->type == msgpack::type::ARRAY)
    for (std::uint32_t i = 0; i < methods->via.array.size; ++i) actor->methods.push_back(text_or_bin(&methods->via.array.ptr[i]));
  functions_.emplace(actor->class_function, std::make_shared<const std::vector<std::byte>>(
                                                reinterpret_cast<const std::byte*>(function.data()),
                                                reinterpret_cast<const std::byte*>(function.data() + function.size())));
  // Ids are node, client number, count: clients of this head are numbered after the kept actors'
  // creators, so no new id repeats a kept one.
  std::uint32_t creator = 0;
  for (int i = 4; i < 8; ++i) creator = (creator << 8) | id->bytes[i];
  next_client_number_ = std::max(next_client_number_, creator + 1);
  auto task = std::make_shared<Task>();
  task->kind = Task::Kind::actor_create;
  task->name = actor->class_name;
  task->function = actor->class_function;
  task->resources = actor->resources;
  auto args = text_or_bin(service::field(map, "args"));
  task->args = std::make_shared<const std::vector<std::byte>>(reinterpret_cast<const std::byte*>(args.data()),
                                                              reinterpret_cast<const std::byte*>(args.data() + args.size()));
  actor->creation = task;
  waiting_to_restore_.push_back(std::move(actor));
  return ok_status();
}

// Kept actors start once a node has their resources (after a restart, the head may be alone).
void Node::restore_waiting_actors() {
  std::vector<std::unique_ptr<Actor>> waiting;
  waiting.swap(waiting_to_restore_);
  for (auto& actor : waiting) {
    Peer* host = fits_node(actor->resources) ? nullptr : host_for_actor(actor->resources);
    if (!fits_node(actor->resources) && !host) {
      waiting_to_restore_.push_back(std::move(actor));
      continue;
    }
    if (actors_.count(actor->id) || named_actors_.count(actor->name) || remote_names_.count(actor->name)) continue;
    if (host) actor->hosted_on = host->info.id;
    actor->creation->id = actor->id;
    actor->creation->actor = actor->id;
    std::cerr << "tetherd: detached actor " << (actor->name.empty() ? actor->class_name : actor->name) << " (" << actor->id.hex()
              << ") is made again from the state directory" << std::endl;
    place_actor(std::move(actor));
  }
}

}  // namespace tether::cluster
