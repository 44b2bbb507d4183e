// Groups: membership, views with a flush, sequenced messages and safe delivery (see groups.hpp).
#include "groups/groups.hpp"

#include <algorithm>

namespace tether::groups {

using service::Call;
using service::ReplyBuilder;

namespace {

const std::set<std::string, std::less<>> kOrders = {"unreliable", "reliable", "fifo", "causal", "agreed", "safe"};
constexpr auto kSweepInterval = std::chrono::milliseconds(100);
constexpr double kDefaultFailureSeconds = 5.0;

void refuse(Call& call, const Error& error) {
  if (error.kind == ErrorKind::bad_request) return call.fail(ErrorKind::failed, error.message, "builtins.ValueError");
  call.fail(error);
}

const char* reason_of(int kind) {
  static const char* reasons[] = {"join", "leave", "disconnect"};
  return reasons[kind];
}

}  // namespace

Groups::Groups(asio::io_context& io, Limits limits) : Service("groups"), io_(io), limits_(limits), sweep_timer_(io) {
  add_method("join", [this](Call&& call) { join(std::move(call)); });
  add_method("leave", [this](Call&& call) { leave(std::move(call)); });
  add_method("send", [this](Call&& call) { send(std::move(call)); });
  add_method("flushed", [this](Call&& call) { flushed(std::move(call)); }, true);
  add_method("ack", [this](Call&& call) { ack(std::move(call)); }, true);
  add_method("alive", [this](Call&& call) { alive(std::move(call)); }, true);
  arm_sweep();
}

Groups::~Groups() { sweep_timer_.cancel(); }

void Groups::stop() { sweep_timer_.cancel(); }

// ---- arguments ----

Result<Groups::Group*> Groups::group_of(const Call& call, bool create) {
  auto name = service::as_str(call.param(0, "group"), call.method() + ": argument 'group'");
  if (!name) return name.error();
  if (name->empty() || name->size() > limits_.max_name || name->find('#') != std::string_view::npos)
    return Error{ErrorKind::bad_request, "a group name has 1 to " + std::to_string(limits_.max_name) + " characters and no '#'"};
  auto it = groups_.find(std::string(*name));
  if (it != groups_.end()) return &it->second;
  if (!create) return nullptr;
  auto& group = groups_[std::string(*name)];
  group.name = std::string(*name);
  return &group;
}

// The member the argument at `index` names, if the caller's connection is the one that joined it.
Groups::Member* Groups::member_of(Group& group, const Call& call, std::size_t index) {
  auto id = service::as_u64(call.param(index, "member"), "member");
  if (!id) return nullptr;
  auto it = group.known.find(*id);
  if (it == group.known.end() || it->second.connection_id != call.connection().id()) return nullptr;
  it->second.last_heard = Clock::now();
  return &it->second;
}

// ---- the methods ----

// join(group, sink, failure_timeout=None) -> {"member": id, "name": private name}. The member's
// first event is the view that has it.
void Groups::join(Call&& call) {
  auto group = group_of(call, true);
  if (!group) return refuse(call, group.error());
  auto sink = service::as_u64(call.param(1, "sink"), "groups.join: argument 'sink'");
  if (!sink) return refuse(call, sink.error());
  double seconds = kDefaultFailureSeconds;
  if (const auto* timeout = call.param(2, "failure_timeout"); timeout && timeout->type != msgpack::type::NIL) {
    auto value = service::as_number(timeout, "groups.join: argument 'failure_timeout'");
    if (!value) return refuse(call, value.error());
    if (!(*value > 0) || *value > 3600) return refuse(call, Error{ErrorKind::bad_request, "failure_timeout must be between 0 and 3600 seconds"});
    seconds = *value;
  }
  Member member;
  member.id = next_member_++;
  member.name = (*group)->name + "#" + std::to_string(member.id);
  member.connection = call.connection_ptr();
  member.connection_id = call.connection().id();
  member.sink = *sink;
  member.failure_timeout = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  member.last_heard = Clock::now();
  ReplyBuilder reply;
  reply.packer().pack_map(2);
  wire::pack_str(reply.packer(), "member");
  reply.packer().pack_uint64(member.id);
  wire::pack_str(reply.packer(), "name");
  wire::pack_str(reply.packer(), member.name);
  auto id = member.id;
  (*group)->known[id] = std::move(member);
  call.reply(std::move(reply));
  change(**group, {Change::Kind::join, id});
}

// leave(group, member) -> nil: the others get a view without it (reason "leave").
void Groups::leave(Call&& call) {
  auto group = group_of(call, false);
  if (!group) return refuse(call, group.error());
  auto* member = *group ? member_of(**group, call, 1) : nullptr;
  if (!member) return refuse(call, Error{ErrorKind::bad_request, "groups.leave: not a member of this group (left already?)"});
  auto id = member->id;
  call.reply_nil();
  remove_member(**group, id, Change::Kind::leave);
}

// send(group, member, data, order, to=None, self_discard=False) -> nil once sequenced.
void Groups::send(Call&& call) {
  auto group = group_of(call, false);
  if (!group) return refuse(call, group.error());
  auto* member = *group ? member_of(**group, call, 1) : nullptr;
  if (!member || std::find((*group)->members.begin(), (*group)->members.end(), member->id) == (*group)->members.end())
    return refuse(call, Error{ErrorKind::bad_request, "groups.send: not a member of the group's current view (not joined yet, or left)"});
  auto& g = **group;  // a group exists from here on (a member was found in it)
  auto order = service::as_str(call.param(3, "order"), "groups.send: argument 'order'");
  if (!order) return refuse(call, order.error());
  if (!kOrders.count(*order))
    return refuse(call, Error{ErrorKind::bad_request, "unknown order '" + std::string(*order) + "': unreliable, reliable, fifo, causal, agreed or safe"});
  if (g.flushing && !g.awaiting_flush.count(member->id))
    return refuse(call, Error{ErrorKind::bad_request, "groups.send: sent after the member's flush, before the new view"});
  const auto* data = call.param(2, "data");
  if (!data) return refuse(call, Error{ErrorKind::bad_request, "groups.send: argument 'data' is missing"});
  msgpack::sbuffer buffer;
  service::ResolvedPacker packer(buffer);
  if (auto packed = service::pack_resolved(call, *data, packer); !packed) return refuse(call, packed.error());
  if (buffer.size() > limits_.max_message_bytes)
    return refuse(call, Error{ErrorKind::bad_request, "the message is larger than the limit of " + std::to_string(limits_.max_message_bytes) + " bytes"});
  std::vector<std::uint64_t> recipients;
  const auto* to = call.param(4, "to");
  if (to && to->type != msgpack::type::NIL) {
    auto name = service::as_str(to, "groups.send: argument 'to'");
    if (!name) return refuse(call, name.error());
    for (auto id : g.members)
      if (g.known.at(id).name == *name) recipients.push_back(id);
    if (recipients.empty()) return refuse(call, Error{ErrorKind::bad_request, "no member named '" + std::string(*name) + "' in the group's view"});
  } else {
    const auto* discard = call.param(5, "self_discard");
    bool self_discard = discard && discard->type == msgpack::type::BOOLEAN && discard->via.boolean;
    for (auto id : g.members)
      if (!(self_discard && id == member->id)) recipients.push_back(id);
  }
  bool safe = *order == "safe";
  auto seq = g.next_seq++;
  std::string sender = member->name, order_name(*order), value(buffer.data(), buffer.size());
  call.reply_nil();
  for (auto id : recipients)
    emit(g.known.at(id), "message", [&](wire::Packer& p) {
      p.pack_uint64(seq);
      wire::pack_str(p, sender);
      p.pack_bin_body(value.data(), static_cast<std::uint32_t>(value.size()));  // raw msgpack
      wire::pack_str(p, order_name);
      p.pack(safe);
    }, 5);
  if (safe && !recipients.empty()) {
    g.unacked[seq] = std::set<std::uint64_t>(recipients.begin(), recipients.end());
    g.safe_recipients[seq] = recipients;
  }
}

// flushed(group, member), oneway: the member sent everything it will send in this view.
void Groups::flushed(Call&& call) {
  auto group = group_of(call, false);
  if (!group || !*group) return;
  auto* member = member_of(**group, call, 1);
  if (!member || !(*group)->flushing) return;
  (*group)->awaiting_flush.erase(member->id);
  if ((*group)->awaiting_flush.empty()) install_view(**group);
}

// ack(group, member, seq), oneway: the member has received safe message `seq`.
void Groups::ack(Call&& call) {
  auto group = group_of(call, false);
  if (!group || !*group) return;
  auto* member = member_of(**group, call, 1);
  auto seq = service::as_u64(call.param(2, "seq"), "seq");
  if (!member || !seq) return;
  auto it = (*group)->unacked.find(*seq);
  if (it != (*group)->unacked.end()) it->second.erase(member->id);
  release_safe(**group);
}

// alive(group, member), oneway: the member's heartbeat (any request from it counts too).
void Groups::alive(Call&& call) {
  auto group = group_of(call, false);
  if (group && *group) member_of(**group, call, 1);
}

void Groups::on_connection_closed(rpc::Connection& connection) {
  for (auto& [name, group] : groups_) {
    std::vector<std::uint64_t> gone;
    for (const auto& [id, member] : group.known)
      if (member.connection_id == connection.id()) gone.push_back(id);
    for (auto id : gone) remove_member(group, id, Change::Kind::disconnect);
  }
}

// ---- views ----

void Groups::change(Group& group, Change c) {
  group.pending.push_back(c);
  if (!group.flushing) start_flush(group);
}

// Before a view changes, every member that stays sends what it sent in the old view (its flush);
// the new view is installed once all have (or were found dead), so each message is delivered in
// the view it was sent in.
void Groups::start_flush(Group& group) {
  group.flushing = true;
  group.flush_started = Clock::now();
  std::set<std::uint64_t> going;
  for (const auto& c : group.pending)
    if (c.kind != Change::Kind::join) going.insert(c.member);
  group.awaiting_flush.clear();
  for (auto id : group.members)
    if (!going.count(id)) group.awaiting_flush.insert(id);
  if (group.awaiting_flush.empty()) return install_view(group);
  for (auto id : group.awaiting_flush) emit(group.known.at(id), "flush", [](wire::Packer&) {}, 0);
}

void Groups::install_view(Group& group) {
  std::vector<std::string> joined;
  std::vector<std::pair<std::string, std::string>> left;
  for (const auto& c : group.pending) {
    auto it = group.known.find(c.member);
    if (it == group.known.end()) continue;
    if (c.kind == Change::Kind::join) {
      group.members.push_back(c.member);
      joined.push_back(it->second.name);
    } else {
      std::erase(group.members, c.member);
      left.emplace_back(it->second.name, reason_of(static_cast<int>(c.kind)));
      if (c.kind == Change::Kind::disconnect) {
        // Removed for silence, it may still be there (a stopped process that resumes): it is told,
        // after whatever it still had coming, so it stops waiting. A closed connection gets nothing.
        emit(it->second, "removed", [](wire::Packer& p) { wire::pack_str(p, "disconnect"); }, 1);
        send_outbox(it->second);
      }
      group.known.erase(it);
    }
  }
  group.pending.clear();
  group.flushing = false;
  group.awaiting_flush.clear();
  ++group.view;
  std::vector<std::string> names;
  for (auto id : group.members) names.push_back(group.known.at(id).name);
  for (auto id : group.members)
    emit(group.known.at(id), "view", [&](wire::Packer& p) {
      p.pack_uint64(group.view);
      p.pack(names);
      p.pack(joined);
      p.pack_array(static_cast<std::uint32_t>(left.size()));
      for (const auto& [name, reason] : left) {
        p.pack_array(2);
        wire::pack_str(p, name);
        wire::pack_str(p, reason);
      }
    }, 4);
}

void Groups::remove_member(Group& group, std::uint64_t id, Change::Kind why) {
  if (!group.known.count(id)) return;
  for (const auto& c : group.pending)
    if (c.member == id && c.kind != Change::Kind::join) return;  // already on its way out
  bool in_view = std::find(group.members.begin(), group.members.end(), id) != group.members.end();
  if (!in_view) {
    // A joiner not yet in a view: it simply does not join.
    std::erase_if(group.pending, [id](const Change& c) { return c.member == id; });
    group.known.erase(id);
  } else {
    group.pending.push_back({why, id});
  }
  for (auto& [seq, waiting] : group.unacked) waiting.erase(id);
  release_safe(group);
  if (group.flushing) {
    group.awaiting_flush.erase(id);
    if (group.awaiting_flush.empty()) install_view(group);
  } else if (in_view) {
    start_flush(group);
  }
}

// Safe messages every recipient has received are released to all of them, in sequence order.
void Groups::release_safe(Group& group) {
  while (!group.unacked.empty() && group.unacked.begin()->second.empty()) {
    auto seq = group.unacked.begin()->first;
    for (auto id : group.safe_recipients[seq]) {
      auto member = group.known.find(id);
      if (member != group.known.end()) emit(member->second, "safe", [seq](wire::Packer& p) { p.pack_uint64(seq); }, 1);
    }
    group.unacked.erase(group.unacked.begin());
    group.safe_recipients.erase(seq);
  }
}

// Events wait in the member's outbox until the io loop has run every request it read: then each
// member gets all of its events of that pass in one frame, one call on its side.
void Groups::emit(Member& member, const std::string& kind, const std::function<void(wire::Packer&)>& pack_body, std::uint32_t body_items) {
  std::vector<std::byte> event;
  wire::ByteSink sink{&event};
  wire::Packer p(sink);
  p.pack_array(1 + body_items);
  wire::pack_str(p, kind);
  pack_body(p);
  member.outbox.push_back(std::move(event));
  if (!std::exchange(flush_posted_, true)) asio::post(io_, [this] { send_outboxes(); });
}

// events(number, [[kind, ...], ...]), oneway, to each member with events waiting; numbered.
void Groups::send_outboxes() {
  flush_posted_ = false;
  for (auto& [name, group] : groups_)
    for (auto& [id, member] : group.known) send_outbox(member);
}

void Groups::send_outbox(Member& member) {
  if (member.outbox.empty()) return;
  auto events = std::move(member.outbox);
  member.outbox.clear();
  auto connection = member.connection.lock();
  if (!connection || !connection->is_open()) return;  // on_connection_closed removes it
  ReplyBuilder request;
  auto& p = request.packer();
  p.pack_array(2);
  p.pack_array(2);
  p.pack_uint64(++member.sent);
  p.pack_array(static_cast<std::uint32_t>(events.size()));
  for (const auto& event : events) p.pack_bin_body(reinterpret_cast<const char*>(event.data()), static_cast<std::uint32_t>(event.size()));  // raw msgpack
  p.pack_nil();
  std::string sink = "#";
  sink += std::to_string(member.sink);
  auto frame = request.take_request(sink, "events");
  frame.header.flags |= wire::kOneway;
  connection->call(std::move(frame), nullptr);
}

// ---- failure detection ----

void Groups::arm_sweep() {
  sweep_timer_.expires_after(kSweepInterval);
  sweep_timer_.async_wait([this](std::error_code ec) {
    if (ec) return;
    sweep();
    arm_sweep();
  });
}

// Members silent for longer than their failure timeout leave with reason "disconnect"; groups
// with nobody left are forgotten.
void Groups::sweep() {
  auto now = Clock::now();
  for (auto it = groups_.begin(); it != groups_.end();) {
    auto& group = it->second;
    std::vector<std::uint64_t> silent;
    for (const auto& [id, member] : group.known)
      if (now - member.last_heard > member.failure_timeout) silent.push_back(id);
    for (auto id : silent) remove_member(group, id, Change::Kind::disconnect);
    it = group.known.empty() && group.pending.empty() ? groups_.erase(it) : std::next(it);
  }
}

}  // namespace tether::groups
