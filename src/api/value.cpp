// tether::Value, Bytes and BigInt (see include/tether/value.hpp).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include "api/refs.hpp"
#include "tether/value.hpp"

namespace tether {

// ---- Bytes ----

Bytes::Bytes(const void* data, std::size_t size) {
  auto storage = std::make_shared<std::vector<std::byte>>(size);
  if (size) std::memcpy(storage->data(), data, size);
  data_ = storage->data();
  size_ = size;
  owner_ = std::move(storage);
}

Bytes::Bytes(std::vector<std::byte> bytes) {
  auto storage = std::make_shared<std::vector<std::byte>>(std::move(bytes));
  data_ = storage->data();
  size_ = storage->size();
  owner_ = std::move(storage);
}

// ---- BigInt ----

namespace {

// Drops redundant sign bytes: 0x00 before a byte without its top bit, 0xff before one with it.
void minimize(std::vector<std::uint8_t>& b) {
  std::size_t drop = 0;
  while (drop + 1 < b.size() && ((b[drop] == 0x00 && !(b[drop + 1] & 0x80)) || (b[drop] == 0xff && (b[drop + 1] & 0x80)))) ++drop;
  b.erase(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(drop));
  if (b.empty()) b.push_back(0);
}

void negate(std::vector<std::uint8_t>& b) {  // two's complement, in place
  int carry = 1;
  for (std::size_t i = b.size(); i-- > 0;) {
    int v = static_cast<std::uint8_t>(~b[i]) + carry;
    b[i] = static_cast<std::uint8_t>(v & 0xff);
    carry = v >> 8;
  }
}

// Magnitude (big-endian, unsigned) divided by 10 in place; returns the remainder.
int divide_by_10(std::vector<std::uint8_t>& magnitude) {
  int remainder = 0;
  for (auto& byte : magnitude) {
    int v = remainder * 256 + byte;
    byte = static_cast<std::uint8_t>(v / 10);
    remainder = v % 10;
  }
  return remainder;
}

bool is_zero(const std::vector<std::uint8_t>& b) {
  return std::all_of(b.begin(), b.end(), [](std::uint8_t x) { return x == 0; });
}

}  // namespace

BigInt BigInt::from_bytes(std::vector<std::uint8_t> twos_complement_big_endian) {
  BigInt out;
  out.bytes_ = std::move(twos_complement_big_endian);
  minimize(out.bytes_);
  return out;
}

BigInt BigInt::from_string(std::string_view decimal) {
  bool negative = !decimal.empty() && decimal[0] == '-';
  if (negative || (!decimal.empty() && decimal[0] == '+')) decimal.remove_prefix(1);
  if (decimal.empty() || !std::all_of(decimal.begin(), decimal.end(), [](char c) { return c >= '0' && c <= '9'; }))
    throw TypeMismatch("not a decimal integer: '" + std::string(decimal) + "'");
  std::vector<std::uint8_t> magnitude{0};  // big-endian, with a spare top byte for the sign
  for (char c : decimal) {
    int carry = c - '0';
    for (std::size_t i = magnitude.size(); i-- > 0;) {
      int v = magnitude[i] * 10 + carry;
      magnitude[i] = static_cast<std::uint8_t>(v & 0xff);
      carry = v >> 8;
    }
    if (carry) magnitude.insert(magnitude.begin(), static_cast<std::uint8_t>(carry));
    if (magnitude[0] & 0x80) magnitude.insert(magnitude.begin(), 0);
  }
  if (negative) negate(magnitude);
  return from_bytes(std::move(magnitude));
}

std::string BigInt::to_string() const {
  std::vector<std::uint8_t> magnitude = bytes_;
  bool neg = negative();
  if (neg) negate(magnitude);  // the most negative value of a width reads back as its magnitude, unsigned
  std::string digits;
  do digits.push_back(static_cast<char>('0' + divide_by_10(magnitude)));
  while (!is_zero(magnitude));
  if (neg) digits.push_back('-');
  std::reverse(digits.begin(), digits.end());
  return digits;
}

// ---- Value ----

Value::Value(BigInt b) {
  const auto& bytes = b.bytes();
  if (bytes.size() <= 8 || (bytes.size() == 9 && bytes[0] == 0)) {
    std::uint64_t raw = 0;
    for (auto byte : bytes) raw = (raw << 8) | byte;
    if (b.negative()) {
      raw |= bytes.size() < 8 ? ~std::uint64_t{0} << (8 * bytes.size()) : 0;  // sign-extend
      data_ = static_cast<std::int64_t>(raw);
    } else {
      set_unsigned(raw);
    }
    return;
  }
  data_ = std::make_shared<const BigInt>(std::move(b));
}

void Value::set_unsigned(std::uint64_t u) {
  if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) data_ = static_cast<std::int64_t>(u);
  else data_ = u;
}

Value Value::tuple(Items items) {
  Value v;
  v.data_ = TupleData{std::move(items)};
  return v;
}

Value Value::set(Items items, bool frozen) {
  Value v;
  v.data_ = SetData{std::move(items), frozen};
  return v;
}

Value Value::dict(Entries entries) {
  Value v;
  v.data_ = DictData{std::move(entries)};
  return v;
}

Value Value::custom(std::string name, Value state) {
  Value v;
  v.data_ = std::make_shared<const detail::CustomData>(detail::CustomData{std::move(name), std::move(state)});
  return v;
}

Value Value::array(const Array& array) {
  Items shape;
  for (auto extent : array.shape) shape.emplace_back(static_cast<long long>(extent));
  return custom("numpy.ndarray", Value{Value(array.dtype), Value(std::move(shape)), Value(array.data)});
}

Value Value::uri_ref(std::string uri) {
  auto ref = std::make_shared<detail::RefData>();
  ref->kind = detail::RefData::Kind::uri;
  ref->uri = std::move(uri);
  return from_ref(std::move(ref));
}

Value Value::callback(std::shared_ptr<Servant> servant) {
  auto ref = std::make_shared<detail::RefData>();
  ref->kind = detail::RefData::Kind::local_servant;
  ref->servant = std::move(servant);
  return from_ref(std::move(ref));
}

Value Value::from_ref(std::shared_ptr<detail::RefData> ref) {
  Value v;
  v.data_ = std::move(ref);
  return v;
}

Value::Kind Value::kind() const {
  static constexpr Kind kinds[] = {Kind::nil,    Kind::boolean, Kind::integer, Kind::integer, Kind::big_integer,
                                   Kind::floating, Kind::string, Kind::bytes,  Kind::list,    Kind::tuple,
                                   Kind::set,    Kind::dict,    Kind::custom,  Kind::object_ref};
  Kind k = kinds[data_.index()];
  if (k == Kind::set && std::get<SetData>(data_).frozen) return Kind::frozenset;
  return k;
}

std::string_view to_string(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::nil: return "None";
    case Value::Kind::boolean: return "bool";
    case Value::Kind::integer: return "int";
    case Value::Kind::big_integer: return "int";
    case Value::Kind::floating: return "float";
    case Value::Kind::string: return "str";
    case Value::Kind::bytes: return "bytes";
    case Value::Kind::list: return "list";
    case Value::Kind::tuple: return "tuple";
    case Value::Kind::dict: return "dict";
    case Value::Kind::set: return "set";
    case Value::Kind::frozenset: return "frozenset";
    case Value::Kind::custom: return "custom";
    case Value::Kind::object_ref: return "object reference";
  }
  return "?";
}

std::string_view Value::kind_name() const {
  if (kind() == Kind::custom) return custom_name();
  return to_string(kind());
}

bool Value::is_number() const {
  auto k = kind();
  return k == Kind::integer || k == Kind::big_integer || k == Kind::floating;
}

void Value::mismatch(std::string_view expected) const {
  std::string shown = repr();
  if (shown.size() > 60) shown = shown.substr(0, 57) + "...";
  throw TypeMismatch("expected " + std::string(expected) + ", got " + std::string(kind_name()) + " " + shown);
}

bool Value::as_bool() const {
  if (auto* b = std::get_if<bool>(&data_)) return *b;
  mismatch("a bool");
}

std::int64_t Value::as_int64() const {
  if (auto* i = std::get_if<std::int64_t>(&data_)) return *i;
  if (kind() == Kind::integer || kind() == Kind::big_integer) throw OutOfRange(repr() + " is out of range for int64");
  mismatch("an int");
}

std::uint64_t Value::as_uint64() const {
  if (auto* u = std::get_if<std::uint64_t>(&data_)) return *u;
  if (auto* i = std::get_if<std::int64_t>(&data_)) {
    if (*i < 0) throw OutOfRange(repr() + " is out of range for uint64");
    return static_cast<std::uint64_t>(*i);
  }
  if (kind() == Kind::big_integer) throw OutOfRange(repr() + " is out of range for uint64");
  mismatch("an int");
}

BigInt Value::as_big_int() const {
  if (auto* b = std::get_if<std::shared_ptr<const BigInt>>(&data_)) return **b;
  auto from_u64 = [](std::uint64_t raw, bool negative) {
    std::vector<std::uint8_t> bytes(9, negative ? 0xff : 0x00);
    for (int i = 0; i < 8; ++i) bytes[8 - i] = static_cast<std::uint8_t>(raw >> (8 * i));
    return BigInt::from_bytes(std::move(bytes));
  };
  if (auto* i = std::get_if<std::int64_t>(&data_)) return from_u64(static_cast<std::uint64_t>(*i), *i < 0);
  if (auto* u = std::get_if<std::uint64_t>(&data_)) return from_u64(*u, false);
  mismatch("an int");
}

double Value::as_double() const {
  if (auto* d = std::get_if<double>(&data_)) return *d;
  if (auto* i = std::get_if<std::int64_t>(&data_)) return static_cast<double>(*i);
  if (auto* u = std::get_if<std::uint64_t>(&data_)) return static_cast<double>(*u);
  mismatch("a float");
}

const std::string& Value::as_string() const {
  if (auto* s = std::get_if<std::string>(&data_)) return *s;
  mismatch("a str");
}

const Bytes& Value::as_bytes() const {
  if (auto* b = std::get_if<Bytes>(&data_)) return *b;
  mismatch("bytes");
}

const Value::Items& Value::items() const { return const_cast<Value*>(this)->items(); }

Value::Items& Value::items() {
  if (auto* l = std::get_if<ListData>(&data_)) return l->items;
  if (auto* t = std::get_if<TupleData>(&data_)) return t->items;
  if (auto* s = std::get_if<SetData>(&data_)) return s->items;
  mismatch("a list, tuple or set");
}

const Value::Entries& Value::entries() const { return const_cast<Value*>(this)->entries(); }

Value::Entries& Value::entries() {
  if (auto* d = std::get_if<DictData>(&data_)) return d->entries;
  mismatch("a dict");
}

const std::string& Value::custom_name() const {
  if (auto* c = std::get_if<std::shared_ptr<const detail::CustomData>>(&data_)) return (*c)->name;
  mismatch("a custom value");
}

const Value& Value::custom_state() const {
  if (auto* c = std::get_if<std::shared_ptr<const detail::CustomData>>(&data_)) return (*c)->state;
  mismatch("a custom value");
}

Array Value::as_array() const {
  if (kind() != Kind::custom || custom_name() != "numpy.ndarray") mismatch("a numpy.ndarray");
  const Value& state = custom_state();
  if (state.kind() != Kind::list || state.size() != 3) throw TypeMismatch("malformed numpy.ndarray state " + state.repr());
  Array array;
  array.dtype = state[0].as_string();
  for (const auto& extent : state[1].items()) array.shape.push_back(extent.as_int64());
  array.data = state[2].as_bytes();
  if (array.data.size() != 0 && array.element_count() == 0) throw TypeMismatch("numpy.ndarray data does not match its shape");
  return array;
}

std::size_t Array::element_count() const {
  std::size_t n = 1;
  for (auto extent : shape) {
    if (extent < 0) throw TypeMismatch("an array extent is negative");
    n *= static_cast<std::size_t>(extent);
  }
  return n;
}

const Value* Value::find(const Value& key) const {
  auto* d = std::get_if<DictData>(&data_);
  if (!d) return nullptr;
  for (const auto& [k, v] : d->entries)
    if (k == key) return &v;
  return nullptr;
}

std::size_t Value::size() const {
  if (auto* s = std::get_if<std::string>(&data_)) return s->size();
  if (auto* b = std::get_if<Bytes>(&data_)) return b->size();
  if (auto* d = std::get_if<DictData>(&data_)) return d->entries.size();
  return items().size();
}

const std::shared_ptr<detail::RefData>& Value::ref() const {
  if (auto* r = std::get_if<std::shared_ptr<detail::RefData>>(&data_)) return *r;
  mismatch("an object reference");
}

bool Value::is_callback() const { return ref()->kind != detail::RefData::Kind::uri; }

const std::string& Value::ref_uri() const {
  const auto& r = ref();
  if (r->kind != detail::RefData::Kind::uri) throw TypeMismatch("this object reference is a callback, not a URI");
  return r->uri;
}

std::shared_ptr<Servant> Value::ref_servant() const { return ref()->servant; }

// ---- repr and equality ----

namespace {

void append_quoted(std::string& out, std::string_view text, bool bytes) {
  out += bytes ? "b'" : "'";
  static const char* hex = "0123456789abcdef";
  for (unsigned char c : text) {
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7f || (bytes && c >= 0x80)) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '\'';
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buffer[32];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, d);
  std::string text(buffer, end);
  if (text.find_first_of(".en") == std::string::npos) text += ".0";
  return text;
}

void append_items(std::string& out, const Value::Items& items, const char* open, const char* close, bool one_tuple) {
  out += open;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += items[i].repr();
  }
  if (one_tuple && items.size() == 1) out += ",";
  out += close;
}

bool same_members(const Value::Items& a, const Value::Items& b) {
  if (a.size() != b.size()) return false;
  std::vector<bool> used(b.size(), false);
  for (const auto& x : a) {
    bool found = false;
    for (std::size_t i = 0; i < b.size() && !found; ++i)
      if (!used[i] && x == b[i]) used[i] = found = true;
    if (!found) return false;
  }
  return true;
}

}  // namespace

std::string Value::repr() const {
  std::string out;
  switch (kind()) {
    case Kind::nil: return "None";
    case Kind::boolean: return as_bool() ? "True" : "False";
    case Kind::integer:
      if (auto* i = std::get_if<std::int64_t>(&data_)) return std::to_string(*i);
      return std::to_string(std::get<std::uint64_t>(data_));
    case Kind::big_integer: return as_big_int().to_string();
    case Kind::floating: return float_repr(std::get<double>(data_));
    case Kind::string: append_quoted(out, as_string(), false); return out;
    case Kind::bytes: append_quoted(out, as_bytes().view(), true); return out;
    case Kind::list: append_items(out, items(), "[", "]", false); return out;
    case Kind::tuple: append_items(out, items(), "(", ")", true); return out;
    case Kind::set:
      if (items().empty()) return "set()";
      append_items(out, items(), "{", "}", false);
      return out;
    case Kind::frozenset: append_items(out, items(), "frozenset({", "})", false); return out;
    case Kind::dict:
      out += "{";
      for (std::size_t i = 0; i < entries().size(); ++i) {
        if (i) out += ", ";
        out += entries()[i].first.repr() + ": " + entries()[i].second.repr();
      }
      return out + "}";
    case Kind::custom: return custom_name() + "(" + custom_state().repr() + ")";
    case Kind::object_ref: return is_callback() ? "<callback>" : "<ref " + ref_uri() + ">";
  }
  return "?";
}

bool operator==(const Value& a, const Value& b) {
  if (a.kind() != b.kind()) return false;
  using K = Value::Kind;
  switch (a.kind()) {
    case K::nil: return true;
    case K::boolean: return a.as_bool() == b.as_bool();
    case K::integer: return a.data_.index() == b.data_.index() && a.as_big_int() == b.as_big_int();
    case K::big_integer: return a.as_big_int() == b.as_big_int();
    case K::floating: return a.as_double() == b.as_double();
    case K::string: return a.as_string() == b.as_string();
    case K::bytes: return a.as_bytes() == b.as_bytes();
    case K::list:
    case K::tuple: return a.items() == b.items();
    case K::set:
    case K::frozenset: return same_members(a.items(), b.items());
    case K::dict:
      if (a.entries().size() != b.entries().size()) return false;
      for (const auto& [k, v] : a.entries()) {
        const Value* other = b.find(k);
        if (!other || !(*other == v)) return false;
      }
      return true;
    case K::custom: return a.custom_name() == b.custom_name() && a.custom_state() == b.custom_state();
    case K::object_ref: {
      const auto &ra = *a.ref(), &rb = *b.ref();
      return ra.kind == rb.kind && ra.uri == rb.uri && ra.servant == rb.servant && ra.id == rb.id;
    }
  }
  return false;
}

}  // namespace tether
