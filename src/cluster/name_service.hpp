// The cluster's name server: the object "tether.ns" served by the head daemon, with the methods
// of docs/protocol.md section 12 (register, lookup, list, lookup_by_metadata, metadata, remove), so
// tether.locate_ns(cluster address) and tetherns:// URIs work against a cluster. A periodic sweep
// removes the entries whose servers no longer accept connections.
#pragma once

#include <chrono>
#include <map>
#include <set>
#include <string>

#include <asio.hpp>

#include "state/state_store.hpp"
#include "service/service.hpp"

namespace tether::cluster {

class NameService final : public service::Service {
 public:
  NameService(asio::io_context& io, std::chrono::milliseconds sweep_interval);
  ~NameService() override;
  // Checks every entry now; `done` runs (on the io thread) once every check has ended.
  void sweep(std::function<void()> done = {});
  std::size_t size() const { return entries_.size(); }
  void stop() { sweep_timer_.cancel(); }  // no more sweeps (the daemon is ending); io thread
  // Keeps the entries in `store` (the head's --state-dir) from now on, before `register` and
  // `remove` answer; loads those it holds first (the sweep then drops entries of dead servers).
  void keep_in(state::StateStore& store);

 private:
  struct Entry {
    std::string uri;
    std::set<std::string> tags;
  };
  void register_name(service::Call&& call);
  void lookup(service::Call&& call);
  void list(service::Call&& call);
  void lookup_by_metadata(service::Call&& call);
  void metadata(service::Call&& call);
  void remove(service::Call&& call);
  void reply_entries(service::Call& call, const std::function<bool(const std::string&, const Entry&)>& keep);
  void arm_sweep();
  Status keep(const std::string& name, const Entry& entry);
  void forget(const std::string& name);

  asio::io_context& io_;
  std::chrono::milliseconds sweep_interval_;
  asio::steady_timer sweep_timer_;
  std::map<std::string, Entry> entries_;
  state::StateStore* store_ = nullptr;  // none unless the head keeps its state
};

}  // namespace tether::cluster
