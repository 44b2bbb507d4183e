// Servants, their arguments, async replies and stream writers (see include/tether/servant.hpp).
#include "api/dispatcher.hpp"

namespace tether {

const Value& Args::operator[](std::size_t index) const {
  if (index >= positional_.size())
    throw TypeMismatch("missing argument " + std::to_string(index + 1) + " (got " + std::to_string(positional_.size()) + ")");
  return positional_[index];
}

const Value* Args::keyword(std::string_view name) const {
  for (const auto& [key, value] : keywords_)
    if (key.kind() == Value::Kind::string && key.as_string() == name) return &value;
  return nullptr;
}

namespace detail {
void wrong_arity(std::size_t expected, const Args& args) {
  if (!args.keywords().empty())
    throw TypeMismatch("takes positional arguments only, got keyword argument '" + args.keywords()[0].first.repr() + "'");
  throw TypeMismatch("takes " + std::to_string(expected) + " argument" + (expected == 1 ? "" : "s") + ", got " + std::to_string(args.size()));
}
}  // namespace detail

// ---- Reply ----

namespace {
void forget_async_call(const detail::CallData& call) {
  if (auto* state = api::state_of(*call.connection)) {
    std::lock_guard lock(state->mutex);
    state->async_calls.erase(call.request_id);
  }
}
}  // namespace

void Reply::send(Value value) const {
  if (call_->answered.exchange(true)) return;
  forget_async_call(*call_);
  if (!call_->oneway) api::send_value(*call_->connection, call_->request_id, wire::MessageType::reply, value, call_->where);
}

void Reply::fail(const RemoteError& error) const {
  if (call_->answered.exchange(true)) return;
  forget_async_call(*call_);
  if (!call_->oneway) api::send_error(*call_->connection, call_->request_id, error);
}

bool Reply::cancelled() const { return call_->cancelled || !call_->connection->is_open(); }

// ---- StreamWriter ----

bool StreamWriter::write(Value item) {
  auto& s = *stream_;
  {
    std::unique_lock lock(s.mutex);
    s.changed.wait(lock, [&] { return s.gone || s.credit > 0; });
    if (s.gone) return false;
    --s.credit;
  }
  api::send_value(*s.connection, s.request_id, wire::MessageType::stream_item, item, "stream item");
  return s.connection->is_open();
}

// ---- Servant ----

Servant& Servant::add(std::string name, Method method) {
  if (name.empty()) throw std::invalid_argument("a method needs a name");
  if (name[0] == '_' && name != "__call__") throw std::invalid_argument("method '" + name + "': names starting with '_' cannot be called remotely");
  methods_[std::move(name)] = std::move(method);
  return *this;
}

Servant& Servant::allow(std::vector<std::string> identities) { return allow("*", std::move(identities)); }

Servant& Servant::allow(const std::string& method, std::vector<std::string> identities) {
  if (identities.empty()) throw std::invalid_argument("allow needs at least one identity");
  allowed_[method] = std::move(identities);
  return *this;
}

bool Servant::allows(const std::string& method, const std::vector<std::string>& names) const {
  auto it = allowed_.find(method);
  if (it == allowed_.end()) it = allowed_.find("*");
  if (it == allowed_.end()) return true;
  for (const auto& name : names)
    if (std::find(it->second.begin(), it->second.end(), name) != it->second.end()) return true;
  return false;
}

const Servant::Method* Servant::find(const std::string& name) const {
  auto it = methods_.find(name);
  return it == methods_.end() ? nullptr : &it->second;
}

std::vector<std::string> Servant::names(Method::Kind kind) const {
  std::vector<std::string> out;
  for (const auto& [name, method] : methods_)
    if (method.kind == kind) out.push_back(name);
  return out;
}

std::vector<std::string> Servant::names() const {
  std::vector<std::string> out;
  for (const auto& [name, method] : methods_) out.push_back(name);
  return out;
}

}  // namespace tether
