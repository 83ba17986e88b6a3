#include "coordinator/store.h"

#include <algorithm>
#include <ctime>
#include <tuple>
#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "common/hashing.h"
#include "formats/json_input.h"

namespace layerprune {

namespace {

// ---------------------------------------------------------------------------------------------------------
// Schema: ordered migrations. A database records every migration applied (schema_migrations) and the last
// one in PRAGMA user_version. Never edit a released migration: append a new one, bump the golden file
// (tests/golden/schema.sql, regenerated as coordinator/README.md says).

struct Migration {
  int version;
  const char* description;
  const char* sql;
};

const Migration kMigrations[] = {
    {1, "experiments, grid points, tasks, attempts, workers, results, items, distances, provenance", R"sql(
CREATE TABLE experiments (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  config_json TEXT NOT NULL,
  config_sha256 TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  cancelled_at INTEGER
);
CREATE TABLE workers (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  host TEXT NOT NULL,
  pid INTEGER NOT NULL,
  code_version TEXT NOT NULL,
  registered_at INTEGER NOT NULL,
  last_seen INTEGER NOT NULL
);
CREATE TABLE tasks (
  id INTEGER PRIMARY KEY,
  experiment_id INTEGER NOT NULL REFERENCES experiments(id),
  ordinal INTEGER NOT NULL,
  key TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('distances', 'evaluate', 'heal')),
  model TEXT NOT NULL,
  payload_json TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('blocked', 'queued', 'leased', 'done', 'failed', 'cancelled')),
  attempt_count INTEGER NOT NULL DEFAULT 0,
  failure_count INTEGER NOT NULL DEFAULT 0,
  current_attempt INTEGER REFERENCES attempts(id),
  not_before INTEGER NOT NULL DEFAULT 0,
  checkpoint TEXT,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  result_json TEXT,
  error TEXT,
  updated_at INTEGER NOT NULL,
  UNIQUE (experiment_id, key)
);
CREATE INDEX tasks_by_state ON tasks(state, experiment_id, ordinal);
CREATE INDEX tasks_by_state_model ON tasks(state, model, experiment_id, ordinal);
CREATE TABLE task_dependencies (
  task_id INTEGER NOT NULL REFERENCES tasks(id),
  depends_on INTEGER NOT NULL REFERENCES tasks(id),
  PRIMARY KEY (task_id, depends_on)
) WITHOUT ROWID;
CREATE INDEX task_dependents ON task_dependencies(depends_on, task_id);
CREATE TABLE grid_points (
  id INTEGER PRIMARY KEY,
  experiment_id INTEGER NOT NULL REFERENCES experiments(id),
  task_id INTEGER NOT NULL REFERENCES tasks(id),
  key TEXT NOT NULL,
  model TEXT NOT NULL,
  n INTEGER NOT NULL,
  layers INTEGER NOT NULL,
  strategy TEXT NOT NULL,
  healing TEXT NOT NULL,
  seed INTEGER NOT NULL,
  kept_json TEXT,
  dropped_json TEXT,
  healing_json TEXT,
  UNIQUE (experiment_id, key)
);
CREATE INDEX grid_points_by_task ON grid_points(task_id);
CREATE TABLE attempts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id INTEGER NOT NULL REFERENCES tasks(id),
  number INTEGER NOT NULL,
  worker_id TEXT NOT NULL REFERENCES workers(id),
  started_at INTEGER NOT NULL,
  deadline INTEGER NOT NULL,
  ended_at INTEGER,
  outcome TEXT NOT NULL CHECK (outcome IN ('running', 'done', 'failed', 'stale', 'released')),
  error TEXT,
  checkpoint TEXT,
  UNIQUE (task_id, number)
);
CREATE INDEX attempts_running ON attempts(deadline) WHERE outcome = 'running';
CREATE TABLE results (
  point_id INTEGER NOT NULL REFERENCES grid_points(id),
  metric TEXT NOT NULL,
  value REAL NOT NULL,
  attempt_id INTEGER NOT NULL REFERENCES attempts(id),
  PRIMARY KEY (point_id, metric)
) WITHOUT ROWID;
CREATE TABLE eval_items (
  point_id INTEGER NOT NULL REFERENCES grid_points(id),
  item_index INTEGER NOT NULL,
  task TEXT NOT NULL,
  correct INTEGER,
  record_json TEXT NOT NULL,
  attempt_id INTEGER NOT NULL REFERENCES attempts(id),
  PRIMARY KEY (point_id, item_index)
) WITHOUT ROWID;
CREATE TABLE distance_tables (
  task_id INTEGER PRIMARY KEY REFERENCES tasks(id),
  model TEXT NOT NULL,
  table_json TEXT NOT NULL,
  attempt_id INTEGER NOT NULL REFERENCES attempts(id)
);
CREATE TABLE provenance (
  task_id INTEGER PRIMARY KEY REFERENCES tasks(id),
  code_version TEXT NOT NULL,
  model_sha256 TEXT NOT NULL,
  data_sha256_json TEXT NOT NULL,
  config_json TEXT NOT NULL,
  document_json TEXT NOT NULL,
  attempt_id INTEGER NOT NULL REFERENCES attempts(id)
);
)sql"},
    {2, "tasks.tp: the tensor-parallel size of the task's model (a worker group leases only its own size)", R"sql(
ALTER TABLE tasks ADD COLUMN tp INTEGER NOT NULL DEFAULT 1;
)sql"},
};

int64_t wall_clock_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string format_time(int64_t ms) {
  std::time_t t = std::time_t(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return std::string(buf) + " UTC";
}

// The worker's result document, checked against the task before anything is written.
struct PointResult {
  int64_t point_id;
  std::optional<std::string> kept, dropped, healing;
  std::vector<std::pair<std::string, double>> metrics;
  std::vector<nlohmann::json> items;
};

std::optional<std::string> int_array(const nlohmann::json& p, const char* name, const std::string& key) {
  if (!p.contains(name)) return std::nullopt;
  const auto& a = p.at(name);
  bool ok = a.is_array() && std::all_of(a.begin(), a.end(), [](const auto& v) { return v.is_number_integer(); });
  if (!ok) throw InputError("point \"" + key + "\": \"" + name + "\" must be an array of layer indices");
  return a.dump();
}

}  // namespace

int store_schema_version() { return kMigrations[std::size(kMigrations) - 1].version; }

std::string schema_dump(sqlite::Database& db) {
  std::string out;
  auto st = db.prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type DESC, name");
  while (st.step()) out += st.text(0) + ";\n";
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Opening

Store::Store(const std::string& path, StoreOptions options) : options_(std::move(options)), db_(path) {
  if (!options_.clock) options_.clock = wall_clock_ms;
  // WAL: readers never block the writer; synchronous=NORMAL: a commit is in the WAL (the OS's page cache)
  // when it returns, so it survives a killed process; only a power loss or OS crash can drop the last
  // commits before a checkpoint (see coordinator/README.md). A 64 MiB page cache keeps the hot pages of a
  // big grid (task indexes, attempts) in memory: it halved the time of a lease + report here.
  {
    auto st = db_.prepare("PRAGMA journal_mode=WAL");
    if (!st.step() || st.text(0) != "wal")
      throw std::runtime_error(path + ": cannot switch the database to WAL mode (is it on a network file system?)");
  }
  db_.exec("PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON; PRAGMA cache_size=-65536");
  // A damaged file is refused before anything is written to it (quick_check reads every page once:
  // seconds for a large grid's database, once per start).
  {
    auto st = db_.prepare("PRAGMA quick_check(8)");
    std::string problems;
    while (st.step())
      if (st.text(0) != "ok") problems += "\n  " + st.text(0);
    if (!problems.empty())
      throw InputError(path + ": the database file is damaged (SQLite's quick_check):" + problems +
                       "\nnothing was written to it. Move it aside (or restore a backup) and start again");
  }

  sqlite::Transaction txn(db_);
  bool has_tables = false, has_migrations = false;
  {
    auto st = db_.prepare("SELECT name FROM sqlite_master WHERE type = 'table'");
    while (st.step()) {
      has_tables = true;
      if (st.text(0) == "schema_migrations") has_migrations = true;
    }
  }
  if (has_tables && !has_migrations)
    throw InputError(path + ": not a layerprune coordinator database (it has tables but no schema_migrations)");
  db_.exec(
      "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
      "applied_at INTEGER NOT NULL)");
  int current = 0;
  {
    auto st = db_.prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
    st.step();
    current = int(st.int64(0));
  }
  if (current > store_schema_version())
    throw InputError(path + ": the database has schema version " + std::to_string(current) +
                     ", newer than this coordinator's " + std::to_string(store_schema_version()) +
                     ": run the layerprune version that wrote it (or a newer one)");
  for (const Migration& m : kMigrations) {
    if (m.version <= current) continue;
    db_.exec(m.sql);
    db_.prepare("INSERT INTO schema_migrations (version, description, applied_at) VALUES (?1, ?2, ?3)")
        .bind(1, m.version)
        .bind(2, m.description)
        .bind(3, now())
        .run();
    db_.exec("PRAGMA user_version = " + std::to_string(m.version));
  }
  txn.commit();
}

int Store::schema_version() {
  auto st = db_.prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
  st.step();
  return int(st.int64(0));
}

void Store::require_experiment(int64_t experiment_id) {
  auto st = db_.prepare("SELECT 1 FROM experiments WHERE id = ?1");
  if (!st.bind(1, experiment_id).step())
    throw NotFound("no experiment with id " + std::to_string(experiment_id) + " (list them with ListExperiments)");
}

void Store::require_worker(const std::string& worker_id) {
  int64_t last_seen = 0;
  {
    auto st = db_.prepare("SELECT last_seen FROM workers WHERE id = ?1");
    if (!st.bind(1, worker_id).step())
      throw NotFound("unknown worker id \"" + worker_id +
                     "\": register first (the coordinator's database may have been replaced)");
    last_seen = st.int64(0);
  }
  // last_seen is for people reading the status (to 5 s): not written at every call, which would add a
  // page to every lease and report transaction.
  const int64_t t = now();
  if (t - last_seen > 5000)
    db_.prepare("UPDATE workers SET last_seen = ?2 WHERE id = ?1").bind(1, worker_id).bind(2, t).run();
}

// ---------------------------------------------------------------------------------------------------------
// Submitting

// The tensor-parallel size a task needs: its payload's model.tp (1 when absent).
static int64_t task_tp(const TaskSpec& t) {
  if (t.payload.is_object() && t.payload.contains("model") && t.payload["model"].is_object()) {
    const auto& tp = t.payload["model"].value("tp", nlohmann::json(1));
    if (tp.is_number_integer() && tp.get<int64_t>() >= 1) return tp.get<int64_t>();
  }
  return 1;
}

SubmitOutcome Store::submit(const Submission& s) {
  if (s.name.empty()) throw InputError("the experiment has no name");
  nlohmann::json experiment;
  experiment = parse_json_input(s.experiment_json, "experiment \"" + s.name + "\": the experiment configuration",
                                kMaxJsonDepth);
  const std::string where = "experiment \"" + s.name + "\": ";

  // The plan must be well formed: each task once, dependencies on earlier tasks, each point computed by
  // exactly one task. Checked in full before anything is written.
  std::map<std::string, size_t> task_index;
  std::map<std::string, std::string> point_owner;  // point key -> task key
  for (size_t i = 0; i < s.tasks.size(); ++i) {
    const TaskSpec& t = s.tasks[i];
    if (t.key.empty()) throw InputError(where + "task " + std::to_string(i) + " has no key");
    if (t.kind != "distances" && t.kind != "evaluate" && t.kind != "heal")
      throw InputError(where + "task \"" + t.key + "\" has kind \"" + t.kind +
                       "\" (expected distances, evaluate or heal)");
    if (!task_index.emplace(t.key, i).second) throw InputError(where + "two tasks have the key \"" + t.key + "\"");
    for (const auto& d : t.depends_on)
      if (!task_index.count(d) || d == t.key)
        throw InputError(where + "task \"" + t.key + "\" depends on \"" + d +
                         "\", which is not an earlier task of the plan");
    if (t.kind == "distances" && !t.points.empty())
      throw InputError(where + "distances task \"" + t.key + "\" lists grid points (it computes none)");
    if (t.kind != "distances" && t.points.empty())
      throw InputError(where + t.kind + " task \"" + t.key + "\" computes no grid point");
    for (const auto& p : t.points)
      if (!point_owner.emplace(p, t.key).second)
        throw InputError(where + "grid point \"" + p + "\" is computed by two tasks (\"" + point_owner[p] +
                         "\" and \"" + t.key + "\")");
  }
  std::set<std::string> point_keys;
  for (const GridPoint& p : s.points) {
    if (!point_keys.insert(p.key).second) throw InputError(where + "two grid points have the key \"" + p.key + "\"");
    if (!point_owner.count(p.key)) throw InputError(where + "grid point \"" + p.key + "\" is computed by no task");
  }
  for (const auto& [p, t] : point_owner)
    if (!point_keys.count(p)) throw InputError(where + "task \"" + t + "\" lists an unknown grid point \"" + p + "\"");

  const std::string config = experiment.dump();
  const std::string digest =
      sha256_hex(config + "\n" + points_json(s.points).dump() + "\n" + tasks_json(s.tasks).dump());

  sqlite::Transaction txn(db_);
  {
    auto st = db_.prepare("SELECT id, config_sha256, created_at FROM experiments WHERE name = ?1");
    if (st.bind(1, s.name).step()) {
      const int64_t id = st.int64(0);
      if (st.text(1) != digest)
        throw ExperimentExists(where + "already exists (id " + std::to_string(id) + ", submitted " +
                               format_time(st.int64(2)) +
                               ") with a different configuration or grid; submit the new one under a new name");
      return SubmitOutcome{id, true, int64_t(s.points.size()), int64_t(s.tasks.size())};
    }
  }
  const int64_t t0 = now();
  db_.prepare("INSERT INTO experiments (name, config_json, config_sha256, created_at) VALUES (?1, ?2, ?3, ?4)")
      .bind(1, s.name)
      .bind(2, config)
      .bind(3, digest)
      .bind(4, t0)
      .run();
  const int64_t experiment_id = db_.last_insert_id();
  std::map<std::string, int64_t> task_ids;
  for (size_t i = 0; i < s.tasks.size(); ++i) {
    const TaskSpec& t = s.tasks[i];
    db_.prepare(
           "INSERT INTO tasks (experiment_id, ordinal, key, kind, model, payload_json, state, updated_at, tp) "
           "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
        .bind(1, experiment_id)
        .bind(2, int64_t(i))
        .bind(3, t.key)
        .bind(4, t.kind)
        .bind(5, t.model)
        .bind(6, t.payload.is_null() ? std::string("{}") : t.payload.dump())
        .bind(7, t.depends_on.empty() ? "queued" : "blocked")
        .bind(8, t0)
        .bind(9, task_tp(t))
        .run();
    const int64_t id = db_.last_insert_id();
    task_ids[t.key] = id;
    for (const auto& d : std::set<std::string>(t.depends_on.begin(), t.depends_on.end()))
      db_.prepare("INSERT INTO task_dependencies (task_id, depends_on) VALUES (?1, ?2)")
          .bind(1, id)
          .bind(2, task_ids.at(d))
          .run();
  }
  for (const GridPoint& p : s.points)
    db_.prepare(
           "INSERT INTO grid_points (experiment_id, task_id, key, model, n, layers, strategy, healing, seed) "
           "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
        .bind(1, experiment_id)
        .bind(2, task_ids.at(point_owner.at(p.key)))
        .bind(3, p.key)
        .bind(4, p.model)
        .bind(5, p.n)
        .bind(6, p.layers)
        .bind(7, p.strategy)
        .bind(8, p.healing)
        .bind(9, int64_t(p.seed))  // stored as its two's-complement int64; read back as uint64
        .run();
  txn.commit();
  return SubmitOutcome{experiment_id, false, int64_t(s.points.size()), int64_t(s.tasks.size())};
}

// ---------------------------------------------------------------------------------------------------------
// Workers and leases

std::string Store::register_worker(const WorkerInfo& info) {
  // The random part keeps ids unique across databases: a worker that outlived a replaced database is
  // told to register again instead of being mistaken for another.
  std::random_device rd;
  char suffix[9];
  std::snprintf(suffix, sizeof suffix, "%08x", unsigned(rd()));
  sqlite::Transaction txn(db_);
  int64_t count = 0;
  {
    auto st = db_.prepare("SELECT COUNT(*) FROM workers");
    st.step();
    count = st.int64(0);
  }
  const std::string id = "w" + std::to_string(count + 1) + "-" + suffix;
  const int64_t t = now();
  db_.prepare(
         "INSERT INTO workers (id, name, host, pid, code_version, registered_at, last_seen) "
         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)")
      .bind(1, id)
      .bind(2, info.name)
      .bind(3, info.host)
      .bind(4, info.pid)
      .bind(5, info.code_version)
      .bind(6, t)
      .run();
  txn.commit();
  return id;
}

std::optional<Lease> Store::lease(const std::string& worker_id, const std::string& loaded_model, int tp) {
  sqlite::Transaction txn(db_);
  require_worker(worker_id);
  const int64_t t = now();
  expire_due(t);
  std::optional<int64_t> task_id;
  if (!loaded_model.empty()) {
    auto st = db_.prepare(
        "SELECT id FROM tasks WHERE state = 'queued' AND model = ?1 AND not_before <= ?2 AND (?3 = 0 OR tp = ?3) "
        "ORDER BY experiment_id, ordinal LIMIT 1");
    if (st.bind(1, loaded_model).bind(2, t).bind(3, int64_t(tp)).step()) task_id = st.int64(0);
  }
  if (!task_id) {
    auto st = db_.prepare(
        "SELECT id FROM tasks WHERE state = 'queued' AND not_before <= ?1 AND (?2 = 0 OR tp = ?2) "
        "ORDER BY experiment_id, ordinal LIMIT 1");
    if (st.bind(1, t).bind(2, int64_t(tp)).step()) task_id = st.int64(0);
  }
  std::optional<Lease> lease;
  if (task_id) lease = grant(*task_id, worker_id);
  txn.commit();
  return lease;
}

Lease Store::grant(int64_t task_id, const std::string& worker_id) {
  Lease l;
  l.task_id = task_id;
  std::string payload;
  {
    auto st = db_.prepare(
        "SELECT t.attempt_count, t.checkpoint, t.key, t.kind, t.model, t.experiment_id, t.payload_json, e.name "
        "FROM tasks t JOIN experiments e ON e.id = t.experiment_id WHERE t.id = ?1");
    st.bind(1, task_id).step();
    l.attempt = int(st.int64(0)) + 1;
    l.checkpoint = st.text(1);
    l.task_key = st.text(2);
    l.kind = st.text(3);
    l.model = st.text(4);
    l.experiment_id = st.int64(5);
    payload = st.text(6);
    l.experiment = st.text(7);
  }
  const int64_t t = now();
  l.lease_ms = options_.lease_ms;
  db_.prepare(
         "INSERT INTO attempts (task_id, number, worker_id, started_at, deadline, outcome, checkpoint) "
         "VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6)")
      .bind(1, task_id)
      .bind(2, l.attempt)
      .bind(3, worker_id)
      .bind(4, t)
      .bind(5, t + options_.lease_ms)
      .bind(6, l.checkpoint.empty() ? std::nullopt : std::optional<std::string>(l.checkpoint))
      .run();
  l.token = db_.last_insert_id();
  db_.prepare(
         "UPDATE tasks SET state = 'leased', current_attempt = ?2, attempt_count = ?3, updated_at = ?4 WHERE id = ?1")
      .bind(1, task_id)
      .bind(2, l.token)
      .bind(3, l.attempt)
      .bind(4, t)
      .run();
  l.payload = nlohmann::json::parse(payload);
  l.points = nlohmann::json::array();
  {
    auto st = db_.prepare(
        "SELECT key, model, n, layers, strategy, healing, seed FROM grid_points WHERE task_id = ?1 ORDER BY id");
    st.bind(1, task_id);
    while (st.step())
      l.points.push_back({{"key", st.text(0)},
                          {"model", st.text(1)},
                          {"n", st.int64(2)},
                          {"layers", st.int64(3)},
                          {"strategy", st.text(4)},
                          {"healing", st.text(5)},
                          {"seed", uint64_t(st.int64(6))}});
  }
  l.dependencies = nlohmann::json::object();
  {
    auto st = db_.prepare(
        "SELECT t.key, t.result_json FROM task_dependencies d JOIN tasks t ON t.id = d.depends_on "
        "WHERE d.task_id = ?1 ORDER BY t.ordinal");
    st.bind(1, task_id);
    while (st.step()) l.dependencies[st.text(0)] = nlohmann::json::parse(st.text(1));
  }
  return l;
}

Store::Check Store::check_lease(const std::string& worker_id, int64_t task_id, int64_t token, const char* ended_as,
                                std::string* reason) {
  auto st = db_.prepare(
      "SELECT a.task_id, a.worker_id, a.outcome, a.deadline, a.ended_at, t.key, t.state, t.current_attempt "
      "FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE a.id = ?1");
  if (!st.bind(1, token).step()) {
    *reason = "unknown lease token " + std::to_string(token);
    return Check::kRejected;
  }
  const std::string key = st.text(5), outcome = st.text(2), owner = st.text(1);
  const std::string lease = "lease " + std::to_string(token) + " of task \"" + key + "\"";
  if (st.int64(0) != task_id) {
    *reason = "token " + std::to_string(token) + " belongs to task \"" + key + "\", not task id " +
              std::to_string(task_id);
    return Check::kRejected;
  }
  if (owner != worker_id) {
    *reason = lease + " belongs to worker " + owner + ", not " + worker_id;
    return Check::kRejected;
  }
  if (ended_as && outcome == ended_as) return Check::kDuplicate;
  if (outcome == "running") {
    const int64_t deadline = st.int64(3);
    if (deadline >= now()) return Check::kCurrent;
    *reason = lease + " expired at " + format_time(deadline) + " (no heartbeat within the lease); the task was re-queued";
    end_attempt(token, task_id, "stale",
                "lease expired: no heartbeat from worker " + owner + " before " + format_time(deadline), "", true);
    return Check::kRejected;
  }
  if (outcome == "stale")
    *reason = lease + " expired at " + format_time(st.int64(3)) + " (no heartbeat within the lease) and the task was re-queued; it is now " + st.text(6);
  else
    *reason = lease + " already ended (" + outcome + ")";
  return Check::kRejected;
}

HeartbeatAnswer Store::heartbeat(const std::string& worker_id, int64_t task_id, int64_t token,
                                 const std::string& checkpoint) {
  sqlite::Transaction txn(db_);
  require_worker(worker_id);
  HeartbeatAnswer a;
  a.lease_ms = options_.lease_ms;
  if (check_lease(worker_id, task_id, token, nullptr, &a.reason) != Check::kCurrent) {
    a.action = LeaseAction::kLost;
    txn.commit();
    return a;
  }
  db_.prepare("UPDATE attempts SET deadline = ?2, checkpoint = COALESCE(?3, checkpoint) WHERE id = ?1")
      .bind(1, token)
      .bind(2, now() + options_.lease_ms)
      .bind(3, checkpoint.empty() ? std::nullopt : std::optional<std::string>(checkpoint))
      .run();
  if (!checkpoint.empty())
    db_.prepare("UPDATE tasks SET checkpoint = ?2 WHERE id = ?1").bind(1, task_id).bind(2, checkpoint).run();
  auto st = db_.prepare(
      "SELECT t.cancel_requested, e.name FROM tasks t JOIN experiments e ON e.id = t.experiment_id WHERE t.id = ?1");
  st.bind(1, task_id).step();
  if (st.int64(0)) {
    a.action = LeaseAction::kCancel;
    a.reason = "experiment \"" + st.text(1) + "\" was cancelled: stop and release the lease";
  }
  txn.commit();
  return a;
}

Verdict Store::report(const std::string& worker_id, int64_t task_id, int64_t token, const std::string& result_json) {
  sqlite::Transaction txn(db_);
  require_worker(worker_id);
  Verdict v;
  switch (check_lease(worker_id, task_id, token, "done", &v.reason)) {
    case Check::kDuplicate:
      v.accepted = v.duplicate = true;
      v.task_state = "done";
      return v;
    case Check::kRejected:
      txn.commit();  // an expiry found on the way is kept
      return v;
    case Check::kCurrent:
      break;
  }
  std::string kind, model, key;
  {
    auto st = db_.prepare("SELECT kind, model, key FROM tasks WHERE id = ?1");
    st.bind(1, task_id).step();
    kind = st.text(0);
    model = st.text(1);
    key = st.text(2);
  }

  // Read and check everything first: a result that does not fit its task writes nothing.
  nlohmann::json doc;
  std::vector<PointResult> points;
  std::optional<nlohmann::json> distances, provenance;
  try {
    doc = parse_json_input(result_json, "the result", kMaxJsonDepth);  // InputError: the rejection below
    if (!doc.is_object()) throw InputError("expected a JSON object");
    for (const auto& [name, value] : doc.items())
      if (name != "points" && name != "distances" && name != "provenance")
        throw InputError("unknown field \"" + name + "\" (expected points, distances, provenance)");
    std::map<std::string, int64_t> expected;
    {
      auto st = db_.prepare("SELECT key, id FROM grid_points WHERE task_id = ?1");
      st.bind(1, task_id);
      while (st.step()) expected[st.text(0)] = st.int64(1);
    }
    if (doc.contains("points")) {
      const auto& arr = doc.at("points");
      if (!arr.is_array()) throw InputError("\"points\" must be an array");
      std::set<std::string> seen;
      for (const auto& p : arr) {
        if (!p.is_object() || !p.contains("key") || !p.at("key").is_string())
          throw InputError("every entry of \"points\" needs a string \"key\"");
        const std::string pk = p.at("key").get<std::string>();
        auto it = expected.find(pk);
        if (it == expected.end()) throw InputError("point \"" + pk + "\" is not a grid point of this task");
        if (!seen.insert(pk).second) throw InputError("point \"" + pk + "\" appears twice");
        PointResult r;
        r.point_id = it->second;
        r.kept = int_array(p, "kept", pk);
        r.dropped = int_array(p, "dropped", pk);
        if (p.contains("metrics")) {
          const auto& m = p.at("metrics");
          if (!m.is_object()) throw InputError("point \"" + pk + "\": \"metrics\" must be an object");
          for (const auto& [name, value] : m.items()) {
            if (!value.is_number())
              throw InputError("point \"" + pk + "\": metric \"" + name + "\" is not a number: " + value.dump());
            r.metrics.emplace_back(name, value.get<double>());
          }
        }
        if (p.contains("items")) {
          if (!p.at("items").is_array()) throw InputError("point \"" + pk + "\": \"items\" must be an array");
          for (const auto& item : p.at("items")) r.items.push_back(item);
        }
        if (p.contains("healing")) r.healing = p.at("healing").dump();
        points.push_back(std::move(r));
      }
    }
    if (points.size() != expected.size()) {
      std::string missing;
      for (const auto& [pk, point_id] : expected) {
        const int64_t id = point_id;  // a structured binding cannot be captured before C++20 (clang refuses it)
        if (std::none_of(points.begin(), points.end(), [&](const PointResult& r) { return r.point_id == id; }))
          missing += (missing.empty() ? "\"" : ", \"") + pk + "\"";
      }
      throw InputError("missing results for grid points " + missing);
    }
    if (doc.contains("distances")) {
      if (doc.at("distances").is_null()) throw InputError("\"distances\" is null");
      distances = doc.at("distances");
    }
    if (kind == "distances" && !distances) throw InputError("a distances task must report \"distances\"");
    if (doc.contains("provenance")) {
      if (!doc.at("provenance").is_object()) throw InputError("\"provenance\" must be an object");
      provenance = doc.at("provenance");
    }
  } catch (const InputError& e) {
    v.reason = "result of task \"" + key + "\" rejected: " + e.what();
    return v;  // rolled back: nothing written, the lease stays valid (the worker may fail it)
  }

  // Write every row in this one transaction. The primary keys (point, metric), (point, item) and (task)
  // would refuse a second copy; the token check above makes sure none is ever attempted.
  for (const PointResult& r : points) {
    db_.prepare("UPDATE grid_points SET kept_json = ?2, dropped_json = ?3, healing_json = ?4 WHERE id = ?1")
        .bind(1, r.point_id)
        .bind(2, r.kept)
        .bind(3, r.dropped)
        .bind(4, r.healing)
        .run();
    for (const auto& [metric, value] : r.metrics)
      db_.prepare("INSERT INTO results (point_id, metric, value, attempt_id) VALUES (?1, ?2, ?3, ?4)")
          .bind(1, r.point_id)
          .bind(2, metric)
          .bind(3, value)
          .bind(4, token)
          .run();
    for (size_t i = 0; i < r.items.size(); ++i) {
      const auto& item = r.items[i];
      auto st = db_.prepare(
          "INSERT INTO eval_items (point_id, item_index, task, correct, record_json, attempt_id) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
      st.bind(1, r.point_id).bind(2, int64_t(i));
      st.bind(3, item.is_object() && item.contains("task") && item.at("task").is_string()
                     ? item.at("task").get<std::string>()
                     : std::string());
      if (item.is_object() && item.contains("correct") && item.at("correct").is_boolean())
        st.bind(4, int64_t(item.at("correct").get<bool>()));
      else
        st.bind_null(4);
      st.bind(5, item.dump()).bind(6, token).run();
    }
  }
  if (distances)
    db_.prepare("INSERT INTO distance_tables (task_id, model, table_json, attempt_id) VALUES (?1, ?2, ?3, ?4)")
        .bind(1, task_id)
        .bind(2, model)
        .bind(3, distances->dump())
        .bind(4, token)
        .run();
  if (provenance) {
    auto text = [&](const char* name) {
      return provenance->contains(name) && provenance->at(name).is_string() ? provenance->at(name).get<std::string>()
                                                                          : std::string();
    };
    db_.prepare(
           "INSERT INTO provenance (task_id, code_version, model_sha256, data_sha256_json, config_json, "
           "document_json, attempt_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
        .bind(1, task_id)
        .bind(2, text("code_version"))
        .bind(3, text("model_sha256"))
        .bind(4, provenance->value("data_sha256", nlohmann::json::object()).dump())
        .bind(5, provenance->value("config", nlohmann::json::object()).dump())
        .bind(6, provenance->dump())
        .bind(7, token)
        .run();
  }
  // What dependents receive: the document without its per-item records (those can be large; they are
  // in eval_items).
  if (doc.contains("points"))
    for (auto& p : doc["points"]) p.erase("items");
  const int64_t t = now();
  db_.prepare("UPDATE attempts SET outcome = 'done', ended_at = ?2 WHERE id = ?1").bind(1, token).bind(2, t).run();
  db_.prepare("UPDATE tasks SET state = 'done', result_json = ?2, error = NULL, updated_at = ?3 WHERE id = ?1")
      .bind(1, task_id)
      .bind(2, doc.dump())
      .bind(3, t)
      .run();
  unblock_dependents(task_id);
  txn.commit();
  v.accepted = true;
  v.task_state = "done";
  return v;
}

Verdict Store::fail(const std::string& worker_id, int64_t task_id, int64_t token, const std::string& error,
                    bool retryable) {
  sqlite::Transaction txn(db_);
  require_worker(worker_id);
  Verdict v;
  const Check c = check_lease(worker_id, task_id, token, "failed", &v.reason);
  if (c == Check::kCurrent) end_attempt(token, task_id, "failed", error.empty() ? "failed" : error, "", retryable);
  v.accepted = c != Check::kRejected;
  v.duplicate = c == Check::kDuplicate;
  auto st = db_.prepare("SELECT state FROM tasks WHERE id = ?1");
  if (st.bind(1, task_id).step()) v.task_state = st.text(0);
  txn.commit();
  return v;
}

Verdict Store::release(const std::string& worker_id, int64_t task_id, int64_t token, const std::string& checkpoint,
                       const std::string& reason) {
  sqlite::Transaction txn(db_);
  require_worker(worker_id);
  Verdict v;
  const Check c = check_lease(worker_id, task_id, token, "released", &v.reason);
  if (c == Check::kCurrent) end_attempt(token, task_id, "released", reason.empty() ? "released" : reason, checkpoint, true);
  v.accepted = c != Check::kRejected;
  v.duplicate = c == Check::kDuplicate;
  auto st = db_.prepare("SELECT state FROM tasks WHERE id = ?1");
  if (st.bind(1, task_id).step()) v.task_state = st.text(0);
  txn.commit();
  return v;
}

// ---------------------------------------------------------------------------------------------------------
// Attempts ending without a result

void Store::end_attempt(int64_t attempt_id, int64_t task_id, const std::string& outcome, const std::string& error,
                        const std::string& checkpoint, bool retryable) {
  const int64_t t = now();
  const std::optional<std::string> cp = checkpoint.empty() ? std::nullopt : std::optional<std::string>(checkpoint);
  db_.prepare(
         "UPDATE attempts SET outcome = ?2, ended_at = ?3, error = ?4, checkpoint = COALESCE(?5, checkpoint) "
         "WHERE id = ?1")
      .bind(1, attempt_id)
      .bind(2, outcome)
      .bind(3, t)
      .bind(4, error)
      .bind(5, cp)
      .run();
  const bool counts = outcome != "released";
  int64_t failures = 0, number = 0, cancel = 0;
  std::string worker;
  {
    auto st = db_.prepare(
        "SELECT t.failure_count, t.cancel_requested, a.number, a.worker_id FROM tasks t JOIN attempts a "
        "ON a.id = ?2 WHERE t.id = ?1");
    st.bind(1, task_id).bind(2, attempt_id).step();
    failures = st.int64(0) + (counts ? 1 : 0);
    cancel = st.int64(1);
    number = st.int64(2);
    worker = st.text(3);
  }
  const std::string what = "attempt " + std::to_string(number) + " on worker " + worker + ": " + error;
  db_.prepare(
         "UPDATE tasks SET failure_count = ?2, checkpoint = COALESCE(?3, checkpoint), error = ?4, updated_at = ?5 "
         "WHERE id = ?1")
      .bind(1, task_id)
      .bind(2, failures)
      .bind(3, cp)
      .bind(4, outcome == "released" ? std::optional<std::string>() : std::optional<std::string>(what))
      .bind(5, t)
      .run();
  if (cancel) {
    db_.prepare("UPDATE tasks SET state = 'cancelled' WHERE id = ?1").bind(1, task_id).run();
  } else if (counts && (!retryable || failures >= options_.max_attempts)) {
    fail_task(task_id, retryable ? "gave up after " + std::to_string(failures) + " failed attempts; last: " + what
                                 : "failed without retry: " + what);
  } else {
    // Exponential back-off after failures (a crashing input should not spin); none after a release.
    int64_t delay = 0;
    if (counts) {
      const int shift = int(std::min<int64_t>(failures - 1, 30));
      delay = std::min(options_.backoff_cap_ms, options_.backoff_ms << shift);
    }
    db_.prepare("UPDATE tasks SET state = 'queued', not_before = ?2 WHERE id = ?1")
        .bind(1, task_id)
        .bind(2, t + delay)
        .run();
  }
}

void Store::fail_task(int64_t task_id, const std::string& error) {
  const int64_t t = now();
  db_.prepare("UPDATE tasks SET state = 'failed', error = ?2, updated_at = ?3 WHERE id = ?1")
      .bind(1, task_id)
      .bind(2, error)
      .bind(3, t)
      .run();
  // Everything that needs this task's result can never run: fail it too, saying why.
  std::vector<std::pair<int64_t, std::string>> work;
  {
    auto st = db_.prepare("SELECT key FROM tasks WHERE id = ?1");
    st.bind(1, task_id).step();
    work.emplace_back(task_id, st.text(0));
  }
  while (!work.empty()) {
    auto [id, key] = work.back();
    work.pop_back();
    std::vector<std::pair<int64_t, std::string>> next;
    {
      auto st = db_.prepare(
          "SELECT t.id, t.key FROM task_dependencies d CROSS JOIN tasks t ON t.id = d.task_id "
          "WHERE d.depends_on = ?1 AND t.state IN ('blocked', 'queued')");
      st.bind(1, id);
      while (st.step()) next.emplace_back(st.int64(0), st.text(1));
    }
    for (const auto& [dep_id, dep_key] : next) {
      db_.prepare("UPDATE tasks SET state = 'failed', error = ?2, updated_at = ?3 WHERE id = ?1")
          .bind(1, dep_id)
          .bind(2, "dependency \"" + key + "\" failed")
          .bind(3, t)
          .run();
      work.emplace_back(dep_id, dep_key);
    }
  }
}

void Store::unblock_dependents(int64_t task_id) {
  std::vector<int64_t> ready;
  {
    auto st = db_.prepare(
        // CROSS JOIN keeps SQLite from scanning every blocked task first: start from this task's dependents.
        "SELECT t.id FROM task_dependencies d CROSS JOIN tasks t ON t.id = d.task_id WHERE d.depends_on = ?1 "
        "AND t.state = 'blocked' AND NOT EXISTS (SELECT 1 FROM task_dependencies d2 JOIN tasks u "
        "ON u.id = d2.depends_on WHERE d2.task_id = t.id AND u.state != 'done')");
    st.bind(1, task_id);
    while (st.step()) ready.push_back(st.int64(0));
  }
  for (int64_t id : ready)
    db_.prepare("UPDATE tasks SET state = 'queued', updated_at = ?2 WHERE id = ?1").bind(1, id).bind(2, now()).run();
}

int64_t Store::expire_due(int64_t t) {
  std::vector<std::tuple<int64_t, int64_t, std::string, int64_t>> due;
  {
    auto st = db_.prepare("SELECT id, task_id, worker_id, deadline FROM attempts WHERE outcome = 'running' AND deadline < ?1");
    st.bind(1, t);
    while (st.step()) due.emplace_back(st.int64(0), st.int64(1), st.text(2), st.int64(3));
  }
  for (const auto& [id, task, worker, deadline] : due)
    end_attempt(id, task, "stale", "lease expired: no heartbeat from worker " + worker + " before " + format_time(deadline),
                "", true);
  return int64_t(due.size());
}

int64_t Store::expire_leases() {
  sqlite::Transaction txn(db_);
  const int64_t n = expire_due(now());
  txn.commit();
  return n;
}

int64_t Store::renew_open_leases() {
  sqlite::Transaction txn(db_);
  db_.prepare("UPDATE attempts SET deadline = ?1 WHERE outcome = 'running'").bind(1, now() + options_.lease_ms).run();
  const int64_t n = db_.changes();
  txn.commit();
  return n;
}

bool Store::drained() {
  auto st = db_.prepare("SELECT EXISTS (SELECT 1 FROM tasks WHERE state IN ('blocked', 'queued', 'leased'))");
  st.step();
  return st.int64(0) == 0;
}

// ---------------------------------------------------------------------------------------------------------
// Users: cancel and queries

CancelOutcome Store::cancel(int64_t experiment_id) {
  sqlite::Transaction txn(db_);
  require_experiment(experiment_id);
  const int64_t t = now();
  CancelOutcome c;
  db_.prepare("UPDATE experiments SET cancelled_at = COALESCE(cancelled_at, ?2) WHERE id = ?1")
      .bind(1, experiment_id)
      .bind(2, t)
      .run();
  db_.prepare(
         "UPDATE tasks SET state = 'cancelled', updated_at = ?2 WHERE experiment_id = ?1 "
         "AND state IN ('blocked', 'queued')")
      .bind(1, experiment_id)
      .bind(2, t)
      .run();
  c.cancelled = db_.changes();
  db_.prepare("UPDATE tasks SET cancel_requested = 1 WHERE experiment_id = ?1 AND state = 'leased'")
      .bind(1, experiment_id)
      .run();
  c.leased = db_.changes();
  txn.commit();
  return c;
}

ExperimentStatus Store::status(int64_t experiment_id, bool include_tasks) {
  ExperimentStatus s;
  s.experiment_id = experiment_id;
  bool cancelled = false;
  {
    auto st = db_.prepare("SELECT name, created_at, cancelled_at FROM experiments WHERE id = ?1");
    if (!st.bind(1, experiment_id).step())
      throw NotFound("no experiment with id " + std::to_string(experiment_id) + " (list them with ListExperiments)");
    s.name = st.text(0);
    s.created_ms = st.int64(1);
    cancelled = !st.is_null(2);
  }
  for (const char* state : {"blocked", "queued", "leased", "done", "failed", "cancelled"}) s.task_counts[state] = 0;
  {
    auto st = db_.prepare("SELECT state, COUNT(*) FROM tasks WHERE experiment_id = ?1 GROUP BY state");
    st.bind(1, experiment_id);
    while (st.step()) s.task_counts[st.text(0)] = st.int64(1);
  }
  {
    auto st = db_.prepare(
        "SELECT COUNT(*), COALESCE(SUM(t.state = 'done'), 0) FROM grid_points g JOIN tasks t ON t.id = g.task_id "
        "WHERE g.experiment_id = ?1");
    st.bind(1, experiment_id).step();
    s.points_total = st.int64(0);
    s.points_done = st.int64(1);
  }
  s.finished = s.task_counts["blocked"] + s.task_counts["queued"] + s.task_counts["leased"] == 0;
  s.state = cancelled ? "cancelled" : !s.finished ? "running" : s.task_counts["failed"] ? "failed" : "done";
  if (include_tasks) {
    auto st = db_.prepare(
        // The worker's Slurm job next to its id ("w3-1a2b3c4d (slurm 1234_5)"): lease_loop.cc names workers
        // "... slurm JOB_ARRAYTASK" inside a Slurm job.
        "SELECT t.key, t.kind, t.model, t.state, COALESCE(a.worker_id || CASE WHEN instr(w.name, ' slurm ') > 0 "
        "THEN ' (' || substr(w.name, instr(w.name, ' slurm ') + 1) || ')' ELSE '' END, a.worker_id, ''), "
        "t.attempt_count, t.failure_count, COALESCE(t.error, '') FROM tasks t "
        "LEFT JOIN attempts a ON a.id = t.current_attempt LEFT JOIN workers w ON w.id = a.worker_id "
        "WHERE t.experiment_id = ?1 ORDER BY t.ordinal");
    st.bind(1, experiment_id);
    while (st.step())
      s.tasks.push_back(TaskStatus{st.text(0), st.text(1), st.text(2), st.text(3), st.text(4), st.text(7),
                                   int(st.int64(5)), int(st.int64(6))});
  }
  return s;
}

std::vector<ExperimentStatus> Store::list() {
  std::vector<int64_t> ids;
  {
    auto st = db_.prepare("SELECT id FROM experiments ORDER BY id");
    while (st.step()) ids.push_back(st.int64(0));
  }
  std::vector<ExperimentStatus> out;
  for (int64_t id : ids) out.push_back(status(id, false));
  return out;
}

std::vector<ResultRow> Store::results(int64_t experiment_id, const std::string& model, const std::string& point) {
  require_experiment(experiment_id);
  std::vector<ResultRow> rows;
  auto st = db_.prepare(
      "SELECT g.key, g.model, g.n, g.layers, g.strategy, g.healing, g.seed, r.metric, r.value "
      "FROM grid_points g JOIN results r ON r.point_id = g.id WHERE g.experiment_id = ?1 "
      "AND (?2 = '' OR g.model = ?2) AND (?3 = '' OR g.key = ?3) ORDER BY g.id, r.metric");
  st.bind(1, experiment_id).bind(2, model).bind(3, point);
  while (st.step())
    rows.push_back(ResultRow{st.text(0), st.text(1), st.int64(2), st.int64(3), st.text(4), st.text(5),
                             uint64_t(st.int64(6)), st.text(7), st.real(8)});
  return rows;
}

nlohmann::json Store::eval_items(int64_t experiment_id, const std::string& point) {
  require_experiment(experiment_id);
  nlohmann::json out = nlohmann::json::array();
  auto st = db_.prepare(
      "SELECT g.key, i.item_index, i.record_json FROM grid_points g JOIN eval_items i ON i.point_id = g.id "
      "WHERE g.experiment_id = ?1 AND (?2 = '' OR g.key = ?2) ORDER BY g.id, i.item_index");
  st.bind(1, experiment_id).bind(2, point);
  while (st.step())
    out.push_back({{"point", st.text(0)}, {"index", st.int64(1)}, {"record", nlohmann::json::parse(st.text(2))}});
  return out;
}

nlohmann::json Store::distances(int64_t experiment_id, const std::string& model) {
  require_experiment(experiment_id);
  nlohmann::json out = nlohmann::json::array();
  auto st = db_.prepare(
      "SELECT t.key, d.model, d.table_json FROM distance_tables d JOIN tasks t ON t.id = d.task_id "
      "WHERE t.experiment_id = ?1 AND (?2 = '' OR d.model = ?2) ORDER BY t.ordinal");
  st.bind(1, experiment_id).bind(2, model);
  while (st.step())
    out.push_back({{"task", st.text(0)}, {"model", st.text(1)}, {"table", nlohmann::json::parse(st.text(2))}});
  return out;
}

nlohmann::json Store::provenance(int64_t experiment_id) {
  require_experiment(experiment_id);
  nlohmann::json out = nlohmann::json::array();
  auto st = db_.prepare(
      "SELECT t.key, p.document_json FROM provenance p JOIN tasks t ON t.id = p.task_id "
      "WHERE t.experiment_id = ?1 ORDER BY t.ordinal");
  st.bind(1, experiment_id);
  while (st.step()) out.push_back({{"task", st.text(0)}, {"provenance", nlohmann::json::parse(st.text(1))}});
  return out;
}

}  // namespace layerprune
