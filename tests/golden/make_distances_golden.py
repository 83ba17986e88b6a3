"""Golden angular distances (Gromov et al. 2024, Eq. 7) and a pruned forward pass for stories260K.

    /usr/bin/python3 tests/golden/make_distances_golden.py [DATA_DIR]   # DATA_DIR defaults to ../shared/data

Independent of layerprune's C++: the calibration recipe of method/distances.h is re-implemented here from its
description (paragraphs split on blank lines, whitespace-only ones dropped, ordered by sha256("<seed>:<index>"),
the first `samples` taken, BOS + sentencepiece ids cut to seq_len), each sequence runs on its own through the
plain-PyTorch llama2.c forward of reference_llama.py (no batching, no padding), and d is computed pairwise in
float64 at the last token. Writes stories260k_distances.json.
"""
import hashlib
import json
import math
import os
import sys

import sentencepiece as spm
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference_llama as ref  # noqa: E402

torch.set_num_threads(1)
DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared", "data")

RECIPES = [dict(samples=24, seq_len=128, seed=0), dict(samples=8, seq_len=512, seed=7)]
PRUNED_KEPT = [0, 1, 4]  # stories260K with layers 2 and 3 dropped


def paragraphs(text):
    """Runs of non-blank lines (blank: only spaces, tabs, CR), joined with newlines."""
    docs, cur = [], []
    for line in text.split("\n"):
        if line.strip(" \t\r") == "":
            if cur:
                docs.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    if cur:
        docs.append("\n".join(cur))
    return docs


def choose(docs, samples, seed):
    usable = [i for i, d in enumerate(docs) if d.strip(" \t\r\n") != ""]
    usable.sort(key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    return usable[:samples], len(usable)


def main():
    cfg, w = ref.read_llama2c(os.path.join(DATA, "stories260K", "stories260K.bin"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(DATA, "stories260K", "tok512.model"))
    path = os.path.join(DATA, "tinystories", "tinystories_val.txt")
    raw = open(path, "rb").read()
    docs = paragraphs(raw.decode("utf-8"))
    L = cfg["n_layers"]
    out = {"data": "tinystories/tinystories_val.txt", "data_sha256": hashlib.sha256(raw).hexdigest(),
           "layers": L, "recipes": []}
    for recipe in RECIPES:
        chosen, usable = choose(docs, recipe["samples"], recipe["seed"])
        dist = torch.zeros(L + 1, L + 1, dtype=torch.float64)
        lengths = []
        for i in chosen:
            ids = ([1] + sp.encode(docs[i]))[: min(recipe["seq_len"], cfg["seq_len"])]
            lengths.append(len(ids))
            _, hidden = ref.llama2c_forward(cfg, w, ids)
            h = hidden[:, -1, :]
            for a in range(L + 1):
                for b in range(L + 1):
                    if a != b:
                        dist[a, b] += ref.angular_distance(h[a], h[b])
        dist /= len(chosen)
        best = []
        for n in range(1, L + 1):
            ds = [dist[l, l + n].item() for l in range(0, L - n + 1)]
            best.append({"n": n, "l_star": min(range(len(ds)), key=lambda l: ds[l]), "d": min(ds)})
        out["recipes"].append(dict(recipe, documents=usable, chosen=chosen, lengths=lengths,
                                   distances=dist.tolist(), best=best))

    # A pruned forward: the same weights with only PRUNED_KEPT layers, on one prompt.
    per_layer = ["rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3"]
    pw = dict(w)
    for k in per_layer:
        pw[k] = w[k][PRUNED_KEPT]
    pcfg = dict(cfg, n_layers=len(PRUNED_KEPT))
    ids = [1] + sp.encode("Once upon a time, there was a little dog")
    logits, _ = ref.llama2c_forward(pcfg, pw, ids)
    out["pruned"] = {"kept": PRUNED_KEPT, "ids": ids, "last_logits": logits[-1].tolist()}
    with open(os.path.join(HERE, "stories260k_distances.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
