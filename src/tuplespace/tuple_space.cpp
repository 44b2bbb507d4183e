// TupleSpaces: storage, indexed matching, blocked takers and readers, leases and watches (see
// tuple_space.hpp).
#include "tuplespace/tuple_space.hpp"

#include <iostream>
#include <optional>


namespace tether::tuplespace {

using service::Call;
using service::ReplyBuilder;

namespace {

constexpr std::int8_t kSegmentExt = 5;  // docs/protocol.md 8.1: large bytes travel out of band
constexpr int kMaxDepth = 32;

// What a tuple field may be: None, bool, int, float, str, bytes (in band or out of band), or an
// array of these; maps are reserved for template markers, and other ext types are refused.
Status check_field(const msgpack::object& value, int depth) {
  if (depth > kMaxDepth) return Error{ErrorKind::bad_request, "a tuple field is nested too deeply"};
  switch (value.type) {
    case msgpack::type::ARRAY:
      for (std::uint32_t i = 0; i < value.via.array.size; ++i)
        if (auto checked = check_field(value.via.array.ptr[i], depth + 1); !checked) return checked;
      return Ok{};
    case msgpack::type::EXT:
      if (value.via.ext.type() == kSegmentExt) return Ok{};
      return Error{ErrorKind::bad_request, "unsupported value in a tuple: tuple fields are None, bool, int (64-bit), float, "
                                           "str, bytes, or tuples of these"};
    case msgpack::type::MAP:
      return Error{ErrorKind::bad_request, "unsupported value in a tuple: a dict (tuple fields are None, bool, int, float, "
                                           "str, bytes, or tuples of these)"};
    default:
      return Ok{};
  }
}

// The field as msgpack that compares equal exactly when the values are equal in type and value:
// msgpack-c packs each integer and length in its smallest form, floats stay float64, and bytes
// sent out of band are packed in place (service::pack_resolved).
Result<std::string> canonical(const Call& call, const msgpack::object& value) {
  if (auto checked = check_field(value, 0); !checked) return checked.error();
  msgpack::sbuffer buffer;
  service::ResolvedPacker packer(buffer);
  if (auto packed = service::pack_resolved(call, value, packer); !packed) return packed.error();
  return std::string(buffer.data(), buffer.size());
}

// The already-encoded fields as one msgpack array, into a reply or request body.
void pack_fields(ReplyBuilder& body, const std::vector<std::string>& fields) {
  auto& p = body.packer();
  p.pack_array(static_cast<std::uint32_t>(fields.size()));
  for (const auto& field : fields) p.pack_bin_body(field.data(), static_cast<std::uint32_t>(field.size()));  // raw bytes
}

Result<std::optional<double>> seconds_of(const msgpack::object* value, std::string_view what) {
  if (!value || value->type == msgpack::type::NIL) return std::optional<double>();
  auto seconds = service::as_number(value, what);
  if (!seconds) return seconds.error();
  if (!(*seconds >= 0)) return Error{ErrorKind::bad_request, std::string(what) + " must not be negative (or NaN)"};
  return std::optional<double>(*seconds);
}

// Bad arguments raise ValueError in a Python caller (a tuple or template it should not have sent).
void refuse(Call& call, const Error& error) {
  if (error.kind == ErrorKind::bad_request) return call.fail(ErrorKind::failed, error.message, "builtins.ValueError");
  call.fail(error);
}

Clock::duration duration_of(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(std::min(seconds, 1e9)));
}

}  // namespace

FieldType type_of(std::string_view encoded) {
  auto b = static_cast<std::uint8_t>(encoded.empty() ? 0xc1 : encoded[0]);
  if (b == 0xc0) return FieldType::none;
  if (b == 0xc2 || b == 0xc3) return FieldType::boolean;
  if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3)) return FieldType::integer;
  if (b == 0xca || b == 0xcb) return FieldType::floating;
  if ((b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb)) return FieldType::text;
  if (b >= 0xc4 && b <= 0xc6) return FieldType::bytes;
  if ((b >= 0x90 && b <= 0x9f) || b == 0xdc || b == 0xdd) return FieldType::sequence;
  return FieldType::other;
}

std::optional<FieldType> type_named(std::string_view name) {
  static const std::map<std::string_view, FieldType> names = {
      {"NoneType", FieldType::none}, {"bool", FieldType::boolean}, {"int", FieldType::integer}, {"float", FieldType::floating},
      {"str", FieldType::text},      {"bytes", FieldType::bytes},  {"tuple", FieldType::sequence}};
  auto it = names.find(name);
  if (it == names.end()) return std::nullopt;
  return it->second;
}

bool Pattern::matches(const std::string& field, FieldType field_type) const {
  switch (kind) {
    case Kind::any: return true;
    case Kind::type: return field_type == type;
    case Kind::value: return field == encoded;
  }
  return false;
}

TupleSpaces::TupleSpaces(asio::io_context& io, Limits limits) : Service("tuplespace"), io_(io), limits_(limits), lease_timer_(io) {
  add_method("out", [this](Call&& call) { out(std::move(call)); });
  add_method("take", [this](Call&& call) { take_or_read(std::move(call), true); });
  add_method("read", [this](Call&& call) { take_or_read(std::move(call), false); });
  add_method("notify", [this](Call&& call) { notify(std::move(call)); });
  add_method("unnotify", [this](Call&& call) { unnotify(std::move(call)); }, true);
  add_method("count", [this](Call&& call) { count(std::move(call)); });
}

TupleSpaces::~TupleSpaces() { lease_timer_.cancel(); }

void TupleSpaces::stop() {
  lease_timer_.cancel();
  for (auto& [name, space] : spaces_)
    for (auto& waiter : space.waiters)
      if (waiter.timer) waiter.timer->cancel();
}

std::size_t TupleSpaces::size(const std::string& space) const {
  auto it = spaces_.find(space);
  return it == spaces_.end() ? 0 : it->second.tuples.size();
}

// ---- arguments ----

Result<TupleSpaces::Space*> TupleSpaces::space_for(const Call& call, bool create) {
  auto name = service::as_str(call.param(0, "space"), "tuplespace." + call.method().substr(11) + ": argument 'space'");
  if (!name) return name.error();
  if (name->empty() || name->size() > limits_.max_name)
    return Error{ErrorKind::bad_request, "a tuple space name has 1 to " + std::to_string(limits_.max_name) + " characters"};
  auto it = spaces_.find(std::string(*name));
  if (it != spaces_.end()) return &it->second;
  if (!create) return nullptr;
  if (spaces_.size() >= limits_.max_spaces) return Error{ErrorKind::overloaded, "too many tuple spaces (at most " + std::to_string(limits_.max_spaces) + ")"};
  auto& space = spaces_[std::string(*name)];
  space.name = std::string(*name);
  return &space;
}

Result<TupleSpaces::Tuple> TupleSpaces::parse_tuple(const Call& call, const msgpack::object* value) const {
  auto array = service::as_array(value, "the tuple");
  if (!array) return array.error();
  if ((*array)->size > limits_.max_fields) return Error{ErrorKind::bad_request, "a tuple has at most " + std::to_string(limits_.max_fields) + " fields"};
  Tuple tuple;
  std::size_t bytes = 0;
  for (std::uint32_t i = 0; i < (*array)->size; ++i) {
    auto field = canonical(call, (*array)->ptr[i]);
    if (!field) return field.error();
    bytes += field->size();
    if (bytes > limits_.max_tuple_bytes)
      return Error{ErrorKind::bad_request, "the tuple is larger than the limit of " + std::to_string(limits_.max_tuple_bytes) + " bytes"};
    tuple.types.push_back(type_of(*field));
    tuple.fields.push_back(std::move(*field));
  }
  return tuple;
}

// A template field is a value, or {"type": name}, or {"any": true}.
Result<std::vector<Pattern>> TupleSpaces::parse_template(const Call& call, const msgpack::object* value) const {
  auto array = service::as_array(value, "the template");
  if (!array) return array.error();
  if ((*array)->size > limits_.max_fields) return Error{ErrorKind::bad_request, "a template has at most " + std::to_string(limits_.max_fields) + " fields"};
  std::vector<Pattern> pattern;
  for (std::uint32_t i = 0; i < (*array)->size; ++i) {
    const auto& field = (*array)->ptr[i];
    Pattern p;
    if (field.type == msgpack::type::MAP) {
      if (const auto* type = service::field(field.via.map, "type"); type && type->type == msgpack::type::STR) {
        auto named = type_named(std::string_view(type->via.str.ptr, type->via.str.size));
        if (!named) return Error{ErrorKind::bad_request, "a template field names the type '" + std::string(type->via.str.ptr, type->via.str.size) +
                                                             "'; types are NoneType, bool, int, float, str, bytes and tuple"};
        p.kind = Pattern::Kind::type;
        p.type = *named;
      } else if (const auto* any = service::field(field.via.map, "any"); any && any->type == msgpack::type::BOOLEAN && any->via.boolean) {
        p.kind = Pattern::Kind::any;
      } else {
        return Error{ErrorKind::bad_request, "a template field that is a map must be {\"type\": name} or {\"any\": true}"};
      }
    } else {
      auto encoded = canonical(call, field);
      if (!encoded) return encoded.error();
      p.kind = Pattern::Kind::value;
      p.encoded = std::move(*encoded);
    }
    pattern.push_back(std::move(p));
  }
  return pattern;
}

// ---- the methods ----

// out(space, tuple, lease=None): writes the tuple; with a lease (seconds) it expires then.
void TupleSpaces::out(Call&& call) {
  auto space = space_for(call, true);
  if (!space) return refuse(call, space.error());
  auto tuple = parse_tuple(call, call.param(1, "tuple"));
  if (!tuple) return refuse(call, tuple.error());
  auto lease = seconds_of(call.param(2, "lease"), "tuplespace.out: argument 'lease'");
  if (!lease) return refuse(call, lease.error());
  if (*lease) tuple->expires = Clock::now() + duration_of(**lease);
  tuple->seq = next_seq_++;
  if (auto kept = keep(**space, *tuple); !kept) return refuse(call, kept.error());  // durable before the answer
  call.reply_nil();
  offer(**space, std::move(*tuple));
}

// take(space, template, timeout=None) / read(...) -> the matching tuple, or nil when none came in
// time (timeout 0: do not wait).
void TupleSpaces::take_or_read(Call&& call, bool take) {
  auto timeout = seconds_of(call.param(2, "timeout"), call.method() + ": argument 'timeout'");
  if (!timeout) return refuse(call, timeout.error());
  bool probe = *timeout && **timeout == 0;
  auto space = space_for(call, !probe);  // a probe of a space nobody wrote to does not make it
  if (!space) return refuse(call, space.error());
  auto pattern = parse_template(call, call.param(1, "template"));
  if (!pattern) return refuse(call, pattern.error());
  if (!*space) return call.reply_nil();
  if (const auto* found = find(**space, *pattern)) {
    deliver(call, *found);
    if (take) remove(**space, found->seq);
    return;
  }
  if (probe) return call.reply_nil();
  Waiter waiter;
  waiter.pattern = std::move(*pattern);
  waiter.take = take;
  waiter.connection = call.connection().id();
  waiter.call = std::make_shared<Call>(std::move(call));
  if (*timeout) {
    waiter.timer = std::make_shared<asio::steady_timer>(io_, duration_of(**timeout));
    waiter.timer->async_wait([this, space = *space, call = std::weak_ptr<Call>(waiter.call)](std::error_code ec) {
      auto waiting = call.lock();
      if (ec || !waiting) return;
      auto& waiters = space->waiters;
      for (auto it = waiters.begin(); it != waiters.end(); ++it)
        if (it->call == waiting) {
          waiters.erase(it);
          return waiting->reply_nil();
        }
    });
  }
  (*space)->waiters.push_back(std::move(waiter));
}

// notify(space, template, sink) -> watch id: each tuple written from now on that matches is sent
// to the caller's exported object `sink` as tuple(watch, number, tuple), oneway.
void TupleSpaces::notify(Call&& call) {
  auto space = space_for(call, true);
  if (!space) return refuse(call, space.error());
  auto pattern = parse_template(call, call.param(1, "template"));
  if (!pattern) return refuse(call, pattern.error());
  auto sink = service::as_u64(call.param(2, "sink"), "tuplespace.notify: argument 'sink'");
  if (!sink) return refuse(call, sink.error());
  Watch watch;
  watch.id = next_watch_++;
  watch.pattern = std::move(*pattern);
  watch.connection = call.connection_ptr();
  watch.connection_id = call.connection().id();
  watch.sink = *sink;
  (*space)->watches[watch.id] = std::move(watch);
  ReplyBuilder reply;
  reply.packer().pack_uint64(next_watch_ - 1);
  call.reply(std::move(reply));
}

// unnotify(space, watch), oneway.
void TupleSpaces::unnotify(Call&& call) {
  auto space = space_for(call, false);
  auto id = service::as_u64(call.param(1, "watch"), "watch");
  if (!space || !*space || !id) return;
  auto watch = (*space)->watches.find(*id);
  if (watch != (*space)->watches.end() && watch->second.connection_id == call.connection().id()) (*space)->watches.erase(watch);
}

// count(space) -> the number of tuples alive in it.
void TupleSpaces::count(Call&& call) {
  auto space = space_for(call, false);
  if (!space) return refuse(call, space.error());
  ReplyBuilder reply;
  reply.packer().pack_uint64(*space ? (*space)->tuples.size() : 0);
  call.reply(std::move(reply));
}

void TupleSpaces::on_connection_closed(rpc::Connection& connection) {
  // A taker whose connection died takes nothing: its waiting call goes.
  for (auto& [name, space] : spaces_) {
    space.waiters.remove_if([&](const Waiter& w) { return w.connection == connection.id(); });
    std::erase_if(space.watches, [&](const auto& entry) { return entry.second.connection_id == connection.id(); });
  }
}

// ---- storage and matching ----

std::string TupleSpaces::first_key(const Tuple& tuple) { return std::to_string(tuple.fields.size()) + ":" + tuple.fields[0]; }

bool TupleSpaces::matches(const std::vector<Pattern>& pattern, const Tuple& tuple, Clock::time_point now) {
  if (pattern.size() != tuple.fields.size() || (tuple.expires && *tuple.expires <= now)) return false;
  for (std::size_t i = 0; i < pattern.size(); ++i)
    if (!pattern[i].matches(tuple.fields[i], tuple.types[i])) return false;
  return true;
}

// The oldest tuple that matches, looked for only among the tuples that share the template's
// arity and, when the template fixes it, its first field's value or type.
const TupleSpaces::Tuple* TupleSpaces::find(Space& space, const std::vector<Pattern>& pattern) {
  const std::set<std::uint64_t>* candidates = nullptr;
  auto arity = pattern.size();
  if (arity > 0 && pattern[0].kind == Pattern::Kind::value) {
    auto it = space.by_first.find(std::to_string(arity) + ":" + pattern[0].encoded);
    if (it != space.by_first.end()) candidates = &it->second;
  } else if (arity > 0 && pattern[0].kind == Pattern::Kind::type) {
    auto it = space.by_first_type.find({arity, pattern[0].type});
    if (it != space.by_first_type.end()) candidates = &it->second;
  } else {
    auto it = space.by_arity.find(arity);
    if (it != space.by_arity.end()) candidates = &it->second;
  }
  if (!candidates) return nullptr;
  auto now = Clock::now();
  for (auto seq : *candidates) {
    const auto& tuple = space.tuples.at(seq);
    if (matches(pattern, tuple, now)) return &tuple;
  }
  return nullptr;
}

void TupleSpaces::offer(Space& space, Tuple tuple) {
  auto now = Clock::now();
  for (auto& [id, watch] : space.watches)
    if (matches(watch.pattern, tuple, now)) send_to_watch(watch, tuple);
  for (auto it = space.waiters.begin(); it != space.waiters.end();) {
    if (!it->call->connection().is_open()) {
      it = space.waiters.erase(it);  // gone: it must not take what others wait for
      continue;
    }
    if (!matches(it->pattern, tuple, now)) {
      ++it;
      continue;
    }
    if (it->timer) it->timer->cancel();
    deliver(*it->call, tuple);
    bool taken = it->take;
    it = space.waiters.erase(it);
    if (taken) return forget(space, tuple.seq);
  }
  store(space, std::move(tuple));
}

void TupleSpaces::store(Space& space, Tuple tuple) {
  auto seq = tuple.seq;
  auto arity = tuple.fields.size();
  if (arity > 0) {
    space.by_first[first_key(tuple)].insert(seq);
    space.by_first_type[{arity, tuple.types[0]}].insert(seq);
  }
  space.by_arity[arity].insert(seq);
  if (tuple.expires) {
    bool earliest = leases_.empty() || *tuple.expires < leases_.begin()->first;
    leases_.emplace(*tuple.expires, std::make_pair(space.name, seq));
    if (earliest) arm_lease_timer();
  }
  space.tuples.emplace(seq, std::move(tuple));
}

void TupleSpaces::remove(Space& space, std::uint64_t seq) {
  auto it = space.tuples.find(seq);
  if (it == space.tuples.end()) return;
  const auto& tuple = it->second;
  auto arity = tuple.fields.size();
  auto erase_from = [seq](auto& index, const auto& key) {
    auto found = index.find(key);
    if (found == index.end()) return;
    found->second.erase(seq);
    if (found->second.empty()) index.erase(found);
  };
  if (arity > 0) {
    erase_from(space.by_first, first_key(tuple));
    erase_from(space.by_first_type, std::make_pair(arity, tuple.types[0]));
  }
  erase_from(space.by_arity, arity);
  space.tuples.erase(it);
  forget(space, seq);
}

void TupleSpaces::deliver(Call& call, const Tuple& tuple) {
  ReplyBuilder reply;
  pack_fields(reply, tuple.fields);
  call.reply(std::move(reply));
}

void TupleSpaces::send_to_watch(Watch& watch, const Tuple& tuple) {
  auto connection = watch.connection.lock();
  if (!connection || !connection->is_open()) return;  // on_connection_closed removes it
  ReplyBuilder request;
  auto& p = request.packer();
  p.pack_array(2);
  p.pack_array(3);
  p.pack_uint64(watch.id);
  p.pack_uint64(++watch.sent);
  pack_fields(request, tuple.fields);
  p.pack_nil();
  auto frame = request.take_request("#" + std::to_string(watch.sink), "tuple");
  frame.header.flags |= wire::kOneway;
  connection->call(std::move(frame), nullptr);
}

void TupleSpaces::arm_lease_timer() {
  if (leases_.empty()) return;
  lease_timer_.expires_at(leases_.begin()->first);
  lease_timer_.async_wait([this](std::error_code ec) {
    if (!ec) expire_leases();
  });
}

void TupleSpaces::expire_leases() {
  auto now = Clock::now();
  while (!leases_.empty() && leases_.begin()->first <= now) {
    auto [name, seq] = leases_.begin()->second;
    leases_.erase(leases_.begin());
    auto space = spaces_.find(name);
    if (space != spaces_.end()) remove(space->second, seq);  // gone already if it was taken
  }
  arm_lease_timer();
}

// ---- the state store (--state-dir) ----
// A record: key = u16 name length, name, u64 seq (big-endian, so a space's tuples load in order);
// value = i64 lease expiry in Unix milliseconds (0: none), then each field as u32 length + bytes.

namespace {

void put_big_endian(std::string& out, std::uint64_t value, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

std::optional<std::uint64_t> get_big_endian(std::string_view& in, int bytes) {
  if (in.size() < static_cast<std::size_t>(bytes)) return std::nullopt;
  std::uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value = (value << 8) | static_cast<unsigned char>(in[i]);
  in.remove_prefix(bytes);
  return value;
}

std::int64_t unix_ms(std::chrono::system_clock::time_point at) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(at.time_since_epoch()).count();
}

}  // namespace

void TupleSpaces::keep_in(state::StateStore& store) {
  store_ = &store;
  for (const auto& [key, value] : store.load("tuples")) restore_record(key, value);
}

std::string TupleSpaces::record_key(const std::string& space, std::uint64_t seq) {
  std::string key;
  put_big_endian(key, space.size(), 2);
  key += space;
  put_big_endian(key, seq, 8);
  return key;
}

Status TupleSpaces::keep(const Space& space, const Tuple& tuple) {
  if (!store_) return ok_status();
  std::string value;
  std::int64_t expiry = 0;
  if (tuple.expires)  // a steady-clock deadline, kept as wall-clock time so it means the same after a restart
    expiry = unix_ms(std::chrono::system_clock::now()) +
             std::chrono::duration_cast<std::chrono::milliseconds>(*tuple.expires - Clock::now()).count();
  put_big_endian(value, static_cast<std::uint64_t>(expiry), 8);
  for (const auto& field : tuple.fields) {
    put_big_endian(value, field.size(), 4);
    value += field;
  }
  return store_->put("tuples", record_key(space.name, tuple.seq), value);
}

void TupleSpaces::forget(const Space& space, std::uint64_t seq) {
  if (!store_) return;
  if (auto status = store_->erase("tuples", record_key(space.name, seq)); !status)
    std::cerr << "tuplespace: " << status.error().message << std::endl;  // it comes back after a restart
}

void TupleSpaces::restore_record(const std::string& key, const std::string& value) {
  std::string_view k(key), v(value);
  auto name_length = get_big_endian(k, 2);
  if (!name_length || k.size() != *name_length + 8) return;
  std::string name(k.substr(0, *name_length));
  k.remove_prefix(*name_length);
  auto seq = get_big_endian(k, 8);
  auto expiry = get_big_endian(v, 8);
  if (!seq || !expiry) return;
  Tuple tuple;
  tuple.seq = *seq;
  while (!v.empty()) {
    auto length = get_big_endian(v, 4);
    if (!length || v.size() < *length) return;  // a record this version did not write: skipped
    tuple.fields.emplace_back(v.substr(0, *length));
    tuple.types.push_back(type_of(tuple.fields.back()));
    v.remove_prefix(*length);
  }
  auto& space = spaces_[name];
  space.name = name;
  next_seq_ = std::max(next_seq_, *seq + 1);
  if (*expiry != 0) {
    auto left = static_cast<std::int64_t>(*expiry) - unix_ms(std::chrono::system_clock::now());
    if (left <= 0) return forget(space, *seq);  // its lease ended while the head was down
    tuple.expires = Clock::now() + std::chrono::milliseconds(left);
  }
  store(space, std::move(tuple));
}

}  // namespace tether::tuplespace
