"""Writes tests/golden/stories260k_eval.json: MMLU and BoolQ scored as lm-evaluation-harness v0.4 scores
them, on a fixed subset, with stories260K unpruned and with layers 2 and 3 dropped (see docs/evaluation.md).

    /usr/bin/python3 tests/golden/make_eval_golden.py [DATA_DIR]      # DATA_DIR defaults to ../shared/data

Independent of layerprune's C++ code: Python's csv and json modules read the data, the prompts are built
here from the harness's task templates, Python sentencepiece tokenizes, _encode_pair and the truncation
rule are the harness's, and the forward pass is tests/golden/reference_llama.py (llama2.c math on the .bin).
Every (context, continuation) pair is scored as its own sequence: no batching, no shared rows.
"""
import csv
import hashlib
import json
import os
import sys

import sentencepiece as spm
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference_llama as ref  # noqa: E402

torch.set_num_threads(1)
DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared", "data")

# The subset. abstract_algebra and world_religions have the shortest 5-shot prompts, high_school_european_
# history the longest; with tok512 every 5-shot prompt is longer than stories260K's 512 positions (all are
# left-truncated), so the 0-shot set covers prompts that fit. BoolQ: some passages fit, some do not.
MMLU_SUBJECTS = ["abstract_algebra", "world_religions", "high_school_european_history"]
MMLU_QUESTIONS = 4
BOOLQ_QUESTIONS = 12
LAYER_SETS = {"all": None, "drop_2_3": [0, 1, 4]}


def sha256_file(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def read_mmlu(subject, split):
    path = os.path.join(DATA, "mmlu", "hendrycks_format", split, f"{subject}_{split}.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return path, [dict(question=r[0], choices=r[1:5], answer="ABCD".index(r[5])) for r in rows]


def mmlu_text(doc, answer=None):
    t = doc["question"].strip() + "".join(f"\n{l}. {c}" for l, c in zip("ABCD", doc["choices"])) + "\nAnswer:"
    return t if answer is None else t + " " + "ABCD"[answer]


def mmlu_items(shots):
    items, files = [], {}
    for s in MMLU_SUBJECTS:
        dev_path, dev = read_mmlu(s, "dev")
        test_path, test = read_mmlu(s, "test")
        files[test_path] = sha256_file(test_path)
        if shots:
            files[dev_path] = sha256_file(dev_path)
        desc = "The following are multiple choice questions (with answers) about " + s.replace("_", " ") + ".\n\n"
        fewshot = "".join(mmlu_text(d, d["answer"]) + "\n\n" for d in dev[:shots])
        for i, doc in enumerate(test[:MMLU_QUESTIONS]):
            items.append(dict(subject=s, index=i, context=desc + fewshot + mmlu_text(doc),
                              choices=[" A", " B", " C", " D"], gold=doc["answer"]))
        if shots == 0:
            break  # the 0-shot set is abstract_algebra alone
    return items, files


def boolq_items():
    path = os.path.join(DATA, "boolq", "val.jsonl")
    items = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i == BOOLQ_QUESTIONS:
                break
            d = json.loads(line)
            label = d["label"]
            gold = label if isinstance(label, bool) else {"true": True, "false": False}[label]
            items.append(dict(subject="", index=i, context=d["passage"] + "\nQuestion: " + d["question"] + "?\nAnswer:",
                              choices=[" no", " yes"], gold=int(gold)))
    return items, {path: sha256_file(path)}


def encode_pair(sp, context, continuation):
    """The harness's _encode_pair (no BOS: add_special_tokens=False for causal models)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = sp.encode(context + continuation)
    ctx = sp.encode(context)
    return ctx, whole[len(ctx):]


def score(cfg, w, sp, items, layers):
    L = cfg["seq_len"]
    out = []
    for it in items:
        lls, conts, truncated = [], [], False
        for choice in it["choices"]:
            ctx, cont = encode_pair(sp, it["context"], choice)
            full = ctx + cont
            truncated |= len(full) > L + 1
            inp = full[-(L + 1):][:-1]  # the harness's left truncation
            logits, _ = ref.llama2c_forward(cfg, w, inp, layers)
            logp = torch.log_softmax(logits.double(), dim=-1)
            start = len(inp) - len(cont)
            lls.append(sum(logp[start + j, t].item() for j, t in enumerate(cont)))
            conts.append(cont)
        pred = max(range(len(lls)), key=lambda c: (lls[c], -c))  # first max on ties
        out.append(dict(subject=it["subject"], index=it["index"],
                        prompt_sha256=hashlib.sha256(it["context"].encode()).hexdigest(),
                        context_tokens=len(ctx), continuation_tokens=conts, truncated=truncated,
                        loglikelihoods=lls, pred=pred, gold=it["gold"], correct=pred == it["gold"]))
    return out


def main():
    cfg, w = ref.read_llama2c(os.path.join(DATA, "stories260K", "stories260K.bin"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(DATA, "stories260K", "tok512.model"))
    tasks = {"mmlu_5shot": ("mmlu", 5, mmlu_items(5)), "mmlu_0shot": ("mmlu", 0, mmlu_items(0)),
             "boolq": ("boolq", 0, boolq_items())}
    result = {"model": "stories260K (llama2.c .bin, tok512.model)", "max_length": cfg["seq_len"],
              "mmlu_subjects": MMLU_SUBJECTS, "mmlu_questions_per_subject": MMLU_QUESTIONS,
              "boolq_questions": BOOLQ_QUESTIONS, "sets": {}}
    for name, (task, shots, (items, files)) in tasks.items():
        for lname, layers in LAYER_SETS.items():
            scored = score(cfg, w, sp, items, layers)
            acc = sum(s["correct"] for s in scored) / len(scored)
            key = f"{name}.{lname}"
            result["sets"][key] = dict(task=task, shots=shots, layers=layers, acc=acc,
                                       truncated=sum(s["truncated"] for s in scored),
                                       data_sha256={os.path.relpath(p, DATA): h for p, h in files.items()},
                                       items=scored)
            print(f"{key}: acc {acc:.4f} ({sum(s['correct'] for s in scored)}/{len(scored)}), "
                  f"{result['sets'][key]['truncated']} truncated")
    with open(os.path.join(HERE, "stories260k_eval.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
