// A servant: the methods of one object a tether::Server serves (or a callback a client exports).
//
//   tether::Servant calc;
//   calc.method("add", [](int64_t a, int64_t b) { return a + b; })     // typed: checked, converted
//       .method("echo", [](const tether::Args& args) { return args[0]; })  // dynamic: Values in and out
//       .async_method("later", [](tether::Args args, tether::Reply reply) { ... reply.send(42); })
//       .stream("count", [](int64_t n, tether::StreamWriter& out) { for (int64_t i = 0; i < n; ++i) out.write(i); })
//       .oneway("log", [](std::string line) { ... });
//
// Methods run on the server's dispatch threads, several at once; a method that throws answers
// the caller with an error (TypeMismatch -> TypeError, OutOfRange -> OverflowError, RemoteError as
// given, any other std::exception -> RuntimeError, each with the C++ exception's message).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "tether/convert.hpp"
#include "tether/future.hpp"
#include "tether/security.hpp"

namespace tether {

namespace detail {
struct CallData;
struct StreamData;
}  // namespace detail

// The arguments of one call, as the caller sent them.
class Args {
 public:
  Args() = default;
  Args(Value::Items positional, Value::Entries keywords) : positional_(std::move(positional)), keywords_(std::move(keywords)) {}
  std::size_t size() const { return positional_.size(); }
  const Value& operator[](std::size_t index) const;  // throws TypeMismatch when missing
  const Value::Items& positional() const { return positional_; }
  const Value::Entries& keywords() const { return keywords_; }
  const Value* keyword(std::string_view name) const;  // nullptr when absent
  template <typename T>
  T get(std::size_t index) const;  // converts, naming the argument in any error

 private:
  Value::Items positional_;
  Value::Entries keywords_;
};

// The answer to an async method's call, given later from any thread, once (later answers are
// dropped). A Reply dropped without an answer answers with an error so the caller is not left waiting.
class Reply {
 public:
  explicit Reply(std::shared_ptr<detail::CallData> call) : call_(std::move(call)) {}
  void send(Value value) const;
  template <typename T>
  void send_as(const T& value) const { send(to_value(value)); }
  void fail(const RemoteError& error) const;
  // True once the caller has gone (cancelled, or its connection closed).
  bool cancelled() const;

 private:
  std::shared_ptr<detail::CallData> call_;
};

// The items of a streamed result. write() waits while the caller has no credit left (flow control,
// docs/protocol.md section 5), and returns false once the caller has gone: stop then.
class StreamWriter {
 public:
  explicit StreamWriter(std::shared_ptr<detail::StreamData> stream) : stream_(std::move(stream)) {}
  bool write(Value item);
  template <typename T>
  bool write_as(const T& item) { return write(to_value(item)); }

 private:
  std::shared_ptr<detail::StreamData> stream_;
};

namespace detail {

template <typename R, typename... A>
struct FunctionSignature {
  using Result = R;
  using Arguments = std::tuple<std::decay_t<A>...>;
};
// The result and parameter types of a lambda, function object or function pointer.
template <typename F>
struct Signature : Signature<decltype(&F::operator())> {};
template <typename C, typename R, typename... A>
struct Signature<R (C::*)(A...) const> : FunctionSignature<R, A...> {};
template <typename C, typename R, typename... A>
struct Signature<R (C::*)(A...)> : FunctionSignature<R, A...> {};
template <typename C, typename R, typename... A>
struct Signature<R (C::*)(A...) const noexcept> : FunctionSignature<R, A...> {};
template <typename C, typename R, typename... A>
struct Signature<R (C::*)(A...) noexcept> : FunctionSignature<R, A...> {};
template <typename R, typename... A>
struct Signature<R (*)(A...)> : FunctionSignature<R, A...> {};

[[noreturn]] void wrong_arity(std::size_t expected, const Args& args);

template <typename T>
T argument(const Args& args, std::size_t index) {
  return args.get<T>(index);
}

// Converts each argument to its declared type and calls `f` with them.
template <typename F, typename... A, std::size_t... I>
decltype(auto) call_typed(F& f, const Args& args, std::tuple<A...>*, std::index_sequence<I...>) {
  if (args.size() != sizeof...(A) || !args.keywords().empty()) wrong_arity(sizeof...(A), args);
  return f(argument<A>(args, I)...);
}
template <typename F>
decltype(auto) call_typed(F& f, const Args& args) {
  using Arguments = typename Signature<F>::Arguments;
  return call_typed(f, args, static_cast<Arguments*>(nullptr), std::make_index_sequence<std::tuple_size_v<Arguments>>{});
}

template <typename F>
constexpr bool takes_args() {
  using Arguments = typename Signature<F>::Arguments;
  if constexpr (std::tuple_size_v<Arguments> == 1) return std::is_same_v<std::tuple_element_t<0, Arguments>, Args>;
  return false;
}

}  // namespace detail

class Servant {
 public:
  using Plain = std::function<Value(const Args&)>;
  using Async = std::function<void(Args, Reply)>;
  using Streamed = std::function<void(const Args&, StreamWriter&)>;
  struct Method {
    enum class Kind { plain, oneway, async, stream } kind = Kind::plain;
    Plain plain;  // plain and oneway
    Async async;
    Streamed streamed;
  };

  // A method answering with its return value (nil for void). `f` takes `const tether::Args&` (the
  // dynamic form) or typed parameters, converted and checked against what the caller sent.
  template <typename F>
  Servant& method(std::string name, F f) {
    return add(std::move(name), Method{Method::Kind::plain, plain_of(std::move(f)), {}, {}});
  }
  // A member function of an object that outlives the server (or is shared by the servant).
  template <typename Object, typename R, typename... A>
  Servant& method(std::string name, Object* object, R (Object::*member)(A...)) {
    return method(std::move(name), [object, member](A... args) -> R { return (object->*member)(std::move(args)...); });
  }
  template <typename Object, typename R, typename... A>
  Servant& method(std::string name, const Object* object, R (Object::*member)(A...) const) {
    return method(std::move(name), [object, member](A... args) -> R { return (object->*member)(std::move(args)...); });
  }
  // A method the caller does not wait for (Python proxies send it ONEWAY; see `$meta`).
  template <typename F>
  Servant& oneway(std::string name, F f) {
    return add(std::move(name), Method{Method::Kind::oneway, plain_of(std::move(f)), {}, {}});
  }
  // A method that answers later through its Reply: f(tether::Args, tether::Reply).
  Servant& async_method(std::string name, Async f) { return add(std::move(name), Method{Method::Kind::async, {}, std::move(f), {}}); }
  // A method whose result is a stream: f(const tether::Args&, StreamWriter&), or typed parameters
  // followed by StreamWriter&. The stream ends when f returns (or with the error it throws).
  template <typename F>
  Servant& stream(std::string name, F f) {
    return add(std::move(name), Method{Method::Kind::stream, {}, {}, streamed_of(std::move(f))});
  }

  // A servant that is one function: what a peer calls when it calls the reference itself
  // (Python: `callback(x)`), e.g. Value::callback(std::make_shared<Servant>(Servant::function(f))).
  template <typename F>
  static Servant function(F f) {
    Servant servant;
    servant.method("__call__", std::move(f));
    return servant;
  }

  // Only callers with one of `identities` (secret identities or certificate common names, see
  // CallContext) may call this servant's methods; others get a `denied` error. A method's own
  // list (allow(method, ...)) wins over the servant's.
  Servant& allow(std::vector<std::string> identities);
  Servant& allow(const std::string& method, std::vector<std::string> identities);
  // Whether a caller with `names` may call `method`.
  bool allows(const std::string& method, const std::vector<std::string>& names) const;

  const Method* find(const std::string& name) const;
  std::vector<std::string> names(Method::Kind kind) const;
  std::vector<std::string> names() const;

 private:
  Servant& add(std::string name, Method method);

  template <typename F>
  static Plain plain_of(F f) {
    if constexpr (detail::takes_args<F>()) {
      return [f = std::move(f)](const Args& args) mutable -> Value { return result_of(f(args)); };
    } else {
      return [f = std::move(f)](const Args& args) mutable -> Value {
        using R = typename detail::Signature<F>::Result;
        if constexpr (std::is_void_v<R>) {
          detail::call_typed(f, args);
          return Value();
        } else {
          return to_value(detail::call_typed(f, args));
        }
      };
    }
  }
  template <typename R>
  static Value result_of(R&& r) {
    return to_value(std::forward<R>(r));
  }

  template <typename F>
  static Streamed streamed_of(F f) {
    using Arguments = typename detail::Signature<F>::Arguments;
    constexpr std::size_t n = std::tuple_size_v<Arguments>;
    static_assert(n >= 1 && std::is_same_v<std::tuple_element_t<n - 1, Arguments>, StreamWriter>,
                  "a stream method's last parameter is tether::StreamWriter&");
    if constexpr (n == 2 && std::is_same_v<std::tuple_element_t<0, Arguments>, Args>) {
      return [f = std::move(f)](const Args& args, StreamWriter& out) mutable { f(args, out); };
    } else {
      return [f = std::move(f)](const Args& args, StreamWriter& out) mutable {
        call_stream(f, args, out, static_cast<Arguments*>(nullptr), std::make_index_sequence<n - 1>{});
      };
    }
  }
  template <typename F, typename... A, std::size_t... I>
  static void call_stream(F& f, const Args& args, StreamWriter& out, std::tuple<A...>*, std::index_sequence<I...>) {
    if (args.size() != sizeof...(I) || !args.keywords().empty()) detail::wrong_arity(sizeof...(I), args);
    f(detail::argument<std::tuple_element_t<I, std::tuple<A...>>>(args, I)..., out);
  }

  std::map<std::string, Method, std::less<>> methods_;
  std::map<std::string, std::vector<std::string>, std::less<>> allowed_;  // method, or "*" for all
};

template <typename T>
T Args::get(std::size_t index) const {
  const Value& v = (*this)[index];
  try {
    return from_value<T>(v);
  } catch (const OutOfRange& e) {
    throw OutOfRange("argument " + std::to_string(index + 1) + " (" + type_name<T>() + "): " + e.what());
  } catch (const TypeMismatch& e) {
    throw TypeMismatch("argument " + std::to_string(index + 1) + " (" + type_name<T>() + "): " + e.what());
  }
}

}  // namespace tether
