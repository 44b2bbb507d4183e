// Topics: subjects, patterns, the last-value cache and presence (see topics.hpp).
#include "topics/topics.hpp"


namespace tether::topics {

using service::Call;
using service::ReplyBuilder;

namespace {

constexpr std::string_view kPresence = "$presence.";

void refuse(Call& call, const Error& error) {
  if (error.kind == ErrorKind::bad_request) return call.fail(ErrorKind::failed, error.message, "builtins.ValueError");
  call.fail(error);
}

}  // namespace

std::optional<std::vector<std::string>> split_subject(std::string_view subject) {
  std::vector<std::string> segments;
  std::size_t start = 0;
  while (true) {
    auto dot = subject.find('.', start);
    auto segment = subject.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (segment.empty()) return std::nullopt;
    segments.emplace_back(segment);
    if (dot == std::string_view::npos) return segments;
    start = dot + 1;
  }
}

namespace {

bool matches_from(const std::vector<std::string>& pattern, std::size_t p, const std::vector<std::string>& subject, std::size_t s) {
  if (p == pattern.size()) return s == subject.size();
  if (pattern[p] == "#") {
    for (std::size_t skip = s; skip <= subject.size(); ++skip)  // '#' takes none, one, or more segments
      if (matches_from(pattern, p + 1, subject, skip)) return true;
    return false;
  }
  if (s == subject.size()) return false;
  return (pattern[p] == "*" || pattern[p] == subject[s]) && matches_from(pattern, p + 1, subject, s + 1);
}

}  // namespace

bool pattern_matches(const std::vector<std::string>& pattern, const std::vector<std::string>& subject) {
  return matches_from(pattern, 0, subject, 0);
}

Topics::Topics(Limits limits) : Service("topics"), limits_(limits) {
  add_method("publish", [this](Call&& call) { publish(std::move(call)); });
  add_method("subscribe", [this](Call&& call) { subscribe(std::move(call)); });
  add_method("unsubscribe", [this](Call&& call) { unsubscribe(std::move(call)); }, true);
  add_method("announce", [this](Call&& call) { announce(std::move(call)); });
  add_method("withdraw", [this](Call&& call) { withdraw(std::move(call)); }, true);
  add_method("retained", [this](Call&& call) { retained_values(std::move(call)); });
}

Result<std::string> Topics::subject_of(const Call& call, std::size_t index, bool pattern) const {
  auto subject = service::as_str(call.param(index, pattern ? "pattern" : "subject"), call.method() + (pattern ? ": argument 'pattern'" : ": argument 'subject'"));
  if (!subject) return subject.error();
  auto segments = split_subject(*subject);
  if (!segments || subject->size() > limits_.max_subject) {
    std::string message(*subject);
    message += "' is not a subject: dot-separated non-empty names, at most " + std::to_string(limits_.max_subject) + " characters";
    return Error{ErrorKind::bad_request, "'" + message};
  }
  if (!pattern)
    for (const auto& segment : *segments)
      if (segment == "*" || segment == "#")
        return Error{ErrorKind::bad_request, "a subject to publish on has no wildcards ('" + std::string(*subject) + "')"};
  return std::string(*subject);
}

// publish(subject, value, retain=True): sent to every subscriber whose pattern matches; kept as
// the subject's last value when retained (a later subscriber gets it at once).
void Topics::publish(Call&& call) {
  auto subject = subject_of(call, 0, false);
  if (!subject) return refuse(call, subject.error());
  if (subject->starts_with(kPresence)) return refuse(call, Error{ErrorKind::bad_request, "subjects under $presence are announced, not published"});
  const auto* value = call.param(1, "value");
  if (!value) return refuse(call, Error{ErrorKind::bad_request, "topics.publish: argument 'value' is missing"});
  const auto* retain_arg = call.param(2, "retain");
  bool retain = !retain_arg || retain_arg->type != msgpack::type::BOOLEAN || retain_arg->via.boolean;
  msgpack::sbuffer buffer;
  service::ResolvedPacker packer(buffer);
  if (auto packed = service::pack_resolved(call, *value, packer); !packed) return refuse(call, packed.error());
  if (buffer.size() > limits_.max_value_bytes)
    return refuse(call, Error{ErrorKind::bad_request, "the value is larger than the limit of " + std::to_string(limits_.max_value_bytes) + " bytes"});
  if (retain && !retained_.count(*subject) && retained_.size() >= limits_.max_retained)
    return refuse(call, Error{ErrorKind::overloaded, "too many retained subjects (at most " + std::to_string(limits_.max_retained) + ")"});
  std::string encoded(buffer.data(), buffer.size());
  if (retain && store_)
    if (auto kept = store_->put("retained", *subject, encoded); !kept) return refuse(call, kept.error());
  call.reply_nil();
  deliver(*subject, encoded, retain);
}

void Topics::keep_in(state::StateStore& store) {
  store_ = &store;
  for (auto& [subject, value] : store.load("retained")) retained_[subject] = std::move(value);
}

// subscribe(pattern, sink) -> subscription id. The retained values of matching subjects follow at
// once, then every message published from now on, as message(id, number, subject, value) calls
// (oneway) to the caller's exported object `sink`.
void Topics::subscribe(Call&& call) {
  auto pattern = subject_of(call, 0, true);
  if (!pattern) return refuse(call, pattern.error());
  auto sink = service::as_u64(call.param(1, "sink"), "topics.subscribe: argument 'sink'");
  if (!sink) return refuse(call, sink.error());
  auto id = next_id_++;
  auto& subscription = subscriptions_[id];
  subscription.pattern = *split_subject(*pattern);
  subscription.connection = call.connection_ptr();
  subscription.connection_id = call.connection().id();
  subscription.sink = *sink;
  ReplyBuilder reply;
  reply.packer().pack_uint64(id);
  call.reply(std::move(reply));
  for (const auto& [subject, value] : retained_)
    if (pattern_matches(subscription.pattern, *split_subject(subject))) send(id, subscription, subject, value);
}

// unsubscribe(id), oneway: only the connection that subscribed can.
void Topics::unsubscribe(Call&& call) {
  auto id = service::as_u64(call.param(0, "id"), "id");
  if (!id) return;
  auto it = subscriptions_.find(*id);
  if (it != subscriptions_.end() && it->second.connection_id == call.connection().id()) subscriptions_.erase(it);
}

// announce(name) -> announcement id: "$presence.<name>" says {"present": true} (retained) until
// the caller withdraws it or its connection closes; then {"present": false}, not retained.
void Topics::announce(Call&& call) {
  auto name = subject_of(call, 0, false);
  if (!name) return refuse(call, name.error());
  auto id = next_id_++;
  announcements_[id] = {*name, call.connection().id()};
  ReplyBuilder reply;
  reply.packer().pack_uint64(id);
  call.reply(std::move(reply));
  presence(*name, true);
}

void Topics::withdraw(Call&& call) {
  auto id = service::as_u64(call.param(0, "id"), "id");
  if (!id) return;
  auto it = announcements_.find(*id);
  if (it == announcements_.end() || it->second.connection_id != call.connection().id()) return;
  auto name = it->second.name;
  announcements_.erase(it);
  presence(name, false);
}

// retained(pattern) -> {subject: value}: the last values of the matching subjects, now.
void Topics::retained_values(Call&& call) {
  auto pattern = subject_of(call, 0, true);
  if (!pattern) return refuse(call, pattern.error());
  auto segments = *split_subject(*pattern);
  std::vector<const std::pair<const std::string, std::string>*> found;
  for (const auto& entry : retained_)
    if (pattern_matches(segments, *split_subject(entry.first))) found.push_back(&entry);
  ReplyBuilder reply;
  auto& p = reply.packer();
  p.pack_map(static_cast<std::uint32_t>(found.size()));
  for (const auto* entry : found) {
    wire::pack_str(p, entry->first);
    p.pack_bin_body(entry->second.data(), static_cast<std::uint32_t>(entry->second.size()));  // raw msgpack
  }
  call.reply(std::move(reply));
}

void Topics::on_connection_closed(rpc::Connection& connection) {
  std::erase_if(subscriptions_, [&](const auto& entry) { return entry.second.connection_id == connection.id(); });
  std::vector<std::string> gone;
  for (auto it = announcements_.begin(); it != announcements_.end();) {
    if (it->second.connection_id == connection.id()) {
      gone.push_back(it->second.name);
      it = announcements_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& name : gone) presence(name, false);
}

void Topics::presence(const std::string& name, bool present) {
  // Another announcement of the same name keeps it present.
  if (!present)
    for (const auto& [id, announcement] : announcements_)
      if (announcement.name == name) return;
  msgpack::sbuffer buffer;
  service::ResolvedPacker packer(buffer);
  packer.pack_map(1);
  packer.pack(std::string("present"));
  packer.pack(present);
  std::string subject(kPresence);
  subject += name;
  if (!present) retained_.erase(subject);
  deliver(subject, std::string(buffer.data(), buffer.size()), present);
}

void Topics::deliver(const std::string& subject, const std::string& value, bool retain) {
  if (retain) retained_[subject] = value;
  auto segments = *split_subject(subject);
  for (auto& [id, subscription] : subscriptions_)
    if (pattern_matches(subscription.pattern, segments)) send(id, subscription, subject, value);
}

void Topics::send(std::uint64_t id, Subscription& subscription, const std::string& subject, const std::string& value) {
  auto connection = subscription.connection.lock();
  if (!connection || !connection->is_open()) return;  // on_connection_closed removes it
  ReplyBuilder request;
  auto& p = request.packer();
  p.pack_array(2);
  p.pack_array(4);
  p.pack_uint64(id);
  p.pack_uint64(++subscription.sent);
  wire::pack_str(p, subject);
  p.pack_bin_body(value.data(), static_cast<std::uint32_t>(value.size()));  // raw msgpack
  p.pack_nil();
  std::string sink = "#";  // (built in steps: GCC 12 warns falsely about "literal" + string here)
  sink += std::to_string(subscription.sink);
  auto frame = request.take_request(sink, "message");
  frame.header.flags |= wire::kOneway;
  connection->call(std::move(frame), nullptr);
}

}  // namespace tether::topics
