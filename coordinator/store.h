// The coordinator's database: experiments, grid points, tasks and their attempts (leases), results,
// distance tables, per-item evaluation records and provenance, in one SQLite file. The coordinator is its
// only writer; every mutation is one transaction, so a coordinator killed at any instant restarts from a
// consistent database with nothing lost and nothing repeated.
//
// Task states (coordinator/README.md draws the machine):
//   blocked  -> queued     when every dependency is done
//   queued   -> leased     lease(): a new attempt with a fencing token and a deadline
//   leased   -> done       report() with the current token: the result rows are written in the same
//                          transaction, exactly once
//   leased   -> queued     deadline passed (attempt "stale") or fail(retryable): back-off
//                          min(backoff * 2^(failures-1), backoff_cap) before the next lease; release():
//                          at once, not counted as a failure
//   leased   -> failed     the failure that reaches max_attempts, or fail(not retryable); dependents
//                          (blocked) fail with it
//   blocked/queued -> cancelled   cancel(); leased tasks are told at their next heartbeat and end
//                          cancelled when released, failed or expired (a report is still accepted)
//
// Result documents (report()): a JSON object with any of
//   {"points": [{"key": "<grid point key>", "kept": [0, 1, ...], "dropped": [3, 4],
//                "metrics": {"mmlu": 0.45, "loss": 2.1},                  numbers only
//                "items": [{"task": "mmlu", "correct": true, ...}, ...],  optional, stored per item
//                "healing": {...}}],                                      optional, stored as is
//    "distances": {...},                                                  distances tasks: the table
//    "provenance": {"code_version": "...", "model_sha256": "...", "data_sha256": {...}, "config": {...}}}
// An evaluate/heal report must have every point of its task exactly once and no other; a distances report
// must have "distances". Anything else is rejected with the reason and nothing is written.
//
// Times are milliseconds of the injected clock (wall clock by default: they must survive a restart).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "proto/records.h"
#include "coordinator/sqlite.h"
#include "experiment/submission.h"

namespace layerprune {

struct StoreOptions {
  int64_t lease_ms = 60'000;        // a lease lasts this long after each heartbeat
  int max_attempts = 3;             // failed + stale attempts before a task fails (released ones do not count)
  int64_t backoff_ms = 5'000;       // first retry delay; doubles with each failure
  int64_t backoff_cap_ms = 600'000;
  // Milliseconds since the Unix epoch. Tests inject their own.
  std::function<int64_t()> clock;
};

// The schema version this code writes (the last migration's number).
int store_schema_version();
// The schema as SQLite records it (sqlite_master, ordered by name): what tests/golden/schema.sql holds.
std::string schema_dump(sqlite::Database& db);

// An id the database does not know (experiment, worker): NOT_FOUND on the wire.
struct NotFound : InputError {
  using InputError::InputError;
};
// The experiment name exists with a different configuration: ALREADY_EXISTS on the wire.
struct ExperimentExists : InputError {
  using InputError::InputError;
};

// The deepest nesting of arrays and objects a JSON document from a client may have (the experiment, the
// plan's points and tasks, a result document). nlohmann's dump() recurses once per level, so a document
// nested some ten thousand levels deep (a request of a few tens of KB) overflowed the stack of the thread
// that printed it: the coordinator crashed. Real documents nest fewer than ten levels.
constexpr int kMaxJsonDepth = 100;
// (They are read with formats/json_input.h's parse_json_input at this depth.)

class Store {
 public:
  // Opens or creates the database and applies pending migrations. A database written by a newer
  // layerprune (higher schema version) is refused with a message saying so.
  Store(const std::string& path, StoreOptions options = {});

  const StoreOptions& options() const { return options_; }
  int64_t now() const { return options_.clock(); }
  int schema_version();
  sqlite::Database& database() { return db_; }

  // ---- users ----
  // Idempotent for the same name and configuration; InputError for the same name with a different one,
  // and for a plan that is not well formed (duplicate keys, unknown dependencies or points, ...).
  SubmitOutcome submit(const Submission& submission);
  // InputError for an unknown id.
  CancelOutcome cancel(int64_t experiment_id);
  ExperimentStatus status(int64_t experiment_id, bool include_tasks);
  std::vector<ExperimentStatus> list();
  // Filters are optional ("" = all).
  std::vector<ResultRow> results(int64_t experiment_id, const std::string& model = "", const std::string& point = "");
  nlohmann::json eval_items(int64_t experiment_id, const std::string& point = "");
  nlohmann::json distances(int64_t experiment_id, const std::string& model = "");
  nlohmann::json provenance(int64_t experiment_id);

  // ---- workers ----
  std::string register_worker(const WorkerInfo& info);
  // The next ready task (dependencies done, not in back-off), preferring `loaded_model`, then experiment
  // and plan order; nullopt when none. InputError for an unknown worker id.
  // tp > 0: only tasks whose model runs at that tensor-parallel size (a worker group's size); 0: any.
  std::optional<Lease> lease(const std::string& worker_id, const std::string& loaded_model, int tp = 0);
  HeartbeatAnswer heartbeat(const std::string& worker_id, int64_t task_id, int64_t token,
                            const std::string& checkpoint);
  Verdict report(const std::string& worker_id, int64_t task_id, int64_t token, const std::string& result_json);
  Verdict fail(const std::string& worker_id, int64_t task_id, int64_t token, const std::string& error,
               bool retryable);
  Verdict release(const std::string& worker_id, int64_t task_id, int64_t token, const std::string& checkpoint,
                  const std::string& reason);

  // ---- time ----
  // Marks every lease whose deadline has passed stale and re-queues (or fails) its task. Returns how many.
  int64_t expire_leases();
  // On start-up: every open lease gets a fresh deadline (now + lease_ms), since its worker could not
  // heartbeat while no coordinator was running. Returns how many.
  int64_t renew_open_leases();
  // No task anywhere is blocked, queued or leased.
  bool drained();

 private:
  enum class Check { kCurrent, kDuplicate, kRejected };
  // Is `token` the current, unexpired lease of `task_id` held by `worker_id`? An expired one is expired
  // here (so the caller must commit). `ended_as`: the attempt outcome that makes this call a duplicate.
  Check check_lease(const std::string& worker_id, int64_t task_id, int64_t token, const char* ended_as,
                    std::string* reason);
  int64_t expire_due(int64_t now);
  // Ends a running attempt and moves its task on: done is not handled here; failures re-queue with
  // back-off or fail the task; releases re-queue at once; a cancelled experiment's task ends cancelled.
  void end_attempt(int64_t attempt_id, int64_t task_id, const std::string& outcome, const std::string& error,
                   const std::string& checkpoint, bool retryable);
  void fail_task(int64_t task_id, const std::string& error);
  void unblock_dependents(int64_t task_id);
  Lease grant(int64_t task_id, const std::string& worker_id);
  void require_experiment(int64_t experiment_id);
  void require_worker(const std::string& worker_id);

  StoreOptions options_;
  sqlite::Database db_;
};

}  // namespace layerprune
