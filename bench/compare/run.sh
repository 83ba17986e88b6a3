#!/usr/bin/env bash
# layerprune vs what a user would run instead (transformers eager, lm-evaluation-harness), in one run:
# (1) 110M prefill, (2) MMLU 5-shot on the same items, (3) a 20-variant no-healing BoolQ sweep.
# Not part of CI. See bench/compare/README.md.
#
#   bench/compare/run.sh [--threads N] [--work DIR] [--setup-only] [compare.py flags...]
#
# The Python side lives in its own venv, ${LAYERPRUNE_COMPARE_VENV:-$HOME/.cache/layerprune/compare-venv},
# created here with /usr/bin/python3 -m venv and pinned PyPI packages on first use. The binaries come from
# the build tree (build/cli/layerprune, build/bench/bench_prefill; --layerprune / --bench-prefill override).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${LAYERPRUNE_COMPARE_VENV:-$HOME/.cache/layerprune/compare-venv}
# Pins: torch 2.11.0 is the LibTorch the build links (PyPI wheel, MKL inside); transformers 5.24.0 is the
# newest that resolves with it here (5.25.0 needs kernels>=0.19.1, not on this index); lm-eval 0.4.13 is
# the version PLATFORM.md documents ([hf] brings accelerate and peft, which its hf model needs).
pins=(torch==2.11.0 transformers==5.24.0 "lm-eval[hf]==0.4.13" safetensors==0.8.0 sentencepiece==0.2.3
      protobuf==7.36.2 numpy==2.4.6)
stamp="$venv/.layerprune-compare-pins"

setup_only=0
work=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --setup-only) setup_only=1 ;;
    --work) work=$2; shift ;;
    --work=*) work=${1#--work=} ;;
    *) args+=("$1") ;;
  esac
  shift
done

if [ ! -x "$venv/bin/python" ]; then
  echo "compare: creating $venv" >&2
  /usr/bin/python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
  echo "compare: installing ${pins[*]} into $venv (minutes on first use: torch pulls ~4 GB of CUDA wheels)" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
  echo "${pins[*]}" > "$stamp"
fi
[ "$setup_only" = 1 ] && { echo "compare: venv ready: $venv" >&2; exit 0; }

for b in "$root/build/cli/layerprune" "$root/build/bench/bench_prefill"; do
  [ -x "$b" ] || { echo "compare: $b is not built (cmake --build build)" >&2; exit 2; }
done
work=${work:-${TMPDIR:-/tmp}/layerprune-compare}
mkdir -p "$work"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$venv/bin/python" "$here/compare.py" --work "$work" ${args[@]+"${args[@]}"}
