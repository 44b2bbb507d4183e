// Plain data to and from pickle (see pickle.hpp). Opcodes as in CPython's Lib/pickle.py.
#include "api/pickle.hpp"

#include <algorithm>
#include <cstring>
#include <memory>

namespace tether::api {
namespace {

enum Op : std::uint8_t {
  MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', NONE = 'N', BININT = 'J', BININT1 = 'K', BININT2 = 'M',
  BINFLOAT = 'G', BINUNICODE = 'X', BINBYTES = 'B', SHORT_BINBYTES = 'C', EMPTY_LIST = ']', APPEND = 'a',
  APPENDS = 'e', EMPTY_TUPLE = ')', TUPLE = 't', EMPTY_DICT = '}', SETITEM = 's', SETITEMS = 'u', BINGET = 'h',
  LONG_BINGET = 'j', BINPUT = 'q', LONG_BINPUT = 'r', REDUCE = 'R', BUILD = 'b', GLOBAL = 'c', PROTO = 0x80,
  NEWOBJ = 0x81, TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87, NEWTRUE = 0x88, NEWFALSE = 0x89, LONG1 = 0x8a,
  LONG4 = 0x8b, SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d, BINBYTES8 = 0x8e, EMPTY_SET = 0x8f, ADDITEMS = 0x90,
  FROZENSET = 0x91, NEWOBJ_EX = 0x92, STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95, BYTEARRAY8 = 0x96,
};

Error bad(std::string message) { return Error{ErrorKind::bad_request, std::move(message)}; }

// ---- writing ----

class Pickler {
 public:
  Status value(const Value& v, int depth = 0) {
    if (depth > 200) return bad("a value nested deeper than 200 levels");
    using K = Value::Kind;
    switch (v.kind()) {
      case K::nil: op(NONE); return ok_status();
      case K::boolean: op(v.as_bool() ? NEWTRUE : NEWFALSE); return ok_status();
      case K::integer:
      case K::big_integer: integer(v); return ok_status();
      case K::floating: {
        op(BINFLOAT);
        std::uint64_t bits;
        double d = v.as_double();
        std::memcpy(&bits, &d, 8);
        for (int shift = 56; shift >= 0; shift -= 8) byte(static_cast<std::uint8_t>(bits >> shift));
        return ok_status();
      }
      case K::string: sized(v.as_string(), SHORT_BINUNICODE, BINUNICODE, BINUNICODE8); return ok_status();
      case K::bytes: sized(v.as_bytes().view(), SHORT_BINBYTES, BINBYTES, BINBYTES8); return ok_status();
      case K::list:
        op(EMPTY_LIST);
        return items_then(v.items(), APPENDS, depth);
      case K::tuple:
        if (v.items().empty()) {
          op(EMPTY_TUPLE);
          return ok_status();
        }
        op(MARK);
        for (const auto& item : v.items())
          if (auto s = value(item, depth + 1); !s) return s;
        op(TUPLE);
        return ok_status();
      case K::set:
        op(EMPTY_SET);
        return items_then(v.items(), ADDITEMS, depth);
      case K::frozenset:
        op(MARK);
        for (const auto& item : v.items())
          if (auto s = value(item, depth + 1); !s) return s;
        op(FROZENSET);
        return ok_status();
      case K::dict:
        op(EMPTY_DICT);
        if (v.entries().empty()) return ok_status();
        op(MARK);
        for (const auto& [key, item] : v.entries()) {
          if (auto s = value(key, depth + 1); !s) return s;
          if (auto s = value(item, depth + 1); !s) return s;
        }
        op(SETITEMS);
        return ok_status();
      case K::custom:
      case K::object_ref: break;
    }
    return bad("a " + std::string(v.kind_name()) + " value cannot be passed to a cluster actor (plain data only)");
  }

  std::vector<std::byte> take() { return std::move(out_); }
  void start() {
    op(PROTO);
    byte(4);
  }
  void stop() { op(STOP); }

 private:
  void byte(std::uint8_t b) { out_.push_back(static_cast<std::byte>(b)); }
  void op(std::uint8_t o) { byte(o); }
  void little(std::uint64_t v, int size) {
    for (int i = 0; i < size; ++i) byte(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  void raw(std::string_view text) {
    auto* p = reinterpret_cast<const std::byte*>(text.data());
    out_.insert(out_.end(), p, p + text.size());
  }
  void sized(std::string_view text, std::uint8_t small, std::uint8_t mid, std::uint8_t large) {
    if (text.size() < 256) op(small), byte(static_cast<std::uint8_t>(text.size()));
    else if (text.size() <= 0xffffffffu) op(mid), little(text.size(), 4);
    else op(large), little(text.size(), 8);
    raw(text);
  }
  void integer(const Value& v) {
    if (v.fits_int64()) {
      auto i = v.as_int64();
      if (i >= INT32_MIN && i <= INT32_MAX) {
        op(BININT);
        little(static_cast<std::uint32_t>(static_cast<std::int32_t>(i)), 4);
        return;
      }
    }
    auto big = v.as_big_int().bytes();  // big-endian, minimal two's complement
    std::vector<std::uint8_t> le(big.rbegin(), big.rend());
    if (le.size() < 256) op(LONG1), byte(static_cast<std::uint8_t>(le.size()));
    else op(LONG4), little(le.size(), 4);
    for (auto b : le) byte(b);
  }
  Status items_then(const Value::Items& items, std::uint8_t closing, int depth) {
    if (items.empty()) return ok_status();
    op(MARK);
    for (const auto& item : items)
      if (auto s = value(item, depth + 1); !s) return s;
    op(closing);
    return ok_status();
  }

  std::vector<std::byte> out_;
};

// ---- reading ----

class Unpickler {
 public:
  explicit Unpickler(std::span<const std::byte> data)
      : p_(reinterpret_cast<const std::uint8_t*>(data.data())), end_(p_ + data.size()) {}

  Result<Value> run() {
    while (p_ < end_) {
      std::uint8_t code = *p_++;
      if (code == STOP) {
        if (stack_.size() != 1 || !marks_.empty()) return bad("malformed pickle: the stack does not hold one value at STOP");
        return *stack_.back();
      }
      if (auto s = step(code); !s) return s.error();
    }
    return bad("malformed pickle: no STOP");
  }

 private:
  using Node = std::shared_ptr<Value>;

  Status step(std::uint8_t code) {
    switch (code) {
      case PROTO: return skip(1);
      case FRAME: return skip(8);
      case MARK: marks_.push_back(stack_.size()); return ok_status();
      case POP: return stack_.empty() ? bad("malformed pickle: POP on an empty stack") : (stack_.pop_back(), ok_status());
      case POP_MARK: return pop_mark().ok() ? ok_status() : bad("malformed pickle: POP_MARK without a mark");
      case NONE: return push(Value());
      case NEWTRUE: return push(Value(true));
      case NEWFALSE: return push(Value(false));
      case BININT: return little_int(4, true);
      case BININT1: return little_int(1, false);
      case BININT2: return little_int(2, false);
      case LONG1: return long_int(1);
      case LONG4: return long_int(4);
      case BINFLOAT: {
        std::uint64_t bits = 0;
        if (!need(8)) return truncated();
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | *p_++;
        double d;
        std::memcpy(&d, &bits, 8);
        return push(Value(d));
      }
      case SHORT_BINUNICODE: return text(1, true);
      case BINUNICODE: return text(4, true);
      case BINUNICODE8: return text(8, true);
      case SHORT_BINBYTES: return text(1, false);
      case BINBYTES: return text(4, false);
      case BINBYTES8:
      case BYTEARRAY8: return text(8, false);
      case EMPTY_LIST: return push(Value::list());
      case EMPTY_TUPLE: return push(Value::tuple());
      case EMPTY_DICT: return push(Value::dict());
      case EMPTY_SET: return push(Value::set());
      case APPEND: return add_items(1, false);
      case APPENDS: return add_items(0, true);
      case ADDITEMS: return add_items(0, true);
      case SETITEM: return set_items(false);
      case SETITEMS: return set_items(true);
      case TUPLE: return tuple_from_mark(false);
      case FROZENSET: return tuple_from_mark(true);
      case TUPLE1: return tuple_of(1);
      case TUPLE2: return tuple_of(2);
      case TUPLE3: return tuple_of(3);
      case MEMOIZE: return stack_.empty() ? bad("malformed pickle: MEMOIZE on an empty stack") : (memo_.push_back(stack_.back()), ok_status());
      case BINPUT: return put(1);
      case LONG_BINPUT: return put(4);
      case BINGET: return get(1);
      case LONG_BINGET: return get(4);
      case STACK_GLOBAL: {
        if (stack_.size() < 2) return bad("malformed pickle: STACK_GLOBAL needs two names");
        auto name = *stack_.back();
        stack_.pop_back();
        auto module = *stack_.back();
        stack_.pop_back();
        if (module.kind() != Value::Kind::string || name.kind() != Value::Kind::string) return bad("malformed pickle: a global's names are not str");
        return push(Value::custom("pickle.global", Value(module.as_string() + "." + name.as_string())));
      }
      case REDUCE:
      case NEWOBJ: {
        if (stack_.size() < 2) return bad("malformed pickle: a call needs a callable and arguments");
        auto args = *stack_.back();
        stack_.pop_back();
        auto callable = *stack_.back();
        stack_.pop_back();
        return push(Value::custom("pickle.call", Value{callable, args}));
      }
      case BUILD:  // an object's state: dropped, the call that made the object is what we read
        return stack_.size() < 2 ? bad("malformed pickle: BUILD needs an object") : (stack_.pop_back(), ok_status());
    }
    return bad("the value is not plain data (pickle opcode 0x" + hex(code) + "): only None, bool, int, float, str, bytes, "
               "list, tuple, dict, set and frozenset can reach C++");
  }

  static std::string hex(std::uint8_t b) {
    static const char* digits = "0123456789abcdef";
    return {digits[b >> 4], digits[b & 15]};
  }
  bool need(std::size_t n) const { return static_cast<std::size_t>(end_ - p_) >= n; }
  static Status truncated() { return bad("malformed pickle: truncated"); }
  Status skip(std::size_t n) {
    if (!need(n)) return truncated();
    p_ += n;
    return ok_status();
  }
  std::uint64_t read_little(int size) {
    std::uint64_t v = 0;
    for (int i = 0; i < size; ++i) v |= std::uint64_t(p_[i]) << (8 * i);
    p_ += size;
    return v;
  }
  Status push(Value v) {
    stack_.push_back(std::make_shared<Value>(std::move(v)));
    return ok_status();
  }
  Status little_int(int size, bool is_signed) {
    if (!need(size)) return truncated();
    auto raw = read_little(size);
    if (is_signed) return push(Value(static_cast<long long>(static_cast<std::int32_t>(raw))));
    return push(Value(static_cast<long long>(raw)));
  }
  Status long_int(int size_bytes) {
    if (!need(size_bytes)) return truncated();
    auto n = read_little(size_bytes);
    if (!need(n)) return truncated();
    std::vector<std::uint8_t> be(p_, p_ + n);
    p_ += n;
    std::reverse(be.begin(), be.end());
    if (be.empty()) be.push_back(0);
    return push(Value(BigInt::from_bytes(std::move(be))));
  }
  Status text(int size_bytes, bool is_str) {
    if (!need(size_bytes)) return truncated();
    auto n = read_little(size_bytes);
    if (!need(n)) return truncated();
    std::string_view s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return push(is_str ? Value(s) : Value(Bytes(s)));
  }
  Result<std::vector<Node>> pop_mark() {
    if (marks_.empty()) return bad("malformed pickle: no mark");
    auto start = marks_.back();
    marks_.pop_back();
    if (start > stack_.size()) return bad("malformed pickle: a mark beyond the stack");
    std::vector<Node> items(stack_.begin() + static_cast<std::ptrdiff_t>(start), stack_.end());
    stack_.resize(start);
    return items;
  }
  Status add_items(std::size_t single, bool from_mark) {
    std::vector<Node> items;
    if (from_mark) {
      auto popped = pop_mark();
      if (!popped) return popped.error();
      items = std::move(*popped);
    } else {
      if (stack_.size() < single + 1) return bad("malformed pickle: APPEND without a list");
      items.assign(stack_.end() - 1, stack_.end());
      stack_.pop_back();
    }
    if (stack_.empty()) return bad("malformed pickle: items without a container");
    auto& target = *stack_.back();
    if (target.kind() != Value::Kind::list && target.kind() != Value::Kind::set) return bad("malformed pickle: items added to a " + std::string(target.kind_name()));
    for (auto& item : items) target.items().push_back(*item);
    return ok_status();
  }
  Status set_items(bool from_mark) {
    std::vector<Node> items;
    if (from_mark) {
      auto popped = pop_mark();
      if (!popped) return popped.error();
      items = std::move(*popped);
    } else {
      if (stack_.size() < 3) return bad("malformed pickle: SETITEM without a dict");
      items.assign(stack_.end() - 2, stack_.end());
      stack_.resize(stack_.size() - 2);
    }
    if (stack_.empty() || stack_.back()->kind() != Value::Kind::dict || items.size() % 2) return bad("malformed pickle: SETITEMS without a dict");
    auto& entries = stack_.back()->entries();
    for (std::size_t i = 0; i < items.size(); i += 2) entries.emplace_back(*items[i], *items[i + 1]);
    return ok_status();
  }
  Status tuple_from_mark(bool frozen) {
    auto popped = pop_mark();
    if (!popped) return popped.error();
    Value::Items items;
    for (auto& node : *popped) items.push_back(*node);
    return push(frozen ? Value::set(std::move(items), true) : Value::tuple(std::move(items)));
  }
  Status tuple_of(std::size_t n) {
    if (stack_.size() < n) return bad("malformed pickle: a tuple of more items than the stack holds");
    Value::Items items;
    for (auto it = stack_.end() - static_cast<std::ptrdiff_t>(n); it != stack_.end(); ++it) items.push_back(**it);
    stack_.resize(stack_.size() - n);
    return push(Value::tuple(std::move(items)));
  }
  Status put(int size) {
    if (!need(size)) return truncated();
    auto index = read_little(size);
    if (stack_.empty() || index > (1u << 24)) return bad("malformed pickle: a memo index out of bounds");
    if (memo_.size() <= index) memo_.resize(index + 1);
    memo_[index] = stack_.back();
    return ok_status();
  }
  Status get(int size) {
    if (!need(size)) return truncated();
    auto index = read_little(size);
    if (index >= memo_.size() || !memo_[index]) return bad("malformed pickle: a memo entry that was never put");
    stack_.push_back(memo_[index]);
    return ok_status();
  }

  const std::uint8_t* p_;
  const std::uint8_t* end_;
  std::vector<Node> stack_;
  std::vector<std::size_t> marks_;
  std::vector<Node> memo_;
};

}  // namespace

Result<std::vector<std::byte>> pickle_plain(const Value& value) {
  Pickler pickler;
  pickler.start();
  if (auto s = pickler.value(value); !s) return s.error();
  pickler.stop();
  return pickler.take();
}

Result<Value> unpickle_plain(std::span<const std::byte> data) { return Unpickler(data).run(); }

}  // namespace tether::api
