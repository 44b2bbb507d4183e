// ObjectTable: values, reference counts and waiters (see object_table.hpp).
#include "cluster/object_table.hpp"

namespace tether::cluster {

ObjectValue ObjectValue::inline_value(std::span<const std::byte> data) {
  ObjectValue v;
  v.kind = Kind::inline_bytes;
  v.bytes = std::make_shared<const std::vector<std::byte>>(data.begin(), data.end());
  v.size = data.size();
  return v;
}

ObjectValue ObjectValue::error_value(std::span<const std::byte> data) {
  ObjectValue v = inline_value(data);
  v.kind = Kind::error;
  return v;
}

ObjectValue ObjectValue::in_store(std::uint64_t size, std::uint32_t node) {
  ObjectValue v;
  v.kind = Kind::shared_memory;
  v.size = size;
  v.node = node;
  return v;
}

ObjectValue ObjectValue::failure(std::string type, std::string message) {
  ObjectValue v;
  v.kind = Kind::failure;
  v.failure_type = std::move(type);
  v.failure_message = std::move(message);
  return v;
}

void ObjectTable::add_pending(const ObjectId& id) { entries_.try_emplace(id); }

bool ObjectTable::set_ready(const ObjectId& id, ObjectValue value, const std::vector<ObjectId>& contained) {
  auto& entry = entries_[id];
  if (entry.ready) return false;
  entry.ready = true;
  entry.value = std::move(value);
  entry.contained = contained;
  for (const auto& inner : contained) pin(inner);
  auto waiters = std::move(entry.waiters);
  entry.waiters.clear();
  for (auto& waiter : waiters) {
    ++waiter->ready;
    notify(waiter);
  }
  free_if_unused(id);
  return true;
}

bool ObjectTable::is_ready(const ObjectId& id) const {
  auto it = entries_.find(id);
  return it != entries_.end() && it->second.ready;
}

const ObjectValue* ObjectTable::value(const ObjectId& id) const {
  auto it = entries_.find(id);
  return it != entries_.end() && it->second.ready ? &it->second.value : nullptr;
}

void ObjectTable::hold(const ObjectId& id, ClientId client) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;  // already freed: nothing to keep alive
  ++it->second.holds;
  ++holds_[client][id];
}

void ObjectTable::release(const ObjectId& id, ClientId client) {
  auto client_it = holds_.find(client);
  if (client_it == holds_.end()) return;
  auto held = client_it->second.find(id);
  if (held == client_it->second.end()) return;  // a client cannot release what it does not hold
  if (--held->second == 0) client_it->second.erase(held);
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  --it->second.holds;
  free_if_unused(id);
}

void ObjectTable::release_client(ClientId client) {
  auto client_it = holds_.find(client);
  if (client_it == holds_.end()) return;
  auto held = std::move(client_it->second);
  holds_.erase(client_it);
  for (auto& [id, count] : held) {
    auto it = entries_.find(id);
    if (it == entries_.end()) continue;
    it->second.holds -= std::min(it->second.holds, count);
    free_if_unused(id);
  }
}

std::size_t ObjectTable::held_by(ClientId client) const {
  auto it = holds_.find(client);
  return it == holds_.end() ? 0 : it->second.size();
}

void ObjectTable::pin(const ObjectId& id) {
  auto it = entries_.find(id);
  if (it != entries_.end()) ++it->second.pins;
}

void ObjectTable::unpin(const ObjectId& id) {
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.pins == 0) return;
  --it->second.pins;
  free_if_unused(id);
}

std::size_t ObjectTable::lose_node(std::uint32_t node, const ObjectValue& lost) {
  std::size_t count = 0;
  for (auto& [id, entry] : entries_) {
    if (!entry.ready || entry.value.kind != ObjectValue::Kind::shared_memory || entry.value.node != node) continue;
    if (store_.contains(id)) continue;  // a local copy survives its source
    entry.value = lost;
    ++count;
  }
  return count;
}

void ObjectTable::wait(const std::shared_ptr<ObjectWaiter>& waiter) {
  for (const auto& id : waiter->ids) {
    auto it = entries_.find(id);
    if (it == entries_.end() || it->second.ready) ++waiter->ready;
    else it->second.waiters.push_back(waiter);
  }
  notify(waiter);
}

void ObjectTable::notify(const std::shared_ptr<ObjectWaiter>& waiter) {
  if (waiter->finished || waiter->ready < waiter->needed) return;
  waiter->finished = true;
  if (waiter->done) waiter->done(false);
}

void ObjectTable::free_if_unused(const ObjectId& id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  auto& entry = it->second;
  // A pending object stays until produced: its task still runs and may be waited for.
  if (!entry.ready || entry.holds > 0 || entry.pins > 0) return;
  if (entry.value.kind == ObjectValue::Kind::shared_memory) store_.remove(id);
  auto contained = std::move(entry.contained);
  auto value = std::move(entry.value);
  entries_.erase(it);
  if (on_free) on_free(id, value);
  for (const auto& inner : contained) unpin(inner);
}

}  // namespace tether::cluster
