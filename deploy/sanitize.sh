#!/usr/bin/env bash
# The unit suite under sanitizers, each in its own build directory (deploy/test.sh runs both; docs/reliability.md):
#   bash deploy/sanitize.sh address   build-asan/: all of our code and its unit tests with ASan + UBSan
#   bash deploy/sanitize.sh thread    build-tsan/: the torch-free part with TSan: the coordinator, store,
#                                     client, lease loop, launchers and experiment tests
# Our code is instrumented; the dependencies (Debian's libraries, the torch wheel) are not. Options and
# suppressions are compiled into every program (cmake/sanitizer_defaults.cc). Every process's reports (the
# tests' and those of the programs they start: coordinator, worker, CLI) go to <build>/sanitizer-reports/;
# any report fails the run and is printed.
#   SANITIZE_BUILD_DIR=...  JOBS=2  SANITIZE_CTEST_ARGS=...   (environment overrides)
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-}
case "$kind" in
  address) dir=${SANITIZE_BUILD_DIR:-build-asan}; args=(-DLAYERPRUNE_SANITIZER=address) ;;
  thread) dir=${SANITIZE_BUILD_DIR:-build-tsan}; args=(-DLAYERPRUNE_SANITIZER=thread -DLAYERPRUNE_TORCH_FREE_ONLY=ON) ;;
  *) echo "usage: bash deploy/sanitize.sh address|thread" >&2; exit 2 ;;
esac
start=$(date +%s)
BUILD_DIR="$dir" CMAKE_ARGS="${args[*]} -DLAYERPRUNE_DATA=${LAYERPRUNE_DATA:-$(cd .. && pwd)/shared/data}" \
  bash deploy/setup.sh
built=$(date +%s)

reports="$PWD/$dir/sanitizer-reports"
rm -rf "$reports"
mkdir -p "$reports"
# Added to the compiled-in options: reports to files (pid-suffixed), so a child process's is found too.
export ASAN_OPTIONS="log_path=$reports/asan"
export UBSAN_OPTIONS="log_path=$reports/ubsan"
export TSAN_OPTIONS="log_path=$reports/tsan"
export LAYERPRUNE_DATA=${LAYERPRUNE_DATA:-$(cd .. && pwd)/shared/data}
export OMP_WAIT_POLICY=PASSIVE
status=0
# shellcheck disable=SC2086
ctest --test-dir "$dir" --output-on-failure -j 2 --timeout 900 ${SANITIZE_CTEST_ARGS:-} || status=1
if [ -n "$(ls -A "$reports")" ]; then
  for f in "$reports"/*; do
    echo "sanitize: ==== $(basename "$f") ====" >&2
    cat "$f" >&2
  done
  echo "sanitize: $kind: $(ls "$reports" | wc -l) sanitizer report(s) above (files in $reports)" >&2
  status=1
fi
end=$(date +%s)
echo "sanitize: $kind: build $((built - start)) s, tests $((end - built)) s, $([ $status = 0 ] && echo clean || echo FAILED)" >&2
exit $status
