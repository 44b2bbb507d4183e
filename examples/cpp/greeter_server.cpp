// Serves `greeter` to C++ and Python callers alike; prints its URI and runs until stdin closes.
//   ./greeter_server            then, from Python:  tether.Proxy(URI).hello("ann")
#include <iostream>
#include <string>

#include <tether/tether.hpp>

struct Greeting {
  std::string text;
  std::int64_t count = 0;
};
TETHER_STRUCT(Greeting, text, count)

int main() {
  tether::Server server({.host = "127.0.0.1", .port = 0});
  std::int64_t greeted = 0;
  std::mutex mutex;
  tether::Servant greeter;
  greeter.method("hello", [](std::string name) { return "hello " + name; })
      .method("greet", [&](std::string name) {  // a struct travels as a dict
        std::lock_guard lock(mutex);
        return Greeting{"hello " + name, ++greeted};
      })
      .stream("countdown", [](std::int64_t from, tether::StreamWriter& out) {
        for (std::int64_t i = from; i >= 0; --i) out.write(i);
      })
      .method("shout_to", [](tether::Proxy listener, std::string text) {  // a callback to the caller
        return listener.call<std::string>("__call__", text + "!");
      });
  std::cout << server.add("greeter", std::move(greeter)) << std::endl;
  for (std::string line; std::getline(std::cin, line);) {
  }
}
