// Topics as a C++ service ("topics"): publish/subscribe on dotted subjects with wildcard patterns
// (`sensors.*` one segment, `sensors.#` any number), a last-value cache that a new subscriber gets
// at once, and presence: a service announces itself, and subscribers hear when it appears and when
// it goes (its connection closes). Runs on one io thread (the head daemon's). docs/topics.md gives
// the guarantees; docs/protocol.md section 15 the methods.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "state/state_store.hpp"
#include "service/service.hpp"

namespace tether::topics {

struct Limits {
  std::size_t max_value_bytes = 1 << 20;  // one published value, encoded
  std::size_t max_subject = 256;
  std::size_t max_retained = 100000;      // subjects with a retained value
};

// Splits "a.b.c" into its segments; nullopt for an empty subject or an empty segment.
std::optional<std::vector<std::string>> split_subject(std::string_view subject);
// Whether the pattern's segments ('*': exactly one segment, '#': any number, even none) match.
bool pattern_matches(const std::vector<std::string>& pattern, const std::vector<std::string>& subject);

class Topics final : public service::Service {
 public:
  explicit Topics(Limits limits = {});
  void on_connection_closed(rpc::Connection& connection) override;
  std::size_t retained() const { return retained_.size(); }
  // Keeps retained values of published subjects in `store` (the head's --state-dir) from now on,
  // before `publish` answers; loads those it holds first. Presence is not kept: it belongs to
  // connections, which a restart ends.
  void keep_in(state::StateStore& store);

 private:
  struct Subscription {
    std::vector<std::string> pattern;
    std::weak_ptr<rpc::Connection> connection;
    std::uint64_t connection_id = 0;
    std::uint64_t sink = 0;  // the object the subscriber exported for the messages
    std::uint64_t sent = 0;  // numbered, so the subscriber hands them on in order
  };
  struct Announcement {
    std::string name;
    std::uint64_t connection_id = 0;
  };

  void publish(service::Call&& call);
  void subscribe(service::Call&& call);
  void unsubscribe(service::Call&& call);
  void announce(service::Call&& call);
  void withdraw(service::Call&& call);
  void retained_values(service::Call&& call);

  // Sends to every matching subscriber and keeps it as the subject's last value if `retain`.
  void deliver(const std::string& subject, const std::string& value, bool retain);
  void send(std::uint64_t id, Subscription& subscription, const std::string& subject, const std::string& value);
  void presence(const std::string& name, bool present);
  Result<std::string> subject_of(const service::Call& call, std::size_t index, bool pattern) const;

  Limits limits_;
  state::StateStore* store_ = nullptr;  // none unless the head keeps its state
  std::map<std::uint64_t, Subscription> subscriptions_;
  std::map<std::string, std::string> retained_;  // subject -> encoded value
  std::map<std::uint64_t, Announcement> announcements_;
  std::uint64_t next_id_ = 1;
};

}  // namespace tether::topics
