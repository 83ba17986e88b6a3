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
CREATE TABLE distance_tables (
  task_id INTEGER PRIMARY KEY REFERENCES tasks(id),
  model TEXT NOT NULL,
  table_json TEXT NOT NULL,
  attempt_id INTEGER NOT NULL REFERENCES attempts(id)
);
CREATE TABLE eval_items (
  point_id INTEGER NOT NULL REFERENCES grid_points(id),
  item_index INTEGER NOT NULL,
  task TEXT NOT NULL,
  correct INTEGER,
  record_json TEXT NOT NULL,
  attempt_id INTEGER NOT NULL REFERENCES attempts(id),
  PRIMARY KEY (point_id, item_index)
) WITHOUT ROWID;
CREATE TABLE experiments (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  config_json TEXT NOT NULL,
  config_sha256 TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  cancelled_at INTEGER
);
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
CREATE TABLE provenance (
  task_id INTEGER PRIMARY KEY REFERENCES tasks(id),
  code_version TEXT NOT NULL,
  model_sha256 TEXT NOT NULL,
  data_sha256_json TEXT NOT NULL,
  config_json TEXT NOT NULL,
  document_json TEXT NOT NULL,
  attempt_id INTEGER NOT NULL REFERENCES attempts(id)
);
CREATE TABLE results (
  point_id INTEGER NOT NULL REFERENCES grid_points(id),
  metric TEXT NOT NULL,
  value REAL NOT NULL,
  attempt_id INTEGER NOT NULL REFERENCES attempts(id),
  PRIMARY KEY (point_id, metric)
) WITHOUT ROWID;
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at INTEGER NOT NULL);
CREATE TABLE sqlite_sequence(name,seq);
CREATE TABLE task_dependencies (
  task_id INTEGER NOT NULL REFERENCES tasks(id),
  depends_on INTEGER NOT NULL REFERENCES tasks(id),
  PRIMARY KEY (task_id, depends_on)
) WITHOUT ROWID;
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
  updated_at INTEGER NOT NULL, tp INTEGER NOT NULL DEFAULT 1,
  UNIQUE (experiment_id, key)
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
CREATE INDEX attempts_running ON attempts(deadline) WHERE outcome = 'running';
CREATE INDEX grid_points_by_task ON grid_points(task_id);
CREATE INDEX task_dependents ON task_dependencies(depends_on, task_id);
CREATE INDEX tasks_by_state ON tasks(state, experiment_id, ordinal);
CREATE INDEX tasks_by_state_model ON tasks(state, model, experiment_id, ordinal);
