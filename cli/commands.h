// The subcommands of `layerprune`. Each takes its own argv (argv[0] = the subcommand name) and returns
// the exit status; errors propagate as exceptions (InputError/UsageError -> 2, anything else -> 1).
#pragma once
#include <string>

#include "experiment/pruning.h"

namespace layerprune::cli {

int cancel(int argc, char** argv);
int check(int argc, char** argv);
int convert(int argc, char** argv);
int curves(int argc, char** argv);
int distances(int argc, char** argv);
int eval(int argc, char** argv);
int generate(int argc, char** argv);
int heal(int argc, char** argv);
int locate(int argc, char** argv);
int loss(int argc, char** argv);
int make_model(int argc, char** argv);
int plan(int argc, char** argv);
int prune(int argc, char** argv);
int results(int argc, char** argv);
int run(int argc, char** argv);
int slurm(int argc, char** argv);
int status(int argc, char** argv);
int submit(int argc, char** argv);
int sweep(int argc, char** argv);

// The paper's Figure 1c for one model: d(l, n) over start layer l and block size n, l*(n) marked.
std::string distance_heatmap_svg(const DistanceTable& table, const std::string& model);

}  // namespace layerprune::cli
