// The coordinator's store on its own (no gRPC): schema and migrations, submission, scheduling, leases
// with an injected clock (expiry, back-off, retries, fencing), exactly-once result rows, cancel, restart.
#include <gtest/gtest.h>

#include "common/text_file.h"
#include "coordinator/store.h"
#include "tests/coordinator_fixtures.h"
#include "tests/test_support.h"

namespace layerprune {
namespace {

using testing::noop_result;
using testing::small_plan;

constexpr int64_t kStart = 1'700'000'000'000;  // the injected clock's start (ms)

struct Fixture {
  testing::TempDir dir;
  int64_t clock = kStart;
  StoreOptions options() {
    StoreOptions o;
    o.lease_ms = 1000;
    o.max_attempts = 3;
    o.backoff_ms = 500;
    o.backoff_cap_ms = 1500;
    o.clock = [this] { return clock; };
    return o;
  }
  std::string path() const { return dir.file("coordinator.db"); }
  Store open() { return Store(path(), options()); }
};

int64_t count(Store& s, const std::string& sql) {
  auto st = s.database().prepare(sql);
  st.step();
  return st.int64(0);
}

std::string worker(Store& s, const std::string& name = "w") { return s.register_worker({name, "host", "test", 1}); }

Verdict report_noop(Store& s, const std::string& w, const Lease& l) {
  return s.report(w, l.task_id, l.token, noop_result(l).dump());
}

std::map<std::string, std::string> task_states(Store& s, int64_t id) {
  std::map<std::string, std::string> m;
  for (const auto& t : s.status(id, true).tasks) m[t.key] = t.state;
  return m;
}

TEST(Store, SchemaMatchesGolden) {
  Fixture f;
  Store s = f.open();
  // Regenerate (coordinator/README.md): layerprune-coordinator --db /tmp/s.db --init-only, then
  // sqlite3 /tmp/s.db "SELECT sql || ';' FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type DESC, name"
  EXPECT_EQ(schema_dump(s.database()), read_file(testing::source_file("tests/golden/schema.sql")))
      << "the schema changed: add a migration and regenerate tests/golden/schema.sql";
  EXPECT_EQ(s.schema_version(), store_schema_version());
  EXPECT_EQ(count(s, "PRAGMA user_version"), store_schema_version());
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM schema_migrations"), store_schema_version());
}

TEST(Store, ReopeningAppliesNothingAndNewerSchemasAreRefused) {
  Fixture f;
  { Store s = f.open(); }
  {
    Store s = f.open();
    EXPECT_EQ(count(s, "SELECT COUNT(*) FROM schema_migrations"), store_schema_version());
    s.database().exec("INSERT INTO schema_migrations VALUES (999, 'from the future', 0)");
  }
  EXPECT_CONTAINS(testing::input_error([&] { f.open(); }), "newer than this coordinator");
}

TEST(Store, RefusesADatabaseThatIsNotOurs) {
  Fixture f;
  { sqlite::Database db(f.path()); db.exec("CREATE TABLE something (x)"); }
  EXPECT_CONTAINS(testing::input_error([&] { f.open(); }), "not a layerprune coordinator database");
}

TEST(Store, SubmitIsIdempotentAndANameHasOneConfiguration) {
  Fixture f;
  Store s = f.open();
  Submission plan = small_plan("exp");
  SubmitOutcome a = s.submit(plan);
  EXPECT_FALSE(a.existed);
  EXPECT_EQ(a.points, int64_t(plan.points.size()));
  SubmitOutcome b = s.submit(plan);
  EXPECT_TRUE(b.existed);
  EXPECT_EQ(b.experiment_id, a.experiment_id);
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM tasks"), int64_t(plan.tasks.size()));
  // The same configuration with other whitespace is the same experiment (canonical JSON).
  Submission spaced = plan;
  spaced.experiment_json = nlohmann::json::parse(plan.experiment_json).dump(2);
  EXPECT_TRUE(s.submit(spaced).existed);
  Submission other = small_plan("exp", {"m1"});
  try {
    s.submit(other);
    FAIL() << "a different configuration under an existing name must be refused";
  } catch (const ExperimentExists& e) {
    EXPECT_CONTAINS(e.what(), "already exists");
    EXPECT_CONTAINS(e.what(), "different configuration");
  }
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM tasks"), int64_t(plan.tasks.size()));
}

TEST(Store, MalformedPlansAreRefusedWithTheReason) {
  Fixture f;
  Store s = f.open();
  auto refused = [&](Submission p) { return testing::input_error([&] { s.submit(p); }); };
  Submission p = small_plan("bad");
  p.tasks[1].depends_on = {"distances/nope"};
  EXPECT_CONTAINS(refused(p), "depends on \"distances/nope\"");
  p = small_plan("bad");
  std::swap(p.tasks[0], p.tasks[1]);  // a dependent before its dependency
  EXPECT_CONTAINS(refused(p), "not an earlier task");
  p = small_plan("bad");
  p.tasks[2].key = p.tasks[1].key;
  EXPECT_CONTAINS(refused(p), "two tasks have the key");
  p = small_plan("bad");
  p.tasks[1].kind = "train";
  EXPECT_CONTAINS(refused(p), "kind \"train\"");
  p = small_plan("bad");
  p.tasks[2].points.push_back(p.tasks[1].points[0]);
  EXPECT_CONTAINS(refused(p), "computed by two tasks");
  p = small_plan("bad");
  p.points.push_back(testing::make_point("m1", 3, 6, "simple", "off"));
  EXPECT_CONTAINS(refused(p), "computed by no task");
  p = small_plan("bad");
  p.tasks[1].points.push_back("m9/n=1/x");
  EXPECT_CONTAINS(refused(p), "unknown grid point \"m9/n=1/x\"");
  p = small_plan("bad");
  p.experiment_json = "{not json";
  EXPECT_CONTAINS(refused(p), "not valid JSON");
  p = small_plan("deep");
  p.experiment_json = std::string(30000, '[') + std::string(30000, ']');
  EXPECT_CONTAINS(refused(p), "the experiment configuration: JSON nested deeper than 100 levels");
  p = small_plan("");
  EXPECT_CONTAINS(refused(p), "no name");
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM experiments"), 0) << "nothing of a refused plan is written";
}

TEST(Store, DistancesRunFirstAndTheirTableTravelsToDependents) {
  Fixture f;
  Store s = f.open();
  const int64_t id = s.submit(small_plan("exp")).experiment_id;
  const std::string a = worker(s, "a"), b = worker(s, "b"), c = worker(s, "c"), d = worker(s, "d");
  // Ready at first: both distances tasks and the simple-strategy heal tasks (no dependency); plan order.
  auto l1 = s.lease(a, "");
  ASSERT_TRUE(l1);
  EXPECT_EQ(l1->task_key, "distances/m1");
  EXPECT_EQ(l1->attempt, 1);
  EXPECT_TRUE(l1->dependencies.empty());
  auto l2 = s.lease(b, "");
  ASSERT_TRUE(l2);
  EXPECT_EQ(l2->task_key, "heal/m1/n=1/simple/qlora/seed=0");
  auto l3 = s.lease(c, "");
  ASSERT_TRUE(l3);
  EXPECT_EQ(l3->task_key, "distances/m2");
  auto l4 = s.lease(d, "");
  ASSERT_TRUE(l4);
  EXPECT_EQ(l4->task_key, "heal/m2/n=1/simple/qlora/seed=0");
  EXPECT_FALSE(s.lease(d, "")) << "evaluate and similarity heal tasks wait for their distances";
  EXPECT_EQ(task_states(s, id)["evaluate/m1/seed=0"], "blocked");

  ASSERT_TRUE(report_noop(s, a, *l1).accepted);
  EXPECT_EQ(task_states(s, id)["evaluate/m1/seed=0"], "queued");
  EXPECT_EQ(task_states(s, id)["evaluate/m2/seed=0"], "blocked");
  auto l5 = s.lease(a, "m1");
  ASSERT_TRUE(l5);
  EXPECT_EQ(l5->task_key, "evaluate/m1/seed=0");
  ASSERT_TRUE(l5->dependencies.contains("distances/m1"));
  EXPECT_EQ(l5->dependencies["distances/m1"]["distances"], noop_result(*l1)["distances"]);
  EXPECT_EQ(l5->points.size(), 5u);
  EXPECT_EQ(l5->payload["model"]["name"], "m1");
  EXPECT_GT(l5->token, l4->token) << "tokens increase with every lease";
}

TEST(Store, LeasePrefersTheWorkersLoadedModelThenExperimentOrder) {
  Fixture f;
  Store s = f.open();
  s.submit(small_plan("first", {"m1"}));
  s.submit(small_plan("second", {"m2", "m3"}));
  const std::string w = worker(s);
  auto l = s.lease(w, "m3");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->task_key, "distances/m3");
  EXPECT_EQ(l->experiment, "second");
  l = s.lease(w, "m3");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->task_key, "heal/m3/n=1/simple/qlora/seed=0");
  l = s.lease(w, "m3");  // nothing of m3 is ready: the oldest experiment's first ready task
  ASSERT_TRUE(l);
  EXPECT_EQ(l->experiment, "first");
  EXPECT_EQ(l->task_key, "distances/m1");
  l = s.lease(w, "unknown-model");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->task_key, "heal/m1/n=1/simple/qlora/seed=0");
}

TEST(Store, AWorkerGroupLeasesOnlyTasksOfItsTensorParallelSize) {
  Fixture f;
  Store s = f.open();
  Submission plan = small_plan("tp", {"small", "big"});
  for (TaskSpec& t : plan.tasks)
    if (t.model == "big") t.payload["model"]["tp"] = 2;  // the model's tp, as plan_experiment writes it
  s.submit(plan);
  const std::string w = worker(s);
  for (int i = 0; i < 3; ++i) {  // the big model's distances task, then the tasks it unblocks once done
    auto l = s.lease(w, "", 2);
    ASSERT_TRUE(l) << i;
    EXPECT_EQ(l->model, "big");
    ASSERT_TRUE(report_noop(s, w, *l).accepted);
  }
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM tasks WHERE tp = 2"), 4);
  auto one = s.lease(w, "big", 1);  // a tp-1 group gets the small model's tasks even when it holds "big"
  ASSERT_TRUE(one);
  EXPECT_EQ(one->model, "small");
  auto any = s.lease(w, "", 0);  // 0: any size (tools, the no-op worker)
  ASSERT_TRUE(any);
}

TEST(Store, AnExpiredLeaseIsStaleItsTaskRetriedAfterBackoffAndItsTokenFenced) {
  Fixture f;
  Store s = f.open();
  const int64_t id = s.submit(small_plan("exp", {"m1"})).experiment_id;
  const std::string a = worker(s, "a"), b = worker(s, "b");
  auto first = s.lease(a, "");
  ASSERT_TRUE(first);
  f.clock += 600;
  EXPECT_EQ(s.heartbeat(a, first->task_id, first->token, "").action, LeaseAction::kContinue);
  f.clock += 900;  // 1500 ms after the lease, 900 after the heartbeat: still valid
  EXPECT_EQ(s.expire_leases(), 0);
  f.clock += 101;
  EXPECT_EQ(s.expire_leases(), 1);
  auto st = s.status(id, true);
  EXPECT_EQ(st.tasks[0].state, "queued");
  EXPECT_EQ(st.tasks[0].failures, 1);
  EXPECT_CONTAINS(st.tasks[0].error, "lease expired");
  // Back-off: 500 ms after the first failure. Meanwhile b gets the next ready task, not this one.
  auto other = s.lease(b, "");
  ASSERT_TRUE(other);
  EXPECT_NE(other->task_id, first->task_id);
  f.clock += 500;
  auto second = s.lease(b, "");
  ASSERT_TRUE(second);
  EXPECT_EQ(second->task_id, first->task_id);
  EXPECT_EQ(second->attempt, 2);
  EXPECT_GT(second->token, first->token);

  // The first worker wakes up and reports: rejected, nothing written; its heartbeat says the lease is lost.
  Verdict late = report_noop(s, a, *first);
  EXPECT_FALSE(late.accepted);
  EXPECT_CONTAINS(late.reason, "expired");
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM distance_tables"), 0);
  EXPECT_EQ(s.heartbeat(a, first->task_id, first->token, "").action, LeaseAction::kLost);
  EXPECT_FALSE(s.fail(a, first->task_id, first->token, "x", true).accepted);
  ASSERT_TRUE(report_noop(s, b, *second).accepted);
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM distance_tables"), 1);
  EXPECT_FALSE(report_noop(s, a, *first).accepted) << "still rejected after the task is done";
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM attempts WHERE outcome = 'stale'"), 1);
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM attempts WHERE outcome = 'done'"), 1);
}

TEST(Store, AReportAfterTheDeadlineIsRejectedEvenBeforeTheReaperRuns) {
  Fixture f;
  Store s = f.open();
  s.submit(small_plan("exp", {"m1"}));
  const std::string a = worker(s);
  auto l = s.lease(a, "");
  ASSERT_TRUE(l);
  f.clock += 1001;
  Verdict v = report_noop(s, a, *l);
  EXPECT_FALSE(v.accepted);
  EXPECT_CONTAINS(v.reason, "expired");
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM attempts WHERE outcome = 'stale'"), 1) << "expired on the spot";
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM distance_tables"), 0);
}

TEST(Store, RetriesAreBoundedWithGrowingBackoffAndDependentsFailWithTheReason) {
  Fixture f;
  Store s = f.open();
  const int64_t id = s.submit(small_plan("exp", {"m1"})).experiment_id;
  const std::string a = worker(s);
  std::vector<int64_t> waits;
  for (int attempt = 1; attempt <= 3; ++attempt) {
    // The distances task is first whenever it is ready; find when it is.
    int64_t waited = 0;
    std::optional<Lease> l;
    for (;;) {
      l = s.lease(a, "no-model");
      if (l && l->task_key == "distances/m1") break;
      if (l) {
        ASSERT_TRUE(s.release(a, l->task_id, l->token, "", "not this one").accepted);
      }
      f.clock += 100;
      waited += 100;
    }
    EXPECT_EQ(l->attempt, attempt);
    waits.push_back(waited);
    f.clock += 1001;
    s.expire_leases();
  }
  // Ready at once, then after the back-off: 500 ms after the first failure, 1000 ms after the second.
  EXPECT_EQ(waits, (std::vector<int64_t>{0, 500, 1000}));
  auto st = s.status(id, true);
  EXPECT_EQ(st.tasks[0].state, "failed");
  EXPECT_CONTAINS(st.tasks[0].error, "gave up after 3 failed attempts");
  auto states = task_states(s, id);
  EXPECT_EQ(states["evaluate/m1/seed=0"], "failed");
  EXPECT_EQ(states["heal/m1/n=1/similarity/qlora/seed=0"], "failed");
  for (const auto& t : st.tasks) {
    if (t.key == "evaluate/m1/seed=0") {
      EXPECT_CONTAINS(t.error, "dependency \"distances/m1\" failed");
    }
  }
}

TEST(Store, BackoffDoublesPerFailureUpToTheCap) {
  Fixture f;
  StoreOptions o = f.options();
  o.max_attempts = 5;
  Store s(f.path(), o);
  s.submit(small_plan("exp", {"m1"}, 0));  // distances and evaluate only
  const std::string a = worker(s);
  std::vector<int64_t> gaps;
  auto l = s.lease(a, "");
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(l);
    ASSERT_TRUE(s.fail(a, l->task_id, l->token, "out of memory", true).accepted);
    const int64_t failed_at = f.clock;
    while (!(l = s.lease(a, ""))) f.clock += 10;
    gaps.push_back(f.clock - failed_at);
  }
  EXPECT_EQ(gaps, (std::vector<int64_t>{500, 1000, 1500, 1500}));
  ASSERT_TRUE(l);
  EXPECT_EQ(l->attempt, 5);
  Verdict v = s.fail(a, l->task_id, l->token, "out of memory", true);
  EXPECT_EQ(v.task_state, "failed") << "fifth failure of five allowed";
}

TEST(Store, ANonRetryableFailureFailsAtOnce) {
  Fixture f;
  Store s = f.open();
  const int64_t id = s.submit(small_plan("exp", {"m1"})).experiment_id;
  const std::string a = worker(s);
  auto l = s.lease(a, "");
  Verdict v = s.fail(a, l->task_id, l->token, "model.safetensors: no such file", false);
  EXPECT_TRUE(v.accepted);
  EXPECT_EQ(v.task_state, "failed");
  Verdict again = s.fail(a, l->task_id, l->token, "model.safetensors: no such file", false);
  EXPECT_TRUE(again.accepted && again.duplicate);
  auto st = s.status(id, true);
  EXPECT_CONTAINS(st.tasks[0].error, "no such file");
  EXPECT_EQ(task_states(s, id)["evaluate/m1/seed=0"], "failed");
}

TEST(Store, AReportWritesEveryRowExactlyOnce) {
  Fixture f;
  Store s = f.open();
  const int64_t id = s.submit(small_plan("exp", {"m1"})).experiment_id;
  const std::string a = worker(s);
  std::map<std::string, Lease> leases;
  while (auto l = s.lease(a, "m1")) {
    Verdict v = report_noop(s, a, *l);
    ASSERT_TRUE(v.accepted) << v.reason;
    EXPECT_FALSE(v.duplicate);
    leases[l->task_key] = *l;
  }
  // A retried report (its reply lost) is acknowledged and writes nothing.
  const Lease& e = leases.at("evaluate/m1/seed=0");
  Verdict dup = report_noop(s, a, e);
  EXPECT_TRUE(dup.accepted && dup.duplicate);

  auto st = s.status(id, false);
  EXPECT_TRUE(st.finished);
  EXPECT_EQ(st.state, "done");
  EXPECT_EQ(st.points_done, st.points_total);
  EXPECT_EQ(st.points_total, 7);
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM results"), 7 * 2);
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM eval_items"), 7 * 3);
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM distance_tables"), 1);
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM provenance"), int64_t(leases.size()));
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM grid_points WHERE kept_json IS NULL OR dropped_json IS NULL"), 0);
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM grid_points WHERE healing_json IS NOT NULL"), 2);
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM eval_items WHERE correct IS NULL OR task != 'boolq'"), 0);

  // Queries return what was reported.
  auto rows = s.results(id);
  ASSERT_EQ(rows.size(), 14u);
  for (const ResultRow& r : rows) {
    const nlohmann::json expected = testing::fake_value(r.point + "/" + r.metric) + (r.metric == "loss" ? 1.0 : 0.0);
    EXPECT_DOUBLE_EQ(r.value, expected.get<double>()) << r.point << " " << r.metric;
    EXPECT_EQ(r.model, "m1");
    EXPECT_EQ(r.layers, 6);
  }
  EXPECT_EQ(s.results(id, "m1", "m1/n=2/simple/off/seed=0").size(), 2u);
  EXPECT_EQ(s.results(id, "m2").size(), 0u);
  EXPECT_EQ(rows[0].point, "m1/n=0/none/off/seed=0");
  EXPECT_EQ(rows[0].strategy, "none");
  auto items = s.eval_items(id, "m1/n=1/simple/off/seed=0");
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[2]["record"]["index"], 2);
  auto d = s.distances(id);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0]["table"], noop_result(leases.at("distances/m1"))["distances"]);
  auto p = s.provenance(id);
  EXPECT_EQ(p.size(), leases.size());
  EXPECT_EQ(p[0]["provenance"]["model_sha256"], sha256_hex("m1"));
}

TEST(Store, ResultsThatDoNotFitTheTaskAreRejectedAndWriteNothing) {
  Fixture f;
  Store s = f.open();
  s.submit(small_plan("exp", {"m1"}));
  const std::string a = worker(s);
  auto d = s.lease(a, "");
  ASSERT_EQ(d->kind, "distances");
  auto rejected = [&](const Lease& l, const std::string& doc) {
    Verdict v = s.report(a, l.task_id, l.token, doc);
    EXPECT_FALSE(v.accepted) << doc;
    return v.reason;
  };
  EXPECT_CONTAINS(rejected(*d, "{\"provenance\": {}}"), "must report \"distances\"");
  EXPECT_CONTAINS(rejected(*d, "[1, 2]"), "expected a JSON object");
  EXPECT_CONTAINS(rejected(*d, "{\"distance\": {}}"), "unknown field \"distance\"");
  ASSERT_TRUE(report_noop(s, a, *d).accepted);
  std::optional<Lease> e;
  while ((e = s.lease(a, "")) && e->kind != "evaluate") ASSERT_TRUE(s.release(a, e->task_id, e->token, "", "").accepted);
  ASSERT_TRUE(e);
  nlohmann::json good = noop_result(*e);
  nlohmann::json missing = good;
  missing["points"].erase(missing["points"].begin() + 1);
  EXPECT_CONTAINS(rejected(*e, missing.dump()), "missing results for grid points \"m1/n=1/similarity/off/seed=0\"");
  nlohmann::json extra = good;
  extra["points"].push_back({{"key", "m1/n=1/simple/qlora/seed=0"}, {"metrics", {{"loss", 1}}}});
  EXPECT_CONTAINS(rejected(*e, extra.dump()), "not a grid point of this task");
  nlohmann::json twice = good;
  twice["points"][1] = twice["points"][0];
  EXPECT_CONTAINS(rejected(*e, twice.dump()), "appears twice");
  nlohmann::json text_metric = good;
  text_metric["points"][0]["metrics"]["accuracy"] = "high";
  EXPECT_CONTAINS(rejected(*e, text_metric.dump()), "metric \"accuracy\" is not a number");
  nlohmann::json bad_kept = good;
  bad_kept["points"][0]["kept"] = "0-3";
  EXPECT_CONTAINS(rejected(*e, bad_kept.dump()), "array of layer indices");
  EXPECT_CONTAINS(rejected(*e, "{\"points\": [1"), "not valid JSON");
  EXPECT_CONTAINS(rejected(*e, std::string(30000, '[') + std::string(30000, ']')), "JSON nested deeper than 100 levels");
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM results"), 0);
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM eval_items"), 0);
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM grid_points WHERE kept_json IS NOT NULL"), 0);
  // The lease is still valid after a rejected document: the worker can send a correct one.
  EXPECT_EQ(s.heartbeat(a, e->task_id, e->token, "").action, LeaseAction::kContinue);
  EXPECT_TRUE(s.report(a, e->task_id, e->token, good.dump()).accepted);
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM results"), 10);
}

TEST(Store, TokensAreCheckedAgainstTaskAndWorker) {
  Fixture f;
  Store s = f.open();
  s.submit(small_plan("exp", {"m1"}));
  const std::string a = worker(s, "a"), b = worker(s, "b");
  auto l = s.lease(a, "");
  EXPECT_CONTAINS(s.report(b, l->task_id, l->token, "{}").reason, "belongs to worker " + a);
  EXPECT_CONTAINS(s.report(a, l->task_id + 1, l->token, "{}").reason, "belongs to task \"distances/m1\"");
  EXPECT_CONTAINS(s.report(a, l->task_id, l->token + 100, "{}").reason, "unknown lease token");
  EXPECT_CONTAINS(testing::input_error([&] { s.lease("w99-nobody", ""); }), "register first");
}

TEST(Store, CheckpointsFromHeartbeatsAndReleasesReachTheNextLease) {
  Fixture f;
  Store s = f.open();
  s.submit(small_plan("exp", {"m1"}, 1));
  const std::string a = worker(s, "a"), b = worker(s, "b");
  auto d = s.lease(a, "");
  auto h = s.lease(b, "");
  ASSERT_EQ(h->kind, "heal");
  EXPECT_EQ(h->checkpoint, "");
  EXPECT_EQ(s.heartbeat(b, h->task_id, h->token, "/ckpt/step-100").action, LeaseAction::kContinue);
  f.clock += 1001;  // b dies: its lease expires; a's too
  s.expire_leases();
  f.clock += 500;
  std::optional<Lease> again;
  while ((again = s.lease(a, "")) && again->task_id != h->task_id) {
  }
  ASSERT_TRUE(again);
  EXPECT_EQ(again->checkpoint, "/ckpt/step-100");
  EXPECT_EQ(again->attempt, 2);
  // Release (SIGTERM, preemption): back in the queue at once with the newer checkpoint, no failure counted.
  Verdict r = s.release(a, again->task_id, again->token, "/ckpt/step-200", "SIGTERM");
  EXPECT_TRUE(r.accepted);
  EXPECT_EQ(r.task_state, "queued");
  EXPECT_TRUE(s.release(a, again->task_id, again->token, "/ckpt/step-200", "SIGTERM").duplicate);
  std::optional<Lease> third;
  while ((third = s.lease(b, "")) && third->task_id != h->task_id) {
  }
  ASSERT_TRUE(third);
  EXPECT_EQ(third->checkpoint, "/ckpt/step-200");
  EXPECT_EQ(third->attempt, 3);
  EXPECT_EQ(count(s, "SELECT failure_count FROM tasks WHERE id = " + std::to_string(h->task_id)), 1);
  (void)d;
}

TEST(Store, CancelEndsQueuedTasksAndTellsLeasedOnesAtTheirHeartbeat) {
  Fixture f;
  Store s = f.open();
  const int64_t id = s.submit(small_plan("exp")).experiment_id;
  const int64_t other = s.submit(small_plan("other", {"m9"})).experiment_id;
  const std::string a = worker(s, "a"), b = worker(s, "b");
  auto l1 = s.lease(a, "");
  auto l2 = s.lease(b, "");
  ASSERT_EQ(l1->experiment_id, id);
  ASSERT_EQ(l2->experiment_id, id);
  CancelOutcome c = s.cancel(id);
  EXPECT_EQ(c.leased, 2);
  EXPECT_EQ(c.cancelled, int64_t(small_plan("exp").tasks.size()) - 2);
  HeartbeatAnswer hb = s.heartbeat(a, l1->task_id, l1->token, "");
  EXPECT_EQ(hb.action, LeaseAction::kCancel);
  EXPECT_CONTAINS(hb.reason, "cancelled");
  EXPECT_EQ(s.release(a, l1->task_id, l1->token, "", "cancelled").task_state, "cancelled");
  // A report that crosses the cancel is still a correct result: kept.
  EXPECT_TRUE(report_noop(s, b, *l2).accepted);
  auto st = s.status(id, false);
  EXPECT_TRUE(st.finished);
  EXPECT_EQ(st.state, "cancelled");
  EXPECT_EQ(st.task_counts["done"], 1);
  // Other experiments go on.
  auto l3 = s.lease(a, "");
  ASSERT_TRUE(l3);
  EXPECT_EQ(l3->experiment_id, other);
  EXPECT_FALSE(s.drained());
  try {
    s.cancel(12345);
    FAIL();
  } catch (const NotFound& e) {
    EXPECT_CONTAINS(e.what(), "no experiment with id 12345");
  }
}

TEST(Store, ARestartedStoreResumesWithOpenLeasesRenewed) {
  Fixture f;
  Lease held;
  std::string a;
  int64_t id = 0;
  {
    Store s = f.open();
    id = s.submit(small_plan("exp", {"m1"})).experiment_id;
    a = worker(s);
    auto d = s.lease(a, "");
    ASSERT_TRUE(report_noop(s, a, *d).accepted);
    held = *s.lease(a, "");
  }
  f.clock += 5000;  // the coordinator was down for 5 s: longer than the lease
  Store s = f.open();
  EXPECT_EQ(s.renew_open_leases(), 1);
  EXPECT_EQ(s.expire_leases(), 0);
  EXPECT_EQ(s.heartbeat(a, held.task_id, held.token, "").action, LeaseAction::kContinue);
  EXPECT_TRUE(report_noop(s, a, held).accepted);
  int reported = 2;
  while (auto l = s.lease(a, "")) {
    EXPECT_NE(l->task_key, "distances/m1");
    EXPECT_NE(l->task_key, held.task_key);
    ASSERT_TRUE(report_noop(s, a, *l).accepted);
    ++reported;
  }
  EXPECT_EQ(reported, int(small_plan("exp", {"m1"}).tasks.size()));
  EXPECT_TRUE(s.status(id, false).finished);
  EXPECT_TRUE(s.drained());
  EXPECT_EQ(count(s, "SELECT COUNT(*) FROM results"), 7 * 2);
}

}  // namespace
}  // namespace layerprune
