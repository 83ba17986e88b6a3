"""Golden outputs of SmolLM2-135M-Instruct (the GGUF in ../shared/data/smollm2) from Hugging Face transformers.

    HF_HUB_OFFLINE=1 ~/.cache/layerprune/compare-venv/bin/python tests/golden/make_smollm2_golden.py [DATA_DIR]

Independent of layerprune's C++: transformers 5.24 loads the GGUF itself (its own dequantisation and its own
inverse of llama.cpp's q/k row permutation) into a float32 LlamaForCausalLM, and the tokenizer is built
with the `tokenizers` package from the GGUF's vocabulary and merges and the pre-tokenizer of SmolLM2's
published tokenizer.json (Digits(individual_digits) then ByteLevel), as `layerprune convert --gguf` writes
it. Writes smollm2_reference.json (about 200 KB):

- prompts: token ids (stored, so the logits check does not depend on tokenization), and per position the
  8 largest logits with their ids, the logits of 16 fixed ids, the log-probability of the next prompt
  token, and sum / sum of squares of the whole [T, 49152] logits;
- greedy: 24 greedy tokens after "Once upon a time, there was";
- distances: paper Eq. 7 (arccos of the cosine at the last token, over pi) between every pair of the 31
  hidden states x^(0..30) (inputs of layers 0..29 and the last layer's output before the final norm, from
  forward hooks: transformers' hidden_states[30] is after the norm), averaged over the calibration recipe
  of method/distances.h on TinyStories (8 paragraphs, 64 tokens, seed 0; no BOS, as SmolLM2's tokenizer
  says add_bos_token = false), each sequence run alone; and l*(n) for every n.
"""
import hashlib
import json
import os
import shutil
import sys
import tempfile

import gguf
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_distances_golden import choose, paragraphs  # noqa: E402  (the calibration recipe, in Python)

torch.set_num_threads(2)
DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared", "data")
GGUF = os.path.join(DATA, "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
FIXED_IDS = [0, 1, 2, 3, 17, 100, 255, 256, 1000, 4096, 10000, 20000, 30000, 40000, 49000, 49151]
PROMPTS = [
    "Once upon a time, there was",
    "The capital of France is Paris. The capital of Germany is",
    "Question: Which of the following is a prime number?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:",
]
RECIPE = dict(samples=8, seq_len=64, seed=0)


def gguf_tokenizer(path):
    r = gguf.GGUFReader(path)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens, merges = strings("tokenizer.ggml.tokens"), strings("tokenizer.ggml.merges")
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    return tok


def angular(a, b):
    a, b = a.double(), b.double()
    c = torch.dot(a, b) / (a.norm() * b.norm())
    return (torch.arccos(c.clamp(-1, 1)) / torch.pi).item()


def main():
    tok = gguf_tokenizer(GGUF)
    work = tempfile.mkdtemp()
    os.symlink(os.path.abspath(GGUF), os.path.join(work, "model.gguf"))
    model = AutoModelForCausalLM.from_pretrained(work, gguf_file="model.gguf", dtype=torch.float32).eval()
    shutil.rmtree(work)
    L = model.config.num_hidden_layers
    out = {"model": "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
           "model_sha256": hashlib.sha256(open(GGUF, "rb").read()).hexdigest(),
           "fixed_ids": FIXED_IDS, "prompts": []}

    with torch.no_grad():
        for text in PROMPTS:
            ids = tok.encode(text).ids
            logits = model(torch.tensor([ids])).logits[0].double()  # [T, V]
            logp = torch.log_softmax(logits, -1)
            top = logits.topk(8, -1)
            out["prompts"].append({
                "text": text, "ids": ids,
                "top_ids": top.indices.tolist(), "top_logits": top.values.tolist(),
                "fixed_logits": logits[:, FIXED_IDS].tolist(),
                "next_logprob": [logp[t, ids[t + 1]].item() for t in range(len(ids) - 1)],
                "sum": logits.sum().item(), "sum_squares": (logits * logits).sum().item()})

        ids = tok.encode(PROMPTS[0]).ids
        gen = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)[0, len(ids):].tolist()
        out["greedy"] = {"prompt_ids": ids, "ids": gen, "text": tok.decode(gen)}

        # x^(L): the last layer's output before the final norm, from a hook.
        last = {}
        model.model.layers[-1].register_forward_hook(lambda m, i, o: last.__setitem__("x", o[0] if isinstance(o, tuple) else o))
        path = os.path.join(DATA, "tinystories", "tinystories_val.txt")
        raw = open(path, "rb").read()
        docs = paragraphs(raw.decode("utf-8"))
        chosen, usable = choose(docs, RECIPE["samples"], RECIPE["seed"])
        dist = torch.zeros(L + 1, L + 1, dtype=torch.float64)
        lengths = []
        for i in chosen:
            ids = tok.encode(docs[i]).ids[: RECIPE["seq_len"]]
            lengths.append(len(ids))
            o = model(torch.tensor([ids]), output_hidden_states=True)
            h = [o.hidden_states[l][0, -1] for l in range(L)] + [last["x"][0, -1]]
            for a in range(L + 1):
                for b in range(L + 1):
                    if a != b:
                        dist[a, b] += angular(h[a], h[b])
        dist /= len(chosen)
        best = []
        for n in range(1, L + 1):
            ds = [dist[l, l + n].item() for l in range(0, L - n + 1)]
            best.append({"n": n, "l_star": min(range(len(ds)), key=lambda l: ds[l]), "d": min(ds)})
        out["distances"] = dict(RECIPE, data="tinystories/tinystories_val.txt",
                                data_sha256=hashlib.sha256(raw).hexdigest(), add_bos=False, documents=usable,
                                chosen=chosen, lengths=lengths, distances=dist.tolist(), best=best)

    with open(os.path.join(HERE, "smollm2_reference.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print("greedy:", repr(out["greedy"]["text"]))
    print("l*(n):", [(b["n"], b["l_star"], round(b["d"], 4)) for b in best[:12]])


if __name__ == "__main__":
    main()
