// Calls the greeter at the URI given (served by greeter_server, or by Python's tether.Server).
#include <iostream>
#include <memory>

#include <tether/tether.hpp>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: greeter_client URI" << std::endl;
    return 2;
  }
  tether::Client client;
  auto greeter = client.proxy(argv[1]);
  std::cout << greeter.call<std::string>("hello", "ann") << std::endl;              // sync

  tether::Future<std::string> later = greeter.call_async<std::string>("hello", "bob");  // async
  std::cout << later.get() << std::endl;

  auto greeting = greeter.call("greet", "cy");                                      // dynamic Value
  std::cout << greeting.find(tether::Value("text"))->as_string() << " (#" << greeting.find(tether::Value("count"))->as_int64() << ")"
            << std::endl;

  std::cout << "countdown:";
  for (std::int64_t i : greeter.stream<std::int64_t>("countdown", 3)) std::cout << ' ' << i;  // streamed
  std::cout << std::endl;

  auto listener = std::make_shared<tether::Servant>(tether::Servant::function([](std::string heard) { return "heard " + heard; }));
  std::cout << greeter.call<std::string>("shout_to", tether::Value::callback(listener), "hi") << std::endl;  // callback

  try {
    greeter.call("hello", 42);  // a type mismatch is a clear remote error, and the connection goes on
  } catch (const tether::RemoteError& e) {
    std::cout << "error: " << e.what() << std::endl;
  }
  return 0;
}
