// Experiments: the YAML a user writes, the grid it expands to, and the tasks that compute the grid.
// Torch-free (the coordinator links it; so do the CLI and the worker).
//
//   experiment YAML --parse_experiment--> Experiment --plan_experiment--> ExperimentPlan {points, tasks}
//
// Grid: models x pruning depths n x strategies x healing variants x seeds (cartesian product), with
// duplicates merged: n = 0 is the unpruned model, the same for every strategy (strategy "none"), and
// fractions that round to the same n are one point. n from a fraction f: round(f * L), halves up
// (experiment/pruning.h), L read from the model's config.json.
//
// Tasks (what a worker leases; each produces results for some grid points):
//   distances  one per (model, calibration): the layer-distance table and block influence. Every similarity
//              and block_influence point of the model depends on it (its dropped layers come from it).
//   evaluate   one per (model, seed): every no-healing point of the model in one shared-prefix sweep
//              (method/sweep.h). Depends on the model's distances task when it has such points.
//   heal       one per healed point: prune, QLoRA-heal (resumable checkpoints), evaluate.
//              Depends on the distances task for the similarity and block_influence strategies.
// A task's payload is everything a worker needs besides its dependencies' results, which the coordinator
// attaches to the lease (the distances result for evaluate/heal tasks).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace layerprune {

struct ModelSpec {
  std::string name;            // unique within the experiment; used in keys ("stories260k")
  std::string path;            // Hugging Face directory, or the checkpoint file of format llama2c or gguf
  std::string format = "hf";   // "hf" | "llama2c" | "gguf" (the last two converted to an HF directory before submission)
  std::string tokenizer;       // llama2c only: the SentencePiece tokenizer.model
  std::string dtype = "bfloat16";  // "float32" | "bfloat16"
  int tp = 1;                  // tensor-parallel ranks per worker group
  // Where each rank runs it (common/device_name.h): "cpu", "cuda" (each rank the GPU of its local rank on
  // its node; a TP group on GPUs talks NCCL) or "cuda:N".
  std::string device = "cpu";
  int64_t layers = 0;          // L (num_hidden_layers), filled by plan_experiment from the resolver
};

struct CalibrationSpec {       // method/distances.h CalibrationRecipe + its data file
  std::string data;
  int64_t samples = 64, seq_len = 512;
  uint64_t seed = 0;
};

struct HealingSpec {
  std::string name = "off";    // key in the grid: "off" or the YAML's name (default "qlora")
  bool enabled = false;
  // LoRA (model/lora.h LoraConfig)
  std::string quant = "nf4";   // "none" | "nf4"
  int64_t rank = 64;           // the paper's App. A.1 default (it names other ranks for some models)
  double alpha = 0;            // 0: alpha = rank
  double dropout = 0.05;
  std::vector<std::string> targets = {"gate_proj", "up_proj", "down_proj"};
  // Trainer (healing/trainer.h TrainConfig) and its data
  std::string train_data;      // C4-style JSONL ("text") or plain text
  // The part of train_data's token stream to train on, as fractions [begin, end) (e.g. [0, 0.9], leaving the
  // rest for a held-out loss with EvaluationSpec::loss_range [0.9, 1]).
  double train_begin = 0.0, train_end = 1.0;
  int64_t steps = 5000, global_batch = 16, micro_batch = 4, seq_len = 512, warmup = 100;
  double lr = 3e-4, min_lr_ratio = 0.0;  // peak LR: the paper's App. A.1 default
  int64_t checkpoint_every = 100;
  // Also heal the unpruned model (n = 0): fine-tuning alone, a point of its own. false saves a full
  // healing run per model; the healed curves then start from the unpruned model's numbers.
  bool heal_unpruned = true;
  // The pruning depths this healing runs at, as fractions or as n (each must be one of pruning's depths);
  // both empty: every depth. Healing is the expensive part of a sweep: a few depths draw its curve.
  std::vector<double> fractions;
  std::vector<int64_t> layer_counts;
};

struct EvaluationSpec {
  bool mmlu = false;
  std::string mmlu_data;
  int64_t mmlu_shots = 5, mmlu_limit = 0;  // limit: questions per subject (0: all)
  std::vector<std::string> mmlu_subjects;  // empty: all
  bool boolq = false;
  std::string boolq_data;
  int64_t boolq_limit = 0;
  bool loss = false;
  std::string loss_data;
  int64_t loss_seq_len = 512, loss_windows = 0;  // windows: 0 = all
  double loss_begin = 0.0, loss_end = 1.0;        // the part of loss_data's token stream, as fractions
  int64_t batch_size = 8;
};

// How `layerprune slurm` launches the experiment on a Slurm cluster (deploy/slurm/slurm_jobs.h): the YAML's
// optional `slurm:` section. Launch settings, not science: not part of Experiment::to_json, so changing them
// neither changes the experiment's identity nor its results.
struct SlurmSpec {
  std::string partition, account, qos, constraint;  // "" = the site's default (no #SBATCH line)
  std::string time = "24:00:00";    // per worker job attempt ([D-]HH:MM:SS); a requeued attempt gets it again
  std::string coordinator_time;     // the coordinator job's limit ("" = time)
  std::string coordinator = "job";  // "job": a one-CPU coordinator job; "login": on the submitting host
  int64_t groups = 1;               // worker array tasks per TP size, each one tensor-parallel group
  int64_t max_running = 0;          // array throttle (%N); 0 = no limit
  int64_t gpus_per_rank = 0;        // --gpus-per-task
  int64_t cpus_per_rank = 1;        // --cpus-per-task (the worker's --threads)
  std::string mem;                  // per node (--mem), "" = the site's default
  int64_t warning_seconds = 300;    // --signal=B:USR1@N: checkpoint and requeue this long before the limit
  std::string mpi = "pmix";         // srun --mpi=
  int64_t lease_seconds = 120;      // the coordinator's lease (a dead worker's task is re-leased after it)
  std::vector<std::string> sbatch_args;  // extra #SBATCH lines, e.g. "--exclusive"
  std::string setup;                // shell lines run before the programs (module load ..., source venv)
};

struct Experiment {
  std::string name;
  std::string source;          // the YAML file (for messages), "" when parsed from a string
  std::vector<ModelSpec> models;
  std::vector<double> fractions;    // exactly one of fractions / layer_counts is non-empty
  std::vector<int64_t> layer_counts;
  std::vector<std::string> strategies = {"similarity", "simple"};
  std::vector<HealingSpec> healing;  // at least one; {"off"} when the YAML has no healing section
  CalibrationSpec calibration;
  EvaluationSpec evaluation;
  std::vector<uint64_t> seeds = {0};
  SlurmSpec slurm;             // the `slurm:` section (defaults when absent); not part of to_json
  // Where fields came from in the YAML ("models[0].path" -> "exp.yaml:7:11"), so that errors found later
  // (plan_experiment: n >= L, a missing model) point at the line to edit. Not part of the JSON.
  std::map<std::string, std::string> locations;

  // Canonical JSON (every field, defaults filled in): stored with the experiment (provenance) and
  // round-trips through from_json.
  nlohmann::json to_json() const;
  static Experiment from_json(const nlohmann::json& j);
};

struct GridPoint {
  std::string key;             // stable and unique: "stories260k/n=2/similarity/off/seed=0"
  std::string model;
  int64_t n = 0;               // layers dropped
  int64_t layers = 0;          // L of the model
  std::string strategy;        // "similarity" | "simple" | "block_influence" | "none" (n = 0)
  std::string healing;         // HealingSpec::name
  uint64_t seed = 0;
  double fraction() const { return layers > 0 ? double(n) / double(layers) : 0.0; }
  nlohmann::json to_json() const;
};

struct TaskSpec {
  std::string key;             // unique in the experiment: "distances/stories260k", "evaluate/stories260k/seed=0",
                               // "heal/stories260k/n=2/similarity/qlora/seed=0"
  std::string kind;            // "distances" | "evaluate" | "heal"
  std::string model;           // ModelSpec::name (workers that hold this model loaded prefer its tasks)
  std::vector<std::string> depends_on;  // task keys that must succeed first
  std::vector<std::string> points;      // grid point keys this task reports results for (none: distances)
  nlohmann::json payload;      // {"model": ModelSpec json, "calibration"|"evaluation"|"healing": ..., "points": [GridPoint json]}
};

// The most grid points one experiment may have (plan_experiment refuses more, with the count).
constexpr int64_t kMaxGridPoints = 1'000'000;

struct ExperimentPlan {
  Experiment experiment;       // with ModelSpec::layers filled
  std::vector<GridPoint> points;
  std::vector<TaskSpec> tasks;  // dependencies before dependents
};

// The specs as JSON objects, one key per struct field with the field's name (task payloads carry them;
// nlohmann's ADL hooks, so `json j = spec;` and `j.get<ModelSpec>()` work). from_json fills absent keys with
// the defaults and throws InputError naming the field on a wrong type.
void to_json(nlohmann::json& j, const ModelSpec& m);
void from_json(const nlohmann::json& j, ModelSpec& m);
void to_json(nlohmann::json& j, const CalibrationSpec& c);
void from_json(const nlohmann::json& j, CalibrationSpec& c);
void to_json(nlohmann::json& j, const HealingSpec& h);
void from_json(const nlohmann::json& j, HealingSpec& h);
void to_json(nlohmann::json& j, const EvaluationSpec& e);
void from_json(const nlohmann::json& j, EvaluationSpec& e);
// The inverse of GridPoint::to_json (both in submission.cc); InputError naming a missing or mistyped field.
void from_json(const nlohmann::json& j, GridPoint& p);

// Syntax and schema errors throw InputError "<source>:<line>:<column>: <what was expected>".
// Paths: ${VAR} expands from the environment (${LAYERPRUNE_DATA} defaults to the first data root of
// common/data_locator.h); relative paths resolve against the YAML file's directory.
Experiment parse_experiment(const std::string& yaml_text, const std::string& source = "");
Experiment parse_experiment_file(const std::string& path);

// L for a model; the default reads path/config.json (or the llama2.c header) and throws InputError naming
// the model and path when it cannot.
using LayerResolver = std::function<int64_t(const ModelSpec&)>;
int64_t default_layer_resolver(const ModelSpec& model);

// The grid and its tasks. InputError for n >= L, duplicate model names, and the like.
ExperimentPlan plan_experiment(const Experiment& experiment, const LayerResolver& resolver = default_layer_resolver);

}  // namespace layerprune
