// The coordinator as a process for the tests that talk to it over gRPC (test_coordinator, test_lease_loop):
// a child process with its output in a file, the real layerprune-coordinator of this build directory on a
// database in a temporary directory (short leases, so expiry takes a second), and a few polling helpers.
#pragma once
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "proto/client.h"
#include "tests/child_process.h"
#include "tests/test_support.h"

namespace layerprune::testing::process {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const std::string kCoordinator = std::string(LAYERPRUNE_BINARY_DIR) + "/coordinator/layerprune-coordinator";

// A child process (fork + exec), its stdout and stderr in a file. Killed with SIGKILL if still running
// when destroyed.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& output)
      : pid_(::layerprune::testing::spawn_logged(argv, output)) {}
  ~Process() {
    if (running()) {
      ::kill(pid_, SIGKILL);
      ::kill(pid_, SIGCONT);
      waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !status_; }
  void signal(int sig) { ::kill(pid_, sig); }
  // The exit status (or 128 + signal) once it ends within `timeout`; nullopt while it runs.
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    const auto until = Clock::now() + timeout;
    while (!status_) {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        break;
      }
      if (Clock::now() >= until) break;
      std::this_thread::sleep_for(10ms);
    }
    return status_;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int count_lines(const std::string& path, const std::string& part) {
  std::istringstream in(slurp(path));
  int n = 0;
  for (std::string line; std::getline(in, line);) n += line.find(part) != std::string::npos;
  return n;
}

// Waits until `path` has a line containing `part`; false after `timeout`.
bool wait_for_line(const std::string& path, const std::string& part, std::chrono::milliseconds timeout = 10s) {
  const auto until = Clock::now() + timeout;
  while (Clock::now() < until) {
    if (count_lines(path, part) > 0) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

// A TCP port on loopback that nothing listens on (bound, read, closed).
int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// One coordinator on a database in `dir`, with short leases so that expiry takes a second.
class Coordinator {
 public:
  // `wrapper`: a command the coordinator runs under (e.g. prlimit with a file-size limit).
  Coordinator(const ::layerprune::testing::TempDir& dir, std::vector<std::string> extra = {}, const std::string& db = "coordinator.db",
              std::vector<std::string> wrapper = {})
      : dir_(dir), db_(dir.file(db)), extra_(std::move(extra)), wrapper_(std::move(wrapper)) {}

  // Starts and waits for its address file; the address, or "" when it did not come up (exit status in
  // *status when it ended).
  std::string start(const std::string& listen = "127.0.0.1:0", std::optional<int>* status = nullptr) {
    static int instances = 0;
    const std::string address_file = dir_.file("address-" + std::to_string(++instances));
    std::vector<std::string> argv = {kCoordinator,      "--db",        db_,          "--listen", listen,
                                     "--address-file",  address_file,  "--lease-seconds", "1",
                                     "--backoff-seconds", "0.1",       "--max-attempts", "5"};
    argv.insert(argv.end(), extra_.begin(), extra_.end());
    argv.insert(argv.begin(), wrapper_.begin(), wrapper_.end());
    process_ = std::make_unique<Process>(argv, dir_.file("coordinator.log"));
    const auto until = Clock::now() + 15s;
    while (Clock::now() < until) {
      if (auto st = process_->wait(0ms)) {
        if (status) *status = st;
        return "";
      }
      std::error_code ec;
      if (std::filesystem::exists(address_file, ec)) {
        address_ = slurp(address_file);
        while (!address_.empty() && address_.back() == '\n') address_.pop_back();
        return address_;
      }
      std::this_thread::sleep_for(10ms);
    }
    return "";
  }
  void kill9() {
    process_->signal(SIGKILL);
    process_->wait(5s);
  }
  // SIGTERM; the exit status.
  std::optional<int> stop() {
    process_->signal(SIGTERM);
    return process_->wait(10s);
  }
  const std::string& address() const { return address_; }
  const std::string& db() const { return db_; }
  std::string log() const { return slurp(dir_.file("coordinator.log")); }

 private:
  const ::layerprune::testing::TempDir& dir_;
  std::string db_;
  std::vector<std::string> extra_, wrapper_;
  std::unique_ptr<Process> process_;
  std::string address_;
};

ClientOptions quick(std::chrono::milliseconds retry_for = 10s) {
  ClientOptions o;
  o.retry_for = retry_for;
  o.rpc_timeout = 5s;
  return o;
}

// The code and message of a CoordinatorError thrown by f (0 and "" when none).
template <typename F>
std::pair<int, std::string> coordinator_error(F f) {
  try {
    f();
  } catch (const CoordinatorError& e) {
    return {e.code, e.what()};
  }
  return {0, ""};
}

// Polls the status until the experiment is finished; the last status.
ExperimentStatus wait_finished(CoordinatorClient& c, int64_t id, std::chrono::milliseconds timeout = 60s) {
  const auto until = Clock::now() + timeout;
  ExperimentStatus s;
  while (Clock::now() < until) {
    s = c.watch_status(id, false, {}, true);
    if (s.finished) return s;
    std::this_thread::sleep_for(50ms);
  }
  ADD_FAILURE() << "experiment " << id << " not finished after " << timeout.count() << " ms";
  return s;
}

}  // namespace layerprune::testing::process
