#!/usr/bin/env bash
# The GPU check (issue 16; docs/gpu.md): builds the model core and the check's programs on their own
# (-DLAYERPRUNE_GPU_CHECK_ONLY=ON: LibTorch, CUDA, CMake and Ninja; no MPI, gRPC, protobuf, SQLite, yaml-cpp)
# and runs, on a CUDA GPU: every CUDA kernel against its CPU reference (test_kernels, test_nf4), the GPU
# against the CPU (test_gpu: stories260K and SmolLM2 logits in float32 and bfloat16, the KV cache,
# logit_positions, a QLoRA step and a GPU checkpoint resumed on the CPU), the NCCL communicator at size 1
# (test_comm_nccl over a SoloCommunicator), and the benchmarks (bench_gpu: bf16 GEMM rate, Llama-2-7B-slice
# prefill, the SmolLM2 no-healing sweep). Then a short report, printed and written to a file.
# Without a GPU it builds, runs the CPU halves of the kernel tests, says so, and exits 0.
#
#   bash deploy/gpu_check.sh [all]        build (incrementally) and run: a GPU cluster node, or this machine
#   bash deploy/gpu_check.sh build        configure and build only
#   bash deploy/gpu_check.sh run          run the checks on the existing build (compiles nothing)
#   bash deploy/gpu_check.sh prepare DIR  on a Debian machine where deploy/setup.sh installed the -dev packages:
#                                         write DIR/part1 and DIR/part2 (each under 55 MiB) with what a bare
#                                         GPU machine lacks: nlohmann-json, PCRE2, utf8proc, GoogleTest sources,
#                                         stories260K, the sweep's data, and SmolLM2's GGUF in two halves
# Environment:
#   LAYERPRUNE_GPU_PREPARED=DIR  the parts copied together (cp -r DIR/part1/. DIR/part2/. P): deps from
#                                P/deps, data from P/data (the GGUF reassembled there and its sha256 checked)
#   LAYERPRUNE_DATA              data directory (default: P/data when prepared, else ../shared/data)
#   GPU_CHECK_BUILD_DIR          build directory (default build-gpucheck)
#   GPU_CHECK_REPORT             report file (default $GPU_CHECK_BUILD_DIR/gpu_check_report.txt)
#   LAYERPRUNE_CUDA_ARCHITECTURES  default: the GPUs' compute capability from nvidia-smi when all are 9.0
#                                (Hopper: 90), else 80;90
#   LAYERPRUNE_PYTHON            a python whose torch to build against (default: the set-up venv, else python3)
#   JOBS (default nproc), CMAKE_ARGS (extra CMake arguments)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-all}
BUILD=${GPU_CHECK_BUILD_DIR:-build-gpucheck}
GGUF_REL=smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

# The CUDA toolkit where images put it, when its nvcc is not on PATH (CMake's CUDA detection looks there).
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi

say() { echo "gpu_check: $*" >&2; }
die() { say "$*"; exit 1; }

# ---- prepare DIR (a Debian machine with the -dev packages) ---------------------------------------------------
prepare() {
  local dir=${1:?usage: gpu_check.sh prepare DIR}
  local data=${LAYERPRUNE_DATA:-$ROOT/../shared/data}
  local lib=/usr/lib/x86_64-linux-gnu
  local need=(/usr/include/nlohmann/json.hpp /usr/include/pcre2.h /usr/include/utf8proc.h "$lib/libpcre2-8.a"
              "$lib/libutf8proc.a" /usr/src/googletest/CMakeLists.txt)
  local f
  for f in "${need[@]}"; do
    [ -e "$f" ] || die "prepare: $f missing (Debian: nlohmann-json3-dev libpcre2-dev libutf8proc-dev libgtest-dev; deploy/setup.sh installs them)"
  done
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  rm -rf "$dir/part1" "$dir/part2"
  local p1=$dir/part1 p2=$dir/part2
  mkdir -p "$p1/deps/include" "$p1/deps/lib" "$p1/deps/googletest/googletest" "$p2"
  cp -r /usr/include/nlohmann "$p1/deps/include/"
  cp /usr/include/pcre2.h /usr/include/utf8proc.h "$p1/deps/include/"
  cp "$lib/libpcre2-8.a" "$lib/libutf8proc.a" "$p1/deps/lib/"
  # GoogleTest's CMake project without googlemock, docs, samples and its own tests.
  cp /usr/src/googletest/CMakeLists.txt "$p1/deps/googletest/"
  cp -r /usr/src/googletest/googletest/CMakeLists.txt /usr/src/googletest/googletest/cmake \
        /usr/src/googletest/googletest/include /usr/src/googletest/googletest/src "$p1/deps/googletest/googletest/"
  {
    echo "Prepared by deploy/gpu_check.sh prepare on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ) from Debian's packages:"
    dpkg-query -W -f='  ${Package} ${Version}\n' nlohmann-json3-dev libpcre2-dev libutf8proc-dev googletest 2>/dev/null || true
  } > "$p1/deps/SOURCE.txt"
  # Data: stories260K, the sweep's MMLU subjects, BoolQ and C4 (experiments/smollm2-135m.yaml), SmolLM2's GGUF.
  local copied=0
  if [ -f "$data/stories260K/stories260K.bin" ]; then
    mkdir -p "$p1/data/stories260K"
    cp "$data/stories260K/stories260K.bin" "$data/stories260K/tok512.model" "$p1/data/stories260K/"
    copied=1
  fi
  if [ -d "$data/mmlu/hendrycks_format" ]; then
    mkdir -p "$p1/data/mmlu/hendrycks_format/dev" "$p1/data/mmlu/hendrycks_format/test"
    local s
    for s in high_school_geography marketing world_religions; do
      cp "$data/mmlu/hendrycks_format/dev/${s}_dev.csv" "$p1/data/mmlu/hendrycks_format/dev/"
      cp "$data/mmlu/hendrycks_format/test/${s}_test.csv" "$p1/data/mmlu/hendrycks_format/test/"
    done
  fi
  for f in boolq/val.jsonl c4/c4_en_train_first1000.jsonl; do
    if [ -f "$data/$f" ]; then
      mkdir -p "$p1/data/$(dirname "$f")"
      cp "$data/$f" "$p1/data/$f"
    fi
  done
  [ "$copied" = 1 ] || say "prepare: no stories260K under $data (its checks will skip)"
  if [ -f "$data/$GGUF_REL" ]; then
    # Two halves that leave part1 (deps + data + first half) and part2 about the same size.
    local gguf=$data/$GGUF_REL size other first
    size=$(stat -c %s "$gguf")
    other=$(du -sb "$p1" | cut -f1)
    first=$(( (size + other) / 2 - other ))
    [ "$first" -gt 0 ] || first=$(( size / 2 ))
    head -c "$first" "$gguf" > "$p1/smollm2.gguf.part1"
    tail -c +"$(( first + 1 ))" "$gguf" > "$p2/smollm2.gguf.part2"
    local sum
    sum=$(sha256sum "$gguf" | cut -d' ' -f1)
    echo "$sum  $GGUF_REL" | tee "$p1/smollm2.gguf.sha256" > "$p2/smollm2.gguf.sha256"
  else
    say "prepare: no $GGUF_REL under $data (the SmolLM2 checks will skip)"
  fi
  local p
  for p in "$p1" "$p2"; do
    local bytes
    bytes=$(du -sb "$p" | cut -f1)
    say "prepare: $p: $(awk -v b="$bytes" 'BEGIN { printf "%.1f MiB", b / 1048576 }')"
    [ "$bytes" -le $(( 55 * 1048576 )) ] || say "prepare: WARNING: $p is over 55 MiB"
  done
  say "prepare: done. On the GPU machine: cp -r $(basename "$dir")/part1/. P/ (and part2 later), then LAYERPRUNE_GPU_PREPARED=P bash deploy/gpu_check.sh build|run (docs/gpu.md)"
}

# ---- torch, deps, data ------------------------------------------------------------------------------------------
find_python() {
  local py
  for py in "${LAYERPRUNE_PYTHON:-}" "${LAYERPRUNE_TORCH_VENV:-$HOME/.cache/layerprune/torch-2.11.0}/bin/python" python3 /usr/bin/python3; do
    [ -n "$py" ] || continue
    command -v "$py" >/dev/null 2>&1 || continue
    if "$py" -c 'import torch' >/dev/null 2>&1; then
      echo "$py"
      return 0
    fi
  done
  return 1
}

PREPARED=${LAYERPRUNE_GPU_PREPARED:-}
if [ -n "$PREPARED" ]; then
  PREPARED=$(cd "$PREPARED" && pwd) || die "LAYERPRUNE_GPU_PREPARED=$LAYERPRUNE_GPU_PREPARED is not a directory"
fi
DEPS=""
if [ -n "$PREPARED" ] && [ -d "$PREPARED/deps" ]; then DEPS=$PREPARED/deps; fi
if [ -n "${LAYERPRUNE_DATA:-}" ]; then
  DATA=$LAYERPRUNE_DATA
elif [ -n "$PREPARED" ]; then
  DATA=$PREPARED/data
else
  DATA=$ROOT/../shared/data
fi
mkdir -p "$BUILD"
BUILD=$(cd "$BUILD" && pwd)
REPORT=${GPU_CHECK_REPORT:-$BUILD/gpu_check_report.txt}

# The GGUF from its two halves (once), checked against the sha256 `prepare` wrote.
assemble_gguf() {
  [ -n "$PREPARED" ] && [ "$DATA" = "$PREPARED/data" ] || return 0
  [ -f "$PREPARED/smollm2.gguf.part1" ] || return 0
  [ -f "$DATA/$GGUF_REL" ] && return 0
  if [ ! -f "$PREPARED/smollm2.gguf.part2" ]; then
    say "SmolLM2: $PREPARED/smollm2.gguf.part2 not there (copy part2 in): the SmolLM2 checks skip"
    return 0
  fi
  mkdir -p "$DATA/$(dirname "$GGUF_REL")"
  cat "$PREPARED/smollm2.gguf.part1" "$PREPARED/smollm2.gguf.part2" > "$DATA/$GGUF_REL.tmp"
  local want got
  want=$(cut -d' ' -f1 "$PREPARED/smollm2.gguf.sha256")
  got=$(sha256sum "$DATA/$GGUF_REL.tmp" | cut -d' ' -f1)
  if [ "$want" != "$got" ]; then
    rm -f "$DATA/$GGUF_REL.tmp"
    die "SmolLM2: the reassembled GGUF's sha256 is $got, prepare wrote $want (parts from different prepare runs?)"
  fi
  mv "$DATA/$GGUF_REL.tmp" "$DATA/$GGUF_REL"
  say "SmolLM2: GGUF reassembled from its two parts, sha256 $got checked"
}

cuda_archs() {
  if [ -n "${LAYERPRUNE_CUDA_ARCHITECTURES:-}" ]; then echo "$LAYERPRUNE_CUDA_ARCHITECTURES"; return; fi
  local caps
  caps=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | sort -u | tr -d ' .' || true)
  if [ "$caps" = 90 ]; then echo 90; else echo "80;90"; fi
}

# ---- build --------------------------------------------------------------------------------------------------------
build() {
  local py torch_cmake torch_lib archs start
  py=$(find_python) || die "no python with torch found (set LAYERPRUNE_PYTHON; deploy/setup.sh installs a venv)"
  torch_cmake=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
  torch_lib=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)
  archs=$(cuda_archs)
  say "building into $BUILD: torch $("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null) ($py), CUDA archs $archs, deps ${DEPS:-from the system}, ${JOBS:-$(nproc)} jobs"
  start=$(date +%s)
  # shellcheck disable=SC2086  # CMAKE_ARGS is a list of arguments
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_PREFIX_PATH="$torch_cmake" -Dc10_LIBRARY="$torch_lib/libc10.so" \
    -DLAYERPRUNE_GPU_CHECK_ONLY=ON -DLAYERPRUNE_GPU_DEPS="$DEPS" -DLAYERPRUNE_CUDA_ARCHITECTURES="$archs" \
    -DLAYERPRUNE_DATA="$DATA" ${CMAKE_ARGS:-} > "$BUILD/configure.log" || { cat "$BUILD/configure.log" >&2; die "configure failed"; }
  grep -E "layerprune:" "$BUILD/configure.log" | sed 's/^-- /  /' >&2 || true
  ninja -C "$BUILD" -j "${JOBS:-$(nproc)}" | tee "$BUILD/build.log"
  if grep -q "no work to do" "$BUILD/build.log"; then
    say "build up to date"
  else
    echo $(( $(date +%s) - start )) > "$BUILD/build_seconds"
    say "built in $(cat "$BUILD/build_seconds") s"
  fi
}

# ---- run ------------------------------------------------------------------------------------------------------------
line() { echo "$*" >> "$REPORT"; }

# A GoogleTest program as one report line: FAIL (its failed tests), SKIP (its GPU tests skipped where there
# is no GPU), or PASS. With a GPU visible (have_gpu 1), GPU tests that skipped or did not build are a FAIL.
gtest_line() {
  local label=$1 bin=$2 gpu_pattern=$3 limit=$4 have_gpu=$5
  shift 5
  local log rc=0 skip=SKIP
  [ "$have_gpu" = 1 ] && skip=FAIL
  log=$BUILD/logs/$(basename "$bin").log
  if [ ! -x "$bin" ]; then
    line "$skip  $label: $(basename "$bin") not built (built without CUDA or NCCL: see $BUILD/configure.log)"
    return 0
  fi
  say "running $(basename "$bin")"
  timeout "$limit" "$bin" "$@" > "$log" 2>&1 || rc=$?
  local ok gpu_ok gpu_skipped failed
  ok=$(grep -c '^\[       OK \]' "$log" || true)
  gpu_ok=$(grep -E "^\[       OK \] [A-Za-z0-9_.]*($gpu_pattern)" "$log" | awk '{print $4}' | sort -u | paste -sd, - || true)
  gpu_skipped=$(grep -E "^\[  SKIPPED \] [A-Za-z0-9_.]*($gpu_pattern)" "$log" | awk '{print $4}' | sort -u | paste -sd, - || true)
  failed=$(grep -E '^\[  FAILED  \] [A-Za-z]' "$log" | awk '{print $4}' | sort -u | paste -sd, - || true)
  if [ "$rc" -ne 0 ]; then
    line "FAIL  $label: exit $rc${failed:+, failed: $failed} (log: $log)"
  elif [ -n "$gpu_skipped" ] || [ -z "$gpu_ok" ]; then
    local why
    why=$(grep -A1 ': Skipped$' "$log" | grep -v ': Skipped$' | grep -v '^--$' | head -1 || true)
    line "$skip  $label: its GPU tests skipped (${gpu_skipped:-none ran}${why:+: $why}); $ok other tests passed"
  else
    line "PASS  $label: $ok tests passed, on the GPU: $gpu_ok"
  fi
}

run_checks() {
  local t0 count tests_rc=0 bench_rc=0
  t0=$(date +%s)
  [ -x "$BUILD/tests/test_gpu" ] || die "no build in $BUILD (bash deploy/gpu_check.sh build)"
  mkdir -p "$BUILD/logs"
  : > "$REPORT"
  assemble_gguf
  export LAYERPRUNE_DATA=$DATA LAYERPRUNE_GPU_REPORT=$REPORT LAYERPRUNE_GPU_WORK=$BUILD/work OMP_WAIT_POLICY=PASSIVE
  local py torch_version gpus
  py=$(find_python || true)
  torch_version=$([ -n "$py" ] && "$py" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>/dev/null || echo "unknown")
  gpus=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | paste -sd';' - || true)
  line "gpu_check report, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname), $(nproc) cores"
  line "INFO  GPUs: ${gpus:-none visible to nvidia-smi}"
  line "INFO  torch $torch_version ($py); nvcc $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'not found'); build $BUILD ($(cat "$BUILD/build_seconds" 2>/dev/null || echo '?') s); data $DATA"
  count=$("$BUILD/tests/test_gpu" --cuda-device-count 2>/dev/null | tail -1) || count=""
  [ -n "$count" ] || die "$BUILD/tests/test_gpu does not run (see: $BUILD/tests/test_gpu --cuda-device-count)"
  if [ "$count" = 0 ]; then
    # The CPU halves of the kernel tests (their CUDA tests skip), then the line that says the rest did not run.
    gtest_line "kernels: causal_softmax (test_kernels)" "$BUILD/tests/test_kernels" "Cuda" 600 0
    gtest_line "kernels: NF4 quantize/dequantize/linear/input_grad (test_nf4)" "$BUILD/tests/test_nf4" "Cuda" 600 0
    line "gpu_check: no CUDA GPU visible (cuda_device_count() = 0): built OK, GPU checks not run"
    cat "$REPORT"
    return 0
  fi
  line "INFO  $count CUDA GPU(s) visible; checks on cuda:0"
  gtest_line "kernels: causal_softmax CUDA = reference (test_kernels)" "$BUILD/tests/test_kernels" "Cuda" 300 1
  gtest_line "kernels: NF4 quantize/dequantize/linear/input_grad CUDA = reference (test_nf4)" "$BUILD/tests/test_nf4" "Cuda" 300 1
  gtest_line "NCCL communicator at size 1 (SoloCommunicator host): all_reduce/broadcast/all_gather, pointers and CUDA tensors on the current stream (test_comm_nccl)" \
    "$BUILD/tests/test_comm_nccl" "NcclComm" 120 1
  say "running test_gpu"
  timeout 420 "$BUILD/tests/test_gpu" > "$BUILD/logs/test_gpu.log" 2>&1 || tests_rc=$?
  [ "$tests_rc" -eq 0 ] || line "FAIL  test_gpu: exit $tests_rc (log: $BUILD/logs/test_gpu.log)"
  say "running bench_gpu"
  timeout 300 "$BUILD/bench/bench_gpu" > "$BUILD/logs/bench_gpu.log" 2>&1 || bench_rc=$?
  [ "$bench_rc" -eq 0 ] || line "FAIL  bench_gpu: exit $bench_rc (log: $BUILD/logs/bench_gpu.log)"
  local pass fail skip
  pass=$(grep -c '^PASS' "$REPORT" || true)
  fail=$(grep -c '^FAIL' "$REPORT" || true)
  skip=$(grep -c '^SKIP' "$REPORT" || true)
  line "gpu_check: $pass PASS, $fail FAIL, $skip SKIP; checks took $(( $(date +%s) - t0 )) s; report $REPORT"
  cat "$REPORT"
  [ "$fail" -eq 0 ]
}

case "$MODE" in
  prepare) prepare "${2:-}" ;;
  build) build ;;
  run) run_checks ;;
  all) build; run_checks ;;
  *) die "unknown mode '$MODE' (all, build, run, prepare DIR)" ;;
esac
