"""Writes the golden files the C++ tests compare against (see tests/golden/README.md).

    /usr/bin/python3 tests/golden/make_golden.py [DATA_DIR]      # DATA_DIR defaults to ../shared/data

Everything comes from tests/golden/reference_llama.py (plain PyTorch) and Python's sentencepiece, never
from layerprune itself. Deterministic: seeded, single-threaded.
"""
import hashlib
import json
import math
import os
import struct
import sys

import sentencepiece as spm
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference_llama as ref  # noqa: E402

torch.set_num_threads(1)
DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared", "data")

PROMPTS = [
    "Once upon a time",
    "Lily and Ben went to the park to play",
    "",  # BOS alone
    None,  # filled with the first TinyStories paragraph below
]


def stories260k():
    cfg, w = ref.read_llama2c(os.path.join(DATA, "stories260K", "stories260K.bin"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(DATA, "stories260K", "tok512.model"))
    text = open(os.path.join(DATA, "tinystories", "tinystories_val.txt"), encoding="utf-8").read()
    PROMPTS[3] = text.split("\n\n")[0][:300]
    hf_cfg, hf_sd = ref.llama2c_to_hf(cfg, w)
    out, meta = {}, {"prompts": json.dumps(PROMPTS)}
    last_hidden = []
    for i, prompt in enumerate(PROMPTS):
        ids = [1] + sp.encode(prompt)
        logits, hidden = ref.llama2c_forward(cfg, w, ids)
        # Self-check: HF math on the permuted weights is the same model.
        hf_logits, hf_hidden = ref.hf_forward(hf_cfg, hf_sd, ids)
        diff = (hf_logits - logits).abs().max().item()
        assert diff < 1e-4, f"q/k permutation self-check failed: {diff}"
        assert (hf_hidden - hidden).abs().max() < 1e-4
        out[f"prompt{i}.ids"] = torch.tensor(ids, dtype=torch.int64)
        out[f"prompt{i}.logits"] = logits
        out[f"prompt{i}.hidden"] = hidden
        last_hidden.append(hidden[:, -1, :])
    # Angular distance (paper Eq. 7) between hidden states i and j at each prompt's last token, averaged
    # over the prompts: distances[i][j], i, j in 0..L (inputs of layers 0..L-1, then the last output).
    L1 = cfg["n_layers"] + 1
    dist = torch.zeros(L1, L1, dtype=torch.float64)
    for h in last_hidden:
        for i in range(L1):
            for j in range(L1):
                dist[i, j] += ref.angular_distance(h[i], h[j]) / len(last_hidden)
    out["distances"] = dist.float()
    ref.write_safetensors(os.path.join(HERE, "stories260k_golden.safetensors"), out, meta)

    # Greedy check against llama2.c's own output (tests/golden/llama2c_generate_once_upon_a_time.ids.json).
    golden = json.load(open(os.path.join(HERE, "llama2c_generate_once_upon_a_time.ids.json")))
    ids = [1] + golden["prompt_ids_after_bos"]
    for want in golden["generated_ids"][:40]:
        logits, _ = ref.llama2c_forward(cfg, w, ids)
        nxt = int(logits[-1].argmax())
        assert nxt == want, f"reference greedy token {nxt} != llama2.c's {want}"
        ids.append(nxt)
    return cfg, w, sp, text


def loss(cfg, w, sp, text):
    """The loss recipe of `layerprune loss` (model/loss.h), in plain PyTorch."""
    stream = sp.encode(text)
    ctx = cfg["seq_len"]
    chunk = ctx - 1
    windows = len(stream) // chunk
    ids_bytes = struct.pack(f"<{len(stream)}i", *stream)
    result = {"recipe": "one stream, no BOS; windows [BOS] + 511 tokens; final partial window dropped; mean NLL of all predicted tokens",
              "stream_tokens": len(stream), "stream_sha256": hashlib.sha256(ids_bytes).hexdigest()}
    total, count, first8 = 0.0, 0, None
    for wi in range(windows):
        ids = [1] + stream[wi * chunk:(wi + 1) * chunk]
        logits, _ = ref.llama2c_forward(cfg, w, ids)
        logp = torch.log_softmax(logits[:-1].double(), dim=-1)
        tgt = torch.tensor(ids[1:])
        total += -logp[torch.arange(chunk), tgt].sum().item()
        count += chunk
        if wi == 7:
            first8 = {"windows": 8, "predicted_tokens": count, "mean_nll": total / count}
    mean = total / count
    result["full"] = {"windows": windows, "predicted_tokens": count, "mean_nll": mean,
                      "mean_nll_over_ln_vocab": mean / math.log(cfg["vocab"]), "stream_tokens": len(stream)}
    result["first8"] = first8
    with open(os.path.join(HERE, "stories260k_loss.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print("loss", result["full"], first8)


def random_models():
    specs = {
        "random_gqa4": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=8,
                            num_key_value_heads=4, vocab_size=64, tie_word_embeddings=False, rope_theta=10000.0,
                            rms_norm_eps=1e-6, dtype=torch.float32),
        "random_gqa2_tied": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=8,
                                 num_key_value_heads=2, vocab_size=64, tie_word_embeddings=True, rope_theta=10000.0,
                                 rms_norm_eps=1e-6, dtype=torch.float32),
        "random_theta": dict(hidden_size=48, intermediate_size=50, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=4, vocab_size=60, tie_word_embeddings=False, rope_theta=500000.0,
                             rms_norm_eps=1e-5, dtype=torch.float32),
        "random_bf16": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=64, tie_word_embeddings=False, rope_theta=10000.0,
                            rms_norm_eps=1e-6, dtype=torch.bfloat16),
    }
    for seed, (name, s) in enumerate(specs.items()):
        g = torch.Generator().manual_seed(1000 + seed)
        dtype = s.pop("dtype")
        cfg = dict(s, architectures=["LlamaForCausalLM"], model_type="llama", max_position_embeddings=64,
                   torch_dtype="bfloat16" if dtype == torch.bfloat16 else "float32", bos_token_id=1, eos_token_id=2)
        D, F, V, H = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_attention_heads"]
        KV, hd = cfg["num_key_value_heads"], D // H
        rnd = lambda *shape: (torch.randn(*shape, generator=g) * 0.2).to(dtype)  # noqa: E731
        sd = {"model.embed_tokens.weight": rnd(V, D), "model.norm.weight": (1 + torch.randn(D, generator=g) * 0.1).to(dtype)}
        for l in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{l}."
            sd[p + "input_layernorm.weight"] = (1 + torch.randn(D, generator=g) * 0.1).to(dtype)
            sd[p + "self_attn.q_proj.weight"] = rnd(H * hd, D)
            sd[p + "self_attn.k_proj.weight"] = rnd(KV * hd, D)
            sd[p + "self_attn.v_proj.weight"] = rnd(KV * hd, D)
            sd[p + "self_attn.o_proj.weight"] = rnd(D, H * hd)
            sd[p + "post_attention_layernorm.weight"] = (1 + torch.randn(D, generator=g) * 0.1).to(dtype)
            sd[p + "mlp.gate_proj.weight"] = rnd(F, D)
            sd[p + "mlp.up_proj.weight"] = rnd(F, D)
            sd[p + "mlp.down_proj.weight"] = rnd(D, F)
        if not cfg["tie_word_embeddings"]:
            sd["lm_head.weight"] = rnd(V, D)
        d = os.path.join(HERE, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        ref.write_safetensors(os.path.join(d, "model.safetensors"), sd, {"format": "pt"})
        # Right-padded batch of sequences of different lengths; references run each sequence alone.
        lengths = [9, 4, 1, 17]
        T = max(lengths)
        tokens = torch.zeros(len(lengths), T, dtype=torch.int64)
        logits = torch.zeros(len(lengths), T, V)
        hidden = torch.zeros(cfg["num_hidden_layers"] + 1, len(lengths), T, D)
        for b, n in enumerate(lengths):
            ids = [1] + torch.randint(3, V, (n - 1,), generator=g).tolist()
            tokens[b, :n] = torch.tensor(ids)
            lg, hs = ref.hf_forward(cfg, sd, ids)
            logits[b, :n] = lg
            hidden[:, b, :n] = hs
        ref.write_safetensors(os.path.join(d, "golden.safetensors"),
                              {"tokens": tokens, "lengths": torch.tensor(lengths, dtype=torch.int64),
                               "logits": logits, "hidden": hidden})
        print("wrote", d)


if __name__ == "__main__":
    random_models()
    cfg, w, sp, text = stories260k()
    loss(cfg, w, sp, text)
