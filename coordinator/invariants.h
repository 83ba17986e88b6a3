// The store's invariants as SQL over its database (coordinator/store.h): each query counts the rows that
// break one, so 0 means it holds. These hold after every committed call whatever the calls were (any order,
// any tokens, any clock), which is what the lease protocol promises; bench/chaos.cc checks them at the end
// of a run full of kills, fuzz/fuzz_coordinator_rpc.cc after every request it feeds the service.
// Header-only: no SQLite or gRPC is needed to include it, only to run the queries.
#pragma once

namespace layerprune {

struct StoreInvariant {
  const char* what;  // what a non-zero count means
  const char* sql;   // SELECT COUNT(*) ... of the rows that break it
};

inline constexpr StoreInvariant kStoreInvariants[] = {
    {"tasks done and still leased",
     "SELECT COUNT(*) FROM tasks t JOIN attempts a ON a.task_id = t.id WHERE t.state = 'done' AND a.outcome = 'running'"},
    {"tasks without exactly one finished attempt when done, or with one when not done",
     "SELECT COUNT(*) FROM tasks t WHERE (SELECT COUNT(*) FROM attempts a WHERE a.task_id = t.id AND a.outcome = 'done') "
     "!= (t.state = 'done')"},
    {"results from an attempt that did not finish",
     "SELECT COUNT(*) FROM results r JOIN attempts a ON a.id = r.attempt_id WHERE a.outcome != 'done'"},
    {"items, tables or provenance from an attempt that did not finish",
     "SELECT (SELECT COUNT(*) FROM eval_items e JOIN attempts a ON a.id = e.attempt_id WHERE a.outcome != 'done') + "
     "(SELECT COUNT(*) FROM distance_tables x JOIN attempts a ON a.id = x.attempt_id WHERE a.outcome != 'done') + "
     "(SELECT COUNT(*) FROM provenance v JOIN attempts a ON a.id = v.attempt_id WHERE a.outcome != 'done')"},
    {"results accepted from a stale attempt (not the task's last: its fencing token was old)",
     "SELECT COUNT(*) FROM results r JOIN grid_points g ON g.id = r.point_id JOIN attempts a ON a.id = r.attempt_id "
     "WHERE a.number != (SELECT MAX(number) FROM attempts b WHERE b.task_id = g.task_id)"},
    {"results, items, tables or provenance written by another task's attempt",
     "SELECT (SELECT COUNT(*) FROM results r JOIN grid_points g ON g.id = r.point_id JOIN attempts a "
     "ON a.id = r.attempt_id WHERE a.task_id != g.task_id) + "
     "(SELECT COUNT(*) FROM eval_items e JOIN grid_points g ON g.id = e.point_id JOIN attempts a "
     "ON a.id = e.attempt_id WHERE a.task_id != g.task_id) + "
     "(SELECT COUNT(*) FROM distance_tables x JOIN attempts a ON a.id = x.attempt_id WHERE a.task_id != x.task_id) + "
     "(SELECT COUNT(*) FROM provenance v JOIN attempts a ON a.id = v.attempt_id WHERE a.task_id != v.task_id)"},
    {"attempts running that are not their task's current lease (a task leased twice, an attempt left open)",
     "SELECT COUNT(*) FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE a.outcome = 'running' "
     "AND (t.state != 'leased' OR t.current_attempt IS NOT a.id)"},
    {"tasks leased without a running current attempt",
     "SELECT COUNT(*) FROM tasks t WHERE t.state = 'leased' AND NOT EXISTS (SELECT 1 FROM attempts a "
     "WHERE a.id = t.current_attempt AND a.task_id = t.id AND a.outcome = 'running')"},
    {"tasks whose attempt count is not their number of attempts",
     "SELECT COUNT(*) FROM tasks t WHERE t.attempt_count != (SELECT COUNT(*) FROM attempts a WHERE a.task_id = t.id)"},
    {"tasks done without a result document",
     "SELECT COUNT(*) FROM tasks WHERE state = 'done' AND result_json IS NULL"},
    {"tasks queued, leased or done before every dependency was done",
     "SELECT COUNT(*) FROM tasks t WHERE t.state IN ('queued', 'leased', 'done') AND EXISTS (SELECT 1 FROM "
     "task_dependencies d JOIN tasks u ON u.id = d.depends_on WHERE d.task_id = t.id AND u.state != 'done')"},
    {"tasks blocked for ever (no dependency left that can still finish)",
     "SELECT COUNT(*) FROM tasks t WHERE t.state = 'blocked' AND NOT EXISTS (SELECT 1 FROM task_dependencies d "
     "JOIN tasks u ON u.id = d.depends_on WHERE d.task_id = t.id AND u.state IN ('blocked', 'queued', 'leased'))"},
    {"tasks of a cancelled experiment still blocked or queued",
     "SELECT COUNT(*) FROM tasks t JOIN experiments e ON e.id = t.experiment_id WHERE e.cancelled_at IS NOT NULL "
     "AND t.state IN ('blocked', 'queued')"},
};

}  // namespace layerprune
