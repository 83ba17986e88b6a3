// The Slurm launcher on a real Slurm cluster: deploy/slurm/local_cluster.sh starts munge, slurmctld and slurmd
// on this machine (8 slots on purpose, so a coordinator job and two TP-2 groups fit on 2 cores), and
// `layerprune slurm submit` runs a small stories260K experiment through it: a coordinator job and a worker
// array of two tensor-parallel groups (2 ranks each, srun --mpi=pmix), and the shipped stories260k experiment
// the same way. Then the time-limit warning (USR1 to
// the batch shell, as --signal=B:USR1@N sends it) mid-healing: checkpoint, lease back, requeue, resume, the
// uninterrupted run's numbers; a worker job scancelled mid-healing: its task finishes on the other group; a
// worker group SIGKILLed: its lease expires and the other group resumes the task from the checkpoint; the
// worker groups preempted by an urgent job: they requeue themselves and resume; the coordinator job
// requeued: the workers wait for its new address and go on; and
// `layerprune cancel --state` ends the experiment and every job it submitted.
// Skips with the reason where Slurm is not installed or its daemons cannot start (not root, no munge key).
// Run as one ctest entry: the tests share one cluster and run one after another.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/text_file.h"
#include "tests/run_support.h"
#include "tests/test_support.h"

namespace layerprune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Results = testing::PointResults;

struct Output {
  int status = -1;
  std::string text;  // stdout and stderr
};

Output sh(const std::string& command) {
  Output o;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) return o;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) o.text.append(buf.data(), n);
  const int st = pclose(p);
  o.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return o;
}

std::string layerprune() { return std::string(LAYERPRUNE_BINARY_DIR) + "/cli/layerprune"; }

// Every 200 ms: each poll here runs squeue or `layerprune status`.
bool wait_until(const std::function<bool()>& ready, double seconds) { return testing::wait_until(ready, seconds, 200); }
using testing::read_or_empty;

class SlurmCluster : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    for (const char* f : {"stories260K/stories260K.bin", "stories260K/tok512.model", "tinystories/tinystories_val.txt",
                          "boolq/val.jsonl", "mmlu/hendrycks_format"})
      if (testing::data_file(f).empty()) {
        skip_ = std::string(f) + " not found under " + testing::data_dir();
        return;
      }
    dir_ = new testing::TempDir();
    const Output o = sh("bash " + testing::source_file("deploy/slurm/local_cluster.sh") + " start " +
                        dir_->file("cluster") + " 8");
    if (o.status != 0) {
      skip_ = "no Slurm cluster on this machine (deploy/slurm/local_cluster.sh exit " + std::to_string(o.status) +
              "): " + o.text;
      return;
    }
    setenv("SLURM_CONF", dir_->file("cluster/slurm.conf").c_str(), 1);
    setenv("LAYERPRUNE_DATA", testing::data_dir().c_str(), 1);
    started_ = true;
  }
  static void TearDownTestSuite() {
    if (started_) {
      // What each test submitted (a test that failed half-way has not cancelled its own; a coordinator on
      // this host is stopped by its pid), every job of this private cluster, then its daemons (by their pid
      // files).
      for (const std::string& name : submitted_) cancel(name);
      sh("scancel --user=root");
      wait_until([] { return sh("squeue --noheader").text.empty(); }, 60);
      sh("bash " + testing::source_file("deploy/slurm/local_cluster.sh") + " stop " + dir_->file("cluster"));
    }
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
  }

  static std::string file(const std::string& name) { return dir_->file(name); }

  // `layerprune slurm submit` of the mini experiment into state directory `name`; the jobs it reports.
  // `flags`: more flags of `slurm submit`.
  json submit(const std::string& name, const std::string& flags = "") {
    write_file(file(name + ".yaml"),
               testing::mini_experiment_yaml(200, 2, "slurm: {groups: 2, time: \"15:00\", lease_seconds: 5, warning_seconds: 60}\n"));
    return submit_yaml(name, flags);
  }
  // `layerprune slurm submit` of <name>.yaml into state directory <name>; the jobs it reports.
  json submit_yaml(const std::string& name, const std::string& flags = "") {
    submitted_.push_back(name);
    const Output o = sh(layerprune() + " slurm submit " + file(name + ".yaml") + " --state " + file(name) + " --json " + flags);
    EXPECT_EQ(o.status, 0) << o.text;
    const size_t brace = o.text.rfind("\n{");
    if (o.status != 0 || brace == std::string::npos) throw std::runtime_error("slurm submit failed: " + o.text);
    return json::parse(o.text.substr(brace + 1));
  }
  // Until the experiment is finished (status says done or failed), or the coordinator job has left the queue
  // (it stops itself 15 s after the experiment finishes; not waiting for that saves time).
  bool wait_finished(const json& jobs, double seconds) {
    const std::string id = jobs.value("coordinator_job", "");  // none with --coordinator-on login
    const std::string state = jobs.at("state");
    return wait_until([&] {
      if (!id.empty() && sh("squeue --noheader --jobs=" + id).text.empty()) return true;
      const Output o = sh(layerprune() + " status 1 --json --retry-seconds 1 --coordinator " + state +
                          "/coordinator.address --token-file " + state + "/coordinator.token 2>/dev/null");
      return o.status == 0 && (o.text.find("\"state\":\"done\"") != std::string::npos ||
                               o.text.find("\"state\":\"failed\"") != std::string::npos);
    }, seconds);
  }
  static void cancel(const std::string& name) { sh(layerprune() + " slurm cancel " + file(name + ".yaml") + " --state " + file(name)); }

  // Waits for array task `job` ("12_1") to have requeued itself, then starts its next attempt without Slurm's
  // hold. Slurm holds a requeued job for about 2 minutes (its EligibleTime), time for the node to finish off
  // the old attempt. The tests do not wait that out: once slurmd has ended both of the old attempt's steps
  // (the ranks' and the batch shell's), StartTime=now, repeated until the next attempt runs (one update right
  // after the requeue did not always take). Poking it earlier relaunched the job while slurmd was still
  // ending the old one, and slurmd refused ("Job N already killed, do not launch batch job": the attempt
  // FAILED with exit code 1 and run time 0; seen in 1 of 3 runs).
  // `ranks`: whether the job ran a step of ranks (worker arrays do, the coordinator job does not).
  ::testing::AssertionResult start_requeued_attempt(const std::string& job, bool ranks = true) {
    std::string job_id;  // the array task's own job id, as slurmd's log names it
    if (!wait_until([&] {
          const std::string s = sh("scontrol show job " + job).text;
          std::smatch m;
          if (job_id.empty() && std::regex_search(s, m, std::regex("JobId=([0-9]+)"))) job_id = m[1];
          return s.find("Restarts=1") != std::string::npos;
        }, 60))
      return ::testing::AssertionFailure() << job << " did not requeue itself: " << sh("scontrol show job " + job).text;
    const std::string slurmd_log = file("cluster/log/slurmd.log");
    if (!wait_until([&] {
          const std::string log = read_or_empty(slurmd_log);
          return (!ranks || log.find("[" + job_id + ".0] done with job") != std::string::npos) &&
                 log.find("[" + job_id + ".batch] done with job") != std::string::npos;
        }, 60))
      return ::testing::AssertionFailure() << "slurmd did not end job " << job_id << ": " << read_or_empty(slurmd_log);
    std::this_thread::sleep_for(std::chrono::seconds(2));
    if (!wait_until([&] {
          const std::string s = sh("scontrol show job " + job).text;
          if (s.find("JobState=PENDING") != std::string::npos) sh("scontrol update JobId=" + job + " StartTime=now");
          return s.find("JobState=RUNNING") != std::string::npos || s.find("JobState=COMPLETED") != std::string::npos;
        }, 120))
      return ::testing::AssertionFailure() << job << "'s next attempt did not start: " << sh("scontrol show job " + job).text
                                           << read_or_empty(slurmd_log);
    return ::testing::AssertionSuccess();
  }

  // point -> metric -> value from the database, failing on a repeated (point, metric) row.
  Results results(const std::string& name) {
    const Output o = sh(layerprune() + " results 1 --format json --db " + file(name + "/layerprune.db") + " 2>/dev/null");
    EXPECT_EQ(o.status, 0) << o.text;
    return testing::results_by_point(o.text);
  }
  // The outcomes of task `key`'s attempts, in order ("released,done\n").
  std::string outcomes(const std::string& name, const std::string& key) {
    return sql(name, "SELECT group_concat(outcome) FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.key = '" +
                         key + "'");
  }
  // Every log of state directory `name`, concatenated.
  std::string all_logs(const std::string& name) {
    std::string logs;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(file(name + "/logs"), ec)) logs += read_or_empty(e.path().string());
    return logs;
  }
  std::string sql(const std::string& name, const std::string& query) {
    return sh("sqlite3 " + file(name + "/layerprune.db") + " \"" + query + "\"").text;
  }

  // The uninterrupted run's results (computed by the first test that needs them).
  Results reference() {
    if (!reference_) {
      const json jobs = submit("ref");
      EXPECT_TRUE(wait_finished(jobs, 300)) << read_or_empty(file("ref/logs/coordinator-" + jobs["coordinator_job"].get<std::string>() + ".log"));
      reference_ = results("ref");
      cancel("ref");
    }
    return *reference_;
  }

  // Waits for a healing checkpoint mid-run in state `name`; returns the heal task's key and the Slurm array
  // task ("12_1") whose worker holds it (from `layerprune status --tasks`: workers carry their Slurm job).
  std::pair<std::string, std::string> healing_task(const std::string& name) {
    std::string key;
    const std::string root = file(name + "/checkpoints/mini/");
    EXPECT_TRUE(wait_until([&] {
      const std::string found = testing::find_under(root, "step-000010.safetensors");
      if (!found.empty()) key = fs::path(found).parent_path().string().substr(root.size());
      return !found.empty();
    }, 240)) << "no healing checkpoint under " << root;
    const Output o = sh(layerprune() + " status 1 --tasks --json --coordinator " + file(name + "/coordinator.address") +
                        " --token-file " + file(name + "/coordinator.token") + " 2>/dev/null");
    std::string job;
    for (const json& t : json::parse(o.text.empty() ? "{}" : o.text).value("tasks", json::array()))
      if (t.at("key") == key) {
        std::smatch m;
        const std::string worker = t.at("worker");
        if (std::regex_search(worker, m, std::regex("slurm ([0-9]+_[0-9]+)"))) job = m[1];
      }
    EXPECT_FALSE(job.empty()) << "task " << key << " has no Slurm worker in: " << o.text;
    return {key, job};
  }

  static inline testing::TempDir* dir_ = nullptr;
  static inline std::string skip_;
  static inline bool started_ = false;
  static inline std::optional<Results> reference_;
  static inline std::vector<std::string> submitted_;
};

TEST_F(SlurmCluster, TwoTp2WorkerGroupsComputeEveryGridPoint) {
  const Results r = reference();
  ASSERT_EQ(r.size(), 4u);
  for (const auto& [point, metrics] : r) {
    EXPECT_EQ(metrics.count("boolq"), 1u) << point;
    EXPECT_EQ(metrics.count("loss"), 1u) << point;
  }
  // Both array tasks ran a TP-2 group and registered with their Slurm job in the name.
  const std::string names = sql("ref", "SELECT name FROM workers ORDER BY name");
  EXPECT_CONTAINS(names, "tp 2 slurm ");
  EXPECT_TRUE(std::regex_search(names, std::regex("slurm [0-9]+_0"))) << names;
  EXPECT_TRUE(std::regex_search(names, std::regex("slurm [0-9]+_1"))) << names;
  // Token on: the coordinator listened off loopback with it.
  EXPECT_CONTAINS(read_or_empty(file("ref/slurm/coordinator.sbatch")), "--token-file");
  EXPECT_EQ(fs::status(file("ref/coordinator.token")).permissions() & fs::perms::others_read, fs::perms::none);
}

// The shipped experiments/stories260k.yaml (18 grid points: distances, the unhealed sweep, 9 QLoRA heals) with
// its model at TP 2 (the one line changed) and a slurm: section added, through Slurm on two TP-2 worker array
// tasks: every grid point has each of its metrics exactly once (results() fails on a repeated row).
TEST_F(SlurmCluster, Stories260kExperimentOnTwoTp2Groups) {
  std::string yaml = read_file(testing::source_file("experiments/stories260k.yaml"));
  const size_t tp = yaml.find("    tp: 1\n");
  ASSERT_NE(tp, std::string::npos);
  yaml.replace(tp, 10, "    tp: 2\n");
  ASSERT_EQ(yaml.find("\nslurm:"), std::string::npos);
  write_file(file("s260k.yaml"), yaml + "slurm: {groups: 2, time: \"30:00\"}\n");
  const json jobs = submit_yaml("s260k");
  ASSERT_TRUE(wait_finished(jobs, 900)) << sh("squeue").text << sh("tail -n 5 " + file("s260k/logs/*")).text;
  const Results r = results("s260k");
  EXPECT_EQ(r.size(), 18u);
  for (const auto& [point, metrics] : r)
    for (const char* m : {"mmlu", "boolq", "loss"}) EXPECT_EQ(metrics.count(m), 1u) << point << " " << m;
  EXPECT_CONTAINS(sql("s260k", "SELECT group_concat(DISTINCT tp) FROM tasks"), "2");
  EXPECT_EQ(sql("s260k", "SELECT count(*) FROM tasks WHERE state != 'done'"), "0\n");
  cancel("s260k");
}

TEST_F(SlurmCluster, TimeLimitWarningCheckpointsRequeuesAndResumes) {
  const Results want = reference();
  const json jobs = submit("pre");
  const auto [key, job] = healing_task("pre");
  ASSERT_FALSE(job.empty());
  // What --signal=B:USR1@N does before the time limit.
  ASSERT_EQ(sh("scancel --batch --signal=USR1 " + job).status, 0);
  ASSERT_TRUE(start_requeued_attempt(job));
  ASSERT_TRUE(wait_finished(jobs, 300)) << sh("squeue").text << sh("tail -n 20 " + file("pre/logs/*")).text;
  // The requeued attempt starts (the experiment may already be finished by then: the other group takes the
  // released task at once).
  const std::string log_file = file("pre/logs/workers-tp2-" + job + ".log");
  EXPECT_TRUE(wait_until([&] { return read_or_empty(log_file).find("attempt 2") != std::string::npos; }, 60));
  const std::string log = read_or_empty(log_file);
  EXPECT_CONTAINS(log, "USR1: time limit near: checkpointing");
  EXPECT_CONTAINS(log, "lease given back");
  EXPECT_CONTAINS(log, "workers exited with status 3");
  EXPECT_CONTAINS(log, "requeueing " + job);
  EXPECT_CONTAINS(log, "attempt 2");
  // The next lease of the task resumed from the checkpoint, and the healed numbers are the uninterrupted run's.
  EXPECT_CONTAINS(outcomes("pre", key), "released,done");
  const std::string logs = all_logs("pre");
  EXPECT_CONTAINS(logs, "resumed");
  EXPECT_EQ(results("pre"), want);
  cancel("pre");
}

TEST_F(SlurmCluster, ScancelledWorkerJobsTaskFinishesOnTheOtherGroup) {
  const Results want = reference();
  const json jobs = submit("kill");
  const auto [key, job] = healing_task("kill");
  ASSERT_FALSE(job.empty());
  ASSERT_EQ(sh("scancel " + job).status, 0);
  ASSERT_TRUE(wait_finished(jobs, 300));
  // The cancelled job is gone for good (no self-requeue on TERM); the other array task did the rest.
  EXPECT_CONTAINS(sh("scontrol show job " + job).text, "JobState=CANCELLED");
  const std::string other = job.substr(0, job.find('_')) + (job.back() == '0' ? "_1" : "_0");
  const std::string workers = sql("kill", "SELECT w.name FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN workers w "
                                          "ON w.id = a.worker_id WHERE t.key = '" + key + "' ORDER BY a.id");
  EXPECT_CONTAINS(workers, "slurm " + job);
  EXPECT_CONTAINS(workers.substr(workers.find('\n') + 1), "slurm " + other);
  // No missing and no duplicate rows (results() fails on a duplicate), the uninterrupted run's values.
  EXPECT_EQ(results("kill"), want);
  cancel("kill");
}

// Preemption (local_cluster.sh: PreemptMode=REQUEUE, GraceTime 60 s on the default partition): an urgent job
// that needs the whole node preempts the worker groups mid-healing. TERM, checkpoint, lease back, exit 3; each
// array task then requeues itself (Slurm does not requeue a preempted job that exits within its grace time),
// and once the urgent job is done the next attempts resume the task, to the uninterrupted run's numbers. The
// coordinator runs on this host here (--coordinator-on login), out of the urgent job's way.
TEST_F(SlurmCluster, PreemptedWorkerGroupsRequeueThemselvesAndResume) {
  const Results want = reference();
  const json jobs = submit("preempt", "--coordinator-on login");
  const auto [key, job] = healing_task("preempt");
  ASSERT_FALSE(job.empty());
  const std::string array = jobs.at("workers").at("2");
  std::vector<std::string> running;
  for (const std::string& t : {array + "_0", array + "_1"})
    if (sh("scontrol show job " + t).text.find("JobState=RUNNING") != std::string::npos) running.push_back(t);
  ASSERT_NE(std::find(running.begin(), running.end(), job), running.end());
  const Output urgent = sh("sbatch --parsable --partition=urgent --ntasks=8 --output=/dev/null --wrap 'sleep 3'");
  ASSERT_EQ(urgent.status, 0) << urgent.text;
  for (const std::string& t : running) {
    ASSERT_TRUE(start_requeued_attempt(t));
    EXPECT_CONTAINS(sh("scontrol show job " + t).text, "PreemptTime=") << t;
  }
  ASSERT_TRUE(wait_finished(jobs, 300)) << sh("squeue").text << sh("tail -n 20 " + file("preempt/logs/*")).text;
  for (const std::string& t : running) {
    const std::string log = read_or_empty(file("preempt/logs/workers-tp2-" + t + ".log"));
    EXPECT_CONTAINS(log, "lease given back");  // (preemption signals the ranks, not this shell)
    EXPECT_CONTAINS(log, "workers exited with status 3");
    EXPECT_CONTAINS(log, "preempted");
    EXPECT_CONTAINS(log, "requeueing " + t);
  }
  EXPECT_CONTAINS(outcomes("preempt", key), "released,done");
  const std::string logs = all_logs("preempt");
  EXPECT_CONTAINS(logs, "resumed");
  EXPECT_EQ(results("preempt"), want);
  cancel("preempt");
}

// The coordinator job requeued mid-run: its time-limit warning (USR1, as --signal=B:USR1@N sends it) makes
// it stop, withdraw its address and requeue itself (Slurm requeues it the same way at the end of a
// preemption's grace time). The workers, once their calls have failed for their retry window (shortened
// here from 30 s to 5 s with LAYERPRUNE_COORDINATOR_RETRY_SECONDS, which sbatch passes on), exit 4 and their
// batch shells wait for the next attempt's address; the coordinator comes back from its database
// on another port, the workers lease again, and the run ends with the uninterrupted run's numbers, no row
// missing or repeated.
TEST_F(SlurmCluster, RequeuedCoordinatorIsFoundAgainByTheWaitingWorkers) {
  const Results want = reference();
  setenv("LAYERPRUNE_COORDINATOR_RETRY_SECONDS", "5", 1);
  const json jobs = submit("coord");
  unsetenv("LAYERPRUNE_COORDINATOR_RETRY_SECONDS");
  healing_task("coord");
  const std::string coordinator = jobs.at("coordinator_job");
  const std::string before = read_or_empty(file("coord/coordinator.address"));
  ASSERT_EQ(sh("scancel --batch --signal=USR1 " + coordinator).status, 0);
  EXPECT_TRUE(wait_until([&] { return !fs::exists(file("coord/coordinator.address")); }, 30)) << "address withdrawn";
  // Held (Slurm's ~2 minutes) until a worker group has given up on the old address and waits.
  auto waiting = [&] { return all_logs("coord").find("the coordinator is unreachable: waiting") != std::string::npos; };
  ASSERT_TRUE(wait_until(waiting, 150)) << sh("tail -n 5 " + file("coord/logs/*")).text;
  ASSERT_TRUE(start_requeued_attempt(coordinator, false));
  ASSERT_TRUE(wait_finished(jobs, 300)) << sh("squeue").text << sh("tail -n 20 " + file("coord/logs/*")).text;
  const std::string log = read_or_empty(file("coord/logs/coordinator-" + coordinator + ".log"));
  EXPECT_CONTAINS(log, "USR1: time limit near: stopping, to requeue");
  EXPECT_CONTAINS(log, "requeueing " + coordinator);
  EXPECT_CONTAINS(log, "attempt 2");
  const std::string logs = all_logs("coord");
  EXPECT_CONTAINS(logs, "the coordinator is back at ");
  EXPECT_EQ(logs.find("the coordinator is back at " + before), std::string::npos) << "a new address";
  EXPECT_EQ(results("coord"), want);
  cancel("coord");
}

// A worker group that dies without warning (every rank SIGKILLed at once, as a node failure or the OOM killer
// would): nothing is checkpointed or released, the array task ends FAILED and stays so, and the coordinator
// re-leases the task once its lease expires (lease_seconds: 5), from its last checkpoint, to the other group.
TEST_F(SlurmCluster, KilledWorkerGroupLosesOnlyItsLease) {
  const Results want = reference();
  const json jobs = submit("sigkill");
  const auto [key, job] = healing_task("sigkill");
  ASSERT_FALSE(job.empty());
  std::smatch m;
  const std::string show = sh("scontrol show job " + job).text;
  ASSERT_TRUE(std::regex_search(show, m, std::regex("JobId=([0-9]+)"))) << show;
  const std::string job_id = m[1];
  // The ranks: layerprune-worker processes of step 0 of that job (found by the environment srun gave them).
  const std::vector<pid_t> ranks =
      testing::pids_matching("layerprune-worker", {"SLURM_JOB_ID=" + job_id, "SLURM_STEP_ID=0"});
  ASSERT_EQ(ranks.size(), 2u) << "the TP-2 group of job " << job_id;
  for (pid_t r : ranks) kill(r, SIGKILL);
  ASSERT_TRUE(wait_finished(jobs, 300));
  EXPECT_TRUE(wait_until([&] { return sh("scontrol show job " + job).text.find("JobState=FAILED") != std::string::npos; },
                         60)) << sh("scontrol show job " + job).text;
  EXPECT_CONTAINS(sh("scontrol show job " + job).text, "Restarts=0");
  // Its attempt went stale (no report, no release); the next one, on the other group, finished it.
  EXPECT_EQ(outcomes("sigkill", key), "stale,done\n");
  const std::string logs = all_logs("sigkill");
  EXPECT_CONTAINS(logs, "resumed");
  EXPECT_EQ(results("sigkill"), want);
  cancel("sigkill");
}

// `layerprune cancel ID --state DIR` of a Slurm submission: the experiment's tasks are cancelled in the
// database and every job submit submitted leaves the queue (the worker arrays, then the coordinator job).
TEST_F(SlurmCluster, CancelEndsTheExperimentAndItsJobs) {
  const json jobs = submit("cancel");
  healing_task("cancel");
  const std::string array = jobs.at("workers").at("2");
  const std::string coordinator = jobs.at("coordinator_job");
  const Output o = sh(layerprune() + " cancel 1 --state " + file("cancel"));
  EXPECT_EQ(o.status, 0) << o.text;
  EXPECT_CONTAINS(o.text, "experiment #1: ");
  EXPECT_CONTAINS(o.text, "cancelled worker array " + array + " (tp 2)");
  // The coordinator job may have stopped by itself by then (the cancelled experiment is finished for it).
  EXPECT_TRUE(o.text.find("cancelled coordinator job " + coordinator) != std::string::npos ||
              o.text.find("coordinator job " + coordinator + " had already ended") != std::string::npos) << o.text;
  EXPECT_TRUE(wait_until([&] { return sh("squeue --noheader --jobs=" + array + "," + coordinator).text.empty(); }, 60))
      << sh("squeue").text;
  EXPECT_EQ(sql("cancel", "SELECT cancelled_at IS NOT NULL FROM experiments WHERE id = 1"), "1\n");
  // Nothing is left queued or leased: what had not finished is cancelled (a task whose worker was stopping
  // may have ended as done first).
  EXPECT_EQ(sql("cancel", "SELECT count(*) FROM tasks WHERE state IN ('blocked', 'queued', 'leased')"), "0\n");
  EXPECT_NE(sql("cancel", "SELECT count(*) FROM tasks WHERE state = 'cancelled'"), "0\n");
  // Nothing submitted from a directory: a clear error, nothing cancelled.
  const Output none = sh(layerprune() + " slurm cancel " + file("cancel.yaml") + " --state " + file("nothing"));
  EXPECT_EQ(none.status, 2) << none.text;
  EXPECT_CONTAINS(none.text, "nothing submitted from " + file("nothing"));
}

}  // namespace
}  // namespace layerprune
