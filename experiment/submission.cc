#include "experiment/submission.h"

#include "common/error.h"

namespace layerprune {

namespace {
template <typename T>
T field(const nlohmann::json& j, const char* name, const char* what) {
  if (!j.is_object() || !j.contains(name))
    throw InputError(std::string(what) + ": missing field \"" + name + "\" in " + j.dump().substr(0, 200));
  try {
    return j.at(name).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw InputError(std::string(what) + ": field \"" + name + "\" has the wrong type in " +
                     j.dump().substr(0, 200));
  }
}
}  // namespace

Submission make_submission(const ExperimentPlan& plan, std::string experiment_json) {
  return Submission{plan.experiment.name, std::move(experiment_json), plan.points, plan.tasks};
}

nlohmann::json GridPoint::to_json() const {
  return {{"key", key},   {"model", model},       {"n", n},           {"layers", layers}, {"fraction", fraction()},
          {"strategy", strategy}, {"healing", healing}, {"seed", seed}};
}

void from_json(const nlohmann::json& j, GridPoint& p) {
  p.key = field<std::string>(j, "key", "grid point");
  p.model = field<std::string>(j, "model", "grid point");
  p.n = field<int64_t>(j, "n", "grid point");
  p.layers = field<int64_t>(j, "layers", "grid point");
  p.strategy = field<std::string>(j, "strategy", "grid point");
  p.healing = field<std::string>(j, "healing", "grid point");
  p.seed = field<uint64_t>(j, "seed", "grid point");
}

nlohmann::json task_spec_json(const TaskSpec& t) {
  return {{"key", t.key},     {"kind", t.kind},           {"model", t.model},
          {"depends_on", t.depends_on}, {"points", t.points}, {"payload", t.payload}};
}

TaskSpec task_spec_from_json(const nlohmann::json& j) {
  TaskSpec t;
  t.key = field<std::string>(j, "key", "task");
  t.kind = field<std::string>(j, "kind", "task");
  t.model = field<std::string>(j, "model", "task");
  t.depends_on = field<std::vector<std::string>>(j, "depends_on", "task");
  t.points = field<std::vector<std::string>>(j, "points", "task");
  t.payload = j.is_object() && j.contains("payload") ? j.at("payload") : nlohmann::json::object();
  return t;
}

nlohmann::json points_json(const std::vector<GridPoint>& points) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& p : points) a.push_back(p.to_json());
  return a;
}

nlohmann::json tasks_json(const std::vector<TaskSpec>& tasks) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& t : tasks) a.push_back(task_spec_json(t));
  return a;
}

std::vector<GridPoint> points_from_json(const nlohmann::json& j) {
  if (!j.is_array()) throw InputError("grid points: expected a JSON array");
  std::vector<GridPoint> v;
  v.reserve(j.size());
  for (const auto& p : j) v.push_back(p.get<GridPoint>());
  return v;
}

std::vector<TaskSpec> tasks_from_json(const nlohmann::json& j) {
  if (!j.is_array()) throw InputError("tasks: expected a JSON array");
  std::vector<TaskSpec> v;
  v.reserve(j.size());
  for (const auto& t : j) v.push_back(task_spec_from_json(t));
  return v;
}

}  // namespace layerprune
