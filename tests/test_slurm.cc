// The Slurm launcher's pure part: the YAML's slurm: section (defaults, values, file:line:column errors) and
// the rendered sbatch scripts, compared byte for byte with recorded golden files (tests/golden/slurm/, as
// submitit keeps a recorded sbatch script) and checked by `bash -n`. The real cluster: test_slurm_cluster.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "common/text_file.h"
#include "experiment/experiment.h"
#include "deploy/slurm/slurm_jobs.h"
#include "tests/test_support.h"

namespace layerprune {
namespace {

namespace fs = std::filesystem;

const char* kBase =
    "name: t\n"
    "models:\n"
    "  - {name: m, path: /m, tp: 2}\n"
    "pruning: {layers: [0, 1], strategies: [simple]}\n"
    "evaluation: {loss: {data: /d.txt}}\n";

TEST(SlurmSpec, DefaultsWhenAbsentAndNotPartOfTheExperimentsIdentity) {
  const Experiment e = parse_experiment(kBase, "t.yaml");
  EXPECT_EQ(e.slurm.coordinator, "job");
  EXPECT_EQ(e.slurm.groups, 1);
  EXPECT_EQ(e.slurm.mpi, "pmix");
  EXPECT_EQ(e.slurm.warning_seconds, 300);
  const Experiment with = parse_experiment(std::string(kBase) + "slurm: {groups: 4, partition: gpu}\n", "t.yaml");
  EXPECT_EQ(with.slurm.groups, 4);
  EXPECT_EQ(with.slurm.partition, "gpu");
  EXPECT_EQ(with.to_json(), e.to_json()) << "launch settings must not change the stored experiment";
}

TEST(SlurmSpec, MistakesNameFileLineAndColumn) {
  auto error = [](const std::string& slurm) {
    return testing::input_error([&] { parse_experiment(std::string(kBase) + slurm, "t.yaml"); });
  };
  EXPECT_CONTAINS(error("slurm:\n  time: 2h\n"), "t.yaml:7:9: slurm.time: expected a Slurm time limit");
  EXPECT_CONTAINS(error("slurm:\n  groups: \"2\"\n"), "t.yaml:7:11: slurm.groups: expected an integer >= 1");
  EXPECT_CONTAINS(error("slurm:\n  gruops: 2\n"), "unknown key 'gruops' (did you mean 'groups'?)");
  EXPECT_CONTAINS(error("slurm:\n  coordinator: head\n"), "expected one of job, login");
  EXPECT_CONTAINS(error("slurm:\n  partition: \"gpu; rm -rf /\"\n"), "slurm.partition: expected a partition name");
  EXPECT_CONTAINS(error("slurm:\n  mem: 64 GB\n"), "expected a memory size per node");
  EXPECT_CONTAINS(error("slurm:\n  sbatch_args: [exclusive]\n"), "expected an sbatch option starting with '--'");
  // Valid time formats.
  for (const char* t : {"30", "30:00", "2:00:00", "1-12", "1-12:30", "7-00:00:00"})
    EXPECT_EQ(parse_experiment(std::string(kBase) + "slurm: {time: \"" + t + "\"}\n", "t.yaml").slurm.time, t);
}

// Renders `yaml` with fixed paths and compares each script with tests/golden/slurm/<dir>/<script>.
// LAYERPRUNE_UPDATE_GOLDEN=1 rewrites them instead (review the diff); so does the command in
// tests/golden/README.md.
void expect_golden(const std::string& yaml, const std::string& dir, const std::vector<std::string>& names) {
  setenv("MODELS", "/shared/models", 1);
  const Experiment e = parse_experiment_file(testing::source_file(yaml));
  SlurmPaths p;
  p.experiment = "/shared/layerprune/" + yaml;
  p.state = "/shared/runs/" + e.name;
  p.layerprune = "/opt/layerprune/bin/layerprune";
  p.coordinator = "/opt/layerprune/bin/layerprune-coordinator";
  p.worker = "/opt/layerprune/bin/layerprune-worker";
  const std::vector<SlurmScript> scripts = render_slurm_jobs(e, p);
  ASSERT_EQ(scripts.size(), names.size());
  testing::TempDir tmp;
  for (size_t i = 0; i < scripts.size(); ++i) {
    EXPECT_EQ(scripts[i].name, names[i]);
    const std::string golden = testing::source_file("tests/golden/slurm/" + dir + "/" + scripts[i].name);
    if (const char* u = std::getenv("LAYERPRUNE_UPDATE_GOLDEN"); u && std::string(u) == "1") {
      fs::create_directories(fs::path(golden).parent_path());
      write_file(golden, scripts[i].text);
    }
    EXPECT_EQ(scripts[i].text, read_file(golden)) << "rendered " << scripts[i].name << " differs from " << golden;
    // Valid shell.
    write_file(tmp.file(scripts[i].name), scripts[i].text);
    EXPECT_EQ(std::system(("bash -n " + tmp.file(scripts[i].name)).c_str()), 0) << scripts[i].text;
    // Whole: both end by passing on the programs' exit status (a golden file regenerated from a script that
    // lost its tail once passed the comparison above).
    const std::string tail = "\nexit $status\n";
    EXPECT_EQ(scripts[i].text.substr(scripts[i].text.size() - std::min(scripts[i].text.size(), tail.size())), tail)
        << scripts[i].name;
  }
}

TEST(SlurmRender, Llama2_70bPaperMatchesGolden) {
  expect_golden("experiments/llama2-70b-paper.yaml", "llama2-70b-paper", {"coordinator.sbatch", "workers-tp8.sbatch"});
}

TEST(SlurmRender, LoginCoordinatorAndTwoTpSizesMatchGolden) {
  expect_golden("tests/golden/slurm/cpu-two-tp.yaml", "cpu-two-tp", {"workers-tp1.sbatch", "workers-tp2.sbatch"});
}

TEST(SlurmRender, WhatTheScriptsAsk) {
  const Experiment e = parse_experiment(std::string(kBase) +
                                            "slurm: {groups: 5, max_running: 2, gpus_per_rank: 1, warning_seconds: 0}\n",
                                        "t.yaml");
  const std::vector<SlurmScript> s = render_slurm_jobs(e, SlurmPaths{"/e.yaml", "/s", "/b/lp", "/b/c", "/b/w"});
  ASSERT_EQ(s.size(), 2u);
  const std::string& w = s[1].text;
  EXPECT_CONTAINS(w, "#SBATCH --array=0-4%2\n");
  EXPECT_CONTAINS(w, "#SBATCH --ntasks=2\n");
  EXPECT_CONTAINS(w, "#SBATCH --gpus-per-task=1\n");
  EXPECT_CONTAINS(w, "#SBATCH --requeue\n");
  EXPECT_CONTAINS(w, "srun --mpi=pmix --kill-on-bad-exit=1 /b/w --tp 2");
  EXPECT_EQ(w.find("#SBATCH --signal"), std::string::npos) << "warning_seconds: 0 asks for no warning signal";
  EXPECT_CONTAINS(s[0].text, "--listen 0.0.0.0:0 \\\n    --token-file");
}

TEST(SlurmRender, ShellQuoting) {
  EXPECT_EQ(shell_quote("/a/b-c_d.e"), "/a/b-c_d.e");
  EXPECT_EQ(shell_quote("/my runs/x"), "'/my runs/x'");
  EXPECT_EQ(shell_quote("it's"), "'it'\\''s'");
  EXPECT_EQ(shell_quote(""), "''");
}

}  // namespace
}  // namespace layerprune
