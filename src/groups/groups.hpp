// Process groups as a C++ service ("groups"), in the manner of Spread: members join named groups,
// every member receives the same views (membership) and messages, in one order. The head daemon is
// the sequencer: every message and every view change passes through it, so all members see one
// total order; a view change is preceded by a flush (each member sends what it had sent in the old
// view before the new one is installed), which gives virtual synchrony; safe messages are released
// only once every member has acknowledged receiving them. docs/groups.md states the guarantees.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <asio.hpp>

#include "service/service.hpp"

namespace tether::groups {

using Clock = std::chrono::steady_clock;

struct Limits {
  std::size_t max_message_bytes = 1 << 20;
  std::size_t max_name = 256;
};

class Groups final : public service::Service {
 public:
  Groups(asio::io_context& io, Limits limits = {});
  ~Groups() override;
  void on_connection_closed(rpc::Connection& connection) override;
  void stop();  // cancels the liveness sweep; io thread

 private:
  struct Member {
    std::uint64_t id = 0;
    std::string name;  // its private name: "<group>#<id>"
    std::weak_ptr<rpc::Connection> connection;
    std::uint64_t connection_id = 0;
    std::uint64_t sink = 0;  // the object it exported for the group's events
    std::uint64_t sent = 0;  // batches of events numbered, so it takes them in order
    std::vector<std::vector<std::byte>> outbox;  // events of this pass of the io loop, packed
    Clock::duration failure_timeout{};
    Clock::time_point last_heard{};
  };
  struct Change {
    enum class Kind { join, leave, disconnect } kind;
    std::uint64_t member = 0;
  };
  struct Group {
    std::string name;
    std::vector<std::uint64_t> members;           // the current view, in join order
    std::map<std::uint64_t, Member> known;        // members and joiners not yet in a view
    std::uint64_t view = 0;
    std::uint64_t next_seq = 1;
    bool flushing = false;
    std::set<std::uint64_t> awaiting_flush;
    Clock::time_point flush_started{};
    std::vector<Change> pending;                  // applied by the next view
    std::map<std::uint64_t, std::set<std::uint64_t>> unacked;  // safe message seq -> members yet to ack
    std::map<std::uint64_t, std::vector<std::uint64_t>> safe_recipients;
  };

  void join(service::Call&& call);
  void leave(service::Call&& call);
  void send(service::Call&& call);
  void flushed(service::Call&& call);
  void ack(service::Call&& call);
  void alive(service::Call&& call);

  Result<Group*> group_of(const service::Call& call, bool create);
  Member* member_of(Group& group, const service::Call& call, std::size_t index);
  void change(Group& group, Change change);
  void start_flush(Group& group);
  void install_view(Group& group);
  void remove_member(Group& group, std::uint64_t id, Change::Kind why);
  void release_safe(Group& group);
  // Queues one event [kind, body...] for a member; send_outboxes sends each member's queue as one
  // oneway "#<sink>".events(number, [event, ...]) once the io loop is done with what it read.
  void emit(Member& member, const std::string& kind, const std::function<void(wire::Packer&)>& pack_body, std::uint32_t body_items);
  void send_outboxes();
  void send_outbox(Member& member);  // now, as one batch
  void sweep();
  void arm_sweep();

  asio::io_context& io_;
  Limits limits_;
  std::map<std::string, Group> groups_;
  std::uint64_t next_member_ = 1;
  bool flush_posted_ = false;  // send_outboxes is posted to the io loop
  asio::steady_timer sweep_timer_;
};

}  // namespace tether::groups
