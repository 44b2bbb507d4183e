// Linda tuple spaces as a C++ service ("tuplespace"): named spaces of tuples that clients write
// (out, with an optional lease), take (in) and read (rd), blocking or not, and watch (notify).
// Runs on one io thread (the head daemon's), so it needs no locks. docs/tuplespace.md gives the
// matching rules and the guarantees; docs/protocol.md section 14 the methods.
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <asio.hpp>

#include "service/service.hpp"
#include "state/state_store.hpp"

namespace tether::tuplespace {

using Clock = std::chrono::steady_clock;

// The msgpack type of an encoded field, as templates name it.
enum class FieldType : std::uint8_t { none, boolean, integer, floating, text, bytes, sequence, other };
FieldType type_of(std::string_view encoded);
// The name a template uses for the type ("int", "str", ...); nullopt for a name it does not know.
std::optional<FieldType> type_named(std::string_view name);

struct Limits {
  std::size_t max_tuple_bytes = 1 << 20;  // the encoded tuple
  std::size_t max_fields = 256;
  std::size_t max_spaces = 10000;
  std::size_t max_name = 256;
};

// One field of a template: a value to equal (type and value), a type, or anything.
struct Pattern {
  enum class Kind { value, type, any } kind = Kind::any;
  std::string encoded;       // kind value: the field's canonical msgpack encoding
  FieldType type{};          // kind type
  bool matches(const std::string& field, FieldType field_type) const;
};

class TupleSpaces final : public service::Service {
 public:
  TupleSpaces(asio::io_context& io, Limits limits = {});
  ~TupleSpaces() override;
  void on_connection_closed(rpc::Connection& connection) override;
  std::size_t size(const std::string& space) const;  // tuples alive in `space`
  // Cancels the timers (leases, waiting timeouts), so the io context can end; io thread.
  void stop();
  // Keeps tuples in `store` (the head's --state-dir) from now on: a tuple is there before `out`
  // answers and leaves when it is taken or its lease ends. Loads the tuples the store holds first.
  void keep_in(state::StateStore& store);

 private:
  struct Tuple {
    std::uint64_t seq = 0;
    std::vector<std::string> fields;  // canonical msgpack encoding of each field
    std::vector<FieldType> types;
    std::optional<Clock::time_point> expires;
  };
  struct Waiter {
    std::vector<Pattern> pattern;
    bool take = false;
    std::shared_ptr<service::Call> call;
    std::uint64_t connection = 0;
    std::shared_ptr<asio::steady_timer> timer;
  };
  struct Watch {
    std::uint64_t id = 0;
    std::vector<Pattern> pattern;
    std::weak_ptr<rpc::Connection> connection;
    std::uint64_t connection_id = 0;
    std::uint64_t sink = 0;     // the object the client exported for the tuples
    std::uint64_t sent = 0;     // numbered, so the client hands them on in order
  };
  struct Space {
    std::string name;
    std::map<std::uint64_t, Tuple> tuples;  // by seq: the oldest first
    // Indexes, each in seq order: by arity and first field, by arity and first field's type, by arity.
    std::unordered_map<std::string, std::set<std::uint64_t>> by_first;
    std::map<std::pair<std::size_t, FieldType>, std::set<std::uint64_t>> by_first_type;
    std::map<std::size_t, std::set<std::uint64_t>> by_arity;
    std::list<Waiter> waiters;  // blocked in/rd, first come first served
    std::map<std::uint64_t, Watch> watches;
  };

  void out(service::Call&& call);
  void take_or_read(service::Call&& call, bool take);
  void notify(service::Call&& call);
  void unnotify(service::Call&& call);
  void count(service::Call&& call);

  Result<Space*> space_for(const service::Call& call, bool create);
  Result<Tuple> parse_tuple(const service::Call& call, const msgpack::object* value) const;
  Result<std::vector<Pattern>> parse_template(const service::Call& call, const msgpack::object* value) const;
  const Tuple* find(Space& space, const std::vector<Pattern>& pattern);
  void store(Space& space, Tuple tuple);
  void remove(Space& space, std::uint64_t seq);
  void offer(Space& space, Tuple tuple);  // to waiters and watchers, then stored unless taken
  void deliver(service::Call& call, const Tuple& tuple);
  void send_to_watch(Watch& watch, const Tuple& tuple);
  void expire_leases();
  void arm_lease_timer();
  static std::string first_key(const Tuple& tuple);
  static std::string record_key(const std::string& space, std::uint64_t seq);
  Status keep(const Space& space, const Tuple& tuple);
  void forget(const Space& space, std::uint64_t seq);
  void restore_record(const std::string& key, const std::string& value);
  static bool matches(const std::vector<Pattern>& pattern, const Tuple& tuple, Clock::time_point now);

  asio::io_context& io_;
  Limits limits_;
  std::map<std::string, Space> spaces_;
  std::multimap<Clock::time_point, std::pair<std::string, std::uint64_t>> leases_;  // expiry -> (space, seq)
  asio::steady_timer lease_timer_;
  std::uint64_t next_seq_ = 1;
  std::uint64_t next_watch_ = 1;
  state::StateStore* store_ = nullptr;  // none unless the head keeps its state
};

}  // namespace tether::tuplespace
