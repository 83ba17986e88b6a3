#include "launcher/local_launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "common/error.h"

namespace layerprune {

namespace {

// The pids of every process descended from `root` (/proc: children, their children, ...).
std::vector<pid_t> descendants(pid_t root) {
  std::multimap<pid_t, pid_t> children;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "stat");
    std::string stat;
    std::getline(in, stat);
    const size_t paren = stat.rfind(')');  // "pid (comm) state ppid ...": comm may hold spaces
    if (paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(paren + 1));
    char state = 0;
    long ppid = 0;
    if (rest >> state >> ppid) children.emplace(pid_t(ppid), pid_t(std::stol(name)));
  }
  std::vector<pid_t> out;
  std::vector<pid_t> todo = {root};
  while (!todo.empty()) {
    const pid_t p = todo.back();
    todo.pop_back();
    const auto [from, to] = children.equal_range(p);
    for (auto it = from; it != to; ++it) {
      out.push_back(it->second);
      todo.push_back(it->second);
    }
  }
  return out;
}

// KILL to the job: its process group and every process descended from its first one (mpirun puts each rank in
// a process group of its own).
void kill_job(pid_t pid) {
  const std::vector<pid_t> below = descendants(pid);
  kill(-pid, SIGKILL);
  kill(pid, SIGKILL);  // in case it has left its process group
  for (const pid_t d : below) kill(d, SIGKILL);
}

}  // namespace

LocalLauncher::LocalLauncher(Options options) : options_(std::move(options)) {}

LocalLauncher::~LocalLauncher() {
  for (auto& [id, c] : jobs_) {
    poll(c);
    if (c.ended) continue;
    kill_job(c.pid);
    waitpid(c.pid, nullptr, 0);
  }
}

std::vector<std::string> LocalLauncher::command_line(const WorkerGroupJob& job) const {
  const std::string what = job.name.empty() ? std::string("a job") : "job " + job.name;
  if (job.command.empty()) throw InputError(what + ": no command to run");
  if (job.tp < 1 || job.groups < 1) throw InputError(what + ": tp and groups must be >= 1");
  if (!job.mpi) {
    if (job.tp * job.groups != 1)
      throw InputError(what + ": " + std::to_string(job.tp * job.groups) + " ranks need an MPI launcher");
    return job.command;
  }
  if (options_.mpirun.empty()) throw InputError(what + ": no MPI launcher (mpirun) given");
  std::vector<std::string> cmd = {options_.mpirun, "--oversubscribe", "-np", std::to_string(job.tp * job.groups)};
  if (geteuid() == 0) cmd.push_back("--allow-run-as-root");  // containers and CI run as root
  cmd.insert(cmd.end(), job.command.begin(), job.command.end());
  return cmd;
}

JobId LocalLauncher::submit(const WorkerGroupJob& job) {
  // Everything the child needs is made before fork: this process has threads (gRPC), so the child only makes
  // system calls until exec.
  const std::vector<std::string> args = command_line(job);
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const std::string cannot = "cannot run " + args[0] + "\n";
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
  if (pid == 0) {
    setpgid(0, 0);  // its own process group: the terminal's Ctrl-C reaches only us, we pass it on
    if (!job.log.empty()) {
      const int fd = open(job.log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2) close(fd);
      }
    }
    execvp(argv[0], argv.data());
    const ssize_t said = write(2, cannot.data(), cannot.size());
    (void)said;
    _exit(127);
  }
  setpgid(pid, pid);  // here too, so the group exists before any signal is sent to it (fails once it has exec'd)
  Child c;
  c.pid = pid;
  c.stop_seconds = job.stop_seconds;
  const JobId id = std::to_string(pid);
  jobs_[id] = c;
  return id;
}

void LocalLauncher::poll(Child& c) {
  if (c.ended) return;
  siginfo_t info{};
  // WNOWAIT: the first process stays a zombie for now, which keeps its process group's id from being reused
  // while what is left of the group is killed.
  const int r = waitid(P_PID, id_t(c.pid), &info, WEXITED | WNOHANG | WNOWAIT);
  if (r == 0 && info.si_pid == c.pid) {
    c.exit_status = info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
    c.has_exit = true;
    kill(-c.pid, SIGKILL);
    waitpid(c.pid, nullptr, 0);
    c.ended = true;
    return;
  }
  if (r < 0 && errno == ECHILD) {  // reaped elsewhere: ended, status unknown
    c.ended = true;
    return;
  }
  if (c.cancelled && !c.killed && std::chrono::steady_clock::now() >= c.kill_at) {
    kill_job(c.pid);
    c.killed = true;
  }
}

JobStatus LocalLauncher::status(const JobId& id) {
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) return {};
  Child& c = it->second;
  poll(c);
  JobStatus s;
  if (!c.ended) {
    s.state = JobState::kRunning;
    return s;
  }
  if (c.has_exit) s.exit_status = c.exit_status;
  s.state = c.cancelled ? JobState::kCancelled
            : c.has_exit && c.exit_status == 0 ? JobState::kFinished
                                               : JobState::kFailed;
  return s;
}

void LocalLauncher::cancel(const JobId& id) {
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Child& c = it->second;
  poll(c);
  if (c.ended || c.cancelled) return;
  c.cancelled = true;
  kill(c.pid, SIGTERM);  // mpirun forwards it to the ranks: healing checkpoints, leases go back
  c.kill_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(c.stop_seconds * 1000));
  if (c.stop_seconds <= 0) poll(c);
}

pid_t LocalLauncher::process_group(const JobId& id) const {
  const auto it = jobs_.find(id);
  return it == jobs_.end() ? -1 : it->second.pid;
}

}  // namespace layerprune
