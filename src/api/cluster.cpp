// Named actors from C++ (see include/tether/cluster.hpp and docs/protocol.md 13.2-13.4): a driver
// connection to a node, ids of its own, actor_call with pickled plain arguments, value maps read.
#include "tether/cluster.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>

#include "api/pickle.hpp"

namespace tether {
namespace detail {

class ClusterCore {
 public:
  ClusterCore(Client& client, std::string_view address) : node_(client.proxy("tether://" + std::string(address) + "/node")) {
    Value info = node_.call("hello", "driver", static_cast<std::int64_t>(::getpid()));
    node_id_ = static_cast<std::uint32_t>(info.find(Value("node_id"))->as_uint64());
    client_ = static_cast<std::uint32_t>(info.find(Value("client"))->as_uint64());
  }

  const Proxy& node() const { return node_; }

  // 16 bytes: node id, client number, counter, each big-endian (protocol 13.2).
  Bytes new_id() {
    std::uint64_t counter = ++counter_;
    std::vector<std::byte> id(16);
    auto put = [&](std::size_t at, std::uint64_t v, int size) {
      for (int i = 0; i < size; ++i) id[at + i] = static_cast<std::byte>(v >> (8 * (size - 1 - i)));
    };
    put(0, node_id_, 4);
    put(4, client_, 4);
    put(8, counter, 8);
    return Bytes(std::move(id));
  }

  Value result_of(const Value& value_map, const Bytes& id);

 private:
  Proxy node_;
  std::uint32_t node_id_ = 0;
  std::uint32_t client_ = 0;
  std::atomic<std::uint64_t> counter_{0};
};

namespace {

// A cluster value (protocol 13.3): "TTH1", buffer count, pickle length, buffer table, pickle.
Bytes cluster_value(const Value& value) {
  auto pickle = api::pickle_plain(value);
  if (!pickle) throw TypeMismatch(pickle.error().message);
  std::vector<std::byte> out(16);
  std::memcpy(out.data(), "TTH1", 4);
  std::uint64_t length = pickle->size();
  for (int i = 0; i < 8; ++i) out[8 + i] = static_cast<std::byte>(length >> (8 * i));
  out.insert(out.end(), pickle->begin(), pickle->end());
  return Bytes(std::move(out));
}

// A result made of anything but plain data unpickles to pickle.call / pickle.global values.
bool plain(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::custom: return false;
    case Value::Kind::list:
    case Value::Kind::tuple:
    case Value::Kind::set:
    case Value::Kind::frozenset:
      return std::all_of(v.items().begin(), v.items().end(), plain);
    case Value::Kind::dict:
      return std::all_of(v.entries().begin(), v.entries().end(), [](const auto& e) { return plain(e.first) && plain(e.second); });
    default: return true;
  }
}

Value read_cluster_value(std::span<const std::byte> data, bool result = true) {
  auto little = [&](std::size_t at, int size) {
    std::uint64_t v = 0;
    for (int i = 0; i < size; ++i) v |= std::uint64_t(static_cast<std::uint8_t>(data[at + i])) << (8 * i);
    return v;
  };
  if (data.size() < 16 || std::memcmp(data.data(), "TTH1", 4) != 0) throw RemoteError(ErrorKind::bad_request, "not a cluster value");
  std::uint64_t buffers = little(4, 4), length = little(8, 8);
  std::uint64_t start = 16 + 16 * buffers;
  if (start > data.size() || length > data.size() - start) throw RemoteError(ErrorKind::bad_request, "a cluster value's pickle runs past its end");
  auto value = api::unpickle_plain(data.subspan(start, length));
  if (!value) throw TypeMismatch("the actor's result cannot be read in C++: " + value.error().message);
  if (result && !plain(*value))
    throw TypeMismatch("the actor's result is not plain data (" + value->repr().substr(0, 120) +
                       "): only None, bool, int, float, str, bytes, list, tuple, dict, set and frozenset can reach C++");
  return std::move(*value);
}

Bytes read_shared_memory(const std::string& name, std::size_t size) {
  int fd = ::shm_open(name.c_str(), O_RDONLY, 0);
  if (fd < 0) return Bytes();
  void* map = size ? ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0) : nullptr;
  ::close(fd);
  if (map == MAP_FAILED) return Bytes();
  Bytes copy(map, size);  // the store may spill the segment once we let go: keep our own copy
  if (map) ::munmap(map, size);
  return copy;
}

// The error a task's (exception, traceback text, task name) value becomes.
RemoteError actor_error(std::span<const std::byte> data) {
  Value error;
  try {
    error = read_cluster_value(data, false);
  } catch (const std::exception& e) {
    return RemoteError(ErrorKind::failed, std::string("the actor raised an exception C++ cannot read: ") + e.what());
  }
  if (error.kind() != Value::Kind::tuple || error.size() != 3) return RemoteError(ErrorKind::failed, "the actor failed: " + error.repr());
  std::string type, message;
  const Value& exception = error[0];
  if (exception.kind() == Value::Kind::custom && exception.custom_name() == "pickle.call") {
    const Value& call = exception.custom_state();
    if (call[0].kind() == Value::Kind::custom) type = call[0].custom_state().as_string();
    if (call[1].kind() == Value::Kind::tuple && call[1].size() > 0)
      message = call[1][0].kind() == Value::Kind::string ? call[1][0].as_string() : call[1][0].repr();
  }
  std::string traceback = error[1].kind() == Value::Kind::string ? error[1].as_string() : "";
  return RemoteError(ErrorKind::failed, message, type, traceback);
}

}  // namespace

Value ClusterCore::result_of(const Value& value_map, const Bytes& id) {
  if (const Value* inline_value = value_map.find(Value("inline"))) return read_cluster_value(inline_value->as_bytes().span());
  if (const Value* error = value_map.find(Value("error"))) throw actor_error(error->as_bytes().span());
  if (const Value* failure = value_map.find(Value("failure")))
    throw RemoteError(ErrorKind::failed, (*failure)[1].as_string(), "tether." + (*failure)[0].as_string());
  if (const Value* shm = value_map.find(Value("shm"))) {
    auto size = static_cast<std::size_t>((*shm)[1].as_uint64());
    Bytes copy = read_shared_memory((*shm)[0].as_string(), size);
    if ((*shm)[2].as_bool()) node_.oneway("unmapped", Value{Value(id)});
    if (copy.size() == size && size > 0) return read_cluster_value(copy.span());
  }
  // In another node's store, or spilled before we read it: get brings it here and pins it.
  Value answer = node_.with_timeout(std::chrono::milliseconds(0)).call("get", Value{Value(id)});
  if (answer.kind() != Value::Kind::list || answer.size() != 1) throw RemoteError(ErrorKind::failed, "node.get answered " + answer.repr());
  if (answer[0].find(Value("shm")) == nullptr) return result_of(answer[0], id);
  const Value& shm = *answer[0].find(Value("shm"));
  auto size = static_cast<std::size_t>(shm[1].as_uint64());
  Bytes copy = read_shared_memory(shm[0].as_string(), size);
  node_.oneway("unmapped", Value{Value(id)});
  if (copy.size() != size) throw RemoteError(ErrorKind::failed, "the actor's result vanished from shared memory");
  return read_cluster_value(copy.span());
}

}  // namespace detail

Cluster::Cluster(Client& client, std::string_view address) : core_(std::make_shared<detail::ClusterCore>(client, address)) {}

Actor Cluster::actor(const std::string& name) const {
  Value info = core_->node().call("get_actor", name);
  return Actor(core_, info.find(Value("id"))->as_bytes(), info.find(Value("class_name"))->as_string(),
               from_value<std::vector<std::string>>(*info.find(Value("methods"))));
}

Value Actor::call_values(std::string_view method, Value::Items args, Value::Entries kwargs) const {
  Bytes result_id = cluster_->new_id();
  Value spec = Value::dict({
      {Value("id"), Value(cluster_->new_id())},
      {Value("actor"), Value(id_)},
      {Value("method"), Value(method)},
      {Value("name"), Value(class_name_ + "." + std::string(method))},
      {Value("args"), Value(detail::cluster_value(Value::tuple({Value::tuple(std::move(args)), Value::dict(std::move(kwargs))})))},
      {Value("deps"), Value::list()},
      {Value("contained"), Value::list()},
      {Value("returns"), Value{Value(result_id)}},
  });
  // The call waits as long as the actor runs; the node answers when it is done or the actor died.
  Value answer = cluster_->node().with_timeout(std::chrono::milliseconds(0)).call("actor_call", spec);
  struct Release {
    const Proxy& node;
    const Bytes& id;
    ~Release() {
      try {
        node.oneway("release", Value{Value(id)});
      } catch (const RemoteError&) {
        // the connection is gone, and the node released everything it held for us
      }
    }
  } release{cluster_->node(), result_id};
  if (answer.kind() != Value::Kind::list || answer.size() != 1) throw RemoteError(ErrorKind::failed, "node.actor_call answered " + answer.repr());
  return cluster_->result_of(answer[0], result_id);
}

}  // namespace tether
