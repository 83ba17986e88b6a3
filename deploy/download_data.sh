#!/usr/bin/env bash
# Downloads the small models and datasets layerprune's examples use into the data cache
# (${XDG_CACHE_HOME:-~/.cache}/layerprune, or $LAYERPRUNE_DATA if set), in the layout the data locator
# expects (common/data_locator.h). Needs internet; machines without it point LAYERPRUNE_DATA at a mirror.
# Usage: deploy/download_data.sh [stories260K] [mmlu] [boolq] [tinystories] [c4]   (default: all)
set -euo pipefail
ROOT=${LAYERPRUNE_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/layerprune}
mkdir -p "$ROOT"
fetch() { echo "download: $1 -> $2" >&2; mkdir -p "$(dirname "$2")"; curl -fL --retry 3 -o "$2.part" "$1"; mv "$2.part" "$2"; }
check() { echo "$2  $1" | sha256sum -c --quiet - || { echo "download: checksum mismatch for $1" >&2; exit 1; }; }

want=("$@"); [ ${#want[@]} -eq 0 ] && want=(stories260K mmlu boolq tinystories c4)
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
    *) echo "download: unknown asset '$w' (stories260K mmlu boolq tinystories c4)" >&2; exit 2 ;;
  esac
done
echo "download: done; data in $ROOT" >&2
