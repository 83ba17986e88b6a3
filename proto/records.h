// What the coordinator hands out and answers, as plain values: shared by the store (which produces them),
// the gRPC service (which puts them on the wire) and the client (which reads them back). No SQLite, no
// gRPC, no LibTorch here.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace layerprune {

// A worker as it introduces itself.
struct WorkerInfo {
  std::string name, host, code_version;
  int64_t pid = 0;
};

// One task leased to one worker until `lease_ms` after the last heartbeat.
struct Lease {
  int64_t task_id = 0;
  std::string task_key, kind, model;
  int64_t experiment_id = 0;
  std::string experiment;
  nlohmann::json payload;       // TaskSpec::payload as submitted
  nlohmann::json points;        // [{"key","model","n","layers","strategy","healing","seed"}] to report
  nlohmann::json dependencies;  // {"<task key>": accepted result document} per dependency
  int attempt = 0;              // 1 for the first lease of the task
  std::string checkpoint;       // last checkpoint reported for this task: resume from it ("" if none)
  int64_t token = 0;            // fencing token: monotonic over the whole database, never reused
  int64_t lease_ms = 0;
};

// The answer to a heartbeat.
enum class LeaseAction { kContinue, kCancel, kLost };
struct HeartbeatAnswer {
  LeaseAction action = LeaseAction::kContinue;
  std::string reason;
  int64_t lease_ms = 0;
};

// The answer to report / fail / release.
struct Verdict {
  bool accepted = false;
  bool duplicate = false;  // the same token's report (fail, release) was already recorded
  std::string reason;      // why not accepted
  std::string task_state;  // fail: the task's state afterwards
};

struct TaskStatus {
  std::string key, kind, model, state, worker, error;
  int attempts = 0, failures = 0;
};

struct ExperimentStatus {
  int64_t experiment_id = 0;
  std::string name;
  std::string state;                   // running | done | failed | cancelled
  std::map<std::string, int64_t> task_counts;  // per task state
  int64_t points_total = 0, points_done = 0;
  bool finished = false;               // nothing blocked, queued or leased
  int64_t created_ms = 0;
  std::vector<TaskStatus> tasks;       // when asked for
};

struct CancelOutcome {
  int64_t cancelled = 0, leased = 0;
};

struct SubmitOutcome {
  int64_t experiment_id = 0;
  bool existed = false;
  int64_t points = 0, tasks = 0;
};

// One metric of one grid point.
struct ResultRow {
  std::string point, model;
  int64_t n = 0, layers = 0;
  std::string strategy, healing;
  uint64_t seed = 0;
  std::string metric;
  double value = 0;
  bool operator==(const ResultRow& o) const {
    return point == o.point && model == o.model && n == o.n && layers == o.layers && strategy == o.strategy &&
           healing == o.healing && seed == o.seed && metric == o.metric && value == o.value;
  }
};

}  // namespace layerprune
