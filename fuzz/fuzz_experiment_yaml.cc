// libFuzzer target: an experiment YAML (experiment/experiment.h parse_experiment), then what `layerprune
// run` does with an accepted one before anything reaches a coordinator: plan_experiment (with the real layer
// resolver, falling back to 12 layers where it finds no model), the canonical JSON and the plan's wire form (experiment/submission.h),
// each serialised and read back.
#include <cstddef>
#include <cstdint>
#include <string>

#include <stdlib.h>

#include "experiment/experiment.h"
#include "experiment/submission.h"
#include "fuzz_support.h"

using namespace layerprune;

// The variables the seeds' ${VAR}s name, fixed so that a run does not depend on the caller's environment.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("LAYERPRUNE_DATA", "/data", 1);
  setenv("MODELS", "/models", 1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  lpfuzz::accept_input_errors([&] {
    const Experiment e = parse_experiment(text, "fuzz.yaml");
    // The real resolver first (it reads the header or config a path names, so a path that is not there is
    // its InputError), then 12 layers for every model, so the plan goes on without files.
    const ExperimentPlan plan = plan_experiment(e, [](const ModelSpec& m) {
      try {
        return default_layer_resolver(m);
      } catch (const InputError&) {
        return int64_t(12);
      }
    });
    LPFUZZ_CHECK(!plan.points.empty(), "a plan has points");
    LPFUZZ_CHECK(int64_t(plan.points.size()) <= kMaxGridPoints, "the grid limit holds");
    const std::string experiment_json = plan.experiment.to_json().dump();
    const Experiment again = Experiment::from_json(nlohmann::json::parse(experiment_json));
    LPFUZZ_CHECK(again.to_json().dump() == experiment_json, "the experiment's JSON round trip");
    const Submission s = make_submission(plan, experiment_json);
    const std::string points = points_json(s.points).dump(), tasks = tasks_json(s.tasks).dump();
    LPFUZZ_CHECK(points_json(points_from_json(nlohmann::json::parse(points))).dump() == points, "points round trip");
    LPFUZZ_CHECK(tasks_json(tasks_from_json(nlohmann::json::parse(tasks))).dump() == tasks, "tasks round trip");
  });
  return 0;
}
