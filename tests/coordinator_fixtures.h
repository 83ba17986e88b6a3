// Plans built by hand for the coordinator's tests and bench (the YAML parser is not needed), and the
// no-op worker's deterministic fake results: what a result must be for a given lease, wherever and
// however often it is computed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/hashing.h"
#include "proto/records.h"
#include "experiment/submission.h"

namespace layerprune::testing {

inline GridPoint make_point(const std::string& model, int64_t n, int64_t layers, const std::string& strategy,
                            const std::string& healing, uint64_t seed = 0) {
  GridPoint p;
  p.model = model;
  p.n = n;
  p.layers = layers;
  p.strategy = n == 0 ? "none" : strategy;
  p.healing = healing;
  p.seed = seed;
  p.key = model + "/n=" + std::to_string(n) + "/" + p.strategy + "/" + healing + "/seed=" + std::to_string(seed);
  return p;
}

// The plan's shape for each model: distances; evaluate (n = 0..2 x similarity/simple, no healing) after
// distances; one heal task per healed depth 1..heal_depths for the simple strategy (no dependency) and the
// similarity strategy (after distances).
inline Submission small_plan(const std::string& name, std::vector<std::string> models = {"m1", "m2"},
                             int heal_depths = 1, int64_t layers = 6) {
  Submission s;
  s.name = name;
  s.experiment_json = nlohmann::json{{"name", name}, {"models", models}, {"layers", layers}}.dump();
  for (const auto& m : models) {
    TaskSpec d;
    d.key = "distances/" + m;
    d.kind = "distances";
    d.model = m;
    d.payload = {{"model", {{"name", m}}}, {"calibration", {{"samples", 4}}}};
    s.tasks.push_back(d);
    TaskSpec e;
    e.key = "evaluate/" + m + "/seed=0";
    e.kind = "evaluate";
    e.model = m;
    e.depends_on = {d.key};
    std::vector<GridPoint> ev = {make_point(m, 0, layers, "none", "off")};
    for (int64_t n = 1; n <= 2; ++n)
      for (const char* strategy : {"similarity", "simple"}) ev.push_back(make_point(m, n, layers, strategy, "off"));
    for (const auto& p : ev) {
      e.points.push_back(p.key);
      s.points.push_back(p);
    }
    e.payload = {{"model", {{"name", m}}}, {"points", points_json(ev)}};
    s.tasks.push_back(e);
    for (int64_t n = 1; n <= heal_depths; ++n)
      for (const char* strategy : {"simple", "similarity"}) {
        GridPoint p = make_point(m, n, layers, strategy, "qlora");
        TaskSpec h;
        h.key = "heal/" + p.key;
        h.kind = "heal";
        h.model = m;
        if (std::string(strategy) == "similarity") h.depends_on = {d.key};
        h.points = {p.key};
        h.payload = {{"model", {{"name", m}}}, {"healing", {{"steps", 10}}}, {"points", points_json({p})}};
        s.tasks.push_back(h);
        s.points.push_back(p);
      }
  }
  return s;
}

// A big flat grid for the bench: `tasks` heal tasks of `points_per_task` points each (no dependencies),
// spread over `models` models.
inline Submission flat_plan(const std::string& name, int64_t tasks, int64_t points_per_task = 1, int models = 4) {
  Submission s;
  s.name = name;
  s.experiment_json = nlohmann::json{{"name", name}, {"tasks", tasks}}.dump();
  s.tasks.reserve(size_t(tasks));
  s.points.reserve(size_t(tasks * points_per_task));
  for (int64_t i = 0; i < tasks; ++i) {
    const std::string m = "m" + std::to_string(i % models);
    TaskSpec t;
    t.key = "heal/" + std::to_string(i);
    t.kind = "heal";
    t.model = m;
    for (int64_t j = 0; j < points_per_task; ++j) {
      GridPoint p = make_point(m, 1 + j, 1 + points_per_task, "simple", "h" + std::to_string(i));
      t.points.push_back(p.key);
      s.points.push_back(p);
    }
    t.payload = {{"model", {{"name", m}}}};
    s.tasks.push_back(std::move(t));
  }
  return s;
}

// A number in [0, 1) from a string: the fake metrics.
inline double fake_value(const std::string& s) {
  return double(std::stoull(sha256_hex(s).substr(0, 12), nullptr, 16)) / double(1ull << 48);
}

// The result a no-op worker reports for a lease: a function of the task and its points only (never of
// the worker, the attempt or the time), so every run of the same plan must store the same rows.
inline nlohmann::json noop_result(const Lease& l, int items_per_point = 3) {
  nlohmann::json r = nlohmann::json::object();
  if (l.kind == "distances")
    r["distances"] = {{"model", l.model}, {"l_star", {fake_value(l.task_key + "/l*"), fake_value(l.model)}}};
  nlohmann::json points = nlohmann::json::array();
  for (const auto& p : l.points) {
    const std::string key = p.at("key").get<std::string>();
    const int64_t n = p.at("n").get<int64_t>(), layers = p.at("layers").get<int64_t>();
    nlohmann::json kept = nlohmann::json::array(), dropped = nlohmann::json::array();
    for (int64_t i = 0; i < layers; ++i) (i >= layers - 1 - n && i < layers - 1 ? dropped : kept).push_back(i);
    nlohmann::json items = nlohmann::json::array();
    for (int i = 0; i < items_per_point; ++i)
      items.push_back({{"task", "boolq"}, {"index", i}, {"correct", fake_value(key + "/item" + std::to_string(i)) < 0.5}});
    nlohmann::json point = {{"key", key},
                            {"kept", kept},
                            {"dropped", dropped},
                            {"metrics", {{"accuracy", fake_value(key + "/accuracy")}, {"loss", 1 + fake_value(key + "/loss")}}},
                            {"items", items}};
    if (l.kind == "heal") point["healing"] = {{"steps", 10}, {"final_loss", fake_value(key + "/heal")}};
    points.push_back(point);
  }
  if (!points.empty()) r["points"] = points;
  r["provenance"] = {{"code_version", "noop"},
                     {"model_sha256", sha256_hex(l.model)},
                     {"data_sha256", {{"calibration", sha256_hex(l.task_key)}}},
                     {"config", l.payload}};
  return r;
}

}  // namespace layerprune::testing
