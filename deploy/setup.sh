#!/usr/bin/env bash
# Set-up on Debian bookworm: installs every dependency from Debian packages (only those missing), then
# configures and builds layerprune with CMake + Ninja into ./build. Safe to run again.
#   BUILD_DIR=build  CMAKE_ARGS="-DTorch_DIR=..."  JOBS=2  LAYERPRUNE_WITH_SLURM=1   (environment overrides)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev libgloo-dev libopenblas0-pthread
  libopenmpi-dev openmpi-bin
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libyaml-cpp-dev libsqlite3-dev sqlite3 nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-torch python3-numpy python3-sentencepiece
)

# Slurm, only when asked (deploy/test.sh asks: its cluster test starts a one-machine Slurm; deploy/slurm/README.md).
# Seconds to install; without systemd the daemons do not start by themselves. On a workstation with systemd the
# packages would enable munge/slurm services, so it is not the default.
if [ "${LAYERPRUNE_WITH_SLURM:-0}" = 1 ]; then
  PACKAGES+=(slurm-wlm slurmctld slurmd slurm-client munge)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${#missing[@]} Debian packages: ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: all Debian packages present" >&2
fi

BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-2}  # each LibTorch translation unit takes ~1.5 GB to compile
cmake -S . -B "$BUILD_DIR" -G Ninja ${CMAKE_ARGS:-} >/dev/null
ninja -C "$BUILD_DIR" -j "$JOBS"
echo "setup: built into $BUILD_DIR" >&2
