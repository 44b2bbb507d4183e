// tether::Value: one value of the default encoding (docs/protocol.md 8.1), the data a C++ program
// sends to and receives from any tether peer. docs/cpp.md has the table that maps each kind to and
// from Python types; tether/convert.hpp converts between Values and ordinary C++ types.
#pragma once

#include <bit>
#include <cstddef>
#include <cstring>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace tether {

// A value does not have the kind or range the reader asked for. The message says what was asked
// and what was there; servers answer it to a Python caller as TypeError (OverflowError for range).
class TypeMismatch : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};
class OutOfRange : public TypeMismatch {
 public:
  using TypeMismatch::TypeMismatch;
};

// Immutable bytes, shared on copy. Received bytes are usually a view into the frame that brought
// them (no copy); bytes made from a std::string or vector own one copy.
class Bytes {
 public:
  Bytes() = default;
  Bytes(const void* data, std::size_t size);  // copies
  explicit Bytes(std::string_view text) : Bytes(text.data(), text.size()) {}
  explicit Bytes(std::vector<std::byte> bytes);  // adopts the vector's storage
  // A view of `size` bytes at `data`, kept valid by `owner`.
  Bytes(std::shared_ptr<const void> owner, const std::byte* data, std::size_t size)
      : owner_(std::move(owner)), data_(data), size_(size) {}

  const std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const std::byte> span() const { return {data_, size_}; }
  std::string_view view() const { return {reinterpret_cast<const char*>(data_), size_}; }
  std::string str() const { return std::string(view()); }
  const std::shared_ptr<const void>& owner() const { return owner_; }
  friend bool operator==(const Bytes& a, const Bytes& b) { return a.view() == b.view(); }

 private:
  std::shared_ptr<const void> owner_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

// An integer outside int64 and uint64: signed two's complement, big-endian, as on the wire (ext 4).
class BigInt {
 public:
  BigInt() = default;
  static BigInt from_bytes(std::vector<std::uint8_t> twos_complement_big_endian);
  static BigInt from_string(std::string_view decimal);  // "-123..."; throws TypeMismatch if malformed
  const std::vector<std::uint8_t>& bytes() const { return bytes_; }
  std::string to_string() const;  // decimal
  bool negative() const { return !bytes_.empty() && (bytes_[0] & 0x80); }
  friend bool operator==(const BigInt&, const BigInt&) = default;

 private:
  std::vector<std::uint8_t> bytes_{0};  // minimal length, like Python's int.to_bytes(bit_length // 8 + 1)
};

class Value;
class Servant;

namespace detail {
struct CustomData;
struct RefData;
}  // namespace detail

// A numeric array (a numpy.ndarray on the Python side): dtype in numpy's notation ("<f8", "<i4",
// "|u1", ...), shape, and the C-ordered data. Small helpers cover the common element types.
struct Array {
  std::string dtype;
  std::vector<std::int64_t> shape;
  Bytes data;

  template <typename T>
  static Array of(std::span<const T> values, std::vector<std::int64_t> shape = {});
  template <typename T>
  static Array of(const std::vector<T>& values, std::vector<std::int64_t> shape = {}) {
    return of(std::span<const T>(values), std::move(shape));
  }
  std::size_t element_count() const;
  // The elements as T; throws TypeMismatch unless the dtype is exactly T's (see dtype_of).
  template <typename T>
  std::vector<T> to_vector() const;
  template <typename T>
  static std::string dtype_of();
};

// One value of the tether profile of msgpack. Cheap to move; copies share bytes and custom states.
class Value {
 public:
  enum class Kind : std::uint8_t {
    nil, boolean, integer, big_integer, floating, string, bytes, list, tuple, dict, set, frozenset, custom, object_ref
  };
  using Items = std::vector<Value>;
  using Entries = std::vector<std::pair<Value, Value>>;  // a dict keeps its order

  Value() = default;  // nil
  Value(std::nullptr_t) {}
  Value(bool b) : data_(b) {}
  Value(int i) : data_(std::int64_t{i}) {}
  Value(long i) : data_(std::int64_t{i}) {}
  Value(long long i) : data_(std::int64_t{i}) {}
  Value(unsigned u) : data_(std::int64_t{u}) {}
  Value(unsigned long u) { set_unsigned(u); }
  Value(unsigned long long u) { set_unsigned(u); }
  Value(double d) : data_(d) {}
  Value(float f) : data_(double{f}) {}
  Value(const char* s) : data_(std::string(s)) {}
  Value(std::string s) : data_(std::move(s)) {}
  Value(std::string_view s) : data_(std::string(s)) {}
  Value(Bytes b) : data_(std::move(b)) {}
  Value(BigInt b);  // stored as an int when it fits in int64 or uint64
  Value(Items items) : data_(ListData{std::move(items)}) {}
  Value(std::initializer_list<Value> items) : data_(ListData{Items(items)}) {}

  static Value list(Items items = {}) { return Value(std::move(items)); }
  static Value tuple(Items items = {});
  static Value set(Items items = {}, bool frozen = false);
  static Value dict(Entries entries = {});
  static Value bytes(std::string_view raw) { return Value(Bytes(raw)); }
  // A registered custom type (ext 6): the peer turns [name, state] into its own type.
  static Value custom(std::string name, Value state);
  static Value array(const Array& array);
  // A reference the peer turns into a proxy: to an object by URI, or to a servant that this side
  // exports on the connection the value travels on (a callback the peer can call).
  static Value uri_ref(std::string uri);
  static Value callback(std::shared_ptr<Servant> servant);

  Kind kind() const;
  std::string_view kind_name() const;  // "int", "str", "list", ... (Python's names)
  bool is_nil() const { return kind() == Kind::nil; }
  bool is_int() const { return kind() == Kind::integer; }
  bool fits_int64() const { return std::holds_alternative<std::int64_t>(data_); }
  bool is_number() const;  // int, big int or float (not bool)

  // Readers throw TypeMismatch (or OutOfRange) naming what they expected and what they found.
  bool as_bool() const;
  std::int64_t as_int64() const;
  std::uint64_t as_uint64() const;
  BigInt as_big_int() const;  // any integer
  double as_double() const;   // a float, or an int that converts exactly
  const std::string& as_string() const;
  const Bytes& as_bytes() const;
  const Items& items() const;  // list, tuple, set or frozenset
  Items& items();
  const Entries& entries() const;  // dict
  Entries& entries();
  const std::string& custom_name() const;
  const Value& custom_state() const;
  Array as_array() const;  // a "numpy.ndarray" custom value

  // Dict lookup by key; nullptr when absent (or when this is not a dict).
  const Value* find(const Value& key) const;
  const Value& operator[](std::size_t index) const { return items().at(index); }
  std::size_t size() const;  // of a container, str or bytes

  // Object references (kind object_ref): the URI, or the servant this side exports.
  bool is_callback() const;
  const std::string& ref_uri() const;
  std::shared_ptr<Servant> ref_servant() const;
  const std::shared_ptr<detail::RefData>& ref() const;
  static Value from_ref(std::shared_ptr<detail::RefData> ref);

  // A Python-like rendering for messages and tests: [1, 'a', (2,), {b'x': None}].
  std::string repr() const;
  friend bool operator==(const Value& a, const Value& b);

 private:
  struct ListData { Items items; };
  struct TupleData { Items items; };
  struct SetData { Items items; bool frozen = false; };
  struct DictData { Entries entries; };
  using Data = std::variant<std::monostate, bool, std::int64_t, std::uint64_t, std::shared_ptr<const BigInt>, double,
                            std::string, Bytes, ListData, TupleData, SetData, DictData,
                            std::shared_ptr<const detail::CustomData>, std::shared_ptr<detail::RefData>>;
  void set_unsigned(std::uint64_t u);
  [[noreturn]] void mismatch(std::string_view expected) const;
  Data data_;
};

std::string_view to_string(Value::Kind kind);

// ---- Array helpers ----

namespace detail {
template <typename T>
constexpr const char* dtype_code() {
  if constexpr (std::is_same_v<T, double>) return "f8";
  else if constexpr (std::is_same_v<T, float>) return "f4";
  else if constexpr (std::is_same_v<T, std::int64_t>) return "i8";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "i4";
  else if constexpr (std::is_same_v<T, std::int16_t>) return "i2";
  else if constexpr (std::is_same_v<T, std::int8_t>) return "i1";
  else if constexpr (std::is_same_v<T, std::uint64_t>) return "u8";
  else if constexpr (std::is_same_v<T, std::uint32_t>) return "u4";
  else if constexpr (std::is_same_v<T, std::uint16_t>) return "u2";
  else if constexpr (std::is_same_v<T, std::uint8_t>) return "u1";
  else static_assert(sizeof(T) == 0, "tether::Array supports fixed-size integers, float and double");
}
}  // namespace detail

template <typename T>
std::string Array::dtype_of() {
  static_assert(std::endian::native == std::endian::little, "tether::Array assumes a little-endian machine");
  return std::string(sizeof(T) == 1 ? "|" : "<") + detail::dtype_code<T>();
}

template <typename T>
Array Array::of(std::span<const T> values, std::vector<std::int64_t> shape) {
  Array array;
  array.dtype = dtype_of<T>();
  array.shape = shape.empty() ? std::vector<std::int64_t>{static_cast<std::int64_t>(values.size())} : std::move(shape);
  if (array.element_count() != values.size()) throw TypeMismatch("tether::Array::of: the shape does not match the element count");
  array.data = Bytes(values.data(), values.size_bytes());
  return array;
}

template <typename T>
std::vector<T> Array::to_vector() const {
  if (dtype != dtype_of<T>()) throw TypeMismatch("expected an array of dtype " + dtype_of<T>() + ", got dtype " + dtype);
  if (data.size() != element_count() * sizeof(T)) throw TypeMismatch("array data does not match its shape");
  std::vector<T> out(element_count());
  if (!out.empty()) std::memcpy(out.data(), data.data(), data.size());
  return out;
}

}  // namespace tether
