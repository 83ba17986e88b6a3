// An experiment plan as it travels to the coordinator: the experiment's canonical JSON (opaque here), its
// grid points and its tasks. The coordinator stores the experiment JSON as given and reads only the
// public fields of GridPoint and TaskSpec (experiment/experiment.h), so it does not link the YAML parser.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "experiment/experiment.h"

namespace layerprune {

struct Submission {
  std::string name;             // Experiment::name
  std::string experiment_json;  // Experiment::to_json().dump()
  std::vector<GridPoint> points;
  std::vector<TaskSpec> tasks;  // plan order: dependencies before dependents
};

// The plan's parts in wire form. The experiment JSON is passed in, not computed, so that callers that
// do not link the experiment library (tests, the bench) can build a Submission by hand.
Submission make_submission(const ExperimentPlan& plan, std::string experiment_json);

// GridPoint <-> {"key","model","n","layers","fraction","strategy","healing","seed"}: GridPoint::to_json and
// from_json (experiment/experiment.h) are defined in submission.cc, the wire form's one home.
// TaskSpec <-> {"key","kind","model","depends_on","points","payload"}.
nlohmann::json task_spec_json(const TaskSpec& t);
TaskSpec task_spec_from_json(const nlohmann::json& j);

nlohmann::json points_json(const std::vector<GridPoint>& points);
nlohmann::json tasks_json(const std::vector<TaskSpec>& tasks);
// InputError naming the field when the JSON does not have the shape above.
std::vector<GridPoint> points_from_json(const nlohmann::json& j);
std::vector<TaskSpec> tasks_from_json(const nlohmann::json& j);

}  // namespace layerprune
