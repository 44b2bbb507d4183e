// A C++ client for the cross-language tests (tests/python/test_cross_language.py): calls the
// Python object at argv[1] in every way the API offers and prints "ok <check>" for each check
// that held, or "FAIL <check>: <why>" and exits 1 at the first that did not.
#include <atomic>
#include <coroutine>
#include <future>
#include <iostream>
#include <string>

#include "tether/tether.hpp"

namespace {

using tether::ErrorKind;
using tether::RemoteError;
using tether::Value;

struct Failed {
  std::string why;
};

void expect(bool condition, const std::string& why) {
  if (!condition) throw Failed{why};
}

template <typename F>
void check(const char* name, F body) {
  try {
    body();
  } catch (const Failed& f) {
    std::cout << "FAIL " << name << ": " << f.why << std::endl;
    std::exit(1);
  } catch (const std::exception& e) {
    std::cout << "FAIL " << name << ": unexpected exception: " << e.what() << std::endl;
    std::exit(1);
  }
  std::cout << "ok " << name << std::endl;
}

template <typename F>
RemoteError error_of(F call) {
  try {
    call();
  } catch (const RemoteError& e) {
    return e;
  }
  throw Failed{"the call did not fail"};
}

struct Task {
  struct promise_type {
    Task get_return_object() { return {}; }
    std::suspend_never initial_suspend() { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::terminate(); }
  };
};

Task sum_of_two(tether::Proxy py, std::promise<std::int64_t>& out) {
  std::int64_t a = co_await py.call_async<std::int64_t>("add", 20, 1);
  std::int64_t b = co_await py.call_async<std::int64_t>("async_double", a);
  out.set_value(b);
}

// Calls the named actor `name` (tests/python/test_cross_language.py makes a Keeper) of the cluster
// at `address`, with the cluster's secret from $TETHER_SECRET.
int call_actor(const std::string& address, const std::string& name) {
  const char* secret = std::getenv("TETHER_SECRET");
  tether::Client client(tether::ClientOptions{.secret = secret ? secret : "", .timeout = std::chrono::seconds(30)});
  tether::Cluster cluster(client, address);
  auto keeper = cluster.actor(name);
  check("actor_lookup", [&] {
    expect(keeper.class_name().find("Keeper") != std::string::npos, "class " + keeper.class_name());
    auto e = error_of([&] { cluster.actor("nobody-has-this-name"); });
    expect(e.remote_type() == "builtins.ValueError", "type " + e.remote_type());
  });
  check("actor_calls_in_order", [&] {
    for (std::int64_t i = 1; i <= 5; ++i) expect(keeper.call<std::int64_t>("add", i) == i * (i + 1) / 2, "running total");
  });
  check("actor_plain_values", [&] {
    Value v = Value{Value(), true, -3, tether::BigInt::from_string("-123456789012345678901234567890"), 0.5, "s", Value::bytes("b"),
                    Value::tuple({1, "t"}), Value::set({1}), Value::set({"f"}, true),
                    Value::dict({{Value("k"), Value{1, Value::dict({{Value(2), Value("two")}})}}})};
    Value back = keeper.call("echo", v);
    expect(back == v, "echo gave " + back.repr());
    expect(keeper.call_values("describe", {1}, {{Value("scale"), Value(3)}}) == Value("1x3"), "keyword arguments");
  });
  check("actor_large_result", [&] {
    auto big = keeper.call<tether::Bytes>("blob", 300000);  // kept in shared memory by the worker
    expect(big.size() == 300000 && big.view().find_first_not_of('x') == std::string_view::npos, "blob");
  });
  check("actor_exception", [&] {
    auto e = error_of([&] { keeper.call("fail", "lost key"); });
    expect(e.remote_type() == "builtins.KeyError", "type " + e.remote_type());
    expect(e.message() == "lost key", "message " + e.message());
    expect(e.traceback().find("in fail") != std::string::npos, "traceback " + e.traceback());
  });
  check("actor_unreadable_result", [&] {
    try {
      keeper.call("not_plain");
      throw Failed{"a Python object reached C++"};
    } catch (const tether::TypeMismatch& e) {
      expect(std::string(e.what()).find("not plain data") != std::string::npos, e.what());
    }
    expect(keeper.call<std::int64_t>("add", 0) == 15, "the actor went on working");
  });
  return 0;
}

// Uses the name server at `address` (a Python tether.NameServer) for the object at `uri`.
int use_name_server(const std::string& address, const std::string& uri) {
  tether::Client client(tether::ClientOptions{.timeout = std::chrono::seconds(10)});
  auto ns = client.name_server(address);
  check("ns_register_lookup", [&] {
    ns.register_uri("cross.py", uri, {"cross", "python"});
    expect(ns.lookup("cross.py") == uri, "lookup");
    auto listed = ns.list("cross.");
    expect(listed.size() == 1 && listed.at("cross.py") == uri, "list");
  });
  check("ns_uri", [&] {
    auto py = client.proxy("tetherns://" + address + "/cross.py");
    expect(py.call<std::int64_t>("add", 40, 2) == 42, "call through tetherns://");
  });
  check("ns_remove", [&] {
    expect(ns.remove("cross.py"), "remove");
    auto e = error_of([&] { ns.lookup("cross.py"); });
    expect(e.remote_type() == "builtins.KeyError", "type " + e.remote_type());
  });
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--actor") return call_actor(argv[2], argv[3]);
  if (argc == 4 && std::string(argv[1]) == "--ns") return use_name_server(argv[2], argv[3]);
  if (argc < 2) {
    std::cerr << "usage: cross_client URI | cross_client --actor HOST:PORT NAME" << std::endl;
    return 2;
  }
  tether::Client client(tether::ClientOptions{.timeout = std::chrono::seconds(10)});
  tether::Proxy py = client.proxy(argv[1]);

  check("sync", [&] { expect(py.call<std::int64_t>("add", 2, 3) == 5, "add(2, 3) != 5"); });
  check("values", [&] {
    Value v = Value{Value(), true, -7, 2.5, "text", Value::bytes("raw"), Value::tuple({1, 2}), Value::set({"a"}),
                    Value::dict({{Value("k"), Value{1, 2}}}), tether::BigInt::from_string("123456789012345678901234567890"),
                    Value::bytes(std::string(100000, 'z'))};
    Value back = py.call("echo", v);
    expect(back == v, "echo returned " + back.repr().substr(0, 200));
  });
  check("async", [&] {
    std::vector<tether::Future<std::int64_t>> futures;
    for (int i = 0; i < 200; ++i) futures.push_back(py.call_async<std::int64_t>("add", i, 1));
    for (int i = 0; i < 200; ++i) expect(futures[i].get() == i + 1, "future " + std::to_string(i));
  });
  check("coroutine", [&] {
    std::promise<std::int64_t> result;
    sum_of_two(py, result);
    expect(result.get_future().get() == 42, "co_await chain did not give 42");
  });
  check("oneway", [&] {
    py.oneway("remember", "first");
    py.oneway("remember", "second");
    auto seen = py.call<std::vector<std::string>>("seen_items");
    expect(seen == std::vector<std::string>{"first", "second"}, "the oneway calls did not arrive in order");
  });
  check("stream", [&] {
    std::int64_t expected = 0;
    for (std::int64_t item : py.stream<std::int64_t>("count", 300)) expect(item == expected++, "item out of order");
    expect(expected == 300, "stream ended early at " + std::to_string(expected));
  });
  check("remote_exception", [&] {
    auto e = error_of([&] { py.call("fail"); });
    expect(e.kind() == ErrorKind::failed, "kind");
    expect(e.remote_type() == "builtins.KeyError", "type " + e.remote_type());
    expect(e.message().find("missing") != std::string::npos, "message " + e.message());
    expect(e.traceback().find("in fail") != std::string::npos, "traceback " + e.traceback());
  });
  check("python_type_error", [&] {
    auto e = error_of([&] { py.call("add", 1, "x"); });
    expect(e.remote_type() == "builtins.TypeError", "type " + e.remote_type());
    expect(py.call<std::int64_t>("add", 1, 1) == 2, "the connection stopped working");
  });
  check("missing_method", [&] {
    auto e = error_of([&] { py.call("no_such_method"); });
    expect(e.kind() == ErrorKind::unimplemented, "kind " + std::string(tether::to_string(e.kind())));
  });
  check("callback", [&] {
    std::atomic<int> calls{0};
    auto callback = std::make_shared<tether::Servant>(tether::Servant::function([&calls](std::int64_t i) {
      ++calls;
      return i * 10;
    }));
    auto results = py.call<std::vector<std::int64_t>>("call_back", Value::callback(callback), 3);
    expect(results == std::vector<std::int64_t>{0, 10, 20}, "callback results");
    expect(calls == 3, "the callback ran " + std::to_string(calls.load()) + " times here");
  });
  check("timeout", [&] {
    auto e = error_of([&] { py.with_timeout(std::chrono::milliseconds(100)).call("slow", 1.0); });
    expect(e.kind() == ErrorKind::timeout, "kind " + std::string(tether::to_string(e.kind())));
  });
  return 0;
}
