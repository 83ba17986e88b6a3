#!/usr/bin/env python3
"""lm-evaluation-harness on several model directories in ONE Python process (the stronger baseline for the
sweep: imports and the task index are paid once, then lm_eval.simple_evaluate per model; each model is still
loaded and evaluated on its own, as lm-eval has no notion of shared layers).

  lmeval_loop.py --include-path DIR --task lp_boolq --limit 12 --batch-size 8 --tokenizer TOKDIR \
                 [--model-args extra] MODEL_DIR...

Prints one JSON line: per model its seconds, accuracy and per-item predictions (doc_id order).
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--include-path", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--limit", type=int, required=True)
    ap.add_argument("--batch-size", default="8")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--model-args", default="")
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    t0 = time.perf_counter()
    import lm_eval
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=a.include_path)
    setup = time.perf_counter() - t0
    out = {"setup_seconds": setup, "models": []}
    for m in a.models:
        t = time.perf_counter()
        args = f"pretrained={m},tokenizer={a.tokenizer},dtype=float32" + (f",{a.model_args}" if a.model_args else "")
        r = lm_eval.simple_evaluate(model="hf", model_args=args, tasks=[a.task], limit=a.limit,
                                    batch_size=a.batch_size, device="cpu", task_manager=tm, log_samples=True)
        preds = {}
        for s in r["samples"][a.task]:
            lls = [float(x[0]) for x in s["filtered_resps"]]
            preds[int(s["doc_id"])] = max(range(len(lls)), key=lambda i: (lls[i], -i))
        out["models"].append({"model": m, "seconds": time.perf_counter() - t,
                              "acc": r["results"][a.task]["acc,none"],
                              "preds": [preds[k] for k in sorted(preds)]})
    out["total_seconds"] = time.perf_counter() - t0
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
