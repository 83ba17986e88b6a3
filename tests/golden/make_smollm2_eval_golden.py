"""lm-evaluation-harness 0.4.13 on SmolLM2-135M-Instruct: per-item log-likelihoods for a small MMLU and BoolQ.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 ~/.cache/layerprune/compare-venv/bin/python \
        tests/golden/make_smollm2_eval_golden.py [--data DATA_DIR] [--model DIR] [--layerprune BIN]

The reference is the harness itself, not our scoring: `lm_eval --model hf` (transformers 5.24 LlamaForCausalLM,
float32, batch 1, CPU) with the local task YAMLs of bench/compare/tasks (lm-eval's own MMLU and BoolQ
templates with only the dataset changed to the local files; written by bench/compare/compare.py's
write_tasks, read back by its lm_eval_samples), `--log_samples` for the per-item log-likelihoods:

- MMLU 5-shot (the paper's setting; shots = the first 5 dev rows): abstract_algebra and world_religions,
  the first 3 test questions each (Hendrycks CSV layout in DATA/mmlu/hendrycks_format);
- BoolQ 0-shot: the first 10 questions of DATA/boolq/val.jsonl.

The model is `layerprune convert --gguf` of DATA/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (DIR, made with BIN
when DIR has no config.json): the harness reads our converted directory, so this checks our scoring against
the harness's on the same weights (the conversion itself is checked against transformers' own GGUF loader by
test_llama SmolLM2FromGgufEqualsTransformers and check_gguf_convert.py). BOS: the harness leaves it to the
tokenizer, whose tokenizer_config.json says add_bos_token false; the script checks that the HF tokenizer
indeed adds nothing to a prompt.

Writes smollm2_eval.json: per item the sha256 of the context text the harness built, its context token count
(the harness's _encode_pair with the HF tokenizer: trailing whitespace moved onto the continuation), the
per-choice log-likelihoods (the harness's float32 log-softmax sums), the prediction (argmax, first on
ties), the gold answer and whether the harness scored it correct; the accuracies from the harness's results
file; sha256 of the data files read.
"""
import argparse
import glob
import hashlib
import importlib.metadata as md
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "compare"))
from compare import lm_eval_samples, write_tasks  # noqa: E402  (the task YAMLs and the samples reader)

GGUF = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MMLU_SUBJECTS = ["abstract_algebra", "world_religions"]
MMLU_SHOTS, MMLU_QUESTIONS = 5, 3
BOOLQ_QUESTIONS = 10


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_lm_eval(model, tasks_dir, tasks, out, limit, shots):
    cmd = [os.path.join(os.path.dirname(sys.executable), "lm_eval"), "--model", "hf", "--model_args",
           f"pretrained={model},dtype=float32", "--include_path", tasks_dir, "--tasks", ",".join(tasks),
           "--limit", str(limit), "--batch_size", "1", "--device", "cpu", "--output_path", out, "--log_samples"]
    if shots is not None:
        cmd += ["--num_fewshot", str(shots)]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    files = sorted(glob.glob(os.path.join(out, "**", "results_*.json"), recursive=True))
    return json.load(open(files[-1]))["results"]


def raw_samples(out, task):
    """The harness's samples file, by doc_id (for the context text and its own acc)."""
    files = sorted(glob.glob(os.path.join(out, "**", f"samples_{task}_*.jsonl"), recursive=True))
    rows = [json.loads(l) for l in open(files[-1]) if l.strip()]
    return {int(r["doc_id"]): r for r in rows}


def context_tokens(tok, context):
    # The harness's _encode_pair: trailing whitespace of the context moves onto the continuation.
    return len(tok.encode(context.rstrip(), add_special_tokens=True))


def items_of(out, task, tok, subject):
    lm, raw = lm_eval_samples(out, task), raw_samples(out, task)
    items = []
    for doc_id in sorted(lm):
        v, r = lm[doc_id], raw[doc_id]
        args = r["arguments"]
        ctx = args["gen_args_0"]["arg_0"] if isinstance(args, dict) else args[0][0]
        if bool(r["acc"]) != (v["pred"] == v["gold"]):
            raise SystemExit(f"{task} doc {doc_id}: the harness's acc {r['acc']} disagrees with argmax {v['pred']}")
        items.append({"subject": subject, "index": doc_id, "prompt_sha256": v["ctx_sha256"],
                      "context_tokens": context_tokens(tok, ctx), "loglikelihoods": v["ll"], "pred": v["pred"],
                      "gold": v["gold"], "correct": v["pred"] == v["gold"]})
    return items


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--model", default="/tmp/smollm2-hf", help="layerprune convert --gguf output")
    ap.add_argument("--layerprune", default=os.path.join(ROOT, "build", "cli", "layerprune"))
    ap.add_argument("--work", default=None, help="lm-eval outputs (default: a temp dir)")
    a = ap.parse_args()
    data = os.path.abspath(a.data)
    gguf = os.path.join(data, GGUF)
    if not os.path.exists(os.path.join(a.model, "config.json")):
        subprocess.run([a.layerprune, "convert", "--gguf", gguf, "--out", a.model], check=True)
    work = a.work or tempfile.mkdtemp(prefix="smollm2-eval-")
    tasks_dir = os.path.join(work, "tasks")
    mmlu_dir = os.path.join(data, "mmlu", "hendrycks_format")
    boolq_file = os.path.join(data, "boolq", "val.jsonl")
    write_tasks(tasks_dir, mmlu_dir, MMLU_SUBJECTS, boolq_file)

    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(a.model)
    probe = "The following are multiple choice questions"
    if tok.encode(probe) != tok.encode(probe, add_special_tokens=False):
        raise SystemExit("the converted tokenizer adds special tokens; this golden file assumes it adds none")

    mmlu_out, boolq_out = os.path.join(work, "mmlu"), os.path.join(work, "boolq")
    mmlu_tasks = [f"lp_mmlu_{s}" for s in MMLU_SUBJECTS]
    mmlu_res = run_lm_eval(a.model, tasks_dir, mmlu_tasks, mmlu_out, MMLU_QUESTIONS, MMLU_SHOTS)
    boolq_res = run_lm_eval(a.model, tasks_dir, ["lp_boolq"], boolq_out, BOOLQ_QUESTIONS, None)

    mmlu_items = []
    for s, t in zip(MMLU_SUBJECTS, mmlu_tasks):
        mmlu_items += items_of(mmlu_out, t, tok, s)
    boolq_items = items_of(boolq_out, "lp_boolq", tok, "")
    files = [os.path.join("mmlu", "hendrycks_format", split, f"{s}_{split}.csv")
             for s in MMLU_SUBJECTS for split in ("dev", "test")] + ["boolq/val.jsonl"]
    out = {
        "reference": f"lm-evaluation-harness {md.version('lm_eval')}, transformers {md.version('transformers')}, "
                     f"torch {md.version('torch')}: lm_eval --model hf pretrained=<converted dir>,dtype=float32 "
                     "--batch_size 1 --device cpu --log_samples, bench/compare/tasks YAMLs",
        "model": GGUF, "model_sha256": sha256_file(gguf), "add_bos": False,
        "data_sha256": {f: sha256_file(os.path.join(data, f)) for f in files},
        "mmlu": {"subjects": MMLU_SUBJECTS, "shots": MMLU_SHOTS, "questions_per_subject": MMLU_QUESTIONS,
                 "acc": {s: mmlu_res[t]["acc,none"] for s, t in zip(MMLU_SUBJECTS, mmlu_tasks)},
                 "items": mmlu_items},
        "boolq": {"questions": BOOLQ_QUESTIONS, "shots": 0, "acc": boolq_res["lp_boolq"]["acc,none"],
                  "items": boolq_items},
    }
    with open(os.path.join(HERE, "smollm2_eval.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("MMLU acc:", out["mmlu"]["acc"], "BoolQ acc:", out["boolq"]["acc"])


if __name__ == "__main__":
    main()
