"""A plain-PyTorch Llama, written independently of layerprune's C++ code, to produce golden outputs.

Two paths on purpose:
  * llama2c_forward: the math of llama2.c's run.c on its own checkpoint layout (RoPE rotates interleaved
    pairs (2i, 2i+1) of each head; weights straight from the .bin file).
  * hf_forward: Hugging Face's LlamaForCausalLM math (rotate_half RoPE over the two halves of each head)
    on HF tensor names read from a safetensors file.
The first checks that layerprune's llama2.c import permutes q/k rows correctly; the second covers GQA,
untied heads, other RoPE bases and BF16 checkpoints. Both return logits for every position and the hidden
states: the input of every layer and the last layer's output before the final norm.

Run with Debian's python3 (it has torch): /usr/bin/python3. No transformers, no safetensors package.
"""
import json
import math
import struct

import torch

# ---------------------------------------------------------------------------------------------------------
# safetensors, by hand (8-byte little-endian header length, JSON header, raw data)

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}
_NAMES = {v: k for k, v in _DTYPES.items()}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    meta = header.pop("__metadata__", {})
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        t = torch.frombuffer(bytearray(body[b:end]), dtype=_DTYPES[e["dtype"]]) if end > b else torch.empty(0, dtype=_DTYPES[e["dtype"]])
        out[name] = t.reshape(e["shape"]).clone()
    return out, meta


def write_safetensors(path, tensors, metadata=None):
    header, chunks, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        t = t.contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))


# ---------------------------------------------------------------------------------------------------------
# Shared pieces

def rmsnorm(x, w, eps):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)) * w.float()


def attention(q, k, v, n_heads, n_kv_heads):
    """q [T, H, hd], k/v [T, KV, hd] -> [T, H*hd]; query head h uses kv head h // (H/KV); causal."""
    T, _, hd = q.shape
    rep = n_heads // n_kv_heads
    k = k.repeat_interleave(rep, dim=1)
    v = v.repeat_interleave(rep, dim=1)
    scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(mask, float("-inf"))
    p = torch.softmax(scores, dim=-1)
    return torch.einsum("hts,shd->thd", p, v).reshape(T, n_heads * hd)


# ---------------------------------------------------------------------------------------------------------
# llama2.c layout

def read_llama2c(path):
    with open(path, "rb") as f:
        data = f.read()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack("<7i", data[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hd = dim // n_heads
    kv_dim = n_kv * hd
    floats = torch.frombuffer(bytearray(data[28:]), dtype=torch.float32)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = 1
        for s in shape:
            n *= s
        t = floats[pos:pos + n].reshape(shape).clone()
        pos += n
        return t

    w = {}
    w["tok"] = take(vocab, dim)
    w["rms_att"] = take(n_layers, dim)
    w["wq"] = take(n_layers, dim, dim)
    w["wk"] = take(n_layers, kv_dim, dim)
    w["wv"] = take(n_layers, kv_dim, dim)
    w["wo"] = take(n_layers, dim, dim)
    w["rms_ffn"] = take(n_layers, dim)
    w["w1"] = take(n_layers, hidden, dim)
    w["w2"] = take(n_layers, dim, hidden)
    w["w3"] = take(n_layers, hidden, dim)
    w["rms_final"] = take(dim)
    take(seq_len, hd // 2)  # legacy RoPE tables, unused (run.c recomputes the angles)
    take(seq_len, hd // 2)
    w["cls"] = w["tok"] if shared else take(vocab, dim)
    assert pos == floats.numel(), "unexpected trailing data"
    cfg = dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv, vocab=vocab,
               seq_len=seq_len, shared=shared, eps=1e-5, theta=10000.0)
    return cfg, w


def rope_interleaved(x, positions, theta):
    """run.c: within each head, pair (2i, 2i+1) rotates by pos * theta^(-2i/hd)."""
    T, H, hd = x.shape
    i = torch.arange(0, hd, 2, dtype=torch.float64)
    freq = 1.0 / theta ** (i / hd)
    ang = positions[:, None].double() * freq[None, :]  # [T, hd/2]
    cos, sin = ang.cos()[:, None, :].float(), ang.sin()[:, None, :].float()
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def llama2c_forward(cfg, w, ids, layers=None):
    """ids: list of ints (one sequence); layers: indices of the layers to run (None = all), i.e. a pruned
    model. Returns logits [T, V] and hidden [len(layers)+1, T, D]."""
    T = len(ids)
    H, KV, D = cfg["n_heads"], cfg["n_kv_heads"], cfg["dim"]
    hd = D // H
    pos = torch.arange(T)
    x = w["tok"][torch.tensor(ids)]
    hidden = []
    for l in (range(cfg["n_layers"]) if layers is None else layers):
        hidden.append(x.clone())
        xb = rmsnorm(x, w["rms_att"][l], cfg["eps"])
        q = (xb @ w["wq"][l].T).reshape(T, H, hd)
        k = (xb @ w["wk"][l].T).reshape(T, KV, hd)
        v = (xb @ w["wv"][l].T).reshape(T, KV, hd)
        q, k = rope_interleaved(q, pos, cfg["theta"]), rope_interleaved(k, pos, cfg["theta"])
        x = x + attention(q, k, v, H, KV) @ w["wo"][l].T
        xb = rmsnorm(x, w["rms_ffn"][l], cfg["eps"])
        x = x + (torch.nn.functional.silu(xb @ w["w1"][l].T) * (xb @ w["w3"][l].T)) @ w["w2"][l].T
    hidden.append(x.clone())
    logits = rmsnorm(x, w["rms_final"], cfg["eps"]) @ w["cls"].T
    return logits, torch.stack(hidden)


# ---------------------------------------------------------------------------------------------------------
# Hugging Face layout

def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def rope_halves(x, positions, theta):
    T, H, hd = x.shape
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = positions[:, None].double() * inv[None, :]
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = emb.cos()[:, None, :].float(), emb.sin()[:, None, :].float()
    return x * cos + rotate_half(x) * sin


def hf_forward(cfg, w, ids):
    """cfg: HF config.json dict; w: HF state dict (any float dtype; computed in float32)."""
    T = len(ids)
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    D = cfg["hidden_size"]
    hd = D // H
    eps = cfg["rms_norm_eps"]
    theta = cfg.get("rope_theta", 10000.0)
    f = {k: v.float() for k, v in w.items()}
    pos = torch.arange(T)
    x = f["model.embed_tokens.weight"][torch.tensor(ids)]
    hidden = []
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        hidden.append(x.clone())
        xb = rmsnorm(x, f[p + "input_layernorm.weight"], eps)
        q = (xb @ f[p + "self_attn.q_proj.weight"].T).reshape(T, H, hd)
        k = (xb @ f[p + "self_attn.k_proj.weight"].T).reshape(T, KV, hd)
        v = (xb @ f[p + "self_attn.v_proj.weight"].T).reshape(T, KV, hd)
        q, k = rope_halves(q, pos, theta), rope_halves(k, pos, theta)
        x = x + attention(q, k, v, H, KV) @ f[p + "self_attn.o_proj.weight"].T
        xb = rmsnorm(x, f[p + "post_attention_layernorm.weight"], eps)
        g = torch.nn.functional.silu(xb @ f[p + "mlp.gate_proj.weight"].T)
        x = x + (g * (xb @ f[p + "mlp.up_proj.weight"].T)) @ f[p + "mlp.down_proj.weight"].T
    hidden.append(x.clone())
    head = f["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else f["lm_head.weight"]
    logits = rmsnorm(x, f["model.norm.weight"], eps) @ head.T
    return logits, torch.stack(hidden)


def llama2c_to_hf(cfg, w):
    """HF state dict for a llama2.c model: q/k rows of each head reordered [even | odd] for rotate_half."""
    H, KV, D = cfg["n_heads"], cfg["n_kv_heads"], cfg["dim"]

    def perm(t, heads):
        out, inp = t.shape
        return t.view(heads, out // heads // 2, 2, inp).transpose(1, 2).reshape(out, inp)

    sd = {"model.embed_tokens.weight": w["tok"], "model.norm.weight": w["rms_final"]}
    for l in range(cfg["n_layers"]):
        p = f"model.layers.{l}."
        sd[p + "input_layernorm.weight"] = w["rms_att"][l]
        sd[p + "self_attn.q_proj.weight"] = perm(w["wq"][l], H)
        sd[p + "self_attn.k_proj.weight"] = perm(w["wk"][l], KV)
        sd[p + "self_attn.v_proj.weight"] = w["wv"][l]
        sd[p + "self_attn.o_proj.weight"] = w["wo"][l]
        sd[p + "post_attention_layernorm.weight"] = w["rms_ffn"][l]
        sd[p + "mlp.gate_proj.weight"] = w["w1"][l]
        sd[p + "mlp.down_proj.weight"] = w["w2"][l]
        sd[p + "mlp.up_proj.weight"] = w["w3"][l]
    if not cfg["shared"]:
        sd["lm_head.weight"] = w["cls"]
    hf_cfg = dict(hidden_size=D, intermediate_size=cfg["hidden"], num_hidden_layers=cfg["n_layers"],
                  num_attention_heads=H, num_key_value_heads=KV, vocab_size=cfg["vocab"],
                  max_position_embeddings=cfg["seq_len"], rms_norm_eps=1e-5, rope_theta=10000.0,
                  tie_word_embeddings=cfg["shared"])
    return hf_cfg, sd


def angular_distance(a, b):
    """Paper Eq. 7: arccos(cos_sim(a, b)) / pi, in float64."""
    a, b = a.double(), b.double()
    c = (a @ b) / (a.norm() * b.norm())
    return math.acos(max(-1.0, min(1.0, c.item()))) / math.pi
