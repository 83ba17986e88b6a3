// The launcher interface (launcher/launcher.h) without MPI or Slurm: LocalLauncher with stand-in programs
// (/bin/sh instead of layerprune-worker, a recording script instead of mpirun), and SlurmLauncher's command
// lines and squeue parsing with fake sbatch/squeue/scancel scripts first on PATH. `layerprune run` through
// LocalLauncher: test_run; SlurmLauncher on a real cluster: test_slurm_cluster.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/text_file.h"
#include "deploy/slurm/slurm_jobs.h"
#include "deploy/slurm/slurm_launcher.h"
#include "experiment/experiment.h"
#include "launcher/launcher.h"
#include "launcher/local_launcher.h"
#include "tests/run_support.h"
#include "tests/test_support.h"

namespace layerprune {
namespace {

namespace fs = std::filesystem;

// The processes of process group `pgid` that have not ended (zombies left out: in a container nobody may reap
// an orphan).
std::vector<pid_t> live_in_group(pid_t pgid) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = testing::read_or_empty(e.path().string() + "/stat");
    const size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(paren + 1));
    char state = 0;
    long ppid = 0, pgrp = 0;
    if (rest >> state >> ppid >> pgrp && pgrp == pgid && state != 'Z') out.push_back(pid_t(std::stol(name)));
  }
  return out;
}

WorkerGroupJob shell_job(const std::string& script, const std::string& log) {
  WorkerGroupJob j;
  j.experiment = "t";
  j.name = "stand-in";
  j.mpi = false;
  j.command = {"/bin/sh", "-c", script};
  j.log = log;
  return j;
}

// An executable script `name` in `dir` with `body` after the #! line.
std::string script(const std::string& dir, const std::string& name, const std::string& body) {
  const std::string path = dir + "/" + name;
  write_file(path, "#!/bin/sh\n" + body);
  chmod(path.c_str(), 0755);
  return path;
}

TEST(LocalLauncher, AJobRunsThenEndsWithItsExitStatusAndItsOutputInItsLog) {
  testing::TempDir tmp;
  write_file(tmp.file("a.log"), "an earlier attempt\n");
  LocalLauncher launcher;
  const JobId id = launcher.submit(shell_job("echo hello; sleep 0.2; exit 3", tmp.file("a.log")));
  EXPECT_EQ(launcher.status(id).state, JobState::kRunning);
  EXPECT_FALSE(launcher.status(id).exit_status);
  EXPECT_TRUE(testing::wait_until([&] { return !job_active(launcher.status(id).state); }, 10));
  const JobStatus s = launcher.status(id);
  EXPECT_EQ(s.state, JobState::kFailed);
  ASSERT_TRUE(s.exit_status);
  EXPECT_EQ(*s.exit_status, 3);
  EXPECT_EQ(read_file(tmp.file("a.log")), "an earlier attempt\nhello\n") << "the log is appended to";

  const JobId ok = launcher.submit(shell_job("exit 0", tmp.file("b.log")));
  EXPECT_TRUE(wait_for_end(launcher, {ok}, 10).empty());
  EXPECT_EQ(launcher.status(ok).state, JobState::kFinished);
  EXPECT_EQ(launcher.status(ok).exit_status.value_or(-1), 0);
  // Its own process group.
  EXPECT_EQ(launcher.process_group(ok), std::stoi(ok));
}

TEST(LocalLauncher, CancelEndsAJobAsCancelledAndKillsItsProcessGroup) {
  testing::TempDir tmp;
  LocalLauncher launcher;
  // A shell that waits on a sleep in the background: TERM ends the shell, the sleep is left in its group.
  const JobId id = launcher.submit(shell_job("sleep 1000 & wait", tmp.file("c.log")));
  const pid_t group = launcher.process_group(id);
  ASSERT_TRUE(testing::wait_until([&] { return live_in_group(group).size() == 2; }, 10));
  EXPECT_NE(group, getpgrp());
  launcher.cancel(id);
  EXPECT_TRUE(wait_for_end(launcher, {id}, 10).empty());
  const JobStatus s = launcher.status(id);
  EXPECT_EQ(s.state, JobState::kCancelled);
  EXPECT_EQ(s.exit_status.value_or(-1), 128 + SIGTERM);
  EXPECT_TRUE(testing::wait_until([&] { return live_in_group(group).empty(); }, 10)) << "the background sleep lives on";
  launcher.cancel(id);  // an ended job: nothing happens
  EXPECT_EQ(launcher.status(id).state, JobState::kCancelled);
}

TEST(LocalLauncher, AJobThatIgnoresTermIsKilledAfterItsStopSeconds) {
  testing::TempDir tmp;
  LocalLauncher launcher;
  WorkerGroupJob j = shell_job("trap '' TERM; sleep 1000 & wait; wait", tmp.file("d.log"));
  j.stop_seconds = 0.5;
  const JobId id = launcher.submit(j);
  const pid_t group = launcher.process_group(id);
  ASSERT_TRUE(testing::wait_until([&] { return live_in_group(group).size() == 2; }, 10));
  launcher.cancel(id);
  EXPECT_FALSE(wait_for_end(launcher, {id}, 0.2).empty()) << "it ignores TERM: still running before 0.5 s";
  EXPECT_TRUE(wait_for_end(launcher, {id}, 10).empty());
  EXPECT_EQ(launcher.status(id).state, JobState::kCancelled);
  EXPECT_EQ(launcher.status(id).exit_status.value_or(-1), 128 + SIGKILL);
  EXPECT_TRUE(testing::wait_until([&] { return live_in_group(group).empty(); }, 10));
}

TEST(LocalLauncher, MpiJobsRunUnderTheMpiLauncherWithTpTimesGroupsRanks) {
  testing::TempDir tmp;
  // A stand-in mpirun: records its arguments, then runs the program after them.
  const std::string mpirun = script(tmp.path(), "mpirun", "echo \"$@\" > " + tmp.file("mpirun.args") +
                                                              "\nshift 3\n[ \"$1\" = --allow-run-as-root ] && shift\n"
                                                              "exec \"$@\"\n");
  LocalLauncher launcher(LocalLauncher::Options{mpirun});
  WorkerGroupJob j;
  j.tp = 2;
  j.groups = 3;
  j.command = {"/bin/sh", "-c", "echo rank; exit 4", "--tp", "2"};
  j.log = tmp.file("w.log");
  const std::string root = geteuid() == 0 ? " --allow-run-as-root" : "";
  const std::vector<std::string> cmd = launcher.command_line(j);
  ASSERT_GE(cmd.size(), 4u);
  EXPECT_EQ(cmd[0], mpirun);
  const JobId id = launcher.submit(j);
  EXPECT_TRUE(wait_for_end(launcher, {id}, 10).empty());
  EXPECT_EQ(read_file(tmp.file("mpirun.args")), "--oversubscribe -np 6" + root + " /bin/sh -c echo rank; exit 4 --tp 2\n");
  EXPECT_EQ(launcher.status(id).state, JobState::kFailed);
  EXPECT_EQ(launcher.status(id).exit_status.value_or(-1), 4);
  EXPECT_EQ(read_file(tmp.file("w.log")), "rank\n");
}

TEST(LocalLauncher, BadJobsAndUnknownIds) {
  testing::TempDir tmp;
  LocalLauncher launcher;
  EXPECT_CONTAINS(testing::input_error([&] { launcher.submit(WorkerGroupJob{}); }), "no command");
  WorkerGroupJob two = shell_job("true", tmp.file("x.log"));
  two.tp = 2;
  EXPECT_CONTAINS(testing::input_error([&] { launcher.submit(two); }), "2 ranks need an MPI launcher");
  LocalLauncher no_mpirun(LocalLauncher::Options{""});
  WorkerGroupJob mpi = shell_job("true", tmp.file("x.log"));
  mpi.mpi = true;
  EXPECT_CONTAINS(testing::input_error([&] { no_mpirun.submit(mpi); }), "no MPI launcher");
  // A program that is not there: the job ends at once with 127, saying so in its log.
  WorkerGroupJob missing = shell_job("", tmp.file("m.log"));
  missing.command = {tmp.file("no-such-program")};
  const JobId id = launcher.submit(missing);
  EXPECT_TRUE(wait_for_end(launcher, {id}, 10).empty());
  EXPECT_EQ(launcher.status(id).state, JobState::kFailed);
  EXPECT_EQ(launcher.status(id).exit_status.value_or(-1), 127);
  EXPECT_CONTAINS(read_file(tmp.file("m.log")), "cannot run " + tmp.file("no-such-program"));
  EXPECT_EQ(launcher.status("1").state, JobState::kUnknown);
  EXPECT_EQ(std::string(job_state_name(JobState::kUnknown)), "unknown");
}

TEST(LocalLauncher, TheDestructorKillsWhatIsStillRunning) {
  testing::TempDir tmp;
  pid_t group = -1;
  {
    LocalLauncher launcher;
    const JobId id = launcher.submit(shell_job("sleep 1000 & wait", tmp.file("e.log")));
    group = launcher.process_group(id);
    ASSERT_TRUE(testing::wait_until([&] { return live_in_group(group).size() == 2; }, 10));
  }
  EXPECT_TRUE(testing::wait_until([&] { return live_in_group(group).empty(); }, 10));
}

// Fake sbatch, squeue and scancel first on PATH, recording their arguments in <dir>/<program>.args. squeue prints
// <dir>/squeue-<id>.out for --jobs=<id> (or squeue's error for an id it does not know); scancel makes its ids
// CANCELLED there.
class SlurmLauncherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string d = tmp_.path();
    script(d, "sbatch",
           "echo \"$@\" >> " + d + "/sbatch.args\n"
           "if [ -f " + d + "/sbatch.fail ]; then echo 'sbatch: error: Batch job submission failed: Invalid partition "
           "name specified' >&2; exit 1; fi\n"
           "echo 'sbatch: warning: a warning first'\n"
           "echo '4242;cluster'\n");
    script(d, "squeue",
           "echo \"$@\" >> " + d + "/squeue.args\n"
           "for a; do case $a in --jobs=*) id=${a#--jobs=};; esac; done\n"
           "cat " + d + "/squeue-$id.out 2>/dev/null && exit 0\n"
           "echo 'slurm_load_jobs error: Invalid job id specified' >&2\nexit 1\n");
    script(d, "scancel",
           "echo \"$@\" >> " + d + "/scancel.args\n"
           "for id; do echo \"$id|$id|CANCELLED|15\" > " + d + "/squeue-$id.out; done\n");
    path_ = std::getenv("PATH") ? std::getenv("PATH") : "";
    setenv("PATH", (d + ":" + path_).c_str(), 1);
  }
  void TearDown() override { setenv("PATH", path_.c_str(), 1); }
  std::string file(const std::string& name) const { return tmp_.file(name); }
  void squeue_says(const std::string& id, const std::string& lines) { write_file(file("squeue-" + id + ".out"), lines); }

  testing::TempDir tmp_;
  std::string path_;
};

TEST_F(SlurmLauncherTest, SubmitIsSbatchParsableOfTheJobsScript) {
  SlurmLauncher slurm;
  WorkerGroupJob j;
  j.name = "workers-tp2";
  j.tp = 2;
  j.script = "/s/slurm/workers-tp2.sbatch";
  EXPECT_EQ(slurm.submit(j), "4242") << "the id after sbatch's warnings, without ';cluster'";
  EXPECT_EQ(read_file(file("sbatch.args")), "--parsable /s/slurm/workers-tp2.sbatch\n");
  write_file(file("sbatch.fail"), "");
  try {
    slurm.submit(j);
    ADD_FAILURE() << "a failed sbatch must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_CONTAINS(e.what(), "sbatch /s/slurm/workers-tp2.sbatch failed (status 1): sbatch: error: Batch job submission failed");
  }
  j.script = "";
  EXPECT_CONTAINS(testing::input_error([&] { slurm.submit(j); }), "rendered batch script");
}

TEST_F(SlurmLauncherTest, StatusIsSqueueOfAllStatesParsedPerArray) {
  SlurmLauncher slurm;
  // Not known to squeue (or never submitted): unknown.
  EXPECT_EQ(slurm.status("4242").state, JobState::kUnknown);
  EXPECT_EQ(read_file(file("squeue.args")),
            "--noheader --states=all --Format=ArrayJobID:|,JobArrayID:|,State:|,exit_code: --jobs=4242\n");
  // As squeue 22.05 prints an array of 4 tasks, at most 1 at once: one done, one running, two waiting.
  squeue_says("4242", "4242|4242_[2-3%1]|PENDING|0\n4242|4242_0|COMPLETED|0\n4242|4242_1|RUNNING|0\n");
  JobStatus s = slurm.status("4242");
  EXPECT_EQ(s.state, JobState::kRunning);
  EXPECT_FALSE(s.exit_status) << "not ended";
  squeue_says("4242", "4242|4242_[0-3%1]|PENDING|0\n");
  EXPECT_EQ(slurm.status("4242").state, JobState::kQueued);
  squeue_says("4242", "4242|4242_0|COMPLETING|0\n");
  EXPECT_EQ(slurm.status("4242").state, JobState::kRunning);
  // All ended: the first non-zero exit code (squeue's is the wait status: 512 is exit 2).
  squeue_says("4242", "4242|4242_0|COMPLETED|0\n4242|4242_1|FAILED|512\n4242|4242_2|TIMEOUT|15\n");
  s = slurm.status("4242");
  EXPECT_EQ(s.state, JobState::kFailed);
  EXPECT_EQ(s.exit_status.value_or(-1), 2);
  squeue_says("4242", "4242|4242_0|COMPLETED|0\n4242|4242_1|COMPLETED|0\n");
  EXPECT_EQ(slurm.status("4242").state, JobState::kFinished);
  EXPECT_EQ(slurm.status("4242").exit_status.value_or(-1), 0);
  squeue_says("4242", "4242|4242_0|CANCELLED|15\n4242|4242_1|COMPLETED|0\n");
  EXPECT_EQ(slurm.status("4242").state, JobState::kCancelled);
  EXPECT_EQ(slurm.status("4242").exit_status.value_or(-1), 128 + SIGTERM);
  // A plain job (its ArrayJobID is its own id), padded fields, a requeued one waiting again.
  squeue_says("77", "77  |77   |REQUEUED  |0\n");
  EXPECT_EQ(slurm.status("77").state, JobState::kQueued);
  // The pure parser: one array task, and lines about other jobs ignored.
  EXPECT_EQ(parse_squeue_status("4242|4242_0|COMPLETED|0\n4242|4242_1|FAILED|256\n", "4242_1").state, JobState::kFailed);
  EXPECT_EQ(parse_squeue_status("4242|4242_0|COMPLETED|0\n4242|4242_1|FAILED|256\n", "4242_1").exit_status.value_or(-1), 1);
  EXPECT_EQ(parse_squeue_status("5|5|RUNNING|0\nslurm_load_jobs error: Invalid job id specified\n", "4242").state,
            JobState::kUnknown);
  EXPECT_EQ(parse_squeue_status("4242|4242|SOMETHING_NEW|0\n", "4242").state, JobState::kUnknown);
}

TEST_F(SlurmLauncherTest, CancelIsScancelOfTheId) {
  SlurmLauncher slurm;
  squeue_says("4242", "4242|4242_0|RUNNING|0\n");
  slurm.cancel("4242");
  EXPECT_EQ(read_file(file("scancel.args")), "4242\n");
  EXPECT_EQ(slurm.status("4242").state, JobState::kCancelled);
  script(tmp_.path(), "scancel", "echo 'scancel: error: Invalid job id 9' >&2; exit 1\n");
  try {
    slurm.cancel("9");
    ADD_FAILURE() << "a failed scancel must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_CONTAINS(e.what(), "scancel 9 failed: scancel: error: Invalid job id 9");
  }
}

TEST_F(SlurmLauncherTest, CancelSubmittedJobsStopsActiveWorkerArraysThenTheCoordinator) {
  SlurmLauncher slurm;
  SubmittedJobs jobs;
  jobs.experiment = "t";
  jobs.coordinator_job = "4241";
  jobs.workers = {{"1", "4243"}, {"2", "4242"}};  // tp 1's array has ended long ago: squeue has forgotten it
  squeue_says("4241", "4241|4241|RUNNING|0\n");
  squeue_says("4242", "4242|4242_0|RUNNING|0\n4242|4242_1|PENDING|0\n");
  const std::vector<std::string> said = cancel_submitted_jobs(slurm, tmp_.path(), jobs, 10);
  EXPECT_EQ(said, (std::vector<std::string>{"worker array 4243 (tp 1) had already ended",
                                            "cancelled worker array 4242 (tp 2)", "cancelled coordinator job 4241"}));
  EXPECT_EQ(read_file(file("scancel.args")), "4242\n4241\n") << "the workers first, only what is active";
}

TEST(SlurmJob, TheJobsOfTheRenderedScripts) {
  const Experiment e = parse_experiment(
      "name: t\nmodels:\n  - {name: m, path: /m, tp: 2}\npruning: {layers: [0, 1], strategies: [simple]}\n"
      "evaluation: {loss: {data: /d.txt}}\nslurm: {groups: 3}\n",
      "t.yaml");
  const SlurmPaths paths{"/e.yaml", "/s", "/b/lp", "/b/c", "/b/w"};
  const std::vector<SlurmScript> scripts = render_slurm_jobs(e, paths);
  ASSERT_EQ(scripts.size(), 2u);
  const WorkerGroupJob c = slurm_job(e, paths, scripts[0]);
  EXPECT_EQ(c.script, "/s/slurm/coordinator.sbatch");
  EXPECT_FALSE(c.mpi);
  EXPECT_EQ(c.command.front(), "/b/c");
  const WorkerGroupJob w = slurm_job(e, paths, scripts[1]);
  EXPECT_EQ(w.script, "/s/slurm/workers-tp2.sbatch");
  EXPECT_EQ(w.name, "workers-tp2");
  EXPECT_EQ(w.tp, 2);
  EXPECT_EQ(w.groups, 3);
  EXPECT_EQ(w.log, "/s/logs/workers-tp2-%A_%a.log");
  EXPECT_EQ(w.command, (std::vector<std::string>{"/b/w", "--tp", "2", "--work-dir", "/s"}));
}

}  // namespace
}  // namespace layerprune
