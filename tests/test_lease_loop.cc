// The worker's lease loop (worker/lease_loop.h) against the real coordinator, with a stand-in group that
// "runs" each task by returning the no-op worker's deterministic result (tests/coordinator_fixtures.h).
// Torch-free, so the loop, its heartbeat thread and the gRPC client also run under ThreadSanitizer
// (deploy/sanitize.sh thread).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include "common/error.h"
#include "coordinator/sqlite.h"
#include "tests/coordinator_fixtures.h"
#include "tests/coordinator_process.h"
#include "worker/lease_loop.h"

namespace layerprune {
namespace {

using namespace testing::process;
using nlohmann::json;

struct Broken : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One rank, no model. `on_run` may replace a task's result (or throw); by default it is noop_result.
class FakeGroup : public LeaseGroup {
 public:
  using OnRun = std::function<json(const Lease&, const std::atomic<bool>*, FakeGroup&)>;
  explicit FakeGroup(OnRun on_run = {}) : on_run_(std::move(on_run)) {}

  bool leader() const override { return true; }
  int tp() const override { return 1; }
  std::string label() const override { return "fake"; }
  void log(const std::string& message) const override { std::fprintf(stderr, "fake group: %s\n", message.c_str()); }
  std::string loaded_model() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return loaded_;
  }
  void broadcast(std::string&) override {}
  bool stop_requested() override { return stop; }
  json run(const std::string& kind, const json& payload, const json& inputs, const std::string& checkpoint_key,
           const std::atomic<bool>* abandon) override {
    // The lease as the loop saw it, rebuilt from what it passes (the key is the checkpoint key's last part).
    Lease l;
    l.kind = kind;
    l.payload = payload;
    l.dependencies = inputs;
    l.model = payload.at("model").at("name");
    l.task_key = checkpoint_key.substr(checkpoint_key.find('/') + 1);
    l.points = payload.value("points", json::array());
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++runs_[l.task_key];
      loaded_ = l.model;
    }
    return on_run_ ? on_run_(l, abandon, *this) : testing::noop_result(l);
  }
  bool broken(const std::exception& e) const override { return dynamic_cast<const Broken*>(&e) != nullptr; }
  std::string latest_checkpoint(const std::string& checkpoint_key) const override {
    std::lock_guard<std::mutex> lock(mu_);  // asked from the heartbeat thread while run() writes it
    auto it = checkpoints_.find(checkpoint_key);
    return it == checkpoints_.end() ? "" : it->second;
  }
  void write_checkpoint(const std::string& task_key, const std::string& path) {
    std::lock_guard<std::mutex> lock(mu_);
    checkpoints_["exp/" + task_key] = path;
  }
  std::map<std::string, int> runs() const {
    std::lock_guard<std::mutex> lock(mu_);
    return runs_;
  }

  std::atomic<bool> stop{false};

 private:
  OnRun on_run_;
  mutable std::mutex mu_;
  std::string loaded_;
  std::map<std::string, int> runs_;
  std::map<std::string, std::string> checkpoints_;
};

LeaseLoopOptions options_for(const std::string& address) {
  LeaseLoopOptions o;
  o.coordinator = address;
  o.retry_for = 5s;
  return o;
}

class LeaseLoop : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(coord.start(), "") << coord.log();
    client = std::make_unique<CoordinatorClient>(coord.address(), quick());
    plan = testing::small_plan("exp", {"m1"});
    id = client->submit(plan).experiment_id;
  }
  // One value of a column of the database (after the coordinator stopped).
  std::string one(const std::string& sql) {
    sqlite::Database d(coord.db());
    auto st = d.prepare(sql);
    return st.step() ? st.text(0) : "";
  }
  ::layerprune::testing::TempDir dir;
  Coordinator coord{dir};
  std::unique_ptr<CoordinatorClient> client;
  Submission plan;
  int64_t id = 0;
};

TEST_F(LeaseLoop, RunsEveryTaskOnceReportsItAndExitsWhenDrained) {
  FakeGroup g;
  EXPECT_EQ(run_lease_loop(g, options_for(coord.address())), 0);
  std::map<std::string, int> expected;
  for (const auto& t : plan.tasks) expected[t.key] = 1;
  EXPECT_EQ(g.runs(), expected);
  const ExperimentStatus st = client->watch_status(id, false);
  EXPECT_EQ(st.state, "done");
  EXPECT_EQ(st.points_done, int64_t(plan.points.size()));
  EXPECT_EQ(client->query_results(id).size(), 2 * plan.points.size());  // accuracy and loss per point
  EXPECT_EQ(coord.stop(), 0);
}

TEST_F(LeaseLoop, HeartbeatsCarryTheCheckpointAndACancelStopsTheRunningTask) {
  std::mutex mu;
  std::condition_variable cv;
  bool started = false;
  std::string key;
  std::atomic<bool> saw_abandon{false};
  FakeGroup g([&](const Lease& l, const std::atomic<bool>* abandon, FakeGroup& self) -> json {
    self.write_checkpoint(l.task_key, "ckpt/" + l.task_key + "/step-000010.safetensors");
    {
      std::lock_guard<std::mutex> lock(mu);
      started = true;
      key = l.task_key;
    }
    cv.notify_all();
    // "Trains" until the heartbeat thread says the lease is gone (bounded: the test fails, it never hangs).
    const auto until = Clock::now() + 20s;
    while (!*abandon && Clock::now() < until) std::this_thread::sleep_for(5ms);
    saw_abandon = abandon->load();
    return {{"stopped", true}, {"checkpoint", "ckpt/" + l.task_key + "/step-000010.safetensors"}};
  });
  int status = -1;
  std::thread loop([&] { status = run_lease_loop(g, options_for(coord.address())); });
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 20s, [&] { return started; }));
  }
  std::this_thread::sleep_for(1500ms);  // a few heartbeats (the interval is a third of the 1 s lease)
  const auto t0 = Clock::now();
  const CancelOutcome co = client->cancel(id);
  EXPECT_EQ(co.leased, 1);
  loop.join();
  EXPECT_TRUE(saw_abandon);
  EXPECT_LT(Clock::now() - t0, 5s) << "the task stopped at a heartbeat, not after its 20 s";
  EXPECT_EQ(status, 0);  // nothing left: every task is cancelled
  EXPECT_EQ(client->watch_status(id, false).state, "cancelled");
  EXPECT_EQ(coord.stop(), 0);
  EXPECT_EQ(one("SELECT checkpoint FROM attempts WHERE number = 1 AND checkpoint IS NOT NULL"),
            "ckpt/" + key + "/step-000010.safetensors")
      << "the heartbeats carried the task's newest checkpoint";
}

TEST_F(LeaseLoop, AStopRequestGivesTheLeaseBackAndTheNextLoopFinishesTheRun) {
  FakeGroup first([](const Lease& l, const std::atomic<bool>*, FakeGroup& self) -> json {
    self.write_checkpoint(l.task_key, "ckpt/" + l.task_key);
    self.stop = true;  // as SIGTERM does: the task checkpoints and returns
    return {{"stopped", true}, {"checkpoint", "ckpt/" + l.task_key}};
  });
  EXPECT_EQ(run_lease_loop(first, options_for(coord.address())), 3);
  ASSERT_EQ(first.runs().size(), 1u);
  const std::string key = first.runs().begin()->first;
  FakeGroup second;
  EXPECT_EQ(run_lease_loop(second, options_for(coord.address())), 0);
  EXPECT_EQ(second.runs().size(), plan.tasks.size());
  const ExperimentStatus st = client->watch_status(id, false, {}, true);
  EXPECT_EQ(st.state, "done");
  for (const auto& t : st.tasks) EXPECT_EQ(t.failures, 0) << t.key << ": a release is not a failed attempt";
  EXPECT_EQ(coord.stop(), 0);
  EXPECT_EQ(one("SELECT checkpoint FROM attempts WHERE number = 1 AND checkpoint IS NOT NULL"), "ckpt/" + key)
      << "the release carried the checkpoint";
}

TEST_F(LeaseLoop, BadInputFailsItsTaskOnceAndTheLoopGoesOn) {
  FakeGroup g([](const Lease& l, const std::atomic<bool>*, FakeGroup&) -> json {
    if (l.kind == "evaluate") throw InputError("m1: no such model file");
    return testing::noop_result(l);
  });
  EXPECT_EQ(run_lease_loop(g, options_for(coord.address())), 0);
  EXPECT_EQ(g.runs().at("evaluate/m1/seed=0"), 1) << "bad input is not retried";
  const ExperimentStatus st = client->watch_status(id, false, {}, true);
  EXPECT_EQ(st.state, "failed");
  bool found = false;
  for (const auto& t : st.tasks)
    if (t.key == "evaluate/m1/seed=0") {
      found = true;
      EXPECT_EQ(t.state, "failed");
      EXPECT_CONTAINS(t.error, "no such model file");
    } else {
      EXPECT_EQ(t.state, "done") << t.key;
    }
  EXPECT_TRUE(found);
  EXPECT_EQ(coord.stop(), 0);
}

TEST_F(LeaseLoop, ABrokenGroupEndsTheLoopAndItsLeaseExpiresToAnotherWorker) {
  FakeGroup broken([](const Lease&, const std::atomic<bool>*, FakeGroup&) -> json { throw Broken("rank 1 died"); });
  EXPECT_THROW(run_lease_loop(broken, options_for(coord.address())), Broken);
  FakeGroup next;  // the broken group's lease expires (1 s) and comes back
  EXPECT_EQ(run_lease_loop(next, options_for(coord.address())), 0);
  EXPECT_EQ(next.runs().size(), plan.tasks.size());
  EXPECT_EQ(client->watch_status(id, false).state, "done");
  EXPECT_EQ(coord.stop(), 0);
}

TEST(LeaseLoopAlone, AnUnreachableCoordinatorEndsWithStatusFourInBoundedTime) {
  FakeGroup g;
  LeaseLoopOptions o = options_for("127.0.0.1:" + std::to_string(free_port()));
  o.retry_for = 1s;
  const auto t0 = Clock::now();
  EXPECT_EQ(run_lease_loop(g, o), kExitCoordinatorUnavailable);
  EXPECT_LT(Clock::now() - t0, 15s);
  EXPECT_TRUE(g.runs().empty());
}

}  // namespace
}  // namespace layerprune
