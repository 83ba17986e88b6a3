#!/usr/bin/env python3
"""layerprune against what a user would run instead (transformers, lm-evaluation-harness), in one run.

Run by bench/compare/run.sh inside the compare venv (see bench/compare/README.md). Every command runs one at
a time, with the same thread count on both sides (OMP_NUM_THREADS / MKL_NUM_THREADS / torch.set_num_threads
/ layerprune --threads), on the same model directory, data and items:

  1. prefill: HF LlamaForCausalLM (eager attention) forward of batch x seq random tokens, logits at every
     position, best of k after a warm-up, vs build/bench/bench_prefill on the same shape; plus the loss of
     the same model directory on a short text, `layerprune loss` vs the same recipe in HF (hf_side.py).
  2. MMLU k-shot on the same subjects and items: `lm_eval` (local task YAMLs, --log_samples) vs
     `layerprune eval --task mmlu --records`, whole commands timed; predictions, prompts and
     log-likelihoods compared per item.
  3. no-healing sweep on BoolQ: `layerprune sweep` once vs `lm_eval` once per pruned variant (each
     exported with `layerprune prune --drop`, export time reported apart); accuracy compared per variant,
     and each variant's per-item predictions against `layerprune eval --drop` (the sweep prints no
     per-item records).
"""
import argparse
import datetime
import glob
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def log(msg):
    print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


class Runner:
    def __init__(self, work, env):
        self.work = work
        self.env = env
        self.n = 0

    def run(self, cmd, name, stdout_json=False):
        """Run cmd (a list), stdout/stderr to WORK/logs/NN-name.{out,err}; return (seconds, stdout)."""
        self.n += 1
        base = os.path.join(self.work, "logs", f"{self.n:02d}-{name}")
        os.makedirs(os.path.dirname(base), exist_ok=True)
        with open(base + ".cmd", "w") as f:
            f.write(" ".join(cmd) + "\n")
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        secs = time.perf_counter() - t0
        with open(base + ".out", "w") as f:
            f.write(p.stdout)
        with open(base + ".err", "w") as f:
            f.write(p.stderr)
        if p.returncode != 0:
            tail = "\n".join(p.stderr.strip().splitlines()[-15:])
            raise SystemExit(f"FAILED ({p.returncode}): {' '.join(cmd)}\n{tail}\n(logs: {base}.*)")
        if stdout_json:
            lines = [l for l in p.stdout.splitlines() if l.strip().startswith("{")]
            return secs, json.loads(lines[-1])
        return secs, p.stdout


def verdict(value, target, higher=True):
    ok = value >= target if higher else value <= target
    return "MET" if ok else "NOT MET"


# --------------------------------------------------------------------------------------------- lm-eval


def write_tasks(dst, mmlu_dir, subjects, boolq_file):
    """lm-eval task directory: the template + utils.py from bench/compare/tasks, one YAML per subject."""
    os.makedirs(dst, exist_ok=True)
    src = os.path.join(HERE, "tasks")
    for f in ("_lp_mmlu_template_yaml", "utils.py"):
        shutil.copy(os.path.join(src, f), dst)
    subj_in = open(os.path.join(src, "lp_mmlu_subject.yaml.in")).read()
    for s in subjects:
        y = (subj_in.replace("@DATA_DIR@", mmlu_dir).replace("@SUBJECT_SPACED@", s.replace("_", " "))
             .replace("@SUBJECT@", s))
        with open(os.path.join(dst, f"lp_mmlu_{s}.yaml"), "w") as f:
            f.write(y)
    b = open(os.path.join(src, "lp_boolq.yaml.in")).read().replace("@DATA_FILE@", boolq_file)
    with open(os.path.join(dst, "lp_boolq.yaml"), "w") as f:
        f.write(b)


def lm_eval_cmd(a, model, tasks, out, shots, limit):
    cmd = [os.path.join(os.path.dirname(sys.executable), "lm_eval"), "--model", "hf", "--model_args",
           f"pretrained={model},tokenizer={a.hf_tokenizer},dtype=float32" + (f",{a.lm_eval_model_args}" if a.lm_eval_model_args else ""),
           "--include_path", os.path.join(a.work, "tasks"), "--tasks", ",".join(tasks), "--limit", str(limit),
           "--batch_size", str(a.lm_eval_batch), "--device", "cpu", "--output_path", out, "--log_samples"]
    if shots is not None:
        cmd += ["--num_fewshot", str(shots)]
    return cmd


def lm_eval_samples(out, task):
    files = sorted(glob.glob(os.path.join(out, "**", f"samples_{task}_*.jsonl"), recursive=True))
    if not files:
        raise SystemExit(f"no lm-eval samples for {task} under {out}")
    rows = [json.loads(l) for l in open(files[-1]) if l.strip()]
    res = {}
    for r in rows:
        lls = [float(x[0]) for x in r["filtered_resps"]]
        args = r["arguments"]
        ctx = args["gen_args_0"]["arg_0"] if isinstance(args, dict) else args[0][0]
        res[int(r["doc_id"])] = {"ll": lls, "pred": max(range(len(lls)), key=lambda i: (lls[i], -i)),
                                 "gold": int(r["target"]), "ctx_sha256": hashlib.sha256(ctx.encode()).hexdigest()}
    return res


def compare_items(lm, lp):
    """lm: {key: lm-eval item}, lp: {key: layerprune record}. Counts and the largest log-likelihood gap."""
    keys = sorted(set(lm) & set(lp))
    agree = sum(lm[k]["pred"] == lp[k]["pred"] for k in keys)
    same_prompt = sum(lm[k]["ctx_sha256"] == lp[k]["prompt_sha256"] for k in keys)
    gold_same = sum(lm[k]["gold"] == lp[k]["gold"] for k in keys)
    dmax = max((abs(x - y) for k in keys for x, y in zip(lm[k]["ll"], lp[k]["loglikelihoods"])), default=float("nan"))
    return {"items": len(keys), "lm_items": len(lm), "lp_items": len(lp), "agree": agree,
            "same_prompt": same_prompt, "same_gold": gold_same, "max_ll_diff": dmax,
            "lm_correct": sum(lm[k]["pred"] == lm[k]["gold"] for k in keys),
            "lp_correct": sum(lp[k]["pred"] == lp[k]["gold"] for k in keys)}


def lp_records(path):
    recs = [json.loads(l) for l in open(path) if l.strip()]
    return recs


# --------------------------------------------------------------------------------------------- parts


def part_prefill(a, R, lp, report):
    model = os.path.join(a.work, "m110")
    if not os.path.exists(os.path.join(model, "config.json")):
        R.run([lp, "make-model", "--out", model, "--preset", "110m", "--seed", "0", "--tokenizer", a.tokenizer_model],
              "make-model-110m")
    hf = [sys.executable, os.path.join(HERE, "hf_side.py")]
    hf_best = {}
    lp_best = math.inf
    lp_line = ""
    for r in range(a.prefill_rounds):
        log(f"prefill round {r + 1}/{a.prefill_rounds}: HF ({a.hf_attn})")
        _, j = R.run(hf + ["prefill", "--model", model, "--threads", str(a.threads), "--batch", str(a.prefill_batch),
                           "--seq", str(a.prefill_seq), "--reps", str(a.prefill_reps), "--attn", a.hf_attn],
                     f"hf-prefill-{r + 1}", stdout_json=True)
        for attn, v in j["results"].items():
            hf_best[attn] = max(hf_best.get(attn, 0.0), v["tokens_per_second"])
        report["hf_env"].update({k: j[k] for k in ("torch", "transformers", "mkl", "threads")})
        log(f"prefill round {r + 1}/{a.prefill_rounds}: bench_prefill")
        _, out = R.run([a.bench_prefill, "--threads", str(a.threads), "--batch", str(a.prefill_batch), "--seq",
                        str(a.prefill_seq), "--reps", str(a.prefill_reps)], f"bench-prefill-{r + 1}")
        m = re.search(r"prefill [\d.]+ tokens/s \(([\d.]+) s/batch\)", out)
        if not m:
            raise SystemExit(f"bench_prefill: no 'prefill ... tokens/s (... s/batch)' line in:\n{out}")
        lp_best = min(lp_best, float(m.group(1)))
        lp_line = [l for l in out.splitlines() if l.startswith("threads ")][-1]
    lp_tps = a.prefill_batch * a.prefill_seq / lp_best
    ratio = lp_tps / hf_best["eager"]
    p = {"layerprune_tps": lp_tps, "hf_tps": hf_best, "ratio_vs_eager": ratio, "bench_prefill_line": lp_line}
    if "sdpa" in hf_best:
        p["ratio_vs_sdpa"] = lp_tps / hf_best["sdpa"]

    # Correctness: no layerprune command prints logits, so the loss of the same directory is compared.
    short = os.path.join(a.work, "loss.txt")
    with open(a.loss_data, encoding="utf-8") as f:
        text = f.read(a.loss_chars)
    with open(short, "w", encoding="utf-8") as f:
        f.write(text)
    log("loss check: layerprune loss vs HF")
    t_lp, jl = R.run([lp, "loss", "--model", model, "--data", short, "--context", str(a.loss_context),
                      "--max-windows", str(a.loss_windows), "--threads", str(a.threads), "--json"], "lp-loss",
                     stdout_json=True)
    t_hf, jh = R.run(hf + ["loss", "--model", model, "--data", short, "--tokenizer", a.tokenizer_model, "--context",
                           str(a.loss_context), "--max-windows", str(a.loss_windows), "--threads", str(a.threads)],
                     "hf-loss", stdout_json=True)
    p["loss"] = {"layerprune": jl["mean_nll"], "hf": jh["mean_nll"], "abs_diff": abs(jl["mean_nll"] - jh["mean_nll"]),
                 "predicted_tokens": [jl["predicted_tokens"], jh["predicted_tokens"]],
                 "stream_tokens": [jl["stream_tokens"], jh["stream_tokens"]],
                 "seconds": [t_lp, t_hf]}
    p["loss"]["ok"] = (p["loss"]["abs_diff"] <= a.loss_tol and jl["predicted_tokens"] == jh["predicted_tokens"]
                       and jl["stream_tokens"] == jh["stream_tokens"])
    report["prefill"] = p


def part_mmlu(a, R, lp, report):
    model = os.path.join(a.work, "m110")
    if not os.path.exists(os.path.join(model, "config.json")):
        R.run([lp, "make-model", "--out", model, "--preset", "110m", "--seed", "0", "--tokenizer", a.tokenizer_model],
              "make-model-110m")
    subjects = a.mmlu_subjects.split(",")
    out = os.path.join(a.work, "lmeval-mmlu")
    log(f"MMLU {a.mmlu_shots}-shot, {len(subjects)} subjects x {a.mmlu_limit}: lm_eval")
    t_lm, _ = R.run(lm_eval_cmd(a, model, [f"lp_mmlu_{s}" for s in subjects], out, a.mmlu_shots, a.mmlu_limit),
                    "lmeval-mmlu")
    rec = os.path.join(a.work, "lp-mmlu.jsonl")
    log("MMLU: layerprune eval")
    cmd = [lp, "eval", "--model", model, "--task", "mmlu", "--data", a.mmlu_data, "--subjects", a.mmlu_subjects,
           "--limit", str(a.mmlu_limit), "--shots", str(a.mmlu_shots), "--threads", str(a.threads),
           "--batch", str(a.lp_batch), "--records", rec, "--json"] + (["--add-bos"] if a.bos else [])
    t_lp, j = R.run(cmd, "lp-eval-mmlu", stdout_json=True)
    lm, lpr = {}, {}
    for s in subjects:
        for k, v in lm_eval_samples(out, f"lp_mmlu_{s}").items():
            lm[(s, k)] = v
    for r in lp_records(rec):
        lpr[(r["subject"], int(r["index"]))] = r
    c = compare_items(lm, lpr)
    report["mmlu"] = {"lm_eval_seconds": t_lm, "layerprune_seconds": t_lp, "ratio": t_lm / t_lp, "check": c,
                      "prefix_cache": j.get("prefix_cache", {}).get("summary", ""), "truncated": j.get("truncated"),
                      "layerprune_acc": j["acc"]}


def part_sweep(a, R, lp, report):
    model = os.path.join(a.work, "msweep")
    if not os.path.exists(os.path.join(model, "config.json")):
        R.run([lp, "make-model", "--out", model, "--preset", "tiny", "--dim", str(a.sweep_dim), "--layers",
               str(a.sweep_layers), "--heads", str(a.sweep_heads), "--ffn", str(a.sweep_ffn), "--vocab", "32000",
               "--context", str(a.sweep_context), "--seed", "0", "--tokenizer", a.tokenizer_model], "make-model-sweep")
    cache = os.path.join(a.work, "distances")
    shutil.rmtree(cache, ignore_errors=True)  # the sweep measures its distances inside its timed run
    log(f"sweep: layerprune sweep ({a.fractions}, BoolQ x {a.boolq_limit})")
    cmd = [lp, "sweep", "--model", model, "--data", a.calib_data, "--samples", str(a.calib_samples), "--cache", cache,
           "--fractions", a.fractions, "--tasks", "boolq", "--boolq-data", a.boolq_data, "--boolq-limit",
           str(a.boolq_limit), "--threads", str(a.threads), "--batch", str(a.lp_batch), "--json"] + \
        (["--add-bos"] if a.bos else [])
    t_sweep, sj = R.run(cmd, "lp-sweep", stdout_json=True)
    points = sj["points"]
    # One lm-eval run per distinct pruned model (grid points with the same dropped layers share it).
    variants = {}
    for pt in points:
        key = tuple(pt["dropped"])
        variants.setdefault(key, []).append(pt)
    t_export, t_lm, t_check = 0.0, 0.0, 0.0
    rows = []
    for i, (dropped, pts) in enumerate(sorted(variants.items(), key=lambda kv: (len(kv[0]), kv[0]))):
        name = f"v{i:02d}-drop-" + ("none" if not dropped else f"{dropped[0]}-{dropped[-1]}")
        vdir = os.path.join(a.work, "variants", name)
        shutil.rmtree(vdir, ignore_errors=True)
        if dropped:
            s, _ = R.run([lp, "prune", "--model", model, "--out", vdir, "--drop", ",".join(map(str, dropped)),
                          "--threads", str(a.threads)], f"prune-{name}")
        else:
            s = 0.0
            vdir = model
        t_export += s
        out = os.path.join(a.work, "lmeval-boolq", name)
        log(f"sweep: lm_eval on variant {i + 1}/{len(variants)} ({name}, {len(pts)} grid point(s))")
        s, _ = R.run(lm_eval_cmd(a, vdir, ["lp_boolq"], out, None, a.boolq_limit), f"lmeval-{name}")
        t_lm += s
        lm = lm_eval_samples(out, "lp_boolq")
        row = {"name": name, "dropped": list(dropped), "points": [f"{p['strategy']} n={p['n']}" for p in pts],
               "lm_eval_seconds": s, "lm_acc": sum(v["pred"] == v["gold"] for v in lm.values()) / len(lm),
               "sweep_acc": [p["boolq"] for p in pts], "lm_preds": [lm[k]["pred"] for k in sorted(lm)]}
        row["acc_agree"] = all(abs(x - row["lm_acc"]) < 1e-9 for x in row["sweep_acc"])
        if a.item_check:
            rec = os.path.join(a.work, "lp-boolq", name + ".jsonl")
            os.makedirs(os.path.dirname(rec), exist_ok=True)
            cmd = [lp, "eval", "--model", model, "--task", "boolq", "--data", a.boolq_data, "--limit",
                   str(a.boolq_limit), "--threads", str(a.threads), "--batch", str(a.lp_batch), "--records", rec,
                   "--json"] + (["--drop", ",".join(map(str, dropped))] if dropped else []) + \
                (["--add-bos"] if a.bos else [])
            s, ej = R.run(cmd, f"lp-eval-{name}", stdout_json=True)
            t_check += s
            lpr = {int(r["index"]): r for r in lp_records(rec)}
            row["check"] = compare_items(lm, lpr)
            row["eval_acc"] = ej["acc"]
        rows.append(row)
    loop = None
    if a.inprocess:
        # The stronger baseline: one Python process, lm_eval.simple_evaluate per variant (same tasks, items,
        # batch size); imports and lm-eval's task index are paid once.
        log(f"sweep: lm-eval in one process over the {len(rows)} variants")
        vdirs = [model if not r["dropped"] else os.path.join(a.work, "variants", r["name"]) for r in rows]
        cmd = [sys.executable, os.path.join(HERE, "lmeval_loop.py"), "--include-path", os.path.join(a.work, "tasks"),
               "--task", "lp_boolq", "--limit", str(a.boolq_limit), "--batch-size", str(a.lm_eval_batch),
               "--tokenizer", a.hf_tokenizer] + (["--model-args", a.lm_eval_model_args] if a.lm_eval_model_args else []) + vdirs
        t_loop, lj = R.run(cmd, "lmeval-loop", stdout_json=True)
        for r, lm_r in zip(rows, lj["models"]):
            r["loop_acc"] = lm_r["acc"]
            r["loop_preds_same"] = lm_r["preds"] == r["lm_preds"]
        loop = {"seconds": t_loop, "setup_seconds": lj["setup_seconds"], "ratio": t_loop / t_sweep,
                "agree": all(abs(r["loop_acc"] - r["lm_acc"]) < 1e-9 and r["loop_preds_same"] for r in rows)}
    report["sweep"] = {"inprocess": loop, "layerprune_seconds": t_sweep, "lm_eval_seconds": t_lm, "export_seconds": t_export,
                       "item_check_seconds": t_check, "ratio": t_lm / t_sweep,
                       "ratio_with_export": (t_lm + t_export) / t_sweep, "grid_points": len(points),
                       "variants": len(variants), "rows": rows, "layers": sj["layers"],
                       "layer_evals": [sj.get("layer_evals_shared"), sj.get("layer_evals_naive")]}


# --------------------------------------------------------------------------------------------- report


def print_report(a, rep):
    P = print
    P("")
    P("=" * 100)
    P(f"bench/compare: layerprune vs transformers / lm-evaluation-harness, {a.threads} thread(s) both sides")
    env = rep.get("hf_env", {})
    P(f"python side: torch {env.get('torch', '?')} (MKL {env.get('mkl', '?')}), transformers {env.get('transformers', '?')}, "
      f"lm-eval {rep.get('lm_eval_version', '?')}; BOS {'on' if a.bos else 'off'} on both sides; work dir {a.work}")
    P("=" * 100)
    verdicts = []
    if "prefill" in rep:
        p = rep["prefill"]
        P(f"(1) prefill, random 110M Llama, batch {a.prefill_batch} x {a.prefill_seq}, logits at every position, best of "
          f"{a.prefill_reps} x {a.prefill_rounds} rounds")
        for attn, v in p["hf_tps"].items():
            P(f"    HF LlamaForCausalLM ({attn:5s}) {v:8.1f} tokens/s")
        P(f"    layerprune bench_prefill       {p['layerprune_tps']:8.1f} tokens/s   [{p['bench_prefill_line'].strip()}]")
        v = verdict(p["ratio_vs_eager"], 1.2)
        extra = f"  (vs HF sdpa: {p['ratio_vs_sdpa']:.2f}x)" if "ratio_vs_sdpa" in p else ""
        P(f"    ratio layerprune / HF eager = {p['ratio_vs_eager']:.2f}x   target >= 1.2x: {v}{extra}")
        verdicts.append(("prefill tokens/s vs HF eager", f"{p['ratio_vs_eager']:.2f}x", ">= 1.2x", v))
        l = p["loss"]
        P(f"    check (same model dir, `loss` recipe, {l['predicted_tokens'][0]} predicted tokens): layerprune "
          f"{l['layerprune']:.6f}  HF {l['hf']:.6f}  |diff| {l['abs_diff']:.2e}  "
          f"stream tokens {l['stream_tokens'][0]}/{l['stream_tokens'][1]}: {'AGREE' if l['ok'] else 'DISAGREE'}")
    if "mmlu" in rep:
        m = rep["mmlu"]
        c = m["check"]
        P(f"(2) MMLU {a.mmlu_shots}-shot, random 110M Llama, {len(a.mmlu_subjects.split(','))} subjects x {a.mmlu_limit} "
          f"questions ({a.mmlu_subjects})")
        P(f"    lm_eval (hf, batch {a.lm_eval_batch})        {m['lm_eval_seconds']:7.1f} s wall (whole command)")
        P(f"    layerprune eval (batch {a.lp_batch})      {m['layerprune_seconds']:7.1f} s wall (whole command); "
          f"{m['prefix_cache']}")
        v = verdict(m["ratio"], 4.0)
        P(f"    ratio lm_eval / layerprune = {m['ratio']:.2f}x   target >= 4x: {v}")
        verdicts.append(("MMLU wall time, lm_eval / layerprune", f"{m['ratio']:.2f}x", ">= 4x", v))
        ok = c["agree"] == c["items"] == c["lm_items"] == c["lp_items"]
        P(f"    check: predictions agree on {c['agree']}/{c['items']} items, prompts identical (sha256) on "
          f"{c['same_prompt']}/{c['items']}, gold on {c['same_gold']}/{c['items']}, max |loglik diff| "
          f"{c['max_ll_diff']:.2e}; accuracy lm_eval {c['lm_correct']}/{c['items']}, layerprune {c['lp_correct']}/"
          f"{c['items']}: {'AGREE' if ok else 'DISAGREE'}")
    if "sweep" in rep:
        s = rep["sweep"]
        P(f"(3) no-healing sweep, random {s['layers']}-layer Llama (dim {a.sweep_dim}, FFN {a.sweep_ffn}, "
          f"{a.sweep_heads} heads, vocab 32000), BoolQ 0-shot x {a.boolq_limit}, fractions {a.fractions}, "
          f"similarity + simple: {s['grid_points']} grid points, {s['variants']} distinct models")
        P(f"    lm_eval once per variant ({s['variants']} runs)  {s['lm_eval_seconds']:7.1f} s wall (+ {s['export_seconds']:.1f} s "
          f"`layerprune prune` exports, not counted)")
        P(f"    layerprune sweep (distances included)  {s['layerprune_seconds']:7.1f} s wall; layer evaluations "
          f"{s['layer_evals'][0]} shared vs {s['layer_evals'][1]} one by one")
        v = verdict(s["ratio"], 10.0)
        P(f"    ratio lm_eval / layerprune = {s['ratio']:.2f}x (with exports {s['ratio_with_export']:.2f}x)   "
          f"target >= 10x: {v}")
        verdicts.append(("sweep wall time, lm_eval per variant / sweep", f"{s['ratio']:.2f}x", ">= 10x", v))
        lo = s.get("inprocess")
        if lo:
            P(f"    stronger baseline, lm-eval in one Python process (simple_evaluate per variant, {lo['setup_seconds']:.1f} s "
              f"imports + task index once): {lo['seconds']:.1f} s wall, ratio {lo['ratio']:.2f}x "
              f"(against the 10x target: {verdict(lo['ratio'], 10.0)}); same accuracies and predictions as the CLI runs: "
              f"{'AGREE' if lo['agree'] else 'DISAGREE'}")
        P(f"    {'variant':22s} {'grid points':34s} {'lm_eval':>7s} {'sweep':>7s}  per-item vs `eval --drop`")
        all_ok = True
        for r in s["rows"]:
            sw = ",".join(f"{x:.3f}" for x in sorted(set(r["sweep_acc"])))
            item = ""
            ok = r["acc_agree"]
            if "check" in r:
                c = r["check"]
                iok = c["agree"] == c["items"] == c["lm_items"] and abs(r["eval_acc"] - r["lm_acc"]) < 1e-9
                ok = ok and iok
                item = f"{c['agree']}/{c['items']} preds, max |dll| {c['max_ll_diff']:.1e}"
            all_ok = all_ok and ok
            P(f"    {r['name']:22s} {'; '.join(r['points'])[:34]:34s} {r['lm_acc']:7.3f} {sw:>7s}  {item} "
              f"{'' if ok else '<- DISAGREE'}")
        P(f"    check: accuracy equal on {sum(r['acc_agree'] for r in s['rows'])}/{len(s['rows'])} variants"
          f"{', per-item predictions checked through layerprune eval --drop' if a.item_check else ''}: "
          f"{'AGREE' if all_ok else 'DISAGREE'}")
    P("-" * 100)
    for name, val, tgt, v in verdicts:
        P(f"  {name:48s} {val:>8s}  target {tgt:7s} {v}")
    P("-" * 100)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = os.environ.get("LAYERPRUNE_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))
    ap.add_argument("--work", required=True, help="scratch directory (models, logs, lm-eval outputs)")
    ap.add_argument("--layerprune", default=os.path.join(ROOT, "build", "cli", "layerprune"))
    ap.add_argument("--bench-prefill", default=os.path.join(ROOT, "build", "bench", "bench_prefill"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", default="prefill,mmlu,sweep")
    ap.add_argument("--data", default=data, help="shared data directory (mmlu/, boolq/, llama2/tokenizer, tinystories/)")
    ap.add_argument("--no-bos", dest="bos", action="store_false",
                    help="run lm-eval with add_bos_token=False and layerprune without --add-bos (default: lm-eval's "
                         "default, which adds BOS as the Llama-2 tokenizer config asks, and layerprune --add-bos)")
    ap.add_argument("--prefill-batch", type=int, default=4)
    ap.add_argument("--prefill-seq", type=int, default=512)
    ap.add_argument("--prefill-reps", type=int, default=3)
    ap.add_argument("--prefill-rounds", type=int, default=2, help="HF and bench_prefill alternate this many times")
    ap.add_argument("--hf-attn", default="eager,sdpa", help="HF attention implementations timed (eager is the target)")
    ap.add_argument("--loss-chars", type=int, default=12000)
    ap.add_argument("--loss-context", type=int, default=512)
    ap.add_argument("--loss-windows", type=int, default=4)
    ap.add_argument("--loss-tol", type=float, default=1e-4)
    ap.add_argument("--mmlu-subjects", default="abstract_algebra,anatomy,astronomy,business_ethics")
    ap.add_argument("--mmlu-limit", type=int, default=8)
    ap.add_argument("--mmlu-shots", type=int, default=5)
    ap.add_argument("--lm-eval-batch", default="8")
    ap.add_argument("--lm-eval-model-args", default="", help="extra lm-eval --model_args (e.g. attn_implementation=eager)")
    ap.add_argument("--lp-batch", type=int, default=8)
    ap.add_argument("--sweep-layers", type=int, default=32)
    ap.add_argument("--sweep-dim", type=int, default=128)
    ap.add_argument("--sweep-ffn", type=int, default=336)
    ap.add_argument("--sweep-heads", type=int, default=4)
    ap.add_argument("--sweep-context", type=int, default=1024)
    ap.add_argument("--fractions", default="0.05,0.10,0.15,0.20,0.25,0.30,0.35,0.40,0.45,0.50")
    ap.add_argument("--boolq-limit", type=int, default=12)
    ap.add_argument("--calib-samples", type=int, default=64)
    ap.add_argument("--no-inprocess", dest="inprocess", action="store_false",
                    help="skip the second lm-eval baseline (all variants in one Python process)")
    ap.add_argument("--no-item-check", dest="item_check", action="store_false",
                    help="skip the per-item check of each variant through `layerprune eval --drop`")
    ap.add_argument("--json-out", default="", help="also write the report as JSON here")
    a = ap.parse_args()
    a.work = os.path.abspath(a.work)
    a.mmlu_data = os.path.join(a.data, "mmlu", "hendrycks_format")
    a.boolq_data = os.path.join(a.data, "boolq", "val.jsonl")
    a.hf_tokenizer = os.path.join(a.data, "llama2", "tokenizer")
    a.tokenizer_model = os.path.join(a.hf_tokenizer, "tokenizer.model")
    a.loss_data = a.calib_data = os.path.join(a.data, "tinystories", "tinystories_val.txt")
    if "eager" not in a.hf_attn.split(","):
        raise SystemExit("--hf-attn must include eager (the target's reference)")
    if not a.bos:
        a.lm_eval_model_args = ",".join(x for x in [a.lm_eval_model_args, "add_bos_token=False"] if x)
    for f in (a.layerprune, a.bench_prefill):
        if not os.access(f, os.X_OK):
            raise SystemExit(f"{f}: not built (cmake --build build)")
    for f in (a.mmlu_data, a.boolq_data, a.tokenizer_model, a.loss_data):
        if not os.path.exists(f):
            raise SystemExit(f"{f}: missing (--data DIR points at the shared data directory)")
    os.makedirs(a.work, exist_ok=True)
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "HF_DATASETS_CACHE": os.path.join(a.work, "hf-datasets-cache")})
    import importlib.metadata as md

    rep = {"lm_eval_version": md.version("lm_eval"), "threads": a.threads,
           "hf_env": {"torch": md.version("torch"), "transformers": md.version("transformers")}}
    write_tasks(os.path.join(a.work, "tasks"), a.mmlu_data, a.mmlu_subjects.split(","), a.boolq_data)
    R = Runner(a.work, env)
    t0 = time.perf_counter()
    parts = a.parts.split(",")
    timing = {}
    for name, fn in (("prefill", part_prefill), ("mmlu", part_mmlu), ("sweep", part_sweep)):
        if name in parts:
            t = time.perf_counter()
            fn(a, R, a.layerprune, rep)
            timing[name] = time.perf_counter() - t
            log(f"{name}: {timing[name]:.0f}s")
    rep["part_seconds"] = timing
    rep["total_seconds"] = time.perf_counter() - t0
    print_report(a, rep)
    print(f"parts: " + ", ".join(f"{k} {v:.0f}s" for k, v in timing.items()) + f"; total {rep['total_seconds']:.0f}s; "
          f"logs and outputs under {a.work}")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(rep, f, indent=1, default=str)


if __name__ == "__main__":
    main()
