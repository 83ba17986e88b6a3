// The coordinator as it runs: the real layerprune-coordinator and noop_worker programs as processes,
// real gRPC on loopback, the real SQLite file. Workers and the coordinator are killed (-9), paused
// (SIGSTOP/SIGCONT) and restarted; every run must end with each grid point's rows exactly once and equal
// to what an uninterrupted run stores.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "common/text_file.h"
#include "proto/client.h"
#include "coordinator/sqlite.h"
#include "tests/coordinator_fixtures.h"
#include "tests/coordinator_process.h"
#include "tests/test_support.h"

namespace layerprune {
namespace {

using namespace testing::process;  // Clock, the chrono literals, Process, Coordinator, ...

const std::string kWorker = std::string(LAYERPRUNE_BINARY_DIR) + "/tests/noop_worker";

std::unique_ptr<Process> start_worker(const testing::TempDir& dir, const std::string& address, const std::string& name,
                                      std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {kWorker, "--coordinator", address, "--name", name, "--log", dir.file(name + ".events"),
                                   "--wait-ms", "300"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return std::make_unique<Process>(argv, dir.file(name + ".log"));
}

// What the no-op workers must have stored for a plan: two metrics per grid point, computed here from the
// plan alone (tests/coordinator_fixtures.h), sorted as QueryResults sorts them.
std::vector<ResultRow> expected_results(const Submission& plan) {
  std::vector<ResultRow> rows;
  for (const GridPoint& p : plan.points)
    for (const char* metric : {"accuracy", "loss"}) {
      const double v = testing::fake_value(p.key + "/" + metric) + (std::string(metric) == "loss" ? 1.0 : 0.0);
      rows.push_back(ResultRow{p.key, p.model, p.n, p.layers, p.strategy, p.healing, p.seed, metric, v});
    }
  return rows;
}

// Everything a run stored, in a form two runs can be compared by (no ids, times, workers or tokens).
struct Stored {
  std::vector<ResultRow> results;
  nlohmann::json items, distances, provenance;
};
Stored stored(CoordinatorClient& c, int64_t id) {
  return Stored{c.query_results(id), c.query(id, "items"), c.query(id, "distances"), c.query(id, "provenance")};
}

// Row counts straight from the database file (after the coordinator stopped): each point's rows exactly once.
void expect_rows_exactly_once(const std::string& db, const Submission& plan) {
  sqlite::Database d(db);
  auto one = [&](const std::string& sql) {
    auto st = d.prepare(sql);
    st.step();
    return st.int64(0);
  };
  const int64_t points = int64_t(plan.points.size());
  int64_t distance_tasks = 0;
  for (const auto& t : plan.tasks) distance_tasks += t.kind == "distances";
  EXPECT_EQ(one("SELECT COUNT(*) FROM results"), 2 * points);
  EXPECT_EQ(one("SELECT COUNT(DISTINCT point_id || '/' || metric) FROM results"), 2 * points);
  EXPECT_EQ(one("SELECT COUNT(*) FROM eval_items"), 3 * points);
  EXPECT_EQ(one("SELECT COUNT(*) FROM distance_tables"), distance_tasks);
  EXPECT_EQ(one("SELECT COUNT(*) FROM provenance"), int64_t(plan.tasks.size()));
  EXPECT_EQ(one("SELECT COUNT(*) FROM tasks WHERE state != 'done'"), 0);
  EXPECT_EQ(one("SELECT COUNT(*) FROM attempts WHERE outcome = 'done'"), int64_t(plan.tasks.size()))
      << "one accepted report per task";
  EXPECT_EQ(one("SELECT COUNT(*) FROM attempts WHERE outcome = 'running'"), 0);
}

TEST(Coordinator, SubmitLeaseReportAndQueryOverGrpc) {
  testing::TempDir dir;
  Coordinator coord(dir);
  ASSERT_NE(coord.start(), "") << coord.log();
  CoordinatorClient c(coord.address(), quick());
  const Submission plan = testing::small_plan("exp");
  SubmitOutcome s = c.submit(plan);
  EXPECT_FALSE(s.existed);
  EXPECT_EQ(s.points, int64_t(plan.points.size()));
  EXPECT_TRUE(c.submit(plan).existed);

  const std::string w = c.register_worker({"in-test", "localhost", "test", 1});
  EXPECT_EQ(c.lease_ms(), 1000);
  int n = 0;
  bool drained = false;
  while (auto l = c.lease(w, "", 200ms, &drained)) {
    EXPECT_EQ(l->lease_ms, 1000);
    if (l->kind == "evaluate") {
      EXPECT_TRUE(l->dependencies.contains("distances/" + l->model));
    }
    Verdict v = c.report(w, *l, testing::noop_result(*l));
    ASSERT_TRUE(v.accepted) << v.reason;
    EXPECT_TRUE(c.report(w, *l, testing::noop_result(*l)).duplicate);
    EXPECT_EQ(c.heartbeat(w, *l).action, LeaseAction::kLost);
    ++n;
  }
  EXPECT_TRUE(drained);
  EXPECT_EQ(n, int(plan.tasks.size()));
  std::vector<ExperimentStatus> updates;
  ExperimentStatus st = c.watch_status(s.experiment_id, true, [&](const ExperimentStatus& u) { updates.push_back(u); }, true);
  EXPECT_TRUE(st.finished);
  EXPECT_EQ(st.state, "done");
  EXPECT_EQ(st.points_done, int64_t(plan.points.size()));
  ASSERT_EQ(st.tasks.size(), plan.tasks.size());
  EXPECT_EQ(st.tasks[0].worker, w);
  EXPECT_EQ(updates.size(), 1u);
  EXPECT_EQ(c.query_results(s.experiment_id), expected_results(plan));
  EXPECT_EQ(c.query(s.experiment_id, "items", "", plan.points[0].key).size(), 3u);
  EXPECT_EQ(c.query(s.experiment_id, "distances").size(), 2u);
  auto list = c.list();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].name, "exp");

  // Errors come back with their gRPC code and a message naming the problem.
  auto code_of = [](auto f) { return coordinator_error(f); };
  auto [code, msg] = code_of([&] { c.submit(testing::small_plan("exp", {"m1"})); });
  EXPECT_EQ(code, 6) << msg;  // ALREADY_EXISTS
  EXPECT_CONTAINS(msg, "different configuration");
  Submission bad = testing::small_plan("bad");
  bad.tasks[1].depends_on = {"nothing"};
  std::tie(code, msg) = code_of([&] { c.submit(bad); });
  EXPECT_EQ(code, 3) << msg;  // INVALID_ARGUMENT
  EXPECT_CONTAINS(msg, "depends on \"nothing\"");
  std::tie(code, msg) = code_of([&] { c.watch_status(999, false); });
  EXPECT_EQ(code, 5) << msg;  // NOT_FOUND
  std::tie(code, msg) = code_of([&] { c.query(s.experiment_id, "everything"); });
  EXPECT_EQ(code, 3) << msg;
  std::tie(code, msg) = code_of([&] { c.lease("w1-unknown", ""); });
  EXPECT_EQ(code, 5) << msg;
  EXPECT_CONTAINS(msg, "register first");
  EXPECT_EQ(coord.stop(), 0);
}

// The start of the tests below that run workers: a coordinator on a fresh database, a client, and one
// experiment submitted to it.
class SubmittedExperiment : public ::testing::Test {
 protected:
  void submit(Submission p) {
    ASSERT_NE(coord.start(), "") << coord.log();
    client = std::make_unique<CoordinatorClient>(coord.address(), quick());
    plan = std::move(p);
    id = client->submit(plan).experiment_id;
  }
  testing::TempDir dir;
  Coordinator coord{dir};
  std::unique_ptr<CoordinatorClient> client;
  Submission plan;
  int64_t id = 0;
};

TEST_F(SubmittedExperiment, WorkersKilledMidTaskLoseNothing) {
  ASSERT_NO_FATAL_FAILURE(submit(testing::small_plan("exp", {"m1", "m2", "m3"}, 2)));
  CoordinatorClient& c = *client;
  const std::vector<std::string> slow = {"--sleep-ms", "300", "--exit-when-drained"};
  auto a = start_worker(dir, coord.address(), "a", slow);
  auto b = start_worker(dir, coord.address(), "b", slow);
  // Kill each of them in the middle of a task.
  ASSERT_TRUE(wait_for_line(dir.file("a.events"), "leased")) << slurp(dir.file("a.log"));
  std::this_thread::sleep_for(100ms);
  a->signal(SIGKILL);
  a->wait(5s);
  ASSERT_TRUE(wait_for_line(dir.file("b.events"), "reported"));
  ASSERT_TRUE(wait_for_line(dir.file("b.events"), "leased key", 5s));
  std::this_thread::sleep_for(100ms);
  b->signal(SIGKILL);
  b->wait(5s);
  // A user follows the status stream meanwhile: updates as tasks finish, ending at "done".
  std::vector<ExperimentStatus> updates;
  auto followed = std::async(std::launch::async, [&] {
    CoordinatorClient watcher(coord.address(), quick());
    return watcher.watch_status(id, true, [&](const ExperimentStatus& u) { updates.push_back(u); });
  });
  auto d = start_worker(dir, coord.address(), "d", slow);
  auto e = start_worker(dir, coord.address(), "e", slow);
  ExperimentStatus st = wait_finished(c, id);
  EXPECT_EQ(st.state, "done");
  ASSERT_EQ(followed.wait_for(10s), std::future_status::ready) << "the stream ends when the experiment does";
  EXPECT_EQ(followed.get().state, "done");
  ASSERT_GE(updates.size(), 2u);
  EXPECT_FALSE(updates.front().finished);
  for (size_t i = 1; i < updates.size(); ++i) EXPECT_GE(updates[i].points_done, updates[i - 1].points_done);
  EXPECT_EQ(c.query_results(id), expected_results(plan));
  int stale = 0;
  for (const auto& t : st.tasks) stale += t.failures;
  EXPECT_GE(stale, 2) << "the killed workers' leases expired";
  EXPECT_EQ(d->wait(10s), 0);
  EXPECT_EQ(e->wait(10s), 0);
  EXPECT_EQ(coord.stop(), 0);
  expect_rows_exactly_once(coord.db(), plan);
}

TEST(Coordinator, AKilledCoordinatorRestartsAndTheRunEqualsAnUninterruptedOne) {
  const Submission plan = testing::small_plan("exp", {"m1", "m2", "m3"}, 2);
  const std::vector<std::string> work = {"--sleep-ms", "200", "--exit-when-drained", "--retry-seconds", "30"};
  Stored reference;
  {
    testing::TempDir dir;
    Coordinator coord(dir);
    ASSERT_NE(coord.start(), "") << coord.log();
    CoordinatorClient c(coord.address(), quick());
    const int64_t id = c.submit(plan).experiment_id;
    auto a = start_worker(dir, coord.address(), "a", work);
    auto b = start_worker(dir, coord.address(), "b", work);
    EXPECT_EQ(wait_finished(c, id).state, "done");
    reference = stored(c, id);
    EXPECT_EQ(coord.stop(), 0);
  }
  EXPECT_EQ(reference.results, expected_results(plan));

  testing::TempDir dir;
  Coordinator coord(dir);
  const std::string address = coord.start();
  ASSERT_NE(address, "") << coord.log();
  int64_t id = 0;
  {
    CoordinatorClient c(address, quick());
    id = c.submit(plan).experiment_id;
  }
  auto a = start_worker(dir, address, "a", work);
  auto b = start_worker(dir, address, "b", work);
  ASSERT_TRUE(wait_for_line(dir.file("a.events"), "reported"));
  ASSERT_TRUE(wait_for_line(dir.file("b.events"), "reported"));
  {
    CoordinatorClient c(address, quick());
    ASSERT_FALSE(c.watch_status(id, false).finished) << "the kill must come mid-run";
  }
  coord.kill9();  // mid-run: both workers hold leases or are about to report
  std::this_thread::sleep_for(500ms);
  ASSERT_EQ(coord.start(address), address) << coord.log();  // same database, same address
  CoordinatorClient c(address, quick());
  ExperimentStatus st = wait_finished(c, id);
  EXPECT_EQ(st.state, "done");
  Stored resumed = stored(c, id);
  EXPECT_EQ(resumed.results, reference.results);
  EXPECT_EQ(resumed.items, reference.items);
  EXPECT_EQ(resumed.distances, reference.distances);
  EXPECT_EQ(resumed.provenance, reference.provenance);
  EXPECT_EQ(a->wait(10s), 0);
  EXPECT_EQ(b->wait(10s), 0);
  EXPECT_EQ(coord.stop(), 0);
  expect_rows_exactly_once(coord.db(), plan);
  // The restarted coordinator found the workers' open leases and renewed them (they were mid-task: each
  // task sleeps 200 ms and the RPCs around it take about 1 ms).
  const std::string log = coord.log();
  const size_t at = log.rfind(" open lease(s) renewed");
  ASSERT_NE(at, std::string::npos) << log;
  EXPECT_GE(std::stoi(log.substr(log.rfind(' ', at - 1) + 1)), 1) << log << slurp(dir.file("a.log")) << slurp(dir.file("b.log"));
}

// A coordinator that comes back elsewhere (a requeued Slurm job: another node or port) is found again through
// its address file, within the client's retry window: calls made while it was away succeed.
TEST(Coordinator, AClientFollowsTheAddressFileToARestartedCoordinator) {
  testing::TempDir dir;
  Coordinator coord(dir);
  const std::string first = coord.start();
  ASSERT_NE(first, "") << coord.log();
  const std::string published = dir.file("published");  // what the Slurm coordinator job publishes
  write_file(published, first + "\n");
  CoordinatorClient c(find_coordinator(published), quick(20s));
  const int64_t id = c.submit(testing::small_plan("exp")).experiment_id;
  coord.kill9();
  std::filesystem::remove(published);  // withdrawn while it is away
  auto during = std::async(std::launch::async, [&] { return c.list(); });
  std::this_thread::sleep_for(1s);
  const std::string second = coord.start();  // the same database, another port
  ASSERT_NE(second, "") << coord.log();
  ASSERT_NE(second, first);
  write_file(published, second + "\n");
  const std::vector<ExperimentStatus> listed = during.get();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].experiment_id, id);
  EXPECT_EQ(c.address(), second);
  // Given as host:port, the address is the address: no file to follow.
  CoordinatorClient fixed(first, quick(1s));
  EXPECT_THROW(fixed.list(), CoordinatorUnavailable);
  EXPECT_EQ(coord.stop(), 0);
}

TEST_F(SubmittedExperiment, APausedWorkersLateReportIsRejected) {
  ASSERT_NO_FATAL_FAILURE(submit(testing::small_plan("exp", {"m1"}, 1)));
  CoordinatorClient& c = *client;
  auto a = start_worker(dir, coord.address(), "a", {"--sleep-ms", "2500", "--max-tasks", "1", "--report-even-if-lost"});
  ASSERT_TRUE(wait_for_line(dir.file("a.events"), "leased key=distances/m1"));
  a->signal(SIGSTOP);
  // Its lease (1 s) runs out; b gets the task again and finishes the experiment.
  auto b = start_worker(dir, coord.address(), "b", {"--exit-when-drained"});
  ExperimentStatus st = wait_finished(c, id);
  EXPECT_EQ(st.state, "done");
  EXPECT_EQ(b->wait(10s), 0);
  EXPECT_EQ(count_lines(dir.file("b.events"), "leased key=distances/m1"), 1);
  a->signal(SIGCONT);
  EXPECT_EQ(a->wait(10s), 0);
  const std::string events = slurp(dir.file("a.events"));
  EXPECT_CONTAINS(events, "heartbeat lost key=distances/m1");
  EXPECT_CONTAINS(events, "rejected key=distances/m1");
  EXPECT_CONTAINS(events, "expired");
  EXPECT_EQ(count_lines(dir.file("a.events"), "reported"), 0);
  EXPECT_EQ(c.query_results(id), expected_results(plan));
  EXPECT_EQ(coord.stop(), 0);
  expect_rows_exactly_once(coord.db(), plan);
  sqlite::Database d(coord.db());
  auto st2 = d.prepare(
      "SELECT a.outcome, w.name FROM attempts a JOIN workers w ON w.id = a.worker_id JOIN tasks t ON t.id = a.task_id "
      "WHERE t.key = 'distances/m1' ORDER BY a.id");
  std::vector<std::pair<std::string, std::string>> attempts;
  while (st2.step()) attempts.emplace_back(st2.text(0), st2.text(1));
  EXPECT_EQ(attempts, (std::vector<std::pair<std::string, std::string>>{{"stale", "a"}, {"done", "b"}}));
}

TEST_F(SubmittedExperiment, CancelStopsLeasedTasksAtTheirNextHeartbeat) {
  ASSERT_NO_FATAL_FAILURE(submit(testing::small_plan("exp", {"m1"}, 1)));
  CoordinatorClient& c = *client;
  auto a = start_worker(dir, coord.address(), "a", {"--sleep-ms", "10000", "--exit-when-drained"});
  ASSERT_TRUE(wait_for_line(dir.file("a.events"), "leased"));
  const auto t0 = Clock::now();
  CancelOutcome co = c.cancel(id);
  EXPECT_EQ(co.leased, 1);
  EXPECT_EQ(co.cancelled, int64_t(plan.tasks.size()) - 1);
  EXPECT_EQ(a->wait(10s), 0);
  EXPECT_LT(Clock::now() - t0, 5s) << "the worker stopped at a heartbeat, not after its 10 s task";
  EXPECT_TRUE(wait_for_line(dir.file("a.events"), "heartbeat cancel"));
  EXPECT_TRUE(wait_for_line(dir.file("a.events"), "released key=distances/m1"));
  ExperimentStatus st = c.watch_status(id, false);
  EXPECT_TRUE(st.finished);
  EXPECT_EQ(st.state, "cancelled");
  EXPECT_EQ(st.task_counts["cancelled"], int64_t(plan.tasks.size()));
  EXPECT_EQ(coord.stop(), 0);
}

TEST_F(SubmittedExperiment, SigtermReleasesTheLeaseWithItsCheckpointForTheNextWorker) {
  ASSERT_NO_FATAL_FAILURE(submit(testing::small_plan("exp", {"m1"}, 1)));
  CoordinatorClient& c = *client;
  auto a = start_worker(dir, coord.address(), "a", {"--sleep-ms", "10000"});
  ASSERT_TRUE(wait_for_line(dir.file("a.events"), "leased key=distances/m1"));
  a->signal(SIGTERM);
  EXPECT_EQ(a->wait(10s), 3);
  EXPECT_TRUE(wait_for_line(dir.file("a.events"), "released key=distances/m1"));
  auto b = start_worker(dir, coord.address(), "b", {"--exit-when-drained"});
  EXPECT_EQ(b->wait(20s), 0);
  EXPECT_TRUE(wait_for_line(dir.file("b.events"), "leased key=distances/m1 token=", 1s));
  EXPECT_CONTAINS(slurp(dir.file("b.events")), "attempt=2 checkpoint=noop-checkpoint/distances/m1");
  ExperimentStatus st = c.watch_status(id, false, {}, true);
  EXPECT_EQ(st.state, "done");
  EXPECT_EQ(st.tasks[0].failures, 0) << "a release is not a failed attempt";
  EXPECT_EQ(coord.stop(), 0);
}

TEST(Coordinator, OffLoopbackNeedsATokenAndEveryCallIsChecked) {
  testing::TempDir dir;
  {
    Coordinator open_coord(dir, {}, "open.db");
    std::optional<int> status;
    EXPECT_EQ(open_coord.start("0.0.0.0:0", &status), "");
    EXPECT_EQ(status, 2);
    EXPECT_CONTAINS(open_coord.log(), "refusing to listen on 0.0.0.0:0 without --token-file");
  }
  write_file(dir.file("token"), "s3cret-token\n");
  write_file(dir.file("wrong"), "guess\n");
  Coordinator coord(dir, {"--token-file", dir.file("token")});
  const std::string address = coord.start("0.0.0.0:0");
  ASSERT_NE(address, "") << coord.log();
  const std::string local = "127.0.0.1:" + address.substr(address.rfind(':') + 1);
  auto code_of = [&](CoordinatorClient& cl, auto f) {
    try {
      f(cl);
    } catch (const CoordinatorError& e) {
      return std::make_pair(e.code, std::string(e.what()));
    }
    return std::make_pair(0, std::string());
  };
  CoordinatorClient none(local, quick());
  CoordinatorClient wrong(find_coordinator(local, dir.file("wrong")), quick());
  CoordinatorClient right(find_coordinator(local, dir.file("token")), quick());
  for (CoordinatorClient* cl : {&none, &wrong}) {
    auto [code, msg] = code_of(*cl, [](CoordinatorClient& x) { x.list(); });
    EXPECT_EQ(code, 16) << msg;  // UNAUTHENTICATED
    EXPECT_CONTAINS(msg, "token");
    std::tie(code, msg) = code_of(*cl, [](CoordinatorClient& x) { x.register_worker({"w", "h", "v", 1}); });
    EXPECT_EQ(code, 16) << msg;
    std::tie(code, msg) = code_of(*cl, [](CoordinatorClient& x) { x.submit(testing::small_plan("exp")); });
    EXPECT_EQ(code, 16) << msg;
  }
  EXPECT_EQ(code_of(right, [](CoordinatorClient& x) { x.submit(testing::small_plan("exp")); }).first, 0);
  EXPECT_EQ(right.list().size(), 1u);
  // A worker with the token file works end to end.
  auto w = start_worker(dir, local, "w", {"--token-file", dir.file("token"), "--exit-when-drained"});
  EXPECT_EQ(w->wait(20s), 0) << slurp(dir.file("w.log"));
  EXPECT_EQ(right.watch_status(1, false).state, "done");
  EXPECT_EQ(coord.stop(), 0);
}

TEST(Coordinator, TlsFromCertificateFiles) {
  testing::TempDir dir;
  const std::string cert = dir.file("cert.pem"), key = dir.file("key.pem");
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext "
                          "subjectAltName=DNS:localhost -keyout " + key + " -out " + cert + " >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "the openssl command is not available to make a certificate";
  Coordinator coord(dir, {"--tls-cert", cert, "--tls-key", key});
  const std::string address = coord.start("localhost:0");
  ASSERT_NE(address, "") << coord.log();
  ClientOptions tls_options;
  tls_options.tls_ca = cert;
  tls_options.rpc_timeout = 5s;
  tls_options.retry_for = 10s;
  CoordinatorClient tls(address, tls_options);
  EXPECT_EQ(tls.list().size(), 0u);
  CoordinatorClient plain(address, quick(1500ms));
  EXPECT_THROW(plain.list(), CoordinatorUnavailable);
  EXPECT_EQ(coord.stop(), 0);
}

TEST(Coordinator, AnUnreachableCoordinatorIsAClearErrorInBoundedTime) {
  testing::TempDir dir;
  const std::string address = "127.0.0.1:" + std::to_string(free_port());
  CoordinatorClient c(address, quick(1500ms));
  const auto t0 = Clock::now();
  try {
    c.list();
    FAIL() << "nothing listens on " << address;
  } catch (const CoordinatorUnavailable& e) {
    EXPECT_CONTAINS(e.what(), "cannot reach the coordinator at " + address);
    EXPECT_CONTAINS(e.what(), "tries over");
  }
  EXPECT_LT(Clock::now() - t0, 5s);
  auto w = start_worker(dir, address, "w", {"--retry-seconds", "1"});
  EXPECT_EQ(w->wait(10s), kExitCoordinatorUnavailable);
  EXPECT_CONTAINS(slurp(dir.file("w.log")), "cannot reach the coordinator at " + address);
  auto missing = start_worker(dir, dir.file("no-such-address-file"), "m");
  EXPECT_EQ(missing->wait(10s), 2);
  EXPECT_CONTAINS(slurp(dir.file("m.log")), "neither host:port nor an existing address file");
}

TEST(Coordinator, OneCoordinatorPerDatabase) {
  testing::TempDir dir;
  Coordinator first(dir);
  ASSERT_NE(first.start(), "") << first.log();
  Coordinator second(dir);
  std::optional<int> status;
  EXPECT_EQ(second.start("127.0.0.1:0", &status), "");
  EXPECT_EQ(status, 2);
  EXPECT_CONTAINS(second.log(), "another coordinator (pid");
  EXPECT_EQ(first.stop(), 0);
}

// ---- Resource faults: each is a clear error, and once it is gone the database opens and the run goes on
// with nothing lost (issue 17 item 5). ----

// Leases and reports every task of the coordinator's experiments (no-op results); the task count.
int drain(CoordinatorClient& c) {
  const std::string w = c.register_worker({"in-test", "localhost", "test", 1});
  int n = 0;
  while (auto l = c.lease(w, "", 200ms)) {
    EXPECT_TRUE(c.report(w, *l, testing::noop_result(*l)).accepted);
    ++n;
  }
  return n;
}

// As root (CI and these machines) permissions are not enforced: the coordinator runs as nobody
// (setpriv) against a directory it cannot write.
TEST(CoordinatorFaults, AReadOnlyDatabaseDirectoryIsAClearErrorAndOpensOnceWritable) {
  if (::access("/usr/bin/setpriv", X_OK) != 0) GTEST_SKIP() << "setpriv (util-linux) is not installed";
  testing::TempDir dir;
  const std::string ro = dir.file("ro");
  std::filesystem::create_directories(ro);
  ::chmod(dir.path().c_str(), 0777);  // its address and log files go here
  ::chmod(ro.c_str(), 0555);
  const std::vector<std::string> as_nobody = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  Coordinator refused(dir, {}, "ro/coordinator.db", as_nobody);
  std::optional<int> status;
  EXPECT_EQ(refused.start("127.0.0.1:0", &status), "");
  EXPECT_EQ(status, 2) << refused.log();
  EXPECT_CONTAINS(refused.log(), "cannot create the lock file next to the database (Permission denied): the "
                                 "database's directory must be writable");
  EXPECT_FALSE(std::filesystem::exists(ro + "/coordinator.db")) << "nothing written";
  ::chmod(ro.c_str(), 0777);  // the fault is gone
  Coordinator fine(dir, {}, "ro/coordinator.db", as_nobody);
  ASSERT_NE(fine.start(), "") << fine.log();
  CoordinatorClient c(fine.address(), quick());
  const Submission plan = testing::small_plan("exp", {"m1"});
  const int64_t id = c.submit(plan).experiment_id;
  EXPECT_EQ(drain(c), int(plan.tasks.size()));
  EXPECT_EQ(c.query_results(id), expected_results(plan));
  EXPECT_EQ(fine.stop(), 0);
}

// A full disk, simulated with a file-size limit (prlimit; SIGXFSZ is ignored, so writes fail with
// EFBIG): the call that cannot be written fails with RESOURCE_EXHAUSTED and the reason, the coordinator
// keeps serving what it has, and after a restart without the limit the same submission goes in and the
// run finishes with every result exactly once.
TEST(CoordinatorFaults, AFullDiskFailsTheCallWithNothingWrittenAndTheRunResumesAfterwards) {
  if (::access("/usr/bin/prlimit", X_OK) != 0) GTEST_SKIP() << "prlimit (util-linux) is not installed";
  testing::TempDir dir;
  const Submission small = testing::small_plan("small", {"m1"});
  std::vector<std::string> models;
  for (int i = 0; i < 400; ++i) models.push_back("model-with-a-long-name-" + std::to_string(i));
  const Submission big = testing::small_plan("big", models, 2);
  int64_t small_id = 0;
  {
    Coordinator limited(dir, {}, "coordinator.db", {"/usr/bin/prlimit", "--fsize=600000", "--"});
    ASSERT_NE(limited.start(), "") << limited.log();
    CoordinatorClient c(limited.address(), quick());
    small_id = c.submit(small).experiment_id;
    auto [code, msg] = coordinator_error([&] { c.submit(big); });
    EXPECT_EQ(code, 8) << msg;  // RESOURCE_EXHAUSTED
    EXPECT_CONTAINS(msg, "writing the database failed (a full disk or a file-size limit); this call's changes were "
                         "rolled back");
    const auto list = c.list();  // still serving, with only what was committed
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0].name, "small");
    EXPECT_EQ(limited.stop(), 0) << limited.log();
  }
  Coordinator unlimited(dir);
  ASSERT_NE(unlimited.start(), "") << unlimited.log();
  CoordinatorClient c(unlimited.address(), quick());
  const int64_t big_id = c.submit(big).experiment_id;
  EXPECT_EQ(drain(c), int(small.tasks.size() + big.tasks.size()));
  EXPECT_EQ(c.query_results(small_id), expected_results(small));
  EXPECT_EQ(c.query_results(big_id), expected_results(big));
  EXPECT_EQ(unlimited.stop(), 0);
}

// A damaged database file: garbage, or a valid file with a page overwritten. The coordinator refuses it
// (exit 2, the reason, nothing written); the backup copy, put back, opens with everything in it.
TEST(CoordinatorFaults, ADamagedDatabaseFileIsRefusedAndARestoredCopyOpens) {
  testing::TempDir dir;
  const Submission plan = testing::small_plan("exp", {"m1", "m2"});
  int64_t id = 0;
  {
    Coordinator first(dir);
    ASSERT_NE(first.start(), "") << first.log();
    CoordinatorClient c(first.address(), quick());
    id = c.submit(plan).experiment_id;
    EXPECT_EQ(drain(c), int(plan.tasks.size()));
    EXPECT_EQ(first.stop(), 0);  // checkpoints the WAL into the file
  }
  const std::string db = dir.file("coordinator.db"), backup = dir.file("backup.db");
  std::filesystem::copy_file(db, backup);
  const auto size = std::filesystem::file_size(db);
  ASSERT_GT(size, 3 * 4096u);
  for (int variant = 0; variant < 2; ++variant) {
    {
      std::fstream f(db, std::ios::in | std::ios::out | std::ios::binary);
      const std::string junk(4096, '\xA5');
      f.seekp(variant == 0 ? 0 : std::streamoff(size - 2 * 4096));  // the header, or a page near the end
      f.write(junk.data(), std::streamsize(junk.size()));
    }
    const std::string damaged = slurp(db);
    Coordinator refused(dir);
    std::optional<int> status;
    EXPECT_EQ(refused.start("127.0.0.1:0", &status), "") << "variant " << variant;
    EXPECT_EQ(status, 2) << refused.log();
    EXPECT_CONTAINS(refused.log(), variant == 0 ? "is not a layerprune database" : "the database file is damaged");
    EXPECT_EQ(slurp(db), damaged) << "nothing was written to the damaged file";
    std::filesystem::copy_file(backup, db, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::remove(db + "-wal");
    std::filesystem::remove(db + "-shm");
  }
  Coordinator restored(dir);
  ASSERT_NE(restored.start(), "") << restored.log();
  CoordinatorClient c(restored.address(), quick());
  EXPECT_EQ(c.query_results(id), expected_results(plan));
  EXPECT_EQ(restored.stop(), 0);
}

// ---- Hostile clients (issue 17 item 6): none crashes the coordinator or changes its state. ----
TEST(CoordinatorHostile, OversizedMessagesManyLongPollsAndGarbageBytesChangeNothing) {
  testing::TempDir dir;
  Coordinator coord(dir, {"--max-message-mb", "1", "--max-wait-seconds", "2"});
  ASSERT_NE(coord.start(), "") << coord.log();
  CoordinatorClient c(coord.address(), quick());
  // A thousand concurrent long polls (leases waiting for work that does not come), half of them from a
  // worker that never registered: all return, none crashes the coordinator.
  const std::string w = c.register_worker({"hostile", "localhost", "test", 1});
  std::atomic<int> leased{0}, empty{0}, refused{0};
  {
    std::vector<std::thread> polls;
    for (int t = 0; t < 1000; ++t)
      polls.emplace_back([&, t] {
        try {
          CoordinatorClient each(coord.address(), quick(2s));
          if (each.lease(t % 2 ? w : w + "-unknown", "", 1500ms))
            ++leased;
          else
            ++empty;
        } catch (const std::exception&) {
          ++refused;  // the unknown worker (NOT_FOUND), or the server's own limits: never a crash
        }
      });
    for (std::thread& p : polls) p.join();
  }
  EXPECT_EQ(leased.load(), 0);
  EXPECT_GE(refused.load(), 500) << "the unregistered worker's half is refused";
  EXPECT_EQ(empty.load() + refused.load(), 1000);
  const Submission plan = testing::small_plan("exp", {"m1"});
  const int64_t id = c.submit(plan).experiment_id;
  // A submission over the 1 MiB limit is refused before it is read; nothing of it is stored.
  std::vector<std::string> models;
  for (int i = 0; i < 2000; ++i) models.push_back("a-model-name-long-enough-to-fill-the-message-" + std::to_string(i));
  auto [code, msg] = coordinator_error([&] { c.submit(testing::small_plan("huge", models, 2)); });
  EXPECT_EQ(code, 8) << msg;  // RESOURCE_EXHAUSTED
  ASSERT_EQ(c.list().size(), 1u);
  // Garbage on the port: random bytes, an HTTP/1.1 request, a truncated HTTP/2 preface, a connection
  // closed at once.
  const std::string port = coord.address().substr(coord.address().rfind(':') + 1);
  for (const std::string& bytes : {std::string(4096, '\x17'), std::string("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
                                   std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\xff\xff\xff\xff", 30),
                                   std::string()}) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(std::stoi(port)));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    if (!bytes.empty()) {
      EXPECT_GT(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), 0);
    }
    char buf[256];
    timeval tv{0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)::recv(fd, buf, sizeof buf, 0);
    close(fd);
  }
  // Still serving, its state what the honest calls made it: the tasks finish with their results.
  EXPECT_EQ(c.list().size(), 1u);
  drain(c);
  EXPECT_TRUE(c.watch_status(id, false).finished);
  EXPECT_EQ(c.query_results(id), expected_results(plan));
  EXPECT_EQ(coord.stop(), 0) << coord.log();
}

}  // namespace
}  // namespace layerprune
