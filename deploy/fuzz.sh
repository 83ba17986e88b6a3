#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers of outside input (fuzz/README.md): builds fuzz/ with clang into
# build-fuzz/ (libFuzzer + ASan + UBSan) and runs each target for SECONDS, one at a time, on a copy of its
# seed corpus: new inputs go to build-fuzz/corpus/<target>/ (kept between runs, never into the repo),
# crashes, leaks and hangs to build-fuzz/artifacts/<target>/, the log to build-fuzz/logs/<target>.log.
#
#   bash deploy/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     # default 60 s, every target
#   bash deploy/fuzz.sh 600 gguf tokenizer_json              # longer, on two of them
#
# Prints per target the executions, executions per second, coverage (libFuzzer's cov: edges and ft:
# features at the end) and whether it found anything; exits 1 when any target found something, 2 on a
# usage or build error. Environment: LAYERPRUNE_FUZZ_BUILD (build directory, default build-fuzz),
# LAYERPRUNE_FUZZ_JOBS (ninja -j, default 1), LAYERPRUNE_FUZZ_ARGS (more libFuzzer flags).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
[ $# -gt 0 ] && shift
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
  echo "usage: bash deploy/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi
build=${LAYERPRUNE_FUZZ_BUILD:-build-fuzz}
all=$(cd fuzz && ls fuzz_*.cc | sed 's/^fuzz_//; s/\.cc$//')
targets=${*:-$all}
for t in $targets; do
  if ! grep -qx "$t" <<<"$all"; then
    echo "fuzz.sh: no target '$t' (targets: $(echo $all))" >&2
    exit 2
  fi
done

if ! command -v clang++ >/dev/null || ! command -v clang >/dev/null; then
  echo "fuzz.sh: clang/clang++ not found (Debian: apt-get install clang libclang-rt-14-dev)" >&2
  exit 2
fi
if [ ! -f "$build/build.ninja" ]; then
  cmake -S fuzz -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang >"$build.configure.log" 2>&1 || {
    cat "$build.configure.log" >&2
    echo "fuzz.sh: configuring fuzz/ failed" >&2
    exit 2
  }
  rm -f "$build.configure.log"
fi
mkdir -p "$build/logs"
if ! ninja -C "$build" -j"${LAYERPRUNE_FUZZ_JOBS:-1}" >"$build/logs/build.log" 2>&1; then
  tail -40 "$build/logs/build.log" >&2
  echo "fuzz.sh: building fuzz/ failed (log: $build/logs/build.log)" >&2
  exit 2
fi

# Parsers that take a path get their bytes as files in a scratch directory in memory, removed at the end.
scratch=$(mktemp -d "${LAYERPRUNE_FUZZ_TMP:-/dev/shm}/lpfuzz.XXXXXX" 2>/dev/null || mktemp -d)
trap 'rm -rf "$scratch"' EXIT
found=0
printf '%-16s %8s %12s %9s %7s %8s  %s\n' target seconds executions exec/s cov ft result
for t in $targets; do
  mkdir -p "$build/corpus/$t" "$build/artifacts/$t"
  dict=()
  [ -f "fuzz/$t.dict" ] && dict=("-dict=fuzz/$t.dict")
  log="$build/logs/$t.log"
  before=$(ls "$build/artifacts/$t" | wc -l)
  set +e
  # shellcheck disable=SC2086
  LPFUZZ_TMPDIR="$scratch/$t" "$build/fuzz_$t" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
    -max_len=8192 -print_final_stats=1 -artifact_prefix="$build/artifacts/$t/" "${dict[@]}" ${LAYERPRUNE_FUZZ_ARGS:-} \
    "$build/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  after=$(ls "$build/artifacts/$t" | wc -l)
  if [ "$rc" -eq 0 ] && [ "$after" -eq "$before" ]; then
    result="nothing found"
  else
    found=1
    what=$(grep -m1 -oE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer): [a-zA-Z-]+|runtime error: .{0,60}|lpfuzz: check failed.{0,60}|terminate called .{0,60}' "$log" || true)
    result="FOUND (exit $rc): ${what:-see $log}; artifact(s) in $build/artifacts/$t/"
  fi
  printf '%-16s %8s %12s %9s %7s %8s  %s\n' "$t" "$secs" "${execs:--}" "${rate:--}" "${cov:--}" "${ft:--}" "$result"
done
if [ "$found" -ne 0 ]; then
  echo "fuzz.sh: findings above; reproduce one with $build/fuzz_<target> <artifact>, minimise it with -minimize_crash=1" >&2
  exit 1
fi
