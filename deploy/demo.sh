#!/usr/bin/env bash
# The main job: set-up, then the stories260k experiment end to end (experiments/stories260k.yaml): layer
# distances, every pruning depth with both strategies, without and with QLoRA healing, MMLU / BoolQ / loss
# for each, run by a local coordinator and an MPI worker group, printing the curves (tables + SVG).
# Data comes from $LAYERPRUNE_DATA (default ../shared/data) or the download cache (deploy/download_data.sh).
# Ctrl-C stops it cleanly; running it again resumes from out/stories260k.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
export LAYERPRUNE_DATA=${LAYERPRUNE_DATA:-$(cd .. && pwd)/shared/data}
export OMP_WAIT_POLICY=PASSIVE  # see model/runtime.h
LP=${BUILD_DIR:-build}/cli/layerprune
"$LP" run experiments/stories260k.yaml --state "${OUT:-out/stories260k}"
