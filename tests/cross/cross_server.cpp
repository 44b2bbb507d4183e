// A C++ server for the cross-language tests (tests/python/test_cross_language.py): serves `calc`
// on 127.0.0.1, prints its URI, and stops when its stdin closes. argv[1], when given, is a secret.
#include <iostream>
#include <mutex>
#include <string>
#include <thread>

#include "tether/tether.hpp"

namespace cross {

struct Point {
  double x = 0;
  double y = 0;
  std::string label;
};
TETHER_STRUCT(Point, x, y, label)

}  // namespace cross

namespace {

using tether::Args;
using tether::Value;

// One typed echo per row of the mapping table in docs/cpp.md: Python sends, C++ converts to the
// C++ type and back, Python compares.
void add_typed_echoes(tether::Servant& s) {
  s.method("echo_none", [](std::optional<std::int64_t> v) { return v; })
      .method("echo_bool", [](bool v) { return v; })
      .method("echo_int64", [](std::int64_t v) { return v; })
      .method("echo_uint64", [](std::uint64_t v) { return v; })
      .method("echo_int8", [](std::int8_t v) { return v; })
      .method("echo_big", [](tether::BigInt v) { return v; })
      .method("echo_float", [](double v) { return v; })
      .method("echo_str", [](std::string v) { return v; })
      .method("echo_bytes", [](tether::Bytes v) { return v; })
      .method("echo_list", [](std::vector<std::int64_t> v) { return v; })
      .method("echo_tuple", [](std::tuple<std::int64_t, std::string, double> v) { return v; })
      .method("echo_dict", [](std::map<std::string, std::vector<double>> v) { return v; })
      .method("echo_set", [](std::set<std::string> v) { return v; })
      .method("echo_optional", [](std::optional<std::string> v) { return v; })
      .method("echo_point", [](cross::Point v) { return v; })
      .method("echo_array", [](tether::Array v) { return v; })
      .method("echo_doubles", [](std::vector<double> v) { return tether::Array::of(v); })
      .method("echo_custom", [](const Args& args) {
        const Value& v = args[0];
        if (v.kind() != Value::Kind::custom) throw tether::TypeMismatch("expected a custom value");
        return Value::custom(v.custom_name(), v.custom_state());
      });
}

tether::Servant calc() {
  static std::mutex remembered_mutex;
  static std::vector<std::string> remembered;
  tether::Servant s;
  s.method("add", [](std::int64_t a, std::int64_t b) { return a + b; })
      .method("echo", [](const Args& args) { return args[0]; })
      .method("kinds", [](const Args& args) {
        Value::Items kinds;
        for (const auto& v : args.positional()) kinds.emplace_back(std::string(v.kind_name()));
        return Value(std::move(kinds));
      })
      .method("divide", [](double a, double b) {
        if (b == 0) throw tether::RemoteError(tether::ErrorKind::failed, "division by zero", "builtins.ZeroDivisionError");
        return a / b;
      })
      .method("fail", [](std::string why) -> int { throw std::logic_error(why); })
      .method("call_back", [](tether::Proxy callback, std::int64_t n) {
        Value::Items results;
        for (std::int64_t i = 0; i < n; ++i) results.push_back(callback(i));
        return Value(std::move(results));
      })
      .method("call_method_back", [](tether::Proxy target, std::string method, const std::string& text) {
        return target.call<std::string>(method, text);
      })
      .method("sleep_ms", [](std::int64_t ms) {
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        return ms;
      })
      .async_method("double_later", [](Args args, tether::Reply reply) {
        std::thread([args, reply] {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          try {
            reply.send(args.get<std::int64_t>(0) * 2);
          } catch (const tether::TypeMismatch& e) {
            reply.fail(tether::RemoteError(tether::ErrorKind::failed, e.what(), "builtins.TypeError"));
          }
        }).detach();
      })
      .stream("count", [](std::int64_t n, tether::StreamWriter& out) {
        for (std::int64_t i = 0; i < n; ++i)
          if (!out.write(i)) return;
      })
      .stream("count_then_fail", [](std::int64_t n, tether::StreamWriter& out) {
        for (std::int64_t i = 0; i < n; ++i) out.write(i);
        throw std::runtime_error("stream broke after " + std::to_string(n));
      })
      .oneway("remember", [](std::string text) {
        std::lock_guard lock(remembered_mutex);
        remembered.push_back(std::move(text));
      })
      .method("remembered", [] {
        std::lock_guard lock(remembered_mutex);
        return remembered;
      });
  add_typed_echoes(s);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  tether::ServerOptions options{.host = "127.0.0.1", .port = 0};
  if (argc > 1) options.secret = argv[1];
  tether::Server server(options);
  std::cout << server.add("calc", calc()) << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  server.close();
  return 0;
}
