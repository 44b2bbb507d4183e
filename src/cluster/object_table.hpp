// The node daemon's table of the objects its clients own: where each value is (inline bytes, the
// shared-memory store, or an error), who holds references to it, and who waits for it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "store/object_id.hpp"
#include "store/object_store.hpp"

namespace tether::cluster {

using store::ObjectId;
using ClientId = std::uint64_t;  // a connection's id: drivers and workers hold references

// A ready object's value as the daemon keeps it.
struct ObjectValue {
  // error: an exception the task raised (serialized by the worker); failure: what the daemon
  // itself reports, such as a crashed worker (a Python error type name and a message).
  enum class Kind { inline_bytes, shared_memory, error, failure };
  Kind kind = Kind::inline_bytes;
  std::shared_ptr<const std::vector<std::byte>> bytes;  // inline_bytes and error: the serialized value
  std::uint64_t size = 0;                               // shared_memory: the object's size in the store
  std::uint32_t node = 0;  // shared_memory: the node whose store has it (0: this node's)
  std::string failure_type;
  std::string failure_message;

  static ObjectValue inline_value(std::span<const std::byte> data);
  static ObjectValue error_value(std::span<const std::byte> data);
  static ObjectValue in_store(std::uint64_t size, std::uint32_t node = 0);
  static ObjectValue failure(std::string type, std::string message);
};

// Waits for some of a set of objects; `done(timed_out)` runs once, on the daemon's thread.
struct ObjectWaiter {
  std::vector<ObjectId> ids;
  std::size_t needed = 0;  // how many of `ids` must be ready
  std::size_t ready = 0;
  bool finished = false;
  std::function<void(bool timed_out)> done;
};

// Reference counting: an object lives while a client holds it, a task or another object pins it,
// or it is still being produced. Holds are per client, so a client that disconnects drops its
// holds all at once. Single-threaded: the daemon's one thread owns it.
class ObjectTable {
 public:
  explicit ObjectTable(store::ObjectStore& store) : store_(store) {}
  // Runs when an entry is freed (after its local store copy is removed), for the node to tell the
  // nodes that keep the object or its owner's reference for it.
  std::function<void(const ObjectId&, const ObjectValue&)> on_free;

  // A task's return: known, not produced yet.
  void add_pending(const ObjectId& id);
  // The value arrived (a task returned, or a client put it). `contained` lists the objects this
  // value refers to; they are pinned until this object is freed. Returns false if the id is
  // already ready (a second put of the same id).
  bool set_ready(const ObjectId& id, ObjectValue value, const std::vector<ObjectId>& contained);
  bool contains(const ObjectId& id) const { return entries_.count(id) > 0; }
  bool is_ready(const ObjectId& id) const;
  const ObjectValue* value(const ObjectId& id) const;  // nullptr unless ready

  void hold(const ObjectId& id, ClientId client);
  void release(const ObjectId& id, ClientId client);
  void release_client(ClientId client);
  void pin(const ObjectId& id);
  void unpin(const ObjectId& id);

  // Registers a waiter; it finishes at once if enough objects are ready. Unknown ids count as
  // ready (their get answers with an error), so a waiter never waits for what cannot come.
  void wait(const std::shared_ptr<ObjectWaiter>& waiter);

  // Ready objects whose only copy was in `node`'s store (a node that died) become `lost`, unless
  // this node's store has a copy. Returns how many.
  std::size_t lose_node(std::uint32_t node, const ObjectValue& lost);

  std::size_t size() const { return entries_.size(); }
  std::size_t held_by(ClientId client) const;

 private:
  struct Entry {
    bool ready = false;
    ObjectValue value;
    std::uint64_t holds = 0;
    std::uint64_t pins = 0;
    std::vector<ObjectId> contained;
    std::vector<std::shared_ptr<ObjectWaiter>> waiters;
  };
  void free_if_unused(const ObjectId& id);
  static void notify(const std::shared_ptr<ObjectWaiter>& waiter);

  store::ObjectStore& store_;
  std::unordered_map<ObjectId, Entry> entries_;
  std::unordered_map<ClientId, std::unordered_map<ObjectId, std::uint64_t>> holds_;
};

}  // namespace tether::cluster
