#!/usr/bin/env bash
# The main job: set-up, then the paper's sweep on a real, trained 30-layer Llama, SmolLM2-135M-Instruct
# (experiments/smollm2-135m.yaml): layer distances, every pruning fraction 0..0.9 with both strategies,
# without healing and with a short QLoRA healing at two depths, MMLU / BoolQ / loss for each, run by a local
# coordinator and an MPI worker group, printing the curves (tables + SVG). About 18 minutes on 2 cores.
#   EXPERIMENT=experiments/stories260k.yaml bash deploy/demo.sh   # the quick one (about 2 minutes)
# Data comes from $LAYERPRUNE_DATA (default ../shared/data) or the download cache (deploy/download_data.sh).
# Ctrl-C stops it cleanly; running it again resumes from out/<experiment>.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
export LAYERPRUNE_DATA=${LAYERPRUNE_DATA:-$(cd .. && pwd)/shared/data}
export OMP_WAIT_POLICY=PASSIVE  # see model/runtime.h
LP=${BUILD_DIR:-build}/cli/layerprune
EXPERIMENT=${EXPERIMENT:-experiments/smollm2-135m.yaml}
"$LP" run "$EXPERIMENT" --state "${OUT:-out/$(basename "$EXPERIMENT" .yaml)}"
