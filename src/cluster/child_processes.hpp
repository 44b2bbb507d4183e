// The node daemon's child processes (its Python workers): started with their output piped back
// and forwarded line by line with a prefix, reaped when they exit, and killed with the daemon.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <asio.hpp>

#include "tether/error.hpp"

namespace tether::cluster {

class ChildProcesses {
 public:
  // `on_exit(pid, description)` runs on the io thread when a child has exited and its output was
  // forwarded; description is like "exited with status 1" or "killed by signal 9".
  ChildProcesses(asio::io_context& io, std::function<void(int pid, const std::string& description)> on_exit);
  ~ChildProcesses();  // kills (SIGKILL) and reaps every child still running

  // Starts `argv` with `env` (NAME=value entries added to the daemon's environment). Its stdout and
  // stderr reach the daemon's own, each line prefixed with "(label pid=N) ". The child dies with
  // the daemon (PR_SET_PDEATHSIG), whatever kills the daemon.
  Result<int> spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& label);
  void signal(int pid, int signal_number);
  // Sends SIGTERM to all, waits up to `grace` for them, then SIGKILLs the rest; blocks. Stops
  // watching SIGCHLD too, so the io context can run out of work and end.
  void stop_all(std::chrono::milliseconds grace);
  std::size_t running() const { return children_.size(); }
  // Also told each prefixed line (stream 0: stdout, 1: stderr), after it was written.
  std::function<void(int stream, const std::string& line)> on_line;

 private:
  struct Child;
  void on_sigchld();
  void read_output(const std::shared_ptr<Child>& child, int stream);
  void forward_line(const Child& child, int stream, std::string_view line);
  void finish_if_done(int pid);

  asio::io_context& io_;
  asio::signal_set sigchld_;
  std::function<void(int, const std::string&)> on_exit_;
  std::map<int, std::shared_ptr<Child>> children_;
};

}  // namespace tether::cluster
