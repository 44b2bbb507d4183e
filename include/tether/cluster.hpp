// Named actors of a running tether cluster, called from C++ (docs/cpp.md). The Python side makes
// them as usual: `Counter.options(name="counter").remote()`. Arguments and results are plain data
// (None, bool, int, float, str, bytes, list, tuple, dict, set): the cluster carries them as pickles.
//
//   tether::Client client({.secret = cluster_secret});
//   tether::Cluster cluster(client, "127.0.0.1:6380");          // the head, or any node
//   auto counter = cluster.actor("counter");
//   std::int64_t n = counter.call<std::int64_t>("incr", 5);
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tether/client.hpp"

namespace tether {

namespace detail {
class ClusterCore;
}

class Actor {
 public:
  Actor(std::shared_ptr<detail::ClusterCore> cluster, Bytes id, std::string class_name, std::vector<std::string> methods)
      : cluster_(std::move(cluster)), id_(std::move(id)), class_name_(std::move(class_name)), methods_(std::move(methods)) {}

  // Runs the method in the actor, in order with every other call to it, and waits for its result.
  // Throws RemoteError: the actor's exception (remote_type "builtins.KeyError", ..., with the
  // Python traceback), or "tether.ActorDiedError" and the other cluster failures.
  template <typename R = Value, typename... A>
  R call(std::string_view method, const A&... args) const {
    Value result = call_values(method, {to_value(args)...});
    if constexpr (!std::is_void_v<R>) return from_value<R>(result);
  }
  Value call_values(std::string_view method, Value::Items args, Value::Entries kwargs = {}) const;
  const std::string& class_name() const { return class_name_; }
  const std::vector<std::string>& methods() const { return methods_; }

 private:
  std::shared_ptr<detail::ClusterCore> cluster_;
  Bytes id_;
  std::string class_name_;
  std::vector<std::string> methods_;
};

class Cluster {
 public:
  // Connects to the node at "host:port" with the Client's secret (the cluster's) as a driver.
  Cluster(Client& client, std::string_view address);
  // The actor registered under `name`; throws RemoteError (builtins.ValueError) when there is none.
  Actor actor(const std::string& name) const;

 private:
  std::shared_ptr<detail::ClusterCore> core_;
};

}  // namespace tether
