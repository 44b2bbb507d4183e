// tetherd: the node daemon. Serves the "node" object (clients, objects, tasks, workers, actors) on
// TCP and on a Unix socket in its session directory, and prints one "TETHERD READY" line with both
// addresses when it is ready. Usage: see usage() below and docs/cluster.md.
#include <openssl/rand.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <future>
#include <iostream>
#include <thread>

#include "cluster/name_service.hpp"
#include "cluster/node.hpp"
#include "net/address.hpp"
#include "net/tls.hpp"
#include "state/state_store.hpp"
#include "rpc/listener.hpp"
#include "rpc/runtime.hpp"
#include "service/service.hpp"
#include "groups/groups.hpp"
#include "topics/topics.hpp"
#include "tuplespace/tuple_space.hpp"

namespace {

using namespace tether;

struct Arguments {
  std::string host = "127.0.0.1";
  int port = 0;
  double num_cpus = 0;
  cluster::Resources resources;
  std::filesystem::path session_dir;
  std::string secret_file;
  std::string python = "python3";
  std::uint64_t store_bytes = 0;
  bool watch_stdin = false;
  std::size_t prestart = 0;
  double idle_worker_seconds = 30;
  double ns_sweep_seconds = 10;
  std::string join;  // --address: the head to join; empty for the head itself
  double node_timeout_seconds = 10;
  bool services_only = false;  // the name server, tuple spaces, topics and groups without a cluster
  net::TlsConfig tls;          // --tls-cert/--tls-key/--tls-ca/--tls-mutual: every TCP link of the node
  std::filesystem::path state_dir;  // --state-dir: the head keeps names, tuples and retained values there
};

[[noreturn]] void usage(const std::string& problem) {
  std::cerr << "tetherd: " << problem << "\n"
            << "usage: tetherd (--head | --address HEAD_HOST:PORT) [--host H] [--port P] [--num-cpus N] [--resource NAME=AMOUNT]...\n"
               "               [--session-dir DIR] [--secret-file FILE] [--python PATH] [--object-store-memory BYTES]\n"
               "               [--prestart-workers N] [--idle-worker-timeout SECONDS] [--ns-sweep-interval SECONDS]\n"
               "               [--node-timeout SECONDS] [--watch-stdin]\n"
               "               [--tls-cert FILE --tls-key FILE [--tls-ca FILE] [--tls-mutual]] [--state-dir DIR]\n"
               "       tetherd --services-only [--host H] [--port P] [--secret-file FILE] [--ns-sweep-interval SECONDS]\n"
               "               (the name server, tuple spaces, topics and groups, standalone: no node, no workers)\n"
               "The secret comes from --secret-file, else $TETHER_SECRET, else (for a head) a new one is written\n"
               "to DIR/secret. A node that joins needs the cluster's secret.\n";
  std::exit(2);
}

double number(const std::string& text, const std::string& what) {
  try {
    std::size_t used = 0;
    double value = std::stod(text, &used);
    if (used == text.size() && value >= 0) return value;
  } catch (const std::exception&) {
  }
  usage(what + " must be a non-negative number, got '" + text + "'");
}

Arguments parse(int argc, char** argv) {
  Arguments a;
  bool head = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--head") head = true;
    else if (arg == "--address") a.join = value();
    else if (arg == "--host") a.host = value();
    else if (arg == "--port") a.port = static_cast<int>(number(value(), "--port"));
    else if (arg == "--num-cpus") a.num_cpus = number(value(), "--num-cpus");
    else if (arg == "--resource") {
      auto text = value();
      auto eq = text.find('=');
      if (eq == std::string::npos || eq == 0) usage("--resource takes NAME=AMOUNT, got '" + text + "'");
      a.resources[text.substr(0, eq)] = number(text.substr(eq + 1), "--resource " + text.substr(0, eq));
    } else if (arg == "--session-dir") a.session_dir = value();
    else if (arg == "--secret-file") a.secret_file = value();
    else if (arg == "--python") a.python = value();
    else if (arg == "--object-store-memory") a.store_bytes = static_cast<std::uint64_t>(number(value(), "--object-store-memory"));
    else if (arg == "--prestart-workers") a.prestart = static_cast<std::size_t>(number(value(), "--prestart-workers"));
    else if (arg == "--idle-worker-timeout") a.idle_worker_seconds = number(value(), "--idle-worker-timeout");
    else if (arg == "--watch-stdin") a.watch_stdin = true;
    else if (arg == "--ns-sweep-interval") a.ns_sweep_seconds = number(value(), "--ns-sweep-interval");
    else if (arg == "--node-timeout") a.node_timeout_seconds = number(value(), "--node-timeout");
    else if (arg == "--services-only") a.services_only = head = true;
    else if (arg == "--tls-cert") a.tls.cert_file = value();
    else if (arg == "--tls-key") a.tls.key_file = value();
    else if (arg == "--tls-ca") a.tls.ca_file = value();
    else if (arg == "--tls-mutual") a.tls.require_client_certificate = true;
    else if (arg == "--state-dir") a.state_dir = value();
    else usage("unknown option " + arg);
  }
  if (head == !a.join.empty()) usage("give exactly one of --head (start a cluster), --address (join one) and --services-only");
  if (a.port > 65535) usage("--port must be at most 65535");
  if (!a.state_dir.empty() && !a.join.empty()) usage("--state-dir is for the head, whose state it keeps");
  if (a.num_cpus == 0) a.num_cpus = std::max(1u, std::thread::hardware_concurrency());
  a.resources["CPU"] = a.num_cpus;
  return a;
}

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  TETHER_ASSERT(RAND_bytes(raw.data(), static_cast<int>(raw.size())) == 1, "OpenSSL has no randomness");
  static const char* digits = "0123456789abcdef";
  std::string hex;
  for (auto b : raw) {
    hex.push_back(digits[b >> 4]);
    hex.push_back(digits[b & 15]);
  }
  return hex;
}

std::string read_secret(const Arguments& a, const std::filesystem::path& session_dir) {
  if (!a.secret_file.empty()) {
    std::ifstream in(a.secret_file);
    std::string secret((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
    if (secret.empty()) usage("the secret file " + a.secret_file + " is empty or unreadable");
    return secret;
  }
  if (const char* env = std::getenv("TETHER_SECRET"); env && *env) return env;
  if (!a.join.empty()) usage("joining a cluster needs its secret: --secret-file or $TETHER_SECRET");
  auto secret = random_hex(32);
  auto path = session_dir / "secret";
  { std::ofstream(path) << secret << "\n"; }
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  return secret;
}

struct Joined {
  std::shared_ptr<rpc::Connection> head;
  std::uint32_t node_id = 0;
  std::vector<cluster::NodeInfo> directory;
};

// Connects to the head and joins its cluster (node.join): our node id and its directory.
Result<Joined> join_cluster(rpc::Runtime& runtime, const Arguments& a, const std::string& advertised, const rpc::AuthConfig& auth,
                            const rpc::ConnectionOptions& options, std::shared_ptr<rpc::RequestHandler> host) {
  auto endpoint = net::parse_host_port(a.join);
  if (!endpoint) return Error{ErrorKind::bad_request, "bad --address: " + endpoint.error().message};
  auto head = rpc::connect(runtime, *endpoint, auth, options, std::move(host), std::chrono::seconds(10));
  if (!head) return head.error();
  service::ReplyBuilder request;
  request.packer().pack_array(2);
  request.packer().pack_array(2);
  wire::pack_str(request.packer(), advertised);
  request.pack_resources(a.resources);
  request.packer().pack_nil();
  std::promise<Result<service::ReceivedReply>> answered;
  auto answer = answered.get_future();
  auto sink = std::make_shared<service::ReplyHandler>([&answered](Result<service::ReceivedReply> reply) { answered.set_value(std::move(reply)); });
  auto sent = (*head)->call(request.take_request("node", "join"), sink);
  if (!sent) return sent.error();
  if (answer.wait_for(std::chrono::seconds(10)) != std::future_status::ready) return Error{ErrorKind::timeout, "the head did not answer node.join"};
  auto reply = answer.get();
  if (!reply) return reply.error();
  const auto& body = reply->body();
  const auto* id = body.type == msgpack::type::MAP ? service::field(body.via.map, "node_id") : nullptr;
  const auto* nodes = body.type == msgpack::type::MAP ? service::field(body.via.map, "nodes") : nullptr;
  if (!id || id->type != msgpack::type::POSITIVE_INTEGER || !nodes) return Error{ErrorKind::bad_request, "the head's answer to node.join was not understood"};
  auto directory = cluster::Node::read_directory(*nodes);
  if (!directory) return directory.error();
  return Joined{*head, static_cast<std::uint32_t>(id->via.u64), std::move(*directory)};
}

std::uint64_t default_store_bytes() {
  auto pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page) * 3 / 10 : (1ull << 30);
}

}  // namespace

int main(int argc, char** argv) {
  // Output whose reader went away (a closed terminal or pipe) is dropped, not fatal.
  ::signal(SIGPIPE, SIG_IGN);
  auto args = parse(argc, argv);
  auto session = random_hex(8);
  bool own_session_dir = args.session_dir.empty();
  if (own_session_dir) args.session_dir = std::filesystem::temp_directory_path() / ("tether-" + session);
  std::error_code ec;
  std::filesystem::create_directories(args.session_dir, ec);
  if (ec) usage("cannot create the session directory " + args.session_dir.string() + ": " + ec.message());
  // The node's socket, its secret and its spill files are in it: the user's own, nobody else's.
  if (own_session_dir) std::filesystem::permissions(args.session_dir, std::filesystem::perms::owner_all, ec);
  // A daemon that cannot start leaves nothing behind: its own session directory goes with it.
  auto fail_start = [&](const std::string& why) {
    std::cerr << "tetherd: " << why << std::endl;
    std::error_code ignored;
    if (own_session_dir) std::filesystem::remove_all(args.session_dir, ignored);
    return 1;
  };
  auto secret = read_secret(args, args.session_dir);
  auto socket_path = (args.session_dir / "node.sock").string();
  std::filesystem::remove(socket_path, ec);

  store::StoreOptions store_options{"/tether-" + session + "-", args.store_bytes ? args.store_bytes : default_store_bytes(),
                                    args.session_dir / "spill"};
  auto object_store = std::make_unique<store::ObjectStore>(store_options);
  auto runtime = std::make_shared<rpc::Runtime>(1);
  auto host = std::make_shared<service::ServiceHost>();
  std::promise<void> stop_requested;
  std::once_flag stop_once;
  auto request_stop = [&] { std::call_once(stop_once, [&] { stop_requested.set_value(); }); };

  net::Endpoint unix_endpoint;
  unix_endpoint.kind = net::Endpoint::Kind::unix_socket;
  unix_endpoint.path = socket_path;
  cluster::NodeOptions node_options;
  node_options.session = session;
  node_options.session_dir = args.session_dir;
  node_options.python = args.python;
  node_options.node_uri = net::format_uri(unix_endpoint, "node");
  node_options.secret = secret;
  node_options.resources = args.resources;
  node_options.prestart_workers = args.prestart;
  node_options.idle_worker_timeout = std::chrono::milliseconds(static_cast<long long>(args.idle_worker_seconds * 1000));
  node_options.on_shutdown_requested = request_stop;

  rpc::AuthConfig auth{secret, false, false};
  if (!args.tls.cert_file.empty() || !args.tls.key_file.empty() || !args.tls.ca_file.empty()) {
    // One context for both roles: the listener presents the certificate, and connections to the
    // head and to other nodes verify theirs against the CA and present ours (mutual between nodes).
    auto tls = net::TlsContext::create(args.tls);
    if (!tls) usage("TLS: " + tls.error().message);
    auth.tls = *tls;
  }
  rpc::ConnectionOptions connection_options;
  connection_options.idle_timeout = std::chrono::hours(24 * 365);  // clients may sit idle; heartbeats still run
  auto tcp_endpoint = net::parse_host_port(args.host.find(':') != std::string::npos ? "[" + args.host + "]:" + std::to_string(args.port)
                                                                                  : args.host + ":" + std::to_string(args.port));
  if (!tcp_endpoint) usage("bad --host/--port: " + tcp_endpoint.error().message);
  // Nobody knows this port before the node is in `host`: the head lists a joining node only
  // after its first report.
  auto tcp = rpc::Listener::listen(*runtime, *tcp_endpoint, auth, connection_options, host);
  if (!tcp) {
    return fail_start(tcp.error().message);
  }
  node_options.address = (*tcp)->endpoint().to_string();
  // Between nodes, silence means a node (or its machine) is gone: the head drops a node that does
  // not report for this long, and a node drops a head (or node) that does not answer.
  node_options.node_timeout = std::chrono::milliseconds(static_cast<long long>(args.node_timeout_seconds * 1000));
  auto peer_options = connection_options;
  peer_options.idle_timeout = std::max(node_options.node_timeout, std::chrono::milliseconds(100));
  peer_options.heartbeat = std::max(std::chrono::milliseconds(50), peer_options.idle_timeout / 4);
  Joined joined;
  if (!args.join.empty()) {
    auto result = join_cluster(*runtime, args, node_options.address, auth, peer_options, host);
    if (!result) {
      return fail_start("cannot join the cluster at " + args.join + ": " + result.error().message);
    }
    joined = std::move(*result);
    node_options.node_id = joined.node_id;
    node_options.head = false;
  }
  std::weak_ptr<rpc::Runtime> weak_runtime = runtime;
  node_options.connect = [weak_runtime, auth, peer_options, host](const std::string& address, cluster::NodeOptions::Connected done) {
    // rpc::connect blocks, so it runs on a thread of its own; the answer goes back to the io thread.
    std::thread([=] {
      auto runtime = weak_runtime.lock();
      auto endpoint = net::parse_host_port(address);
      if (!runtime) return;
      auto connection = endpoint ? rpc::connect(*runtime, *endpoint, auth, peer_options, host, std::chrono::seconds(10))
                                 : Result<std::shared_ptr<rpc::Connection>>(endpoint.error());
      asio::post(runtime->context(), [done, connection] { done(connection); });
    }).detach();
  };

  // The node and everything it starts live on the io thread.
  std::unique_ptr<cluster::Node> node;
  std::unique_ptr<cluster::NameService> names;  // the head keeps the cluster's name server
  std::unique_ptr<tuplespace::TupleSpaces> spaces;  // and its tuple spaces
  std::unique_ptr<topics::Topics> topics;           // and its topics
  std::unique_ptr<groups::Groups> groups;           // and its process groups
  std::unique_ptr<state::StateStore> state_store;  // the head's names, tuples and retained values
  if (!args.state_dir.empty()) {
    auto opened = state::open_state_store(args.state_dir);
    if (!opened) usage(opened.error().message);
    state_store = std::move(*opened);
  }
  std::promise<void> built;
  asio::post(runtime->context(), [&] {
    if (!args.services_only) {
      node = std::make_unique<cluster::Node>(runtime->context(), node_options, *object_store);
      host->add(*node);
    }
    if (node_options.head) {
      names = std::make_unique<cluster::NameService>(
          runtime->context(), std::chrono::milliseconds(static_cast<long long>(args.ns_sweep_seconds * 1000)));
      host->add(*names);
      spaces = std::make_unique<tuplespace::TupleSpaces>(runtime->context());
      host->add(*spaces);
      topics = std::make_unique<topics::Topics>();
      host->add(*topics);
      if (state_store) {  // what the last head kept comes back before anyone can connect
        names->keep_in(*state_store);
        spaces->keep_in(*state_store);
        topics->keep_in(*state_store);
        if (node) node->keep_actors_in(*state_store);
      }
      groups = std::make_unique<groups::Groups>(runtime->context());
      host->add(*groups);
    } else {
      node->attach_to_head(joined.head, joined.directory);
    }
    built.set_value();
  });
  built.get_future().get();

  asio::signal_set signals(runtime->context(), SIGTERM, SIGINT, SIGHUP);
  signals.async_wait([&](std::error_code e, int) {
    if (!e) request_stop();
  });
  auto local = rpc::Listener::listen(*runtime, unix_endpoint, auth, connection_options, host);
  if (!local) {
    return fail_start(local.error().message);
  }
  std::cout << "TETHERD READY tcp=" << (*tcp)->endpoint().to_string() << " unix=" << socket_path << " node=" << node_options.node_id
            << " session=" << session << " dir=" << args.session_dir.string() << " tls=" << (auth.tls ? 1 : 0) << std::endl;

  std::thread stdin_watch;
  if (args.watch_stdin) {
    // The embedding driver holds our stdin: end of file means it is gone, whatever ended it.
    stdin_watch = std::thread([&] {
      char buffer[256];
      while (::read(STDIN_FILENO, buffer, sizeof buffer) > 0) {
      }
      request_stop();
    });
    stdin_watch.detach();
  }
  stop_requested.get_future().get();

  // Before the listeners close (which ends the workers' connections): actors end from here on
  // because the daemon stops, not because they died, and the head keeps its detached ones.
  std::promise<void> marked;
  asio::post(runtime->context(), [&] {
    if (node) node->mark_stopping();
    marked.set_value();
  });
  marked.get_future().get();
  (*tcp)->close("the node is shutting down");
  (*local)->close("the node is shutting down");
  std::promise<void> stopped;
  asio::post(runtime->context(), [&] {
    if (node) node->stop_workers(std::chrono::milliseconds(1000));
    if (names) names->stop();
    if (spaces) spaces->stop();
    if (groups) groups->stop();
    std::error_code ignored;
    signals.cancel(ignored);  // nothing left to wait for: the io context can drain and end
    stopped.set_value();
  });
  stopped.get_future().get();
  runtime->stop(std::chrono::milliseconds(500));
  tcp->reset();
  local->reset();
  names.reset();
  spaces.reset();
  topics.reset();
  groups.reset();
  node.reset();
  object_store.reset();
  std::filesystem::remove(socket_path, ec);
  std::filesystem::remove_all(args.session_dir / "spill", ec);
  if (own_session_dir) std::filesystem::remove_all(args.session_dir, ec);
  return 0;
}
