#!/usr/bin/env bash
# Set-up on Debian bookworm: installs the missing Debian packages, LibTorch from PyPI's torch wheel into a
# virtual environment outside the source tree, then configures and builds layerprune with CMake + Ninja into
# ./build. Safe to run again (each step is skipped when already done).
#   BUILD_DIR=build  CMAKE_ARGS=...  JOBS=2  LAYERPRUNE_WITH_SLURM=1  LAYERPRUNE_WERROR=1
#   LAYERPRUNE_TORCH_VENV=~/.cache/layerprune/torch-2.11.0   (environment overrides)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  python3-venv librsvg2-bin
  libopenmpi-dev openmpi-bin
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libyaml-cpp-dev libsqlite3-dev sqlite3 nlohmann-json3-dev
  libpcre2-dev libutf8proc-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev  # libFuzzer: the fuzz targets of fuzz/, built apart with clang
  ccache
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

# LibTorch: the C++ library inside PyPI's torch wheel (CUDA 13.0 build with MKL; it runs on CPU where there is
# no GPU). Debian's libtorch-dev is 1.13, CPU-only, and slow on today's processors (../shared/PLATFORM.md).
TORCH_VERSION=2.11.0
VENV=${LAYERPRUNE_TORCH_VENV:-$HOME/.cache/layerprune/torch-$TORCH_VERSION}
torch_ok() { "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; }
if ! torch_ok; then
  echo "setup: installing torch==$TORCH_VERSION from PyPI into $VENV (about 3 GB to download, 4.6 GB on disk)" >&2
  start=$(date +%s)
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
  torch_ok || { echo "setup: torch==$TORCH_VERSION did not install into $VENV" >&2; exit 1; }
  echo "setup: torch installed in $(( $(date +%s) - start )) s" >&2
else
  echo "setup: torch==$TORCH_VERSION present in $VENV" >&2
fi
TORCH_LIB=$("$VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)
TORCH_CMAKE=$("$VENV/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)

BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-2}  # each LibTorch translation unit takes ~1.5 GB to compile
# c10_LIBRARY: with Debian's libtorch-dev also installed, Torch's config would otherwise find its 1.13 libc10.
WERROR=()
[ "${LAYERPRUNE_WERROR:-0}" = 1 ] && WERROR=(-DLAYERPRUNE_WERROR=ON)
# ccache: a build of sources compiled before (another clone, the same commit's sanitizer builds after a
# change elsewhere) takes the objects from ~/.cache/layerprune/ccache. Paths are hashed relative to the
# checkout (base_dir), so another clone's build hits the same entries; precompiled headers are cached too
# (the sloppiness they need). LAYERPRUNE_CCACHE=0 compiles everything.
LAUNCHER=()
if [ "${LAYERPRUNE_CCACHE:-1}" = 1 ] && command -v ccache >/dev/null; then
  ccache_env="CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/layerprune/ccache};CCACHE_BASEDIR=$PWD;CCACHE_NOHASHDIR=1"
  ccache_env+=";CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime;CCACHE_MAXSIZE=10G"
  LAUNCHER=("-DCMAKE_CXX_COMPILER_LAUNCHER=/usr/bin/env;$ccache_env;ccache"
            "-DCMAKE_C_COMPILER_LAUNCHER=/usr/bin/env;$ccache_env;ccache")
else
  LAUNCHER=(-UCMAKE_CXX_COMPILER_LAUNCHER -UCMAKE_C_COMPILER_LAUNCHER)
fi
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_PREFIX_PATH="$TORCH_CMAKE" -Dc10_LIBRARY="$TORCH_LIB/libc10.so" \
  "${LAUNCHER[@]}" "${WERROR[@]}" ${CMAKE_ARGS:-} >/dev/null
ninja -C "$BUILD_DIR" -j "$JOBS"
echo "setup: built into $BUILD_DIR" >&2
