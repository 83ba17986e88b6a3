#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets, fuzz/corpus/<target>/seed-*, from scratch (Python's standard
library only) and from a few small files of tests/golden/ and experiments/. Small valid inputs and near-valid
ones (one thing wrong each), so that the fuzzer starts inside every parser. Regression inputs
(corpus/<target>/regression-*) are written by hand from findings and are left alone here.

    python3 fuzz/make_seeds.py        # rewrites every seed-* file (and removes stale ones)
"""
import hashlib
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")


def out(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)
    written.add((target, "seed-" + name))


def source(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


written = set()

# ---- safetensors -----------------------------------------------------------------------------------------


def safetensors(tensors, metadata=None, pad=True, raw_header=None):
    """tensors: [(name, dtype, shape, bytes)] in data order."""
    header, data, pos = {}, b"", 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, b in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + len(b)]}
        data += b
        pos += len(b)
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


f32 = lambda *v: struct.pack("<%df" % len(v), *v)
one = [("model.norm.weight", "F32", [4], f32(1, 2, 3, 4))]
out("safetensors", "one_f32", safetensors(one, {"format": "pt"}))
out("safetensors", "dtypes", safetensors([
    ("a", "F32", [2, 2], f32(1, -2, 0.5, 3)), ("b", "F16", [3], struct.pack("<3H", 0x3C00, 0x7C00, 0x7E00)),
    ("c", "BF16", [1, 2], struct.pack("<2H", 0x3F80, 0xFF80)), ("d", "F64", [1], struct.pack("<d", float("nan"))),
    ("e", "I64", [1], struct.pack("<q", -1)), ("f", "I32", [], struct.pack("<i", 7)), ("g", "I16", [2], b"\1\0\2\0"),
    ("h", "I8", [1], b"\x80"), ("i", "U8", [2], b"\xff\0"), ("j", "BOOL", [1], b"\1"), ("k", "F32", [0], b"")]))
out("safetensors", "empty_header", safetensors([]))
out("safetensors", "gap", safetensors(one)[:-4] + f32(9) + f32(9))        # trailing bytes no tensor owns
out("safetensors", "truncated", safetensors(one)[:-3])
out("safetensors", "unknown_dtype", safetensors([("x", "F8", [1], b"\0")]))
out("safetensors", "bad_offsets", safetensors([], raw_header=b'{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}'))
out("safetensors", "unpadded_nested_metadata", safetensors([], raw_header=b'{"__metadata__":{"a":"b","c":{"d":[1]}}}', pad=False))

# ---- shard index (the fuzz target's directory holds the shards fuzz_shard_index.cc writes) --------------

s1, s2, s3 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "sub/extra.safetensors"
wm = {"model.embed_tokens.weight": s1, "model.norm.weight": s1, "lm_head.weight": s2, "scalar": s2}
out("shard_index", "valid", json.dumps({"metadata": {"total_size": 78}, "weight_map": wm}, indent=2))
out("shard_index", "with_subdir", json.dumps({"weight_map": dict(wm, **{"model.layers.0.mlp.up_proj.weight": s3})}))
out("shard_index", "missing_tensor", json.dumps({"weight_map": {k: v for k, v in wm.items() if k != "scalar"}}))
out("shard_index", "misplaced", json.dumps({"weight_map": dict(wm, scalar=s1)}))
out("shard_index", "missing_shard", json.dumps({"weight_map": dict(wm, scalar="model-00003-of-00003.safetensors")}))
out("shard_index", "escape", json.dumps({"weight_map": dict(wm, scalar="../ckpt/" + s2)}))
out("shard_index", "not_object", '{"weight_map": ["model.norm.weight"]}')

# ---- GGUF --------------------------------------------------------------------------------------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q",
          I64: "<q", F64: "<d"}


def gstr(s):
    b = s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    if t == STR:
        return gstr(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gval(et, x) for x in items)
    return struct.pack(SCALAR[t], v)


def gguf(kv, tensors, alignment=32, version=3):
    """kv: [(key, type, value)]; tensors: [(name, ggml_type, dims (ggml order), bytes)]."""
    b = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kv))
    for k, t, v in kv:
        b += gstr(k) + struct.pack("<I", t) + gval(t, v)
    off, blobs = 0, b""
    for name, gt, dims, data in tensors:
        b += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        b += struct.pack("<IQ", gt, off)
        blobs += data + b"\0" * (-len(data) % alignment)
        off += len(data) + (-len(data) % alignment)
    b += b"\0" * (-len(b) % alignment)
    return b + blobs


out("gguf", "golden_tiny", source("tests/golden/gguf_tiny.gguf"))
# A one-layer Llama with a byte-level BPE vocabulary: what convert_gguf reads.
toks = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "h", "e", "l", "o", "Ġ", "he", "ll", "hell", "hello", "Ġhello", "w", "r", "d"]
merges = ["h e", "l l", "he ll", "hell o", "Ġ hello"]
D, F, V = 8, 16, len(toks)
z = lambda n: f32(*([0.25] * n))
q8 = lambda n: b"".join(struct.pack("<H", 0x3C00) + bytes(range(32)) for _ in range(n // 32))  # Q8_0 blocks
llama_kv = [
    ("general.architecture", STR, "llama"), ("general.name", STR, "fuzz-tiny"), ("general.alignment", U32, 32),
    ("llama.context_length", U32, 64), ("llama.embedding_length", U32, D), ("llama.block_count", U32, 1),
    ("llama.feed_forward_length", U32, F), ("llama.attention.head_count", U32, 2),
    ("llama.attention.head_count_kv", U32, 1), ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
    ("llama.rope.freq_base", F32, 10000.0), ("llama.rope.dimension_count", U32, 4), ("llama.vocab_size", U32, V),
    ("tokenizer.ggml.model", STR, "gpt2"), ("tokenizer.ggml.pre", STR, "smollm"),
    ("tokenizer.ggml.tokens", ARR, (STR, toks)), ("tokenizer.ggml.token_type", ARR, (I32, [3, 3, 3] + [1] * (V - 3))),
    ("tokenizer.ggml.merges", ARR, (STR, merges)), ("tokenizer.ggml.bos_token_id", U32, 1),
    ("tokenizer.ggml.eos_token_id", U32, 2), ("tokenizer.ggml.add_bos_token", BOOL, False),
    ("tokenizer.chat_template", STR, "{% for m in messages %}{{ m['content'] }}{% endfor %}"),
]
llama_tensors = [
    ("token_embd.weight", 0, [D, V], z(D * V)), ("output_norm.weight", 0, [D], z(D)),
    ("blk.0.attn_norm.weight", 0, [D], z(D)), ("blk.0.attn_q.weight", 1, [D, D], struct.pack("<64H", *[0x3C00] * 64)),
    ("blk.0.attn_k.weight", 0, [D, 4], z(4 * D)), ("blk.0.attn_v.weight", 0, [D, 4], z(4 * D)),
    ("blk.0.attn_output.weight", 0, [D, D], z(D * D)), ("blk.0.ffn_norm.weight", 0, [D], z(D)),
    ("blk.0.ffn_gate.weight", 8, [32, 1], q8(32)), ("blk.0.ffn_up.weight", 0, [D, F], z(D * F)),
    ("blk.0.ffn_down.weight", 30, [F, D], struct.pack("<128H", *[0x3F80] * 128)),
]
out("gguf", "llama_bpe", gguf(llama_kv, llama_tensors))
out("gguf", "tokenizer_only", gguf([kv for kv in llama_kv if kv[0].startswith("tokenizer.")], []))
out("gguf", "gpt2_pre_tied", gguf([kv if kv[0] != "tokenizer.ggml.pre" else (kv[0], STR, "gpt-2") for kv in llama_kv],
                                  llama_tensors[:3]))
out("gguf", "nested_arrays", gguf([("a", ARR, (ARR, [(U8, [1, 2]), (STR, ["x", "y"]), (ARR, [(F64, [0.5])])])),
                                   ("b", I64, -5), ("c", F64, 2.5), ("d", I8, -1), ("e", U16, 7), ("f", I16, -7),
                                   ("g", U64, 2**63 + 1), ("h", BOOL, True)], []))
out("gguf", "v2_alignment64", gguf([("general.alignment", U32, 64), ("x", STR, "y")],
                                   [("t", 0, [4], f32(1, 2, 3, 4))], alignment=64, version=2))
out("gguf", "truncated", gguf(llama_kv, llama_tensors)[:700])
out("gguf", "unknown_llama_key", gguf(llama_kv + [("llama.attention.sliding_window", U32, 4)], llama_tensors))

# ---- tokenizer.json: small versions of the test vocabularies (the 256 byte characters and a few merges) ---


def shrink(path, n_merges=60, **changes):
    j = json.loads(source(path))
    model = j["model"]
    vocab = model["vocab"]
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    keep = {t for t, i in by_id if len(t) == 1 or i < 3}
    kept_merges = []
    for m in model["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ")
        if a in keep and b in keep and (a + b) in vocab and len(kept_merges) < n_merges:
            keep.add(a + b)
            kept_merges.append(m)
    new = {}
    for t, i in by_id:
        if t in keep:
            new[t] = len(new)
    old_size = len(vocab)
    added = []
    for a in j["added_tokens"]:
        if a["content"] in new:
            a["id"] = new[a["content"]]
        elif a["id"] >= old_size:
            a["id"] = len(new) + (a["id"] - old_size)
        else:
            continue
        added.append(a)
    added.sort(key=lambda a: a["id"])
    j["added_tokens"] = added
    model["vocab"], model["merges"] = new, kept_merges
    pp = json.dumps(j.get("post_processor"))
    for k, v in changes.items():
        j[k] = v
    return json.dumps(j, ensure_ascii=False, separators=(",", ":"))


qwen = shrink("tests/golden/bpe/qwen2_style.json")
out("tokenizer_json", "qwen2_style", qwen)
out("tokenizer_json", "llama3_style", shrink("tests/golden/bpe/llama3_style.json"))
q = json.loads(qwen)
q["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
q["normalizer"] = None
out("tokenizer_json", "gpt2_style", json.dumps(q, separators=(",", ":")))
smol = json.loads(source("tests/golden/bpe/smollm2_template.json"))
smol["model"]["vocab"] = {t: i for t, i in json.loads(qwen)["model"]["vocab"].items()}
smol["model"]["merges"] = json.loads(qwen)["model"]["merges"][:20]
smol["added_tokens"] = [a for a in smol["added_tokens"] if a["id"] < 3]
out("tokenizer_json", "smollm2_template", json.dumps(smol, separators=(",", ":")))
q = json.loads(qwen)
q["model"]["type"] = "WordPiece"
out("tokenizer_json", "unsupported_model", json.dumps(q, separators=(",", ":")))
q = json.loads(qwen)
q["model"]["merges"].append("Ġ zz")
out("tokenizer_json", "merge_outside_vocab", json.dumps(q, separators=(",", ":")))

# ---- tokenizer.model (SentencePiece ModelProto), as make_token_ids.py's synthetic_model() ---------------


def varint(v):
    b = b""
    while True:
        c = v & 0x7F
        v >>= 7
        b += bytes([c | 0x80 if v else c])
        if not v:
            return b


def field(num, wire, payload):
    if wire == 0:
        return varint(num << 3) + varint(payload)
    if wire == 2:
        return varint(num << 3 | 2) + varint(len(payload)) + payload
    return varint(num << 3 | wire) + payload  # 1 (8 bytes), 5 (4 bytes)


WS = "\u2581"
base_pieces = [("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3)]
byte_pieces = [("<0x%02X>" % b, 0, 6) for b in range(256)]
rest = [(WS, -1.0, 1), ("a", -2.0, 1), ("b", -2.0, 1), ("c", -2.0, 1), ("d", -2.0, 1), ("e", -2.0, 1), ("h", -2.0, 1),
        ("l", -2.0, 1), ("o", -2.0, 1), ("\u00e9", -3.0, 1), ("\u65e5", -3.0, 1), ("ab", -1.0, 1), ("bc", -1.0, 1),
        ("abc", -0.5, 1), ("aa", -2.0, 1), ("cd", -3.0, 1), ("bcd", -0.25, 1), ("de", -1.0, 1), ("ed", -1.0, 1),
        (WS + "a", -1.5, 1), (WS + "ab", -0.125, 1), (WS + WS, -4.0, 1), (WS * 4, -4.5, 1), ("e" + WS, -2.5, 1),
        ("he", -1.25, 1), ("ll", -1.75, 1), ("hell", -0.75, 1), ("hello", -0.625, 1), (WS + "hello", -0.375, 1),
        ("\u00e9\u00e9", -1.0, 1), ("<sep>", 0.0, 4)]


def sp_model(pieces, trainer=None, normalizer=None):
    b = b""
    for text, score, typ in pieces:
        b += field(1, 2, field(1, 2, text.encode()) + field(2, 5, struct.pack("<f", score)) + field(3, 0, typ))
    b += field(2, 2, trainer if trainer is not None else field(3, 0, 2) + field(4, 0, len(pieces)) + field(35, 0, 1))
    b += field(3, 2, normalizer if normalizer is not None else field(1, 2, b"identity") + field(3, 0, 1) + field(4, 0, 0))
    return b


out("tokenizer_model", "synthetic_byte_fallback", sp_model(base_pieces + byte_pieces + rest))
out("tokenizer_model", "no_byte_fallback", sp_model(base_pieces + rest + [("qz", 0.0, 4), ("x", 0.0, 5)],
                                                    trainer=field(3, 0, 2) + field(35, 0, 0)))
out("tokenizer_model", "normalizer_switches", sp_model(base_pieces + byte_pieces + rest, normalizer=field(1, 2, b"identity") +
                                                       field(3, 0, 0) + field(4, 0, 1) + field(5, 0, 0)))
out("tokenizer_model", "unigram", sp_model(base_pieces + rest, trainer=field(3, 0, 1)))
out("tokenizer_model", "nfkc", sp_model(base_pieces + rest, normalizer=field(1, 2, b"nmt_nfkc") + field(2, 2, b"\0\0\0\0")))
out("tokenizer_model", "truncated", sp_model(base_pieces + rest)[:100])

# ---- config.json -----------------------------------------------------------------------------------------

for name in ["Llama-3.1-8B", "Llama-3.2-1B", "Mistral-7B-v0.1", "Qwen2-7B"]:
    out("config_json", name.lower(), source("tests/golden/configs/%s.json" % name))
tiny = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
        "num_hidden_layers": 5, "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 512,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
        "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2}
out("config_json", "tiny_llama", json.dumps(tiny))
out("config_json", "transformers5_rope_parameters", json.dumps(dict(
    {k: v for k, v in tiny.items() if k != "rope_theta"}, dtype="bfloat16",
    rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 50000.0}, eos_token_id=[2, 3])))
out("config_json", "nulls", json.dumps(dict(tiny, num_key_value_heads=None, rope_scaling=None, torch_dtype=None)))
out("config_json", "unsupported_act", json.dumps(dict(tiny, hidden_act="gelu", mlp_bias=True)))
out("config_json", "heads_do_not_divide", json.dumps(dict(tiny, num_attention_heads=7)))

# ---- llama2.c header (7 int32, then weights) -------------------------------------------------------------

out("llama2c_header", "stories260k", struct.pack("<7i", 64, 172, 5, 8, 4, -512, 512) + f32(0.5, 0.25))
out("llama2c_header", "shared_classifier", struct.pack("<7i", 288, 768, 6, 6, 6, 32000, 256))
out("llama2c_header", "versioned_magic", struct.pack("<7I", 0x616B3432, 2, 0, 0, 0, 0, 0))
out("llama2c_header", "short", struct.pack("<5i", 64, 172, 5, 8, 4))
out("llama2c_header", "zero_layers", struct.pack("<7i", 64, 172, 0, 8, 4, 512, 512))

# ---- experiment YAML -------------------------------------------------------------------------------------

for name in ["stories260k", "smollm2-135m", "llama2-70b-paper"]:
    out("experiment_yaml", name, source("experiments/%s.yaml" % name))
out("experiment_yaml", "minimal", """name: tiny
models:
  - {name: m, path: /models/m}
pruning: {fractions: [0.0, 0.25, 0.5], strategies: [similarity, simple]}
healing: [off, {name: h, steps: 2, fractions: [0.25], train_data: c4.jsonl}]
evaluation: {loss: {data: c4.jsonl, windows: 2}, boolq: {data: boolq.jsonl}}
seeds: [0, 1]
""")
out("experiment_yaml", "flow_style_errors", """{name: e, models: [{name: a, path: x, format: gguf, tp: 3},
 {name: a, path: y}], pruning: {layers: [0, 12]}, healing: [off], seeds: [0], evaluation: {mmlu: {shots: -1}}}
""")
out("experiment_yaml", "anchors_and_env", """name: &n anchors
models: [{name: *n, path: "${LAYERPRUNE_DATA}/x", device: "cuda:1", dtype: float32}]
pruning: {layers: [1, 2, 3], strategies: [simple]}
healing: [off]
calibration: {data: c4.jsonl, samples: 8, seq_len: 16}
evaluation: {mmlu: {data: "${MODELS}/mmlu", shots: 0, subjects: [a, b]}}
seeds: [7]
""")

out("experiment_yaml", "escape_surrogate", """name: "\\uD800"
models: [{name: m, path: /m}]
pruning: {layers: [0, 1], strategies: [simple]}
healing: [off]
evaluation: {boolq: {data: b.jsonl}}
seeds: [0]
""")

# ---- MMLU CSV (Hendrycks layout: no header, answer A-D; export layout: header, answer 0-3) ---------------

out("mmlu_csv", "hendrycks", 'What is 2+2?,3,4,5,6,B\n"Which, with a comma?",a,b,c,d,A\r\n'
    '"A ""quoted"" word",x,y,z,w,D\n"Two\nlines",1,2,3,4,C\n')
out("mmlu_csv", "export", "\ufeffquestion,A,B,C,D,answer\nFind x.,1,2,3,4,0\n  Strip me  ,a ,b,c,d, 3 \n\n")
out("mmlu_csv", "bad_answer", "Q?,a,b,c,d,E\n")
out("mmlu_csv", "five_fields", "Q?,a,b,c,D\n")
out("mmlu_csv", "unterminated_quote", 'Q?,a,b,c,d,A\n"open,a,b,c,d,A\n')
out("mmlu_csv", "text_after_quote", '"a"b,1,2,3,4,A\r')
out("mmlu_csv", "unicode", "Qu'est-ce que l'\u00e9t\u00e9\u00a0?,\u65e5,\u00e9,\u2028,\U0001F600,A\n")

# ---- BoolQ JSONL -----------------------------------------------------------------------------------------

out("boolq_jsonl", "google", '{"question": "is the sky blue", "passage": "The sky is blue.", "answer": true}\n'
    '{"question": "is water dry", "passage": "Water is wet.", "answer": false}\n')
out("boolq_jsonl", "superglue", '{"question": "q", "passage": "p", "label": 1, "idx": 0}\n\n'
    '{"question": "q2", "passage": "p\\u00e9", "label": "false"}\r\n{"question":"q3","passage":"","label":0}')
out("boolq_jsonl", "bad_label", '{"question": "q", "passage": "p", "label": 2}\n')
out("boolq_jsonl", "not_object", '["q", "p", true]\n')
out("boolq_jsonl", "invalid_json", '{"question": "q", "passage": "p", "answer": tru}\n')

# ---- C4 JSONL / plain text -------------------------------------------------------------------------------

out("c4_jsonl", "c4", '{"text": "Beginners BBQ Class Taking Place in Missoula!\\nDo you want to get better?", '
    '"timestamp": "2019-04-25T12:57:54Z", "url": "https://example.com/"}\n'
    '{"text": "Discussion in \\u201cMac OS X\\u201d started by \\ud83d\\ude00.", "timestamp": "x", "url": "y"}\n')
out("c4_jsonl", "blank_lines", '\n  \n{"text": ""}\n\t\r\n{"text": "a"}\n')
out("c4_jsonl", "plain_paragraphs", "Once upon a time.\nThere was a cat.\n\n\nThe end.\n")
out("c4_jsonl", "no_text_field", '{"content": "x"}\n')

# ---- coordinator RPC sequences (fuzz_coordinator_rpc.cc): [byte][u16 length][serialized request] records -----
# The byte is the RPC (0 Submit, 1 Cancel, 2 ListExperiments, 3 QueryResults, 4 RegisterWorker, 5 Lease,
# 6 Heartbeat, 7 Report, 8 Fail, 9 Release) + 10 * the seconds the clock moves on first (200 and up: the
# reaper runs too). Workers are named "w1", "w2" (the target maps them to the ids they were registered
# under); experiment, task and attempt ids count from 1 on the fresh database of each input. The plan is
# tests/coordinator_fixtures.h small_plan("fuzz", {"m1"}) and the results its noop_result, written here.
SUBMIT, CANCEL, LIST, QUERY, REGISTER, LEASE, HEARTBEAT, REPORT, FAIL, RELEASE = range(10)


def pb(*fields):
    """A protobuf message from (number, value) pairs: str/bytes length-delimited, bool/int varint (int64)."""
    b = b""
    for num, v in fields:
        if isinstance(v, str):
            v = v.encode()
        if isinstance(v, bytes):
            b += field(num, 2, v)
        else:
            b += field(num, 0, int(v) & (2**64 - 1))
    return b


def rec(rpc, msg=b"", seconds=0, reap=False):
    k = seconds + (20 if reap else 0)
    assert 0 <= k <= 25 and len(msg) < 65536
    return bytes([rpc + 10 * k]) + struct.pack("<H", len(msg)) + msg


def compact(j):
    return json.dumps(j, separators=(",", ":"))


def fake_value(s):
    return int(hashlib.sha256(s.encode()).hexdigest()[:12], 16) / float(1 << 48)


def point(model, n, layers, strategy, healing, seed=0):
    strategy = "none" if n == 0 else strategy
    return {"key": "%s/n=%d/%s/%s/seed=%d" % (model, n, strategy, healing, seed), "model": model, "n": n,
            "layers": layers, "fraction": n / layers, "strategy": strategy, "healing": healing, "seed": seed}


def small_plan(name, model="m1", layers=6):
    """small_plan(name, {model}, 1, layers): distances; evaluate (5 points) after it; heal simple; heal
    similarity after distances. Task ids 1..4 in this order."""
    points, tasks = [], []
    d = {"key": "distances/" + model, "kind": "distances", "model": model, "depends_on": [], "points": [],
         "payload": {"model": {"name": model}, "calibration": {"samples": 4}}}
    tasks.append(d)
    ev = [point(model, 0, layers, "none", "off")] + [point(model, n, layers, s, "off") for n in (1, 2)
                                                     for s in ("similarity", "simple")]
    points += ev
    tasks.append({"key": "evaluate/%s/seed=0" % model, "kind": "evaluate", "model": model, "depends_on": [d["key"]],
                  "points": [p["key"] for p in ev], "payload": {"model": {"name": model}, "points": ev}})
    for s in ("simple", "similarity"):
        p = point(model, 1, layers, s, "qlora")
        points.append(p)
        tasks.append({"key": "heal/" + p["key"], "kind": "heal", "model": model,
                      "depends_on": [d["key"]] if s == "similarity" else [], "points": [p["key"]],
                      "payload": {"model": {"name": model}, "healing": {"steps": 10}, "points": [p]}})
    return name, {"name": name, "models": [model], "layers": layers}, points, tasks


def tiny_plan(name, model="m1", tp=None):
    """One evaluate task (id 1) of one point, no dependencies."""
    p = point(model, 1, 4, "simple", "off")
    m = {"name": model}
    if tp is not None:
        m["tp"] = tp
    t = {"key": "evaluate/" + model, "kind": "evaluate", "model": model, "depends_on": [], "points": [p["key"]],
         "payload": {"model": m}}
    return name, {"name": name, "models": [model]}, [p], [t]


def submit(plan):
    name, experiment, points, tasks = plan
    return rec(SUBMIT, pb((1, name), (2, compact(experiment)), (3, compact(points)), (4, compact(tasks))))


def noop_result(plan, task_id, items=2):
    """noop_result(lease) for the plan's task `task_id` (1-based)."""
    _, _, points, tasks = plan
    t = tasks[task_id - 1]
    r = {}
    if t["kind"] == "distances":
        r["distances"] = {"model": t["model"], "l_star": [fake_value(t["key"] + "/l*"), fake_value(t["model"])]}
    out = []
    for p in [p for p in points if p["key"] in t["points"]]:
        key, n, layers = p["key"], p["n"], p["layers"]
        kept = [i for i in range(layers) if not (layers - 1 - n <= i < layers - 1)]
        dropped = [i for i in range(layers) if layers - 1 - n <= i < layers - 1]
        q = {"key": key, "kept": kept, "dropped": dropped,
             "metrics": {"accuracy": fake_value(key + "/accuracy"), "loss": 1 + fake_value(key + "/loss")},
             "items": [{"task": "boolq", "index": i, "correct": fake_value(key + "/item%d" % i) < 0.5}
                       for i in range(items)]}
        if t["kind"] == "heal":
            q["healing"] = {"steps": 10, "final_loss": fake_value(key + "/heal")}
        out.append(q)
    if out:
        r["points"] = out
    r["provenance"] = {"code_version": "noop", "model_sha256": hashlib.sha256(t["model"].encode()).hexdigest(),
                       "data_sha256": {"calibration": hashlib.sha256(t["key"].encode()).hexdigest()},
                       "config": t["payload"]}
    return compact(r)


def register(name="rank0@node1"):
    return rec(REGISTER, pb((1, name), (2, "node1"), (3, 4242), (4, "0.1.0")))


def lease(worker="w1", model="m1", tp=0, seconds=0, reap=False):
    return rec(LEASE, pb((1, worker), (2, model), (3, 500), (4, tp)), seconds, reap)


def heartbeat(task, token, worker="w1", checkpoint="", seconds=0):
    return rec(HEARTBEAT, pb((1, worker), (2, task), (3, token), (4, checkpoint)), seconds)


def report(task, token, result, worker="w1", seconds=0):
    return rec(REPORT, pb((1, worker), (2, task), (3, token), (4, result)), seconds)


def fail(task, token, error, retryable, worker="w1", seconds=0):
    return rec(FAIL, pb((1, worker), (2, task), (3, token), (4, error), (5, retryable)), seconds)


def release(task, token, checkpoint="", reason="SIGTERM", worker="w1"):
    return rec(RELEASE, pb((1, worker), (2, task), (3, token), (4, checkpoint), (5, reason)))


def query(what="results", experiment=1, model="", point=""):
    return rec(QUERY, pb((1, experiment), (2, what), (3, model), (4, point)))


small, tiny = small_plan("fuzz"), tiny_plan("tiny")
queries = b"".join(query(w) for w in ("results", "items", "distances", "provenance")) + rec(LIST)
rpc = "coordinator_rpc"
# Every task leased and reported in plan order, then every query.
out(rpc, "happy_path", submit(small) + register() + lease() + heartbeat(1, 1, seconds=2) +
    report(1, 1, noop_result(small, 1)) + lease() + report(2, 2, noop_result(small, 2)) + lease() +
    report(3, 3, noop_result(small, 3)) + lease() + report(4, 4, noop_result(small, 4)) + queries + lease())
# Retryable failures with back-off until max_attempts (3) fails the task.
out(rpc, "fail_retry", submit(tiny) + register() + lease() + fail(1, 1, "CUDA out of memory", True) + lease() +
    lease(seconds=2) + fail(1, 2, "again", True) + lease(seconds=3) + fail(1, 3, "and again", True) + lease(seconds=9) +
    rec(LIST))
# A failure without retry fails the task's dependents; the independent heal task goes on.
out(rpc, "fail_dependents", submit(small) + register() + lease() + fail(1, 1, "bad input", False) + lease() +
    report(3, 2, noop_result(small, 3)) + fail(3, 2, "late", False) + lease() + query("distances") + rec(LIST))
# A checkpoint by heartbeat and release, handed to the next lease; a repeated release is a duplicate.
out(rpc, "release_checkpoint", submit(tiny) + register() + lease() + heartbeat(1, 1, checkpoint="/ckpt/step100") +
    release(1, 1, checkpoint="/ckpt/step200") + lease() + release(1, 1, checkpoint="/ckpt/x") +
    heartbeat(1, 2) + report(1, 2, noop_result(tiny, 1)) + query("items", point=tiny[2][0]["key"]))
# Cancel while two tasks are leased: CANCEL at the heartbeat, a release ends it cancelled, a report that
# crosses the cancel is accepted.
out(rpc, "cancel", submit(small) + register() + lease() + lease() + rec(CANCEL, pb((1, 1))) + heartbeat(1, 1) +
    release(1, 1) + report(3, 2, noop_result(small, 3)) + lease() + rec(CANCEL, pb((1, 1))) + rec(LIST) + query())
# Leases that expire: found by a heartbeat, then by the reaper; the late report is fenced off.
out(rpc, "expiry", submit(tiny) + register() + lease() + heartbeat(1, 1, seconds=3) + heartbeat(1, 1, seconds=6) +
    report(1, 1, noop_result(tiny, 1)) + lease(seconds=2) + rec(LIST, seconds=0, reap=True) + lease(seconds=4) +
    heartbeat(1, 3) + report(1, 3, noop_result(tiny, 1)) + report(1, 2, noop_result(tiny, 1)) + query())
# Fencing: another worker's token, the wrong task, bad documents, then the report and its repeats.
out(rpc, "fencing", submit(small) + register() + register("rank1@node2") + lease() +
    report(1, 1, noop_result(small, 1), worker="w2") + report(2, 1, noop_result(small, 1)) + report(1, 1, "{") +
    report(1, 1, '{"provenance":{}}') + report(1, 1, '{"distances":null}') + report(1, 1, noop_result(small, 1)) +
    report(1, 1, noop_result(small, 1)) + fail(1, 1, "after", True) + heartbeat(1, 1) + lease("w2") +
    report(2, 2, noop_result(small, 3), worker="w2") + report(2, 2, noop_result(small, 2), worker="w2"))
# Requests the store refuses.
bad_dep = (small[0], small[1], small[2], [dict(small[3][1], depends_on=["nowhere"])] + small[3][:1] + small[3][2:])
out(rpc, "bad_requests", submit(("", {}, [], [])) + submit(bad_dep) + submit(tiny) +
    submit(("tiny", {"name": "tiny", "other": 1}, tiny[2], tiny[3])) + submit(tiny) + rec(CANCEL, pb((1, 99))) +
    query("bogus") + query(experiment=99) + lease("nobody") + register() + report(1, 42, "{}") +
    heartbeat(7, 1) + fail(1, 1, "", True) + release(1, 1))
# Tensor-parallel tasks: a worker group of another size gets nothing.
tp2 = tiny_plan("tp2", tp=2)
out(rpc, "tensor_parallel", submit(tp2) + register() + lease(tp=1) + lease(model="", tp=2) + lease(tp=2) +
    report(1, 1, noop_result(tp2, 1)) + rec(LIST))
# Result documents that do not fit the task (rejected, nothing written), then one that does.
p0 = tiny[2][0]["key"]
bad_results = ['{"points":[{"key":"%s","metrics":{"loss":"x"}}]}' % p0, '{"points":[{"key":"%s","kept":"x"}]}' % p0,
               '{"points":[],"extra":1}', '{"points":[{"key":"%s"},{"key":"%s"}]}' % (p0, p0),
               '{"points":[{"key":"other"}]}', '{"points":{}}', '[]',
               '{"points":[{"key":"%s","items":{}}]}' % p0, '{"points":[{"key":"%s"}],"provenance":[]}' % p0]
out(rpc, "result_documents", submit(tiny) + register() + lease() + b"".join(report(1, 1, r) for r in bad_results) +
    report(1, 1, '{"points":[{"key":"%s","metrics":{"loss":1e308,"acc":-0.0},"items":[1,"x",{"correct":2}],'
                 '"healing":null}]}' % p0) + query() + query("items") + query("provenance"))


# ---- lora_checkpoint: a healing checkpoint (formats/lora_checkpoint.h) for fuzz_lora_checkpoint's adapter set -
def lora_checkpoint(edit=None, meta_edit=None):
    tensors = []
    for name, rows, cols in (("model.layers.0.mlp.up_proj", 16, 8), ("model.layers.1.mlp.down_proj", 8, 16)):
        for suffix in ("weight", "exp_avg", "exp_avg_sq"):
            for ab, shape in (("lora_A", [2, cols]), ("lora_B", [rows, 2])):
                n = shape[0] * shape[1]
                tensors.append([f"{name}.{ab}.{suffix}", "F32", shape, b"".join(f32(0.01 * (i % 7)) for i in range(n))])
    tensors.append(["rng_state", "U8", [16], bytes(range(16))])
    meta = {"format": "layerprune-lora-checkpoint", "step": "3", "data_position": "96", "rng_device": "cpu",
            "lora": json.dumps({"rank": 2, "alpha": 2.0, "dropout": 0.05, "targets": ["up_proj", "down_proj"],
                                "seed": 0, "kept_layers": [0, 1]})}
    if edit:
        edit(tensors)
    if meta_edit:
        meta_edit(meta)
    return safetensors([tuple(t) for t in tensors], meta)


def nan_at(tensors):
    tensors[4][3] = f32(float("nan")) + tensors[4][3][4:]


def f16_at(tensors):
    tensors[0][1] = "F16"
    tensors[0][3] = tensors[0][3][: len(tensors[0][3]) // 2]


out("lora_checkpoint", "valid", lora_checkpoint())
out("lora_checkpoint", "nan", lora_checkpoint(nan_at))
out("lora_checkpoint", "f16", lora_checkpoint(f16_at))
out("lora_checkpoint", "bad_step", lora_checkpoint(meta_edit=lambda m: m.update(step="-1")))
out("lora_checkpoint", "other_rank", lora_checkpoint(meta_edit=lambda m: m.update(lora='{"rank": 4}')))
out("lora_checkpoint", "no_metadata", lora_checkpoint(meta_edit=lambda m: m.clear()))

# Stale seeds (from an earlier version of this script) are removed; regression-* files stay.
for target in sorted(os.listdir(CORPUS)):
    for name in sorted(os.listdir(os.path.join(CORPUS, target))):
        if name.startswith("seed-") and (target, name) not in written:
            os.remove(os.path.join(CORPUS, target, name))
total = sum(os.path.getsize(os.path.join(CORPUS, t, n)) for t, n in written)
print("wrote %d seed files (%d bytes) under %s" % (len(written), total, CORPUS), file=sys.stderr)
