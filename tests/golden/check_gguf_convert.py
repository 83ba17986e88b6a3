#!/usr/bin/env python3
"""Round trip of `layerprune convert --gguf`, against transformers' own GGUF loader.

    layerprune convert --gguf ../shared/data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/smollm2
    HF_HUB_OFFLINE=1 ~/.cache/layerprune/compare-venv/bin/python tests/golden/check_gguf_convert.py \
        /tmp/smollm2 ../shared/data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

Checks, and prints (the numbers are recorded in tests/golden/README.md):
  - every weight of the converted directory (AutoModelForCausalLM.from_pretrained(dir)) equals the weight
    transformers dequantises from the GGUF itself (from_pretrained(..., gguf_file=...)), q/k included;
  - the logits of both models on a few prompts (max |difference|, same greedy next tokens);
  - the tokenizer.json we wrote, loaded by the `tokenizers` library, against the tokenizer transformers builds
    from the GGUF metadata, on texts with digits, whitespace runs, non-ASCII, code and special tokens.
Exits non-zero when anything differs.
"""
import os
import sys

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

TEXTS = [
    "Hello, world!",
    "The year 2024 had 366 days; 3.14159 is pi.",
    "  leading spaces,\ttabs\nand\n\nnewlines   ",
    "Grüße aus Köln — naïve café, 東京, emoji 🙂",
    "def f(x):\n    return x ** 2  # square\n",
    "<|im_start|>user\nWhat is 12+30?<|im_end|>\n<|im_start|>assistant\n",
    "",
]


def main():
    out_dir, gguf_path = sys.argv[1], sys.argv[2]
    ok = True
    ours = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(gguf_path)),
                                               gguf_file=os.path.basename(gguf_path), dtype=torch.float32).eval()
    sd_ours, sd_ref = ours.state_dict(), ref.state_dict()
    worst = 0.0
    for name, w in sd_ref.items():
        if name not in sd_ours:
            print("missing in converted model:", name)
            ok = False
            continue
        worst = max(worst, (sd_ours[name] - w).abs().max().item())
    print(f"weights: {len(sd_ref)} tensors, max |ours - transformers' GGUF dequantisation| = {worst}")
    ok &= worst == 0.0

    tok_ref = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(gguf_path)),
                                            gguf_file=os.path.basename(gguf_path))
    tok_ours = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    same = 0
    for text in TEXTS:
        a = tok_ours.encode(text, add_special_tokens=False).ids
        b = tok_ref(text, add_special_tokens=False)["input_ids"]
        if a == b:
            same += 1
        else:
            ok = False
            print("tokenizer differs on", repr(text), a, b)
        if tok_ours.decode(a, skip_special_tokens=False) != text:
            print("decode does not round-trip:", repr(text), repr(tok_ours.decode(a, skip_special_tokens=False)))
            ok = False
    print(f"tokenizer: {same}/{len(TEXTS)} texts encode identically to transformers' GGUF tokenizer")

    with torch.no_grad():
        for text in TEXTS[:6]:
            ids = torch.tensor([tok_ref(text, add_special_tokens=False)["input_ids"]])
            la, lb = ours(ids).logits, ref(ids).logits
            diff = (la - lb).abs().max().item()
            argmax_same = bool((la.argmax(-1) == lb.argmax(-1)).all())
            print(f"logits on {text[:30]!r:34} ({ids.shape[1]} tokens): max |diff| = {diff:.3g}, "
                  f"greedy next tokens equal: {argmax_same}")
            ok &= diff < 1e-4 and argmax_same
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
