// ChildProcesses: fork/exec with piped output, line forwarding, SIGCHLD reaping.
#include "cluster/child_processes.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

extern char** environ;

namespace tether::cluster {

struct ChildProcesses::Child {
  int pid = 0;
  std::string label;
  std::unique_ptr<asio::posix::stream_descriptor> out[2];  // stdout, stderr
  std::string partial[2];
  std::array<char, 4096> buffer[2];
  int open_streams = 2;
  bool exited = false;
  std::string exit_description;
};

namespace {

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "ended";
}

}  // namespace

ChildProcesses::ChildProcesses(asio::io_context& io, std::function<void(int, const std::string&)> on_exit)
    : io_(io), sigchld_(io, SIGCHLD), on_exit_(std::move(on_exit)) {
  sigchld_.async_wait([this](std::error_code ec, int) {
    if (!ec) on_sigchld();
  });
}

ChildProcesses::~ChildProcesses() { stop_all(std::chrono::milliseconds(0)); }

Result<int> ChildProcesses::spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                                  const std::string& label) {
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return Error{ErrorKind::failed, std::string("pipe: ") + std::strerror(errno)};
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    return Error{ErrorKind::failed, std::string("pipe: ") + std::strerror(errno)};
  }
  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::vector<std::string> environment;
  for (char** e = environ; *e; ++e) environment.emplace_back(*e);
  for (const auto& entry : env) {
    auto name = entry.substr(0, entry.find('=') + 1);
    std::erase_if(environment, [&](const std::string& existing) { return existing.rfind(name, 0) == 0; });
    environment.push_back(entry);
  }
  std::vector<char*> c_argv, c_env;
  for (const auto& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);
  for (const auto& e : environment) c_env.push_back(const_cast<char*>(e.c_str()));
  c_env.push_back(nullptr);
  pid_t parent = getpid();
  // The daemon's own descriptors (its listening sockets, its connections) are not the child's: a
  // worker holding them would keep a port bound, or a peer's connection open, after the daemon died.
  rlimit files{};
  int highest_fd = getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY
                       ? static_cast<int>(std::min<rlim_t>(files.rlim_cur, 1 << 20)) : 65536;

  pid_t pid = fork();
  if (pid < 0) return Error{ErrorKind::failed, std::string("fork: ") + std::strerror(errno)};
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);  // the daemon died before prctl took effect
    dup2(out_pipe[1], STDOUT_FILENO);
    dup2(err_pipe[1], STDERR_FILENO);
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0)  // kernels before 5.9: one by one
      for (int fd = 3; fd < highest_fd; ++fd) close(fd);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);  // the daemon's blocked signals are not the child's
    execve(c_argv[0], c_argv.data(), c_env.data());
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  auto child = std::make_shared<Child>();
  child->pid = pid;
  child->label = label;
  child->out[0] = std::make_unique<asio::posix::stream_descriptor>(io_, out_pipe[0]);
  child->out[1] = std::make_unique<asio::posix::stream_descriptor>(io_, err_pipe[0]);
  children_[pid] = child;
  read_output(child, 0);
  read_output(child, 1);
  return static_cast<int>(pid);
}

void ChildProcesses::read_output(const std::shared_ptr<Child>& child, int stream) {
  child->out[stream]->async_read_some(asio::buffer(child->buffer[stream]), [this, child, stream](std::error_code ec, std::size_t n) {
    if (!ec) {
      child->partial[stream].append(child->buffer[stream].data(), n);
      std::string& text = child->partial[stream];
      std::size_t start = 0;
      for (auto newline = text.find('\n'); newline != std::string::npos; newline = text.find('\n', start)) {
        forward_line(*child, stream, std::string_view(text).substr(start, newline - start));
        start = newline + 1;
      }
      text.erase(0, start);
      return read_output(child, stream);
    }
    if (!child->partial[stream].empty()) forward_line(*child, stream, child->partial[stream]);
    child->partial[stream].clear();
    --child->open_streams;
    finish_if_done(child->pid);
  });
}

void ChildProcesses::forward_line(const Child& child, int stream, std::string_view line) {
  std::string prefixed = "(" + child.label + " pid=" + std::to_string(child.pid) + ") ";
  prefixed.append(line);
  prefixed.push_back('\n');
  int fd = stream == 0 ? STDOUT_FILENO : STDERR_FILENO;
  for (std::size_t written = 0; written < prefixed.size();) {
    auto n = ::write(fd, prefixed.data() + written, prefixed.size() - written);
    if (n <= 0) break;  // our own output is gone (the driver closed it): the line is dropped
    written += static_cast<std::size_t>(n);
  }
  if (on_line) {
    prefixed.pop_back();
    on_line(stream, prefixed);
  }
}

void ChildProcesses::on_sigchld() {
  for (;;) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) break;
    auto it = children_.find(pid);
    if (it == children_.end()) continue;
    it->second->exited = true;
    it->second->exit_description = describe_status(status);
    finish_if_done(pid);
  }
  sigchld_.async_wait([this](std::error_code ec, int) {
    if (!ec) on_sigchld();
  });
}

// A child is finished once it exited and its last output line was forwarded.
void ChildProcesses::finish_if_done(int pid) {
  auto it = children_.find(pid);
  if (it == children_.end() || !it->second->exited || it->second->open_streams > 0) return;
  auto description = it->second->exit_description;
  children_.erase(it);
  if (on_exit_) on_exit_(pid, description);
}

void ChildProcesses::signal(int pid, int signal_number) {
  if (children_.count(pid)) ::kill(pid, signal_number);
}

void ChildProcesses::stop_all(std::chrono::milliseconds grace) {
  std::error_code ignored;
  sigchld_.cancel(ignored);
  std::vector<int> pids;
  for (auto& [pid, child] : children_)
    if (!child->exited) pids.push_back(pid);
  for (int pid : pids) ::kill(pid, grace.count() > 0 ? SIGTERM : SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + grace;
  auto reap = [&](bool block) {
    std::erase_if(pids, [&](int pid) {
      int status = 0;
      return waitpid(pid, &status, block ? 0 : WNOHANG) == pid;
    });
  };
  while (!pids.empty() && std::chrono::steady_clock::now() < deadline) {
    reap(false);
    if (!pids.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (int pid : pids) ::kill(pid, SIGKILL);
  reap(true);
  children_.clear();
}

}  // namespace tether::cluster
