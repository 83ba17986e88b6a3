#!/usr/bin/env python3
"""Golden files for test_gguf, from the `gguf` PyPI package (llama.cpp's own gguf-py) and transformers.

Writes, beside this script:
  gguf_dequant.json   for each of the 11 tensor types the C++ reader dequantises: a few blocks of random but
                      valid raw bytes (finite f16 scales) and the float32 values gguf.quants.dequantize gives.
  gguf_tiny.gguf      a tiny GGUF v3 written by gguf.GGUFWriter: every metadata value type (nested arrays and
                      arrays of strings included), general.alignment 64, tensors of several types.
  gguf_tiny.json      what gguf.GGUFReader reads back from it (keys, types, values; tensors, dequantised).
  gguf_smollm2.json   with the SmolLM2 GGUF from the data directory: its config keys, tensor count, and for a
                      few tensors (token_embd Q8_0, blk.0 attn_q/attn_k Q4_1 after the inverse RoPE permutation,
                      blk.29.ffn_down, norms) sums, sums of squares and selected values in Hugging Face layout;
                      and transformers' logits of the GGUF model on a chat prompt (top 5 per position, 16
                      fixed ids, sums), which test_llama compares with the project's model on the converted
                      directory.
                      The inverse permutation is checked here against transformers' own GGUF loader, which
                      dequantises the file independently (from_pretrained(..., gguf_file=...)).

Run with the compare venv: HF_HUB_OFFLINE=1 ~/.cache/layerprune/compare-venv/bin/python \
    tests/golden/make_gguf_golden.py ../shared/data
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType as T, GGUFValueType as V
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))


def f32_hex(a):
    return np.asarray(a, dtype="<f4").tobytes().hex()


# ---- 1. dequantisation of each block format ----------------------------------------------------------

# Byte offsets of the f16 scale fields in each block (ggml-common.h): they get finite values; every other
# byte is random.
SCALES = {T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2],
          T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}


def random_blocks(rng, qtype, n_blocks):
    block, size = GGML_QUANT_SIZES[qtype]
    if qtype == T.F32:
        vals = np.concatenate([rng.standard_normal(60).astype(np.float32) * 10,
                               np.array([0.0, -0.0, np.inf, 1e-40], dtype=np.float32)])  # a subnormal too
        return vals.tobytes()
    if qtype == T.F16:
        bits = rng.integers(0, 1 << 16, size=64, dtype=np.uint16)
        bits[(bits & 0x7C00) == 0x7C00] &= 0xFC00  # NaNs -> infinities: the test compares exactly
        bits[:4] = [0x0000, 0x8000, 0x0001, 0x83FF]  # zeros and subnormals
        return bits.astype("<u2").tobytes()
    if qtype == T.BF16:
        bits = rng.integers(0, 1 << 16, size=64, dtype=np.uint16)
        bits[(bits & 0x7F80) == 0x7F80] &= 0xFF80
        return bits.astype("<u2").tobytes()
    raw = bytearray(rng.integers(0, 256, size=size * n_blocks, dtype=np.uint8).tobytes())
    for b in range(n_blocks):
        for off in SCALES[qtype]:
            scale = np.float16(rng.uniform(-2.0, 2.0) if off == 0 or qtype == T.Q6_K else rng.uniform(0, 1.0))
            raw[b * size + off: b * size + off + 2] = scale.astype("<f2").tobytes()
    return bytes(raw)


def dequant_golden():
    rng = np.random.default_rng(20261204)
    out = {}
    for qtype, n_blocks in [(T.F32, 64), (T.F16, 64), (T.BF16, 64), (T.Q8_0, 4), (T.Q4_0, 4), (T.Q4_1, 4),
                            (T.Q5_0, 4), (T.Q5_1, 4), (T.Q4_K, 2), (T.Q5_K, 2), (T.Q6_K, 2)]:
        raw = random_blocks(rng, qtype, n_blocks)
        values = dequantize(np.frombuffer(raw, dtype=np.uint8), qtype).astype(np.float32).ravel()
        block, size = GGML_QUANT_SIZES[qtype]
        assert len(raw) // size * block == values.size, qtype
        out[qtype.name] = {"id": int(qtype), "n": int(values.size), "raw": raw.hex(), "values_f32le": f32_hex(values)}
    return {"made_by": "tests/golden/make_gguf_golden.py: gguf " + gguf_version() + " gguf.quants.dequantize",
            "types": out}


def gguf_version():
    from importlib.metadata import version
    return version("gguf")


# ---- 2. a tiny file with every metadata type ---------------------------------------------------------

def tiny_file(path):
    w = GGUFWriter(path, arch="llama")  # writes general.architecture first
    w.add_custom_alignment(64)  # sets general.alignment and aligns the writer's tensor offsets to it
    w.add_key_value("t.u8", 200, V.UINT8)
    w.add_key_value("t.i8", -100, V.INT8)
    w.add_key_value("t.u16", 60000, V.UINT16)
    w.add_key_value("t.i16", -30000, V.INT16)
    w.add_key_value("t.u32", 4000000000, V.UINT32)
    w.add_key_value("t.i32", -2000000000, V.INT32)
    w.add_key_value("t.u64", 18000000000000000000, V.UINT64)
    w.add_key_value("t.i64", -9000000000000000000, V.INT64)
    w.add_key_value("t.f32", 0.1, V.FLOAT32)
    w.add_key_value("t.f64", -2.5e-300, V.FLOAT64)
    w.add_key_value("t.true", True, V.BOOL)
    w.add_key_value("t.false", False, V.BOOL)
    w.add_key_value("t.string", "héllo, wörld", V.STRING)
    w.add_key_value("t.empty_string", "", V.STRING)
    w.add_key_value("t.strings", ["a", "", "Ġthe", "<|im_end|>"], V.ARRAY, sub_type=V.STRING)
    w.add_key_value("t.u8s", [1, 2, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("t.i32s", [-1, 0, 7], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("t.i64s", [-(1 << 40), 1 << 40], V.ARRAY, sub_type=V.INT64)
    w.add_key_value("t.f32s", [0.5, -1.25, 3.0], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("t.f64s", [1e-10, 2.0], V.ARRAY, sub_type=V.FLOAT64)
    w.add_key_value("t.bools", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_key_value("t.nested", [[1, 2], [3], [4, 5, 6]], V.ARRAY)
    w.add_key_value("t.nested_strings", [["x", "yz"], ["w"]], V.ARRAY)
    rng = np.random.default_rng(7)
    w.add_tensor("f32", rng.standard_normal((3, 8)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((2, 4)).astype(np.float16))
    q8 = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), T.Q8_0)
    w.add_tensor("q8_0", q8, raw_shape=q8.shape, raw_dtype=T.Q8_0)
    q4k = random_blocks(rng, T.Q4_K, 1)
    w.add_tensor("q4_k", np.frombuffer(q4k, dtype=np.uint8).reshape(1, 144), raw_shape=(1, 144), raw_dtype=T.Q4_K)
    w.add_tensor("scalar_f32", np.array([42.0], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def jsonable(field):
    types = [t.name for t in field.types]
    value = field.contents()
    if isinstance(value, (np.generic,)):
        value = value.item()
    return {"types": types, "value": value}


def tiny_golden(path):
    r = GGUFReader(path)
    keys = {k: jsonable(f) for k, f in r.fields.items() if not k.startswith("GGUF.")}
    # 64-bit integers beyond 2^53 do not survive JSON readers that use doubles: write them as strings.
    for k in ("t.u64", "t.i64"):
        keys[k]["value"] = str(keys[k]["value"])
    tensors = []
    for t in r.tensors:
        values = dequantize(t.data, t.tensor_type).astype(np.float32).ravel()
        tensors.append({"name": t.name, "type": t.tensor_type.name, "dims": [int(d) for d in t.shape],
                        "offset": int(t.data_offset) - int(r.data_offset), "values_f32le": f32_hex(values)})
    return {"made_by": "tests/golden/make_gguf_golden.py: gguf " + gguf_version() + " GGUFWriter, read back by GGUFReader",
            "version": int(r.fields["GGUF.version"].contents()), "alignment": int(r.alignment),
            "data_offset": int(r.data_offset), "keys": keys, "tensors": tensors}


# ---- 3. the real SmolLM2 file -----------------------------------------------------------------------

def reverse_permute(w, n_head):
    # The inverse of llama.cpp's LlamaModel.permute: GGUF rows (head, i, pair) -> HF rows (head, pair, i).
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def smollm2_golden(path):
    r = GGUFReader(path)
    fields = {k: f.contents() for k, f in r.fields.items() if k.startswith("llama.") or k.startswith("general.arch")}
    heads, kv = int(fields["llama.attention.head_count"]), int(fields["llama.attention.head_count_kv"])
    tensors = {t.name: t for t in r.tensors}

    def hf(name):
        t = tensors[name]
        # gguf-py's t.shape is in ggml order (innermost first); numpy's dequantised array is already [rows, cols]
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape([int(d) for d in reversed(t.shape)])
        if name.endswith("attn_q.weight"):
            w = reverse_permute(w, heads)
        if name.endswith("attn_k.weight"):
            w = reverse_permute(w, kv)
        return w

    out = {"made_by": "tests/golden/make_gguf_golden.py: gguf " + gguf_version() + " GGUFReader + gguf.quants, "
                      "q/k rows reverse-permuted (checked against transformers' GGUF loader)",
           "file_sha256": None, "tensor_count": len(r.tensors), "key_count": len(r.fields) - 3,
           "fields": {k: (v.item() if isinstance(v, np.generic) else v) for k, v in fields.items()},
           "tensors": {}}
    selection = {
        "token_embd.weight": [0, 1, 2, 1000, 49151],
        "blk.0.attn_q.weight": list(range(0, 64)) + [64, 575],
        "blk.0.attn_k.weight": list(range(0, 64)) + [191],
        "blk.0.attn_v.weight": [0, 191],
        "blk.29.ffn_down.weight": [0, 575],
        "blk.0.attn_norm.weight": None,
        "output_norm.weight": None,
    }
    for name, rows in selection.items():
        w = hf(name)
        entry = {"type": tensors[name].tensor_type.name, "shape": list(w.shape),
                 "sum": float(w.astype(np.float64).sum()), "sum_squares": float((w.astype(np.float64) ** 2).sum())}
        if rows is None:
            entry["values_f32le"] = f32_hex(w)
        else:
            # 8 leading values of each selected row: enough to see a row permutation, small to store
            entry["rows"] = {str(i): f32_hex(w[i, :8]) for i in rows}
        out["tensors"][name] = entry
    return out, hf


def check_against_transformers(gguf_path, hf):
    """transformers dequantises and un-permutes the GGUF itself: our numpy path must give its weights."""
    import tempfile
    import torch
    from transformers import AutoModelForCausalLM
    d = os.path.dirname(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=os.path.basename(gguf_path), torch_dtype=torch.float32)
    sd = model.state_dict()
    pairs = [("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
             ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight"),
             ("blk.17.attn_q.weight", "model.layers.17.self_attn.q_proj.weight"),
             ("blk.29.attn_k.weight", "model.layers.29.self_attn.k_proj.weight"),
             ("token_embd.weight", "model.embed_tokens.weight"),
             ("blk.29.ffn_down.weight", "model.layers.29.mlp.down_proj.weight")]
    for g, h in pairs:
        ours, theirs = hf(g), sd[h].numpy()
        assert ours.shape == theirs.shape, (g, ours.shape, theirs.shape)
        diff = np.abs(ours - theirs).max()
        assert diff == 0.0, (g, diff)
    print("transformers' GGUF loader agrees exactly on", len(pairs), "tensors (q/k permutation included)")
    return model


# A prompt in SmolLM2's chat format, as token ids from transformers' GGUF tokenizer.
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def logits_golden(gguf_path, model):
    """transformers' forward pass of the GGUF model (float32) on PROMPT: per position the top 5 (id, logit), the
    logits of 16 fixed ids, and the sum and sum of squares over the vocabulary."""
    import torch
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
    ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    probe = [0, 1, 2, 17, 100, 1000, 4000, 9000, 12345, 20000, 30000, 40000, 45000, 49000, 49150, 49151]
    positions = []
    for t in range(len(ids)):
        top = torch.topk(logits[t], 5)
        positions.append({"top_ids": top.indices.tolist(), "top_logits": top.values.tolist(),
                          "probe_logits": logits[t, probe].tolist(), "sum": logits[t].sum().item(),
                          "sum_squares": (logits[t] ** 2).sum().item()})
    return {"prompt": PROMPT, "ids": ids, "probe_ids": probe, "positions": positions}


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared", "data")
    with open(os.path.join(HERE, "gguf_dequant.json"), "w") as f:
        json.dump(dequant_golden(), f, indent=1)
        f.write("\n")
    tiny = os.path.join(HERE, "gguf_tiny.gguf")
    tiny_file(tiny)
    with open(os.path.join(HERE, "gguf_tiny.json"), "w") as f:
        json.dump(tiny_golden(tiny), f, indent=1, ensure_ascii=False)
        f.write("\n")
    smol = os.path.join(data, "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    golden, hf = smollm2_golden(smol)
    import hashlib
    golden["file_sha256"] = hashlib.sha256(open(smol, "rb").read()).hexdigest()
    model = check_against_transformers(smol, hf)
    golden["logits"] = logits_golden(smol, model)
    with open(os.path.join(HERE, "gguf_smollm2.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    print("wrote gguf_dequant.json, gguf_tiny.gguf, gguf_tiny.json, gguf_smollm2.json")


if __name__ == "__main__":
    main()
