// Conversions between tether::Value and C++ types: tether::to_value(x) and tether::from_value<T>(v).
// Built in: bool, arithmetic types (range-checked), std::string, Bytes, BigInt, Array, Value,
// std::vector, std::set, std::map / std::unordered_map, std::optional, std::pair and std::tuple
// (Python tuples), and structs declared with TETHER_STRUCT (Python dicts keyed by field name).
// Add a type by specializing tether::Convert<T> with static to_value and from_value.
#pragma once

#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tether/value.hpp"

namespace tether {

template <typename T, typename Enable = void>
struct Convert;

template <typename T>
Value to_value(const T& value) {
  return Convert<std::decay_t<T>>::to_value(value);
}
template <typename T>
T from_value(const Value& value) {
  return Convert<T>::from_value(value);
}

// A readable name of a C++ type for error messages ("int32", "std::string", "list of float64").
template <typename T, typename Enable = void>
struct TypeName {
  static std::string get() { return "the declared C++ type"; }
};
template <typename T>
std::string type_name() {
  return TypeName<std::decay_t<T>>::get();
}

template <>
struct Convert<Value> {
  static Value to_value(const Value& v) { return v; }
  static Value from_value(const Value& v) { return v; }
};
template <>
struct TypeName<Value> {
  static std::string get() { return "any value"; }
};

template <>
struct Convert<bool> {
  static Value to_value(bool b) { return Value(b); }
  static bool from_value(const Value& v) { return v.as_bool(); }
};
template <>
struct TypeName<bool> {
  static std::string get() { return "bool"; }
};

template <typename T>
struct Convert<T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>> {
  static Value to_value(T i) {
    if constexpr (std::is_signed_v<T>) return Value(static_cast<long long>(i));
    else return Value(static_cast<unsigned long long>(i));
  }
  static T from_value(const Value& v) {
    if constexpr (std::is_signed_v<T>) {
      auto i = v.as_int64();
      if (i < std::numeric_limits<T>::min() || i > std::numeric_limits<T>::max())
        throw OutOfRange(std::to_string(i) + " is out of range for " + TypeName<T>::get());
      return static_cast<T>(i);
    } else {
      auto u = v.as_uint64();
      if (u > std::numeric_limits<T>::max()) throw OutOfRange(std::to_string(u) + " is out of range for " + TypeName<T>::get());
      return static_cast<T>(u);
    }
  }
};
template <typename T>
struct TypeName<T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>> {
  static std::string get() { return std::string(std::is_signed_v<T> ? "int" : "uint") + std::to_string(8 * sizeof(T)); }
};

template <typename T>
struct Convert<T, std::enable_if_t<std::is_floating_point_v<T>>> {
  static Value to_value(T d) { return Value(static_cast<double>(d)); }
  static T from_value(const Value& v) { return static_cast<T>(v.as_double()); }
};
template <typename T>
struct TypeName<T, std::enable_if_t<std::is_floating_point_v<T>>> {
  static std::string get() { return "float" + std::to_string(8 * sizeof(T)); }
};

template <>
struct Convert<std::string> {
  static Value to_value(const std::string& s) { return Value(s); }
  static std::string from_value(const Value& v) { return v.as_string(); }
};
template <>
struct Convert<std::string_view> {
  static Value to_value(std::string_view s) { return Value(s); }
};
template <>
struct Convert<const char*> {
  static Value to_value(const char* s) { return Value(s); }
};
template <>
struct Convert<char*> {  // what a string literal decays to
  static Value to_value(const char* s) { return Value(s); }
};
template <>
struct TypeName<std::string> {
  static std::string get() { return "str"; }
};

template <>
struct Convert<Bytes> {
  static Value to_value(const Bytes& b) { return Value(b); }
  static Bytes from_value(const Value& v) { return v.as_bytes(); }
};
template <>
struct TypeName<Bytes> {
  static std::string get() { return "bytes"; }
};

template <>
struct Convert<BigInt> {
  static Value to_value(const BigInt& b) { return Value(b); }
  static BigInt from_value(const Value& v) { return v.as_big_int(); }
};
template <>
struct TypeName<BigInt> {
  static std::string get() { return "int"; }
};

template <>
struct Convert<Array> {
  static Value to_value(const Array& a) { return Value::array(a); }
  static Array from_value(const Value& v) { return v.as_array(); }
};
template <>
struct TypeName<Array> {
  static std::string get() { return "numpy.ndarray"; }
};

template <typename T>
struct Convert<std::optional<T>> {
  static Value to_value(const std::optional<T>& o) { return o ? tether::to_value(*o) : Value(); }
  static std::optional<T> from_value(const Value& v) {
    if (v.is_nil()) return std::nullopt;
    return tether::from_value<T>(v);
  }
};
template <typename T>
struct TypeName<std::optional<T>> {
  static std::string get() { return TypeName<T>::get() + " or None"; }
};

namespace detail {
// Reads each item of a list, tuple, set or frozenset; an error names the item's position.
template <typename T, typename Add>
void read_items(const Value& v, Add add) {
  const auto& items = v.items();
  for (std::size_t i = 0; i < items.size(); ++i) {
    try {
      add(tether::from_value<T>(items[i]));
    } catch (const OutOfRange& e) {
      throw OutOfRange("item " + std::to_string(i) + ": " + e.what());
    } catch (const TypeMismatch& e) {
      throw TypeMismatch("item " + std::to_string(i) + ": " + e.what());
    }
  }
}
}  // namespace detail

// A vector is a list; it reads a list, tuple, set or frozenset, and an array of the same element
// type (numpy arrays arrive as arrays).
template <typename T, typename A>
struct Convert<std::vector<T, A>> {
  static Value to_value(const std::vector<T, A>& items) {
    Value::Items out;
    out.reserve(items.size());
    for (const auto& item : items) out.push_back(tether::to_value(item));
    return Value(std::move(out));
  }
  static std::vector<T, A> from_value(const Value& v) {
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool> && sizeof(T) <= 8) {
      if (v.kind() == Value::Kind::custom) {
        auto vec = v.as_array().template to_vector<T>();
        return std::vector<T, A>(vec.begin(), vec.end());
      }
    }
    std::vector<T, A> out;
    out.reserve(v.items().size());
    detail::read_items<T>(v, [&](T&& item) { out.push_back(std::move(item)); });
    return out;
  }
};
template <typename T, typename A>
struct TypeName<std::vector<T, A>> {
  static std::string get() { return "list of " + TypeName<T>::get(); }
};

template <typename T, typename C, typename A>
struct Convert<std::set<T, C, A>> {
  static Value to_value(const std::set<T, C, A>& items) {
    Value::Items out;
    for (const auto& item : items) out.push_back(tether::to_value(item));
    return Value::set(std::move(out));
  }
  static std::set<T, C, A> from_value(const Value& v) {
    std::set<T, C, A> out;
    detail::read_items<T>(v, [&](T&& item) { out.insert(std::move(item)); });
    return out;
  }
};
template <typename T, typename C, typename A>
struct TypeName<std::set<T, C, A>> {
  static std::string get() { return "set of " + TypeName<T>::get(); }
};

namespace detail {
template <typename Map>
struct MapConvert {
  using K = typename Map::key_type;
  using V = typename Map::mapped_type;
  static Value to_value(const Map& map) {
    Value::Entries out;
    out.reserve(map.size());
    for (const auto& [k, v] : map) out.emplace_back(tether::to_value(k), tether::to_value(v));
    return Value::dict(std::move(out));
  }
  static Map from_value(const Value& v) {
    Map out;
    for (const auto& [key, value] : v.entries()) {
      K k = tether::from_value<K>(key);
      try {
        out.emplace(std::move(k), tether::from_value<V>(value));
      } catch (const OutOfRange& e) {
        throw OutOfRange("value of key " + key.repr() + ": " + e.what());
      } catch (const TypeMismatch& e) {
        throw TypeMismatch("value of key " + key.repr() + ": " + e.what());
      }
    }
    return out;
  }
  static std::string name() { return "dict of " + TypeName<K>::get() + " to " + TypeName<V>::get(); }
};
}  // namespace detail

template <typename K, typename V, typename C, typename A>
struct Convert<std::map<K, V, C, A>> : detail::MapConvert<std::map<K, V, C, A>> {};
template <typename K, typename V, typename C, typename A>
struct TypeName<std::map<K, V, C, A>> {
  static std::string get() { return detail::MapConvert<std::map<K, V, C, A>>::name(); }
};
template <typename K, typename V, typename H, typename E, typename A>
struct Convert<std::unordered_map<K, V, H, E, A>> : detail::MapConvert<std::unordered_map<K, V, H, E, A>> {};
template <typename K, typename V, typename H, typename E, typename A>
struct TypeName<std::unordered_map<K, V, H, E, A>> {
  static std::string get() { return detail::MapConvert<std::unordered_map<K, V, H, E, A>>::name(); }
};

// std::tuple and std::pair are Python tuples of that length.
template <typename... Ts>
struct Convert<std::tuple<Ts...>> {
  static Value to_value(const std::tuple<Ts...>& t) {
    return std::apply([](const auto&... items) { return Value::tuple({tether::to_value(items)...}); }, t);
  }
  static std::tuple<Ts...> from_value(const Value& v) {
    const auto& items = v.items();
    if (items.size() != sizeof...(Ts))
      throw TypeMismatch("expected a tuple of " + std::to_string(sizeof...(Ts)) + " items, got " + std::to_string(items.size()));
    return read(items, std::index_sequence_for<Ts...>{});
  }

 private:
  template <std::size_t... I>
  static std::tuple<Ts...> read(const Value::Items& items, std::index_sequence<I...>) {
    return std::tuple<Ts...>{tether::from_value<Ts>(items[I])...};
  }
};
template <typename... Ts>
struct TypeName<std::tuple<Ts...>> {
  static std::string get() {
    std::string out = "tuple(";
    ((out += TypeName<Ts>::get() + ", "), ...);
    if (sizeof...(Ts)) out.resize(out.size() - 2);
    return out + ")";
  }
};
template <typename A, typename B>
struct Convert<std::pair<A, B>> {
  static Value to_value(const std::pair<A, B>& p) { return Value::tuple({tether::to_value(p.first), tether::to_value(p.second)}); }
  static std::pair<A, B> from_value(const Value& v) {
    auto t = Convert<std::tuple<A, B>>::from_value(v);
    return {std::move(std::get<0>(t)), std::move(std::get<1>(t))};
  }
};

// ---- structs: TETHER_STRUCT(Point, x, y) next to `struct Point { double x, y; };` ----

namespace detail {
template <typename T>
using fields_of = decltype(tether_fields(static_cast<const T*>(nullptr)));
template <typename T, typename = void>
struct has_fields : std::false_type {};
template <typename T>
struct has_fields<T, std::void_t<fields_of<T>>> : std::true_type {};

template <typename S, typename M>
struct Field {
  const char* name;
  M S::*member;
};
template <typename S, typename... M>
constexpr auto make_fields(std::pair<const char*, M S::*>... fields) {
  return std::make_tuple(Field<S, M>{fields.first, fields.second}...);
}
}  // namespace detail

template <typename T>
struct Convert<T, std::enable_if_t<detail::has_fields<T>::value>> {
  static Value to_value(const T& s) {
    Value::Entries out;
    std::apply([&](const auto&... f) { (out.emplace_back(Value(f.name), tether::to_value(s.*(f.member))), ...); },
               tether_fields(static_cast<const T*>(nullptr)));
    return Value::dict(std::move(out));
  }
  static T from_value(const Value& v) {
    if (v.kind() != Value::Kind::dict) throw TypeMismatch("expected a dict (a " + TypeName<T>::get() + "), got " + std::string(v.kind_name()));
    T s{};
    std::apply([&](const auto&... f) { (read(v, f.name, s.*(f.member)), ...); }, tether_fields(static_cast<const T*>(nullptr)));
    return s;
  }

 private:
  template <typename M>
  static void read(const Value& dict, const char* name, M& out) {
    const Value* field = dict.find(Value(name));
    if (!field) throw TypeMismatch(TypeName<T>::get() + ": missing field '" + name + "'");
    try {
      out = tether::from_value<M>(*field);
    } catch (const OutOfRange& e) {
      throw OutOfRange(TypeName<T>::get() + " field '" + name + "': " + e.what());
    } catch (const TypeMismatch& e) {
      throw TypeMismatch(TypeName<T>::get() + " field '" + name + "': " + e.what());
    }
  }
};

template <typename T>
struct TypeName<T, std::enable_if_t<detail::has_fields<T>::value>> {
  static std::string get() { return tether_type_name(static_cast<const T*>(nullptr)); }
};

}  // namespace tether

#define TETHER_DETAIL_FIELD(S, f) std::pair{#f, &S::f}
#define TETHER_DETAIL_EXPAND(x) x
#define TETHER_DETAIL_F1(S, a) TETHER_DETAIL_FIELD(S, a)
#define TETHER_DETAIL_F2(S, a, ...) TETHER_DETAIL_FIELD(S, a), TETHER_DETAIL_EXPAND(TETHER_DETAIL_F1(S, __VA_ARGS__))
#define TETHER_DETAIL_F3(S, a, ...) TETHER_DETAIL_FIELD(S, a), TETHER_DETAIL_EXPAND(TETHER_DETAIL_F2(S, __VA_ARGS__))
#define TETHER_DETAIL_F4(S, a, ...) TETHER_DETAIL_FIELD(S, a), TETHER_DETAIL_EXPAND(TETHER_DETAIL_F3(S, __VA_ARGS__))
#define TETHER_DETAIL_F5(S, a, ...) TETHER_DETAIL_FIELD(S, a), TETHER_DETAIL_EXPAND(TETHER_DETAIL_F4(S, __VA_ARGS__))
#define TETHER_DETAIL_F6(S, a, ...) TETHER_DETAIL_FIELD(S, a), TETHER_DETAIL_EXPAND(TETHER_DETAIL_F5(S, __VA_ARGS__))
#define TETHER_DETAIL_F7(S, a, ...) TETHER_DETAIL_FIELD(S, a), TETHER_DETAIL_EXPAND(TETHER_DETAIL_F6(S, __VA_ARGS__))
#define TETHER_DETAIL_F8(S, a, ...) TETHER_DETAIL_FIELD(S, a), TETHER_DETAIL_EXPAND(TETHER_DETAIL_F7(S, __VA_ARGS__))
#define TETHER_DETAIL_F9(S, a, ...) TETHER_DETAIL_FIELD(S, a), TETHER_DETAIL_EXPAND(TETHER_DETAIL_F8(S, __VA_ARGS__))
#define TETHER_DETAIL_F10(S, a, ...) TETHER_DETAIL_FIELD(S, a), TETHER_DETAIL_EXPAND(TETHER_DETAIL_F9(S, __VA_ARGS__))
#define TETHER_DETAIL_F11(S, a, ...) TETHER_DETAIL_FIELD(S, a), TETHER_DETAIL_EXPAND(TETHER_DETAIL_F10(S, __VA_ARGS__))
#define TETHER_DETAIL_F12(S, a, ...) TETHER_DETAIL_FIELD(S, a), TETHER_DETAIL_EXPAND(TETHER_DETAIL_F11(S, __VA_ARGS__))
#define TETHER_DETAIL_PICK(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, NAME, ...) NAME
#define TETHER_DETAIL_FIELDS(S, ...)                                                                                    \
  TETHER_DETAIL_EXPAND(TETHER_DETAIL_PICK(__VA_ARGS__, TETHER_DETAIL_F12, TETHER_DETAIL_F11, TETHER_DETAIL_F10,        \
                                          TETHER_DETAIL_F9, TETHER_DETAIL_F8, TETHER_DETAIL_F7, TETHER_DETAIL_F6,       \
                                          TETHER_DETAIL_F5, TETHER_DETAIL_F4, TETHER_DETAIL_F3, TETHER_DETAIL_F2,       \
                                          TETHER_DETAIL_F1)(S, __VA_ARGS__))

// Declares a struct's fields (up to 12) for conversion, as a dict keyed by field name. Put it in
// the struct's namespace, after the struct.
#define TETHER_STRUCT(S, ...)                                                              \
  inline auto tether_fields(const S*) { return ::tether::detail::make_fields<S>(TETHER_DETAIL_FIELDS(S, __VA_ARGS__)); } \
  inline std::string tether_type_name(const S*) { return #S; }
