# Local datasets for lm-evaluation-harness 0.4.13 (`custom_dataset:` in the task YAMLs next to this file).
#
# The YAMLs are lm-eval's own task templates (tasks/mmlu/default/_default_template_yaml and
# tasks/super_glue/boolq/default.yaml) with only the dataset changed: instead of downloading cais/mmlu or
# super_glue from the Hugging Face Hub, these functions read the local files that `layerprune eval` reads,
# with Python's csv/json modules, and give the rows the fields the templates expect (cais/mmlu's `question`,
# `subject`, `choices`, `answer` 0-3; super_glue boolq's `passage`, `question`, `label` 0/1).
import csv
import json
import os

import datasets


def _mmlu_rows(path, subject):
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for rec in csv.reader(f):
            if not rec:
                continue
            if len(rec) != 6:
                raise ValueError(f"{path}: a row with {len(rec)} fields, not 6")
            q, a, b, c, d, ans = rec
            if ans in ("A", "B", "C", "D"):  # Hendrycks layout (no header)
                gold = "ABCD".index(ans)
            elif ans in ("0", "1", "2", "3"):  # cais/mmlu export (with a header row)
                gold = int(ans)
            elif ans == "answer":  # the export's header row
                continue
            else:
                raise ValueError(f"{path}: bad answer {ans!r}")
            rows.append({"question": q, "subject": subject, "choices": [a, b, c, d], "answer": gold})
    return rows


def load_mmlu(data_dir=None, subject=None, **_):
    """MMLU one subject: {"test": ..., "dev": ...} from <data_dir>/{test,dev}/<subject>_{test,dev}.csv."""
    if not data_dir or not subject:
        raise ValueError("load_mmlu needs dataset_kwargs data_dir and subject")
    out = {}
    for split in ("test", "dev"):
        path = os.path.join(data_dir, split, f"{subject}_{split}.csv")
        out[split] = datasets.Dataset.from_list(_mmlu_rows(path, subject))
    return datasets.DatasetDict(out)


def load_boolq(data_file=None, **_):
    """BoolQ validation split from a SuperGLUE-layout JSONL (label "true"/"false" or a bool) or Google's
    layout (`answer` bool)."""
    if not data_file:
        raise ValueError("load_boolq needs dataset_kwargs data_file")
    rows = []
    with open(data_file, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            d = json.loads(line)
            lab = d["label"] if "label" in d else d["answer"]
            if isinstance(lab, str):
                lab = {"true": True, "false": False}[lab.lower()]
            rows.append({"passage": d["passage"], "question": d["question"], "idx": d.get("idx", i),
                         "label": int(bool(lab))})
    return datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)})
