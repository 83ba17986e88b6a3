#!/usr/bin/env bash
# The main job: set-up, then layerprune on a real small model (stories260K, a trained 5-layer Llama-2-
# architecture model): import it from llama2.c's format, generate text, measure its layer distances, and
# sweep every pruning depth with both strategies, printing accuracy and loss against the fraction pruned.
# (With the coordinator this becomes `layerprune run experiments/stories260k.yaml`, healing included.)
# Data comes from $LAYERPRUNE_DATA (default ../shared/data) or the download cache (deploy/download_data.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
export LAYERPRUNE_DATA=${LAYERPRUNE_DATA:-$(cd .. && pwd)/shared/data}
LP=${BUILD_DIR:-build}/cli/layerprune
OUT=${OUT:-out/stories260K}
src=$("$LP" locate stories260K)
text=$("$LP" locate tinystories)
echo "== convert $src -> $OUT"
"$LP" convert --llama2c "$src/stories260K.bin" --tokenizer "$src/tok512.model" --out "$OUT"
echo "== generate (greedy)"
"$LP" generate --model "$OUT" --prompt "Once upon a time" --max-new-tokens 100
echo "== layer distances (paper Eq. 7) on $text"
"$LP" distances --model "$OUT" --data "$text" --samples 64 --seq-len 256 --svg "$OUT-distances.svg"
echo "== pruning sweep: MMLU 5-shot (2 per subject), BoolQ (100), TinyStories loss; both strategies, every n"
"$LP" sweep --model "$OUT" --data "$text" --samples 64 --seq-len 256 --limit 2 --boolq-limit 100 \
    --loss-data "$text" --loss-windows 40
