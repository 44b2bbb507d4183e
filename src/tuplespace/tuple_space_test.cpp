// Tests for the tuple-space service over the in-memory transport: matching, blocking takers and
// readers, timeouts, leases, watches, refused input and the indexes.
#include "tuplespace/tuple_space.hpp"

#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <cmath>

#include <gtest/gtest.h>

#include "net/memory_transport.hpp"
#include "rpc/runtime.hpp"
#include "service/test_client.hpp"
#include "service/test_values.hpp"

namespace tether::tuplespace {
namespace {

using rpc::Clock;
using namespace std::chrono_literals;

// ---- values: tuple and template fields packed as a Python client packs them ----

using namespace service::testing;

Value of_type(std::string name) { return dict("type", text(std::move(name))); }
Value any() { return dict("any", boolean(true)); }
Value seconds(std::optional<double> s) { return s ? floating(*s) : none(); }

// A msgpack value written like Python's repr of what a client gets back: 1, 1.0, True, 'a',
// b'a', None, tuples as (...).
std::string show(const msgpack::object& value) {
  std::ostringstream out;
  switch (value.type) {
    case msgpack::type::NIL: return "None";
    case msgpack::type::BOOLEAN: return value.via.boolean ? "True" : "False";
    case msgpack::type::POSITIVE_INTEGER: return std::to_string(value.via.u64);
    case msgpack::type::NEGATIVE_INTEGER: return std::to_string(value.via.i64);
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: {
      out << value.via.f64;
      auto s = out.str();
      return s.find_first_of(".en") == std::string::npos ? s + ".0" : s;
    }
    case msgpack::type::STR: return "'" + std::string(value.via.str.ptr, value.via.str.size) + "'";
    case msgpack::type::BIN: return "b'" + std::string(value.via.bin.ptr, value.via.bin.size) + "'";
    case msgpack::type::ARRAY: {
      out << "(";
      for (std::uint32_t i = 0; i < value.via.array.size; ++i) out << (i ? ", " : "") << show(value.via.array.ptr[i]);
      out << (value.via.array.size == 1 ? ",)" : ")");
      return out.str();
    }
    default: return "<unexpected>";
  }
}

// The answer to a call as text: the value shown, or the ERROR's kind, remote type and message.
std::string answer(const Result<wire::Frame>& reply) {
  if (!reply) return "failed: " + reply.error().message;
  if (reply.value().header.type == wire::MessageType::error) {
    auto error = wire::unpack_error_body(reply.value().body_span());
    return "error " + std::string(to_string(error.kind)) + " (" + error.type + "): " + error.message;
  }
  auto body = wire::unpack_body(reply.value().body_span());
  if (!body) return "unparsable reply";
  return show(body.value().get());
}

// A call in flight; its answer is kept once it came.
class Pending {
 public:
  explicit Pending(std::shared_ptr<rpc::WaitingSink> sink) : sink_(std::move(sink)) {}
  // Whether the answer came already (no waiting).
  bool answered() { return poll(Clock::now()); }
  // The answer as text, waiting up to 10 s for it.
  std::string answer() { return poll(Clock::now() + 10s) ? tuplespace::answer(*outcome_) : "no answer within 10 s"; }

 private:
  bool poll(Clock::time_point deadline) {
    if (!outcome_) outcome_ = sink_->wait(deadline);
    return outcome_.has_value();
  }
  std::shared_ptr<rpc::WaitingSink> sink_;
  std::optional<Result<wire::Frame>> outcome_;
};

// ---- peers: client connections to the host, optionally serving requests the service sends ----

class Peer {
 public:
  Peer(rpc::Runtime& runtime, std::shared_ptr<service::ServiceHost> host, std::shared_ptr<rpc::RequestHandler> handler) {
    auto [a, b] = net::make_memory_pipe(runtime.executor());
    server_ = rpc::Connection::create(std::move(b), rpc::Connection::Role::server, {}, {}, std::move(host));
    client_ = rpc::Connection::create(std::move(a), rpc::Connection::Role::client, {}, {}, std::move(handler));
    std::promise<void> ready;
    server_->start([](const Result<rpc::Negotiated>&) {});
    client_->start([&](const Result<rpc::Negotiated>&) { ready.set_value(); });
    ready.get_future().get();
  }

  // Sends tuplespace.method(args) and returns at once.
  Pending send(const std::string& method, const Values& args, bool oneway = false) {
    auto waiting = std::make_shared<rpc::WaitingSink>();
    auto id = client_->call(request("tuplespace", method, args, {}, oneway), oneway ? nullptr : waiting);
    EXPECT_TRUE(id.ok());
    return Pending(waiting);
  }
  // Calls tuplespace.method(args) and waits for the answer, as text.
  std::string call(const std::string& method, const Values& args) { return send(method, args).answer(); }

  std::string out(const std::string& space, Values tuple, std::optional<double> lease = std::nullopt) {
    return call("out", {text(space), nested(std::move(tuple)), seconds(lease)});
  }
  std::string take(const std::string& space, Values pattern, std::optional<double> timeout = 0.0) {
    return call("take", {text(space), nested(std::move(pattern)), seconds(timeout)});
  }
  std::string read(const std::string& space, Values pattern, std::optional<double> timeout = 0.0) {
    return call("read", {text(space), nested(std::move(pattern)), seconds(timeout)});
  }
  // Starts a take or read (by default one that waits for ever) without waiting for its answer.
  Pending start(const std::string& method, const std::string& space, Values pattern, std::optional<double> timeout = std::nullopt) {
    return send(method, {text(space), nested(std::move(pattern)), seconds(timeout)});
  }
  std::string count(const std::string& space) { return call("count", {text(space)}); }
  // Returns once the service has run every request this peer sent before: it serves one
  // connection's requests in order on its one thread.
  void barrier() { EXPECT_EQ(count("barrier"), "0"); }
  void close() { client_->close("done"); }

 private:
  std::shared_ptr<rpc::Connection> client_, server_;
};

// Records the "#sink.tuple" requests the service sends to a watching client, as text.
class WatchRecorder final : public rpc::RequestHandler {
 public:
  void on_request(const std::shared_ptr<rpc::Connection>&, wire::Frame&& frame) override {
    auto body = wire::unpack_body(frame.body_span());
    std::string entry = frame.meta.substr(0, frame.meta.find('\0')) + "." + frame.meta.substr(frame.meta.find('\0') + 1) + " " +
                        (body ? show(body.value().get().via.array.ptr[0]) : "unparsable");
    std::lock_guard lock(mutex_);
    received_.push_back(std::move(entry));
    changed_.notify_all();
  }
  // What came, once at least `n` requests did (or after 10 s, whatever came).
  std::vector<std::string> wait_for(std::size_t n) {
    std::unique_lock lock(mutex_);
    changed_.wait_until(lock, Clock::now() + 10s, [&] { return received_.size() >= n; });
    return received_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> received_;
};

// A TupleSpaces service behind a ServiceHost, with small limits, and the peers connected to it.
struct TupleSpaceTest : ::testing::Test {
  rpc::Runtime runtime{1};
  std::unique_ptr<TupleSpaces> spaces;
  std::shared_ptr<service::ServiceHost> host = std::make_shared<service::ServiceHost>();
  std::vector<std::unique_ptr<Peer>> peers;
  std::mutex closed_mutex;
  std::condition_variable closed_changed;
  std::size_t connections_closed = 0;

  void SetUp() override {
    Limits limits;
    limits.max_tuple_bytes = 1024;
    limits.max_fields = 8;
    service::run_on_io(runtime, [&] { spaces = std::make_unique<TupleSpaces>(runtime.context(), limits); });
    host->add(*spaces);
    host->on_connection_closed = [this](rpc::Connection&) {
      std::lock_guard lock(closed_mutex);
      ++connections_closed;
      closed_changed.notify_all();
    };
  }
  void TearDown() override {
    for (auto& peer : peers) peer->close();
    service::run_on_io(runtime, [&] { spaces->stop(); });
    runtime.stop();  // the host still calls the service as the connections close
    spaces.reset();
  }
  Peer& connect(std::shared_ptr<rpc::RequestHandler> handler = nullptr) {
    peers.push_back(std::make_unique<Peer>(runtime, host, std::move(handler)));
    return *peers.back();
  }
  bool wait_for_closed_connections(std::size_t n) {
    std::unique_lock lock(closed_mutex);
    return closed_changed.wait_until(lock, Clock::now() + 10s, [&] { return connections_closed >= n; });
  }
};

TEST(FieldTypes, TheFirstByteOfAnEncodingNamesItsType) {
  EXPECT_EQ(type_of(std::string("\xc0", 1)), FieldType::none);
  EXPECT_EQ(type_of(std::string("\x01", 1)), FieldType::integer);
  EXPECT_EQ(type_of(std::string("\xcb", 1)), FieldType::floating);
  EXPECT_EQ(type_of(std::string("\xa1", 1)), FieldType::text);
  EXPECT_EQ(type_of(std::string("\xc3", 1)), FieldType::boolean);
  EXPECT_EQ(type_named("int"), FieldType::integer);
  EXPECT_FALSE(type_named("list").has_value());
}

// The basic contract: what was written comes back whole, every field type intact, and is gone.
TEST_F(TupleSpaceTest, OutThenTakeReturnsTheTupleAndEmptiesTheSpace) {
  auto& client = connect();
  EXPECT_EQ(client.count("jobs"), "0");
  Values tuple = {text("job"), integer(-7), floating(2.5), boolean(false), bytes("raw"), none(), nested({integer(1), text("a")})};
  EXPECT_EQ(client.out("jobs", tuple), "None");
  EXPECT_EQ(client.count("jobs"), "1");
  EXPECT_EQ(client.take("jobs", tuple), "('job', -7, 2.5, False, b'raw', None, (1, 'a'))");
  EXPECT_EQ(client.count("jobs"), "0");
  EXPECT_EQ(client.take("jobs", tuple), "None");
}

// read (rd) copies: the tuple stays for the next reader or taker.
TEST_F(TupleSpaceTest, ReadDoesNotRemoveTheTuple) {
  auto& client = connect();
  client.out("s", {text("config"), integer(3)});
  EXPECT_EQ(client.read("s", {text("config"), any()}), "('config', 3)");
  EXPECT_EQ(client.read("s", {text("config"), any()}), "('config', 3)");
  EXPECT_EQ(client.count("s"), "1");
  EXPECT_EQ(client.take("s", {text("config"), any()}), "('config', 3)");
  EXPECT_EQ(client.count("s"), "0");
}

// A value field matches on type and value: unlike with Python's ==, 1, 1.0 and True differ.
TEST_F(TupleSpaceTest, ValueFieldsMatchOnTypeAndValue) {
  auto& client = connect();
  client.out("s", {integer(1)});
  client.out("s", {floating(1.0)});
  client.out("s", {boolean(true)});
  client.out("s", {text("1")});
  EXPECT_EQ(client.read("s", {floating(1.0)}), "(1.0,)");
  EXPECT_EQ(client.read("s", {boolean(true)}), "(True,)");
  EXPECT_EQ(client.read("s", {text("1")}), "('1',)");
  EXPECT_EQ(client.read("s", {integer(1)}), "(1,)");
  EXPECT_EQ(client.read("s", {integer(2)}), "None");
  EXPECT_EQ(client.read("s", {floating(1.5)}), "None");
  EXPECT_EQ(client.read("s", {boolean(false)}), "None");
  EXPECT_EQ(client.take("s", {integer(1)}), "(1,)");
  EXPECT_EQ(client.read("s", {integer(1)}), "None");  // the float and the bool are still there
  EXPECT_EQ(client.count("s"), "3");
}

// {"type": name} matches exactly the fields of that msgpack type, for every name templates know.
TEST_F(TupleSpaceTest, TypeFieldsMatchByTypeName) {
  auto& client = connect();
  client.out("s", {text("k"), integer(5)});
  client.out("s", {text("k"), floating(5.0)});
  client.out("s", {text("k"), boolean(true)});
  client.out("s", {text("k"), text("five")});
  client.out("s", {text("k"), bytes("5")});
  client.out("s", {text("k"), none()});
  client.out("s", {text("k"), nested({integer(5)})});
  EXPECT_EQ(client.take("s", {text("k"), of_type("tuple")}), "('k', (5,))");
  EXPECT_EQ(client.take("s", {text("k"), of_type("NoneType")}), "('k', None)");
  EXPECT_EQ(client.take("s", {text("k"), of_type("bytes")}), "('k', b'5')");
  EXPECT_EQ(client.take("s", {text("k"), of_type("str")}), "('k', 'five')");
  EXPECT_EQ(client.take("s", {text("k"), of_type("bool")}), "('k', True)");
  EXPECT_EQ(client.take("s", {text("k"), of_type("float")}), "('k', 5.0)");
  EXPECT_EQ(client.take("s", {text("k"), of_type("int")}), "('k', 5)");
  EXPECT_EQ(client.count("s"), "0");
  // A type field in first place (the by-type index) works the same.
  client.out("s", {floating(0.5), text("x")});
  client.out("s", {integer(0), text("y")});
  EXPECT_EQ(client.take("s", {of_type("int"), any()}), "(0, 'y')");
  EXPECT_EQ(client.take("s", {of_type("int"), any()}), "None");
}

// {"any": true} matches every field, but a template only matches tuples of its own length.
TEST_F(TupleSpaceTest, AnyMatchesEveryFieldAndArityMustBeEqual) {
  auto& client = connect();
  client.out("s", {integer(1)});
  client.out("s", {integer(1), text("b")});
  client.out("s", {integer(1), text("b"), none()});
  client.out("s", {});
  EXPECT_EQ(client.read("s", {any(), any()}), "(1, 'b')");
  EXPECT_EQ(client.read("s", {integer(1), any(), any()}), "(1, 'b', None)");
  EXPECT_EQ(client.read("s", {any()}), "(1,)");
  EXPECT_EQ(client.read("s", {}), "()");
  EXPECT_EQ(client.read("s", {any(), any(), any(), any()}), "None");
  EXPECT_EQ(client.read("s", {integer(1), text("b"), any(), any()}), "None");
  EXPECT_EQ(client.read("s", {any(), text("c")}), "None");
}

// Takes are FIFO among the matching tuples, whichever index the template's first field selects.
TEST_F(TupleSpaceTest, TheOldestMatchingTupleIsTakenFirst) {
  auto& client = connect();
  client.out("s", {text("t"), integer(1)});
  client.out("s", {text("u"), integer(2)});
  client.out("s", {text("t"), integer(3)});
  client.out("s", {text("u"), integer(4)});
  client.out("s", {text("t"), integer(5)});
  EXPECT_EQ(client.take("s", {text("t"), any()}), "('t', 1)");      // by first value
  EXPECT_EQ(client.take("s", {any(), any()}), "('u', 2)");          // by arity
  EXPECT_EQ(client.take("s", {of_type("str"), any()}), "('t', 3)");  // by first type
  EXPECT_EQ(client.take("s", {text("t"), any()}), "('t', 5)");
  EXPECT_EQ(client.take("s", {any(), any()}), "('u', 4)");
  EXPECT_EQ(client.count("s"), "0");
}

// The point of a tuple space: a take that found nothing waits, and the next matching out ends it.
TEST_F(TupleSpaceTest, ATakeBlockedBeforeTheOutGetsTheTuple) {
  auto& taker = connect();
  auto& writer = connect();
  auto waiting = taker.start("take", "s", {text("job"), of_type("int")});
  taker.barrier();
  EXPECT_FALSE(waiting.answered());
  writer.out("s", {text("other"), integer(1)});
  writer.out("s", {text("job"), text("not an int")});
  EXPECT_EQ(writer.out("s", {text("job"), integer(42)}), "None");
  EXPECT_EQ(waiting.answer(), "('job', 42)");
  EXPECT_EQ(writer.count("s"), "2");  // the two that did not match
}

// Blocked takers are served first come, first served; one tuple satisfies exactly one of them.
TEST_F(TupleSpaceTest, TwoBlockedTakersOneTupleTheFirstGetsItAndTheSecondWaitsOn) {
  auto& first = connect();
  auto& second = connect();
  auto& writer = connect();
  auto first_take = first.start("take", "s", {any()}, 30.0);
  first.barrier();
  auto second_take = second.start("take", "s", {any()});
  second.barrier();
  writer.out("s", {text("one")});
  EXPECT_EQ(first_take.answer(), "('one',)");
  second.barrier();  // a reply to the second take would have arrived before this one
  EXPECT_FALSE(second_take.answered());
  EXPECT_EQ(writer.count("s"), "0");
  writer.out("s", {text("two")});
  EXPECT_EQ(second_take.answer(), "('two',)");
  EXPECT_EQ(writer.count("s"), "0");
}

// A waiting reader sees the tuple without consuming it, so the taker behind it still gets it.
TEST_F(TupleSpaceTest, ABlockedReaderThenABlockedTakerBothGetTheTupleAndTheTakerConsumesIt) {
  auto& reader = connect();
  auto& taker = connect();
  auto& writer = connect();
  auto read = reader.start("read", "s", {text("news"), any()});
  reader.barrier();
  auto take = taker.start("take", "s", {text("news"), any()});
  taker.barrier();
  writer.out("s", {text("news"), integer(1)});
  EXPECT_EQ(read.answer(), "('news', 1)");
  EXPECT_EQ(take.answer(), "('news', 1)");
  EXPECT_EQ(writer.count("s"), "0");
}

// The other order: the taker consumes the tuple, so the reader behind it keeps waiting.
TEST_F(TupleSpaceTest, ABlockedTakerAheadOfABlockedReaderLeavesTheReaderWaiting) {
  auto& taker = connect();
  auto& reader = connect();
  auto& writer = connect();
  auto take = taker.start("take", "s", {text("news"), any()});
  taker.barrier();
  auto read = reader.start("read", "s", {text("news"), any()});
  reader.barrier();
  writer.out("s", {text("news"), integer(1)});
  EXPECT_EQ(take.answer(), "('news', 1)");
  reader.barrier();
  EXPECT_FALSE(read.answered());
  writer.out("s", {text("news"), integer(2)});
  EXPECT_EQ(read.answer(), "('news', 2)");
  EXPECT_EQ(writer.count("s"), "1");
}

// A timeout ends the wait with nil, and the expired waiter takes nothing written afterwards.
TEST_F(TupleSpaceTest, ATimeoutAnswersNilAndTheWaiterIsGone) {
  auto& client = connect();
  EXPECT_EQ(client.take("s", {text("never")}, 0.05), "None");
  EXPECT_EQ(client.read("s", {text("never")}, 0.05), "None");
  client.out("s", {text("never")});
  EXPECT_EQ(client.count("s"), "1");
}

// Timeout 0 is a probe (inp/rdp): it answers nil without registering a waiter.
TEST_F(TupleSpaceTest, ATimeoutOfZeroProbesWithoutWaiting) {
  auto& client = connect();
  auto take = client.start("take", "s", {text("x")}, 0.0);
  auto read = client.start("read", "s", {text("x")}, 0.0);
  client.barrier();
  EXPECT_TRUE(take.answered());  // answered before the barrier, so no timer was involved
  EXPECT_TRUE(read.answered());
  EXPECT_EQ(take.answer(), "None");
  EXPECT_EQ(read.answer(), "None");
  client.out("s", {text("x")});
  EXPECT_EQ(client.count("s"), "1");
}

// A leased tuple disappears by itself once its lease is over; one without a lease stays.
TEST_F(TupleSpaceTest, ALeasedTupleIsGoneAfterItsLease) {
  auto& client = connect();
  client.out("s", {text("leased")}, 0.05);
  client.out("s", {text("kept")});
  client.out("s", {text("long")}, 3600.0);
  auto deadline = Clock::now() + 10s;
  while (client.count("s") != "2" && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(client.count("s"), "2");
  EXPECT_EQ(client.read("s", {text("leased")}), "None");
  EXPECT_EQ(client.read("s", {text("kept")}), "('kept',)");
  EXPECT_EQ(client.read("s", {text("long")}), "('long',)");
}

// A taker that hung up must not swallow a tuple that another client is waiting for.
TEST_F(TupleSpaceTest, ATakerWhoseConnectionClosedWhileBlockedTakesNothing) {
  auto& gone = connect();
  auto& taker = connect();
  auto& writer = connect();
  auto abandoned = gone.start("take", "s", {text("job")});
  gone.barrier();
  gone.close();
  ASSERT_TRUE(wait_for_closed_connections(1));
  auto take = taker.start("take", "s", {text("job")});
  taker.barrier();
  writer.out("s", {text("job")});
  EXPECT_EQ(take.answer(), "('job',)");
  EXPECT_EQ(abandoned.answer().substr(0, 7), "failed:");  // the client side saw the close
  // And with no other taker, the tuple stays in the space.
  writer.out("s", {text("job")});
  EXPECT_EQ(writer.count("s"), "1");
}

// notify sends each matching tuple written afterwards to the watcher's sink, numbered from 1, in
// order, and nothing that does not match; after unnotify, nothing at all.
TEST_F(TupleSpaceTest, NotifySendsMatchingTuplesInOrderUntilUnnotify) {
  auto recorder = std::make_shared<WatchRecorder>();
  auto& watcher = connect(recorder);
  auto& writer = connect();
  writer.out("s", {text("ev"), integer(0)});  // before the watch: not sent
  auto watch = watcher.call("notify", {text("s"), nested({text("ev"), of_type("int")}), integer(7)});
  ASSERT_EQ(watch.find_first_not_of("0123456789"), std::string::npos) << watch;
  writer.out("s", {text("ev"), integer(1)});
  writer.out("s", {text("ev"), text("not an int")});
  writer.out("s", {text("other"), integer(2)});
  writer.out("s", {text("ev"), integer(3)});
  writer.take("s", {text("ev"), integer(3)});
  writer.out("s", {text("ev"), integer(4)});
  auto seen = recorder->wait_for(3);
  EXPECT_EQ(seen, (std::vector<std::string>{"#7.tuple (" + watch + ", 1, ('ev', 1))", "#7.tuple (" + watch + ", 2, ('ev', 3))",
                                            "#7.tuple (" + watch + ", 3, ('ev', 4))"}));

  watcher.send("unnotify", {text("s"), integer(std::stoll(watch))}, true);
  watcher.barrier();
  writer.out("s", {text("ev"), integer(5)});
  // A second watch on the same connection: once it got tuple 6, tuple 5 would have come first.
  auto second = watcher.call("notify", {text("s"), nested({text("ev"), any()}), integer(8)});
  writer.out("s", {text("ev"), integer(6)});
  seen = recorder->wait_for(4);
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[3], "#8.tuple (" + second + ", 1, ('ev', 6))");
}

// Refused input is an ERROR for that call only, one a Python caller raises as ValueError with a
// message that names the problem; the connection then serves the next call.
TEST_F(TupleSpaceTest, BadInputIsRefusedAndTheConnectionServesOn) {
  auto& client = connect();
  struct Case {
    std::string what, method;
    Values args;
    std::string message;  // a part of the error message
  };
  std::vector<Case> cases = {
      {"a dict in a tuple", "out", {text("s"), nested({dict("a", integer(1))}), none()}, "a dict"},
      {"a dict inside a nested tuple", "out", {text("s"), nested({nested({integer(1), dict("a", integer(1))})}), none()}, "a dict"},
      {"a tuple that is not an array", "out", {text("s"), text("abc"), none()}, "the tuple must be a list, got str"},
      {"an unknown type name", "take", {text("s"), nested({of_type("list")}), floating(0)}, "names the type 'list'"},
      {"an unknown type name in a watch", "notify", {text("s"), nested({of_type("dict")}), integer(1)}, "names the type 'dict'"},
      {"a map field that is neither type nor any", "read", {text("s"), nested({dict("kind", text("int"))}), floating(0)},
       "must be {\"type\": name} or {\"any\": true}"},
      {"a negative lease", "out", {text("s"), nested({integer(1)}), floating(-1)}, "argument 'lease' must not be negative"},
      {"a negative timeout", "take", {text("s"), nested({integer(1)}), floating(-0.5)}, "argument 'timeout' must not be negative"},
      {"a negative int timeout", "read", {text("s"), nested({integer(1)}), integer(-1)}, "argument 'timeout' must not be negative"},
      {"a tuple over max_tuple_bytes", "out", {text("s"), nested({text(std::string(2000, 'x'))}), none()},
       "larger than the limit of 1024 bytes"},
      {"a tuple over max_fields", "out", {text("s"), nested(Values(9, integer(1))), none()}, "a tuple has at most 8 fields"},
      {"a template over max_fields", "take", {text("s"), nested(Values(9, any())), floating(0)}, "a template has at most 8 fields"},
      {"an empty space name", "out", {text(""), nested({integer(1)}), none()}, "a tuple space name has 1 to 256 characters"},
      {"an empty space name in count", "count", {text("")}, "a tuple space name has 1 to 256 characters"},
      {"a space name over max_name", "take", {text(std::string(300, 'n')), nested({integer(1)}), floating(0)},
       "a tuple space name has 1 to 256 characters"},
      {"a space name that is not a str", "out", {integer(1), nested({integer(1)}), none()}, "argument 'space' must be str, got int"},
      {"a NaN lease", "out", {text("s"), nested({integer(1)}), floating(std::nan(""))}, "argument 'lease' must not be negative (or NaN)"},
      {"a NaN timeout", "read", {text("s"), nested({integer(1)}), floating(std::nan(""))}, "tuplespace.read: argument 'timeout'"},
      {"any that is false", "take", {text("s"), nested({dict("any", boolean(false))}), floating(0)}, "or {\"any\": true}"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto refusal = client.call(c.method, c.args);
    EXPECT_EQ(refusal.substr(0, 6), "error ") << refusal;
    EXPECT_NE(refusal.find("(builtins.ValueError): "), std::string::npos) << refusal;
    EXPECT_NE(refusal.find(c.message), std::string::npos) << refusal;
    EXPECT_EQ(client.out("s", {text("ok")}), "None");
    EXPECT_EQ(client.take("s", {text("ok")}), "('ok',)");
  }
  EXPECT_EQ(client.count("s"), "0");
  // Exactly at the limits is still accepted (a str of 1021 characters encodes to 1024 bytes).
  EXPECT_EQ(client.out("s", Values(8, integer(1))), "None");
  EXPECT_EQ(client.out("s", {text(std::string(1021, 'x'))}), "None");
  EXPECT_EQ(client.count("s"), "2");
}

// Correctness of the indexed lookup among many tuples that share arity but not the first field
// (no timing: speed belongs in bench/).
TEST_F(TupleSpaceTest, IndexedLookupFindsTheRightTupleAmong100000Others) {
  auto& client = connect();
  constexpr int kNoise = 100000;
  constexpr int kBatch = 1000;
  for (int start = 0; start < kNoise; start += kBatch) {
    std::vector<Pending> batch;
    for (int i = start; i < start + kBatch; ++i) batch.push_back(client.send("out", {text("s"), nested({text("noise"), integer(i)}), none()}));
    for (auto& pending : batch) ASSERT_EQ(pending.answer(), "None");
  }
  client.out("s", {text("job"), integer(7)});
  client.out("s", {floating(1.5), integer(8)});
  EXPECT_EQ(client.count("s"), std::to_string(kNoise + 2));
  EXPECT_EQ(client.take("s", {text("job"), any()}), "('job', 7)");
  EXPECT_EQ(client.take("s", {of_type("float"), any()}), "(1.5, 8)");
  EXPECT_EQ(client.take("s", {text("nothing"), any()}), "None");
  EXPECT_EQ(client.take("s", {text("noise"), integer(99999)}), "('noise', 99999)");
  EXPECT_EQ(client.take("s", {any(), integer(50000)}), "('noise', 50000)");
  EXPECT_EQ(client.count("s"), std::to_string(kNoise - 2));
}

}  // namespace
}  // namespace tether::tuplespace
