// Tuple spaces, topics and groups from C++ (see include/tether/coordination.hpp and
// docs/protocol.md sections 14-16).
#include "tether/coordination.hpp"

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "api/client_core.hpp"

namespace tether {

Subscription& Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    cancel();
    cancel_ = std::exchange(other.cancel_, nullptr);
  }
  return *this;
}

void Subscription::cancel() {
  if (auto cancel = std::exchange(cancel_, nullptr)) {
    try {
      cancel();
    } catch (const std::exception&) {
      // the server or the connection is gone, and the subscription with it
    }
  }
}

namespace {

// Hands numbered items on in the order of their numbers (from 1), whichever callback thread
// brought them, one at a time.
class Ordered {
 public:
  void arrived(std::uint64_t number, Value item, const std::function<void(Value&)>& deliver) {
    std::unique_lock lock(mutex_);
    waiting_.emplace(number, std::move(item));
    if (delivering_) return;  // the thread delivering now takes this one too, in its turn
    delivering_ = true;
    while (!waiting_.empty() && waiting_.begin()->first == next_) {
      Value ready = std::move(waiting_.begin()->second);
      waiting_.erase(waiting_.begin());
      ++next_;
      lock.unlock();
      deliver(ready);
      lock.lock();
    }
    delivering_ = false;
  }

 private:
  std::mutex mutex_;
  std::map<std::uint64_t, Value> waiting_;
  std::uint64_t next_ = 1;
  bool delivering_ = false;
};

Proxy service_proxy(Client& client, std::string_view address, const char* object) {
  auto endpoint = std::string(address);
  return client.proxy("tether://" + endpoint + "/" + object);
}

// Tuple spaces take nested sequences as arrays, never as tuples (protocol 14.1).
Value plain_field(const Value& v) {
  if (v.kind() != Value::Kind::tuple && v.kind() != Value::Kind::list) return v;
  Value::Items items;
  for (const auto& item : v.items()) items.push_back(plain_field(item));
  return Value(std::move(items));
}

Value plain_tuple(const Tuple& tuple) {
  Value::Items fields;
  for (const auto& field : tuple) fields.push_back(plain_field(field));
  return Value(std::move(fields));
}

// A call that may wait `timeout` seconds at the server: the client waits that long and a margin.
Proxy waiting_proxy(const Proxy& proxy, std::optional<double> timeout) {
  if (!timeout) return proxy.with_timeout(std::chrono::milliseconds(0));
  return proxy.with_timeout(std::chrono::milliseconds(static_cast<std::int64_t>(*timeout * 1000) + 30000));
}

std::shared_ptr<Servant> sink_servant(std::string method, std::function<void(const Args&)> on_call) {
  auto servant = std::make_shared<Servant>();
  servant->oneway(std::move(method), [on_call = std::move(on_call)](const Args& args) {
    on_call(args);
    return Value();
  });
  return servant;
}

}  // namespace

// ---- tuple spaces ----

Value any_field() { return Value::dict({{Value("any"), Value(true)}}); }
Value type_field(std::string_view type_name) { return Value::dict({{Value("type"), Value(type_name)}}); }

TupleSpace::TupleSpace(Client& client, std::string_view address, std::string name)
    : proxy_(service_proxy(client, address, "tuplespace")), name_(std::move(name)) {
  if (name_.empty() || name_.size() > 256) throw std::invalid_argument("a tuple space name has 1 to 256 bytes");
}

void TupleSpace::out(const Tuple& tuple, std::optional<double> lease_seconds) const {
  proxy_.call<void>("out", name_, plain_tuple(tuple), lease_seconds);
}

std::optional<Tuple> TupleSpace::wait_for(const char* method, const Tuple& templ, std::optional<double> timeout) const {
  Value answer = waiting_proxy(proxy_, timeout).call(method, name_, plain_tuple(templ), timeout);
  if (answer.is_nil()) return std::nullopt;
  return answer.items();
}

std::optional<Tuple> TupleSpace::take(const Tuple& templ, std::optional<double> timeout_seconds) const {
  return wait_for("take", templ, timeout_seconds);
}

std::optional<Tuple> TupleSpace::read(const Tuple& templ, std::optional<double> timeout_seconds) const {
  return wait_for("read", templ, timeout_seconds);
}

std::uint64_t TupleSpace::count() const { return proxy_.call<std::uint64_t>("count", name_); }

Subscription TupleSpace::notify(const Tuple& templ, std::function<void(Tuple)> on_tuple) const {
  auto ordered = std::make_shared<Ordered>();
  auto sink = sink_servant("tuple", [ordered, on_tuple = std::move(on_tuple)](const Args& args) {
    ordered->arrived(args.get<std::uint64_t>(1), args[2], [&](Value& tuple) { on_tuple(tuple.items()); });
  });
  auto watch = proxy_.call<std::uint64_t>("notify", name_, plain_tuple(templ), detail::export_on(proxy_, sink));
  return Subscription([proxy = proxy_, name = name_, watch, sink] { proxy.oneway("unnotify", name, watch); });
}

// ---- topics ----

Topics::Topics(Client& client, std::string_view address) : proxy_(service_proxy(client, address, "topics")) {}

void Topics::publish(const std::string& subject, const Value& value, bool retain) const {
  proxy_.call<void>("publish", subject, value, retain);
}

Subscription Topics::subscribe(const std::string& pattern, std::function<void(const std::string&, const Value&)> on_message) const {
  auto ordered = std::make_shared<Ordered>();
  auto sink = sink_servant("message", [ordered, on_message = std::move(on_message)](const Args& args) {
    Value pair = Value::tuple({args[2], args[3]});
    ordered->arrived(args.get<std::uint64_t>(1), std::move(pair), [&](Value& p) { on_message(p[0].as_string(), p[1]); });
  });
  auto id = proxy_.call<std::uint64_t>("subscribe", pattern, detail::export_on(proxy_, sink));
  return Subscription([proxy = proxy_, id, sink] { proxy.oneway("unsubscribe", id); });
}

Subscription Topics::announce(const std::string& name) const {
  auto id = proxy_.call<std::uint64_t>("announce", name);
  return Subscription([proxy = proxy_, id] { proxy.oneway("withdraw", id); });
}

std::vector<std::pair<std::string, Value>> Topics::retained(const std::string& pattern) const {
  std::vector<std::pair<std::string, Value>> out;
  Value answer = proxy_.call("retained", pattern);
  for (const auto& [subject, value] : answer.entries()) out.emplace_back(subject.as_string(), value);
  return out;
}

// ---- groups ----

struct Group::State : std::enable_shared_from_this<Group::State> {
  Proxy proxy;
  std::string group;
  std::uint64_t member = 0;
  std::string private_name;
  std::mutex mutex;
  std::condition_variable changed;
  bool joined = false;
  bool left = false;
  bool flushing = false;
  int sending = 0;
  std::optional<View> view;
  std::deque<GroupEvent> ready;                                        // for receive()
  std::deque<std::pair<GroupEvent, std::optional<std::uint64_t>>> held;  // behind an unreleased safe message
  std::set<std::uint64_t> released;
  std::optional<RemoteError> failure;
  Ordered ordered;
  std::thread heartbeat;

  void on_event(const Value& event);
  void deliver_held_locked();
  void flush();
  void beat(std::chrono::milliseconds interval);
};

void Group::State::on_event(const Value& event) {
  const auto& kind = event[0].as_string();
  if (kind == "flush") {
    {
      std::lock_guard lock(mutex);
      flushing = true;
    }
    std::thread([self = shared_from_this()] { self->flush(); }).detach();  // waits for this member's sends
  } else if (kind == "view") {
    View v;
    v.id = event[1].as_uint64();
    v.members = from_value<std::vector<std::string>>(event[2]);
    v.joined = from_value<std::vector<std::string>>(event[3]);
    for (const auto& pair : event[4].items()) v.left.emplace_back(pair[0].as_string(), pair[1].as_string());
    std::lock_guard lock(mutex);
    view = v;
    flushing = false;
    held.emplace_back(std::move(v), std::nullopt);
    deliver_held_locked();
  } else if (kind == "message") {
    auto seq = event[1].as_uint64();
    bool safe = event[5].as_bool();
    if (safe) proxy.oneway("ack", group, member, seq);
    std::lock_guard lock(mutex);
    held.emplace_back(GroupMessage{event[2].as_string(), event[3], event[4].as_string()}, safe ? std::optional(seq) : std::nullopt);
    deliver_held_locked();
  } else if (kind == "safe") {
    std::lock_guard lock(mutex);
    released.insert(event[1].as_uint64());
    deliver_held_locked();
  } else if (kind == "removed") {  // failure detection took this member out: receive says so
    std::lock_guard lock(mutex);
    failure = RemoteError(ErrorKind::disconnected, "this member was removed from group '" + group + "': no sign of life within its failure_timeout");
    left = true;
    changed.notify_all();
  }
}

// A safe message waits until every member has it, and whatever came after it waits too.
void Group::State::deliver_held_locked() {
  while (!held.empty()) {
    auto& [event, safe_seq] = held.front();
    if (safe_seq && !released.count(*safe_seq)) break;
    if (safe_seq) released.erase(*safe_seq);
    ready.push_back(std::move(event));
    held.pop_front();
  }
  changed.notify_all();
}

// Everything this member sent in the old view has been answered (so it reached the head) before
// it says flushed; new sends wait for the new view.
void Group::State::flush() {
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return sending == 0; });
  }
  try {
    proxy.oneway("flushed", group, member);
  } catch (const RemoteError&) {
    // the head is gone; the heartbeat reports it
  }
}

void Group::State::beat(std::chrono::milliseconds interval) {
  for (;;) {
    {
      std::unique_lock lock(mutex);
      if (changed.wait_for(lock, interval, [&] { return left; })) return;
    }
    try {
      proxy.oneway("alive", group, member);
    } catch (const RemoteError& e) {
      std::lock_guard lock(mutex);
      failure = RemoteError(ErrorKind::disconnected, "group '" + group + "' is gone: " + e.message());
      left = true;
      changed.notify_all();
      return;
    }
  }
}

Group::Group(Client& client, std::string_view address, std::string group, double failure_timeout_seconds)
    : state_(std::make_shared<State>()) {
  if (!(failure_timeout_seconds > 0 && failure_timeout_seconds <= 3600))
    throw std::invalid_argument("failure_timeout must be between 0 and 3600 seconds");
  auto& s = *state_;
  s.proxy = service_proxy(client, address, "groups");
  s.group = std::move(group);
  std::weak_ptr<State> weak = state_;
  auto sink = sink_servant("events", [weak](const Args& args) {
    auto state = weak.lock();
    if (!state) return;
    {
      std::unique_lock lock(state->mutex);
      state->changed.wait(lock, [&] { return state->joined; });  // acks and flushes name this member
    }
    state->ordered.arrived(args.get<std::uint64_t>(0), args[1], [&](Value& batch) {
      for (const auto& event : batch.items()) state->on_event(event);
    });
  });
  Value info = s.proxy.call("join", s.group, detail::export_on(s.proxy, sink), failure_timeout_seconds);
  {
    std::lock_guard lock(s.mutex);
    s.member = info.find(Value("member"))->as_uint64();
    s.private_name = info.find(Value("name"))->as_string();
    s.joined = true;
    s.changed.notify_all();
  }
  auto interval = std::chrono::milliseconds(static_cast<std::int64_t>(failure_timeout_seconds * 250));
  s.heartbeat = std::thread([state = state_.get(), interval] { state->beat(interval); });
  std::unique_lock lock(s.mutex);
  if (s.changed.wait_for(lock, std::chrono::seconds(60), [&] { return s.view.has_value() || s.failure; })) return;
  s.left = true;  // the heartbeat ends before the state goes
  s.changed.notify_all();
  lock.unlock();
  s.heartbeat.join();
  throw RemoteError(ErrorKind::timeout, "joining group '" + s.group + "': no view came within 60 s");
}

Group::~Group() {
  try {
    leave();
  } catch (const std::exception&) {
    // the head is gone: nothing to leave
  }
  if (state_->heartbeat.joinable()) state_->heartbeat.join();
}

void Group::send(const Value& data, const std::string& order, const std::optional<std::string>& to, bool self_discard) {
  static const std::set<std::string> orders{"unreliable", "reliable", "fifo", "causal", "agreed", "safe"};
  if (!orders.count(order)) throw std::invalid_argument("unknown order '" + order + "'");
  auto& s = *state_;
  {
    std::unique_lock lock(s.mutex);
    s.changed.wait(lock, [&] { return !s.flushing || s.left; });
    if (s.left) throw RemoteError(ErrorKind::failed, "send after leave: this member left group '" + s.group + "'", "builtins.ValueError");
    ++s.sending;
  }
  auto done = [&] {
    std::lock_guard lock(s.mutex);
    --s.sending;
    s.changed.notify_all();
  };
  try {
    s.proxy.call<void>("send", s.group, s.member, data, order, to, self_discard);
  } catch (...) {
    done();
    throw;
  }
  done();
}

std::optional<GroupEvent> Group::receive(std::optional<std::chrono::milliseconds> timeout) {
  auto& s = *state_;
  std::unique_lock lock(s.mutex);
  auto has_something = [&] { return !s.ready.empty() || s.failure || s.left; };
  if (timeout) {
    if (!s.changed.wait_for(lock, *timeout, has_something)) return std::nullopt;
  } else {
    s.changed.wait(lock, has_something);
  }
  if (!s.ready.empty()) {
    GroupEvent event = std::move(s.ready.front());
    s.ready.pop_front();
    return event;
  }
  if (s.failure) throw *s.failure;
  return std::nullopt;  // left
}

std::vector<std::string> Group::members() const {
  std::lock_guard lock(state_->mutex);
  return state_->view ? state_->view->members : std::vector<std::string>{};
}

const std::string& Group::private_name() const { return state_->private_name; }

void Group::leave() {
  auto& s = *state_;
  {
    std::lock_guard lock(s.mutex);
    if (s.left) return;
    s.left = true;
    s.changed.notify_all();
  }
  s.proxy.call<void>("leave", s.group, s.member);
}

}  // namespace tether
