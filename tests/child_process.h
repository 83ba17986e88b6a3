// Starting a program as a child process with its stdout and stderr appended to a file: the coordinator's
// tests and bench/chaos.cc run the real coordinator and workers this way.
#pragma once
#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace layerprune::testing {

// fork + execv of argv[0]; the child's pid (exit status 127 when argv[0] cannot be run).
inline pid_t spawn_logged(const std::vector<std::string>& argv, const std::string& output) {
  const pid_t pid = fork();
  if (pid == 0) {
    int fd = ::open(output.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

}  // namespace layerprune::testing
