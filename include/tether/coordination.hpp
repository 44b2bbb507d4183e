// The coordination services from C++: tuple spaces, topics and process groups, as served by a
// cluster's head or by `tether services` (docs/tuplespace.md, topics.md, groups.md). Each is
// reached at the server's "host:port" with the Client's secret, and talks with Python programs
// using the same spaces, subjects and groups.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "tether/client.hpp"

namespace tether {

// Ends a notification stream (a tuple space watch, a topic subscription or an announcement) when
// cancelled or destroyed. Notifications already on the way may still arrive.
class Subscription {
 public:
  Subscription() = default;
  explicit Subscription(std::function<void()> cancel) : cancel_(std::move(cancel)) {}
  Subscription(Subscription&& other) noexcept : cancel_(std::exchange(other.cancel_, nullptr)) {}
  Subscription& operator=(Subscription&& other) noexcept;
  ~Subscription() { cancel(); }
  void cancel();

 private:
  std::function<void()> cancel_;
};

// ---- tuple spaces ----

using Tuple = std::vector<Value>;  // fields: nil, bool, int, float, str, bytes, or nested lists of them

// Template fields: any value, a field of a type ("NoneType", "bool", "int", "float", "str",
// "bytes", "tuple"), or any other value, which matches on type and value.
Value any_field();
Value type_field(std::string_view type_name);

class TupleSpace {
 public:
  TupleSpace(Client& client, std::string_view address, std::string name);
  void out(const Tuple& tuple, std::optional<double> lease_seconds = std::nullopt) const;
  // Takes (removes) the oldest matching tuple, waiting up to `timeout_seconds` (none: for ever);
  // nullopt when none came in time. take_now / read_now do not wait (Linda's inp / rdp).
  std::optional<Tuple> take(const Tuple& templ, std::optional<double> timeout_seconds = std::nullopt) const;
  std::optional<Tuple> read(const Tuple& templ, std::optional<double> timeout_seconds = std::nullopt) const;
  std::optional<Tuple> take_now(const Tuple& templ) const { return take(templ, 0.0); }
  std::optional<Tuple> read_now(const Tuple& templ) const { return read(templ, 0.0); }
  std::uint64_t count() const;
  // Calls `on_tuple` with each matching tuple written from now on, in write order (on one of the
  // client's callback threads).
  Subscription notify(const Tuple& templ, std::function<void(Tuple)> on_tuple) const;
  const std::string& name() const { return name_; }

 private:
  std::optional<Tuple> wait_for(const char* method, const Tuple& templ, std::optional<double> timeout) const;
  Proxy proxy_;
  std::string name_;
};

// ---- topics ----

class Topics {
 public:
  Topics(Client& client, std::string_view address);
  void publish(const std::string& subject, const Value& value, bool retain = true) const;
  // `on_message(subject, value)` for each retained value that matches now, then each publish that
  // matches (`*` one segment, `#` any number), in order, on one of the client's callback threads.
  Subscription subscribe(const std::string& pattern, std::function<void(const std::string&, const Value&)> on_message) const;
  // Says this program is present under `name` (subscribers of "$presence.<name>" hear it) until
  // the returned subscription ends or the connection closes.
  Subscription announce(const std::string& name) const;
  std::vector<std::pair<std::string, Value>> retained(const std::string& pattern) const;

 private:
  Proxy proxy_;
};

// ---- process groups ----

struct View {
  std::uint64_t id = 0;
  std::vector<std::string> members;  // private names, in the same order at every member
  std::vector<std::string> joined;
  std::vector<std::pair<std::string, std::string>> left;  // (name, "leave" or "disconnect")
};
struct GroupMessage {
  std::string sender;  // the sender's private name
  Value data;
  std::string order;
};
using GroupEvent = std::variant<View, GroupMessage>;

class Group {
 public:
  // Joins `group`; returns once the first view (the one that adds this member) arrived.
  Group(Client& client, std::string_view address, std::string group, double failure_timeout_seconds = 5.0);
  ~Group();  // leave()
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  // order: "unreliable", "reliable", "fifo", "causal", "agreed" or "safe"; `to` a private name.
  void send(const Value& data, const std::string& order = "agreed", const std::optional<std::string>& to = std::nullopt,
            bool self_discard = false);
  // The next view or message in the group's order; nullopt when none came within `timeout`
  // (none: wait for ever). Throws RemoteError (disconnected) once the head is gone.
  std::optional<GroupEvent> receive(std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  std::vector<std::string> members() const;  // of the latest view
  const std::string& private_name() const;
  void leave();

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace tether
