#!/usr/bin/env python3
"""The Hugging Face transformers side of bench/compare (run in the compare venv by compare.py).

  hf_side.py prefill --model DIR --threads N --batch B --seq T --reps R [--attn eager,sdpa]
      LlamaForCausalLM.from_pretrained(DIR, float32, attn_implementation=...), one no-grad forward of
      B x T random tokens with logits at every position (use_cache=False), one warm-up, then the best of
      R timed forwards. Prints one JSON line: tokens/s per attention implementation.

  hf_side.py loss --model DIR --data FILE --tokenizer T.model --context C --max-windows W --threads N
      layerprune's `loss` recipe re-implemented here: the file verbatim, tokenized as one stream without
      BOS (Python sentencepiece), consecutive non-overlapping chunks of C-1 tokens (the final partial chunk
      dropped), each window BOS + chunk, mean next-token NLL over every predicted token. Prints JSON.
"""
import argparse
import json
import math
import os
import sys
import time


def set_threads(n):
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    return torch


def load(model_dir, attn):
    import torch
    from transformers import LlamaForCausalLM

    m = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attn)
    m.eval()
    return m


def cmd_prefill(a):
    torch = set_threads(a.threads)
    import transformers

    g = torch.Generator().manual_seed(0)
    out = {"threads": torch.get_num_threads(), "batch": a.batch, "seq": a.seq, "reps": a.reps,
           "torch": torch.__version__, "transformers": transformers.__version__,
           "mkl": torch.backends.mkl.is_available(), "results": {}}
    for attn in a.attn.split(","):
        m = load(a.model, attn)
        vocab = m.config.vocab_size
        tokens = torch.randint(1, vocab, (a.batch, a.seq), generator=g)
        with torch.inference_mode():
            logits = m(input_ids=tokens, use_cache=False).logits  # warm-up
            assert tuple(logits.shape) == (a.batch, a.seq, vocab), logits.shape
            best = math.inf
            for _ in range(a.reps):
                t0 = time.perf_counter()
                logits = m(input_ids=tokens, use_cache=False).logits
                best = min(best, time.perf_counter() - t0)
        out["results"][attn] = {"seconds": best, "tokens_per_second": a.batch * a.seq / best}
        del m, logits
    print(json.dumps(out))


def cmd_loss(a):
    torch = set_threads(a.threads)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=a.tokenizer)
    with open(a.data, encoding="utf-8") as f:
        text = f.read()
    ids = sp.encode(text)
    bos = sp.bos_id()
    m = load(a.model, "eager")
    ctx = a.context if a.context > 0 else m.config.max_position_embeddings
    chunk = ctx - 1
    n = len(ids) // chunk
    if a.max_windows > 0:
        n = min(n, a.max_windows)
    total, count = 0.0, 0
    with torch.inference_mode():
        for w in range(n):
            x = torch.tensor([[bos] + ids[w * chunk:(w + 1) * chunk]])
            logp = torch.log_softmax(m(input_ids=x, use_cache=False).logits.double(), dim=-1)
            tgt = x[0, 1:]
            total += -logp[0, :-1].gather(1, tgt[:, None]).sum().item()
            count += tgt.numel()
    mean = total / count
    print(json.dumps({"mean_nll": mean, "mean_nll_over_ln_vocab": mean / math.log(m.config.vocab_size),
                      "stream_tokens": len(ids), "windows": n, "predicted_tokens": count, "context": ctx}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prefill")
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--attn", default="eager")
    p = sub.add_parser("loss")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--max-windows", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    {"prefill": cmd_prefill, "loss": cmd_loss}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
