#!/usr/bin/env python3
"""Golden token ids for tests/test_bpe_tokenizer.cc (byte-level BPE), written by the PyPI `tokenizers`
package (the reference for a tokenizer.json) and, for a GGUF, by llama.cpp's `llama-tokenize` (optional).
Regenerate, from the repository root, with the compare venv (tokenizers, gguf, sentencepiece):
    HF_HUB_OFFLINE=1 ~/.cache/layerprune/compare-venv/bin/python tests/golden/make_bpe_golden.py \
        --data ../shared/data [--llama-tokenize /tmp/llama.cpp/build/bin/llama-tokenize]
Writes, in tests/golden/bpe/:
  smollm2_template.json  SmolLM2-135M-Instruct's tokenizer.json without its vocabulary and merges ("vocab": {},
                         "merges": []): the real SmolLM2 pre-tokenizer (Sequence[Digits(individual_digits),
                         ByteLevel(add_prefix_space=false, use_regex=true)]), ByteLevel decoder, the 17 control
                         tokens of the GGUF as special added tokens. The C++ test fills in the vocabulary and
                         the 48,900 merges from the GGUF's metadata (too big to check in).
  llama3_style.json      a Llama-3-style tokenizer.json trained here (BpeTrainer, 2000 tokens, on TinyStories,
                         MMLU and BoolQ text): Split(Llama-3's regex, Isolated) + ByteLevel(use_regex=false),
                         ignore_merges (and a vocabulary entry no merge reaches, so it matters),
                         TemplateProcessing adding <|begin_of_text|>, merges as ["a", "b"] pairs, added
                         tokens with lstrip/rstrip and single_word.
  qwen2_style.json       a Qwen2-style one: NFC normalizer, Qwen2's regex, no BOS, merges in the older "a b"
                         layout, a normalized non-special added token.
  smollm2_ids.json, llama3_style_ids.json, qwen2_style_ids.json: for each, samples
      [{"name", "text" | "text_hex", "ids" (encode(text, add_special_tokens=False).ids), "ids_special"
      (add_special_tokens=True, where it differs), "decoded" (decode(ids, skip_special_tokens=False), where it
      differs from the text, and always for "text_hex"), "decoded_skip" (skip_special_tokens=True, where it differs from "decoded")}],
      and whole_files: the TinyStories excerpt and the C4 excerpt's texts (joined by "\n\n") encoded as one
      string: count, first 32 ids, sha256 of the ids as little-endian int32.
  gpt2_style_ids.json    the hand-made samples through qwen2_style.json with its normalizer removed and its
      pre-tokenizer replaced by ByteLevel(add_prefix_space=true, use_regex=true) (GPT-2's own layout).
  smollm2_llama_cpp_ids.json (with --llama-tokenize): llama.cpp's ids for the same samples, read from the GGUF
      (pre = smollm), and the ids of the HF tokenizer where they differ ("hf_ids").
  llama3_style_llama_cpp_ids.json, qwen2_style_llama_cpp_ids.json (with --llama-tokenize): llama.cpp's ids for
      the hand-made samples on vocabulary-only GGUFs written from llama3_style.json (pre = llama-bpe) and
      qwen2_style.json (pre = qwen2) by write_vocab_gguf() below (special added tokens as control tokens,
      the others user-defined), and "hf_ids" where tokenizers differs (NFC, single_word, lstrip/rstrip:
      llama.cpp's GGUF has none of them).
  gpt2_pre_llama_cpp_ids.json, default_pre_llama_cpp_ids.json (with --llama-tokenize): the same with the
      qwen2_style vocabulary and pre = gpt-2 and pre = default ("hf_ids" then compares with qwen2_style.json's
      own pre-tokenizer, so it differs often: only the llama.cpp ids are the reference here).
Malformed UTF-8 ("text_hex"): a Python str cannot hold it, so tokenizers never sees it; the C++ tokenizer
replaces it as bytes.decode("utf-8", errors="replace") does, and the golden ids are those of that string.
"""
import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

import gguf
import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_token_ids as sp_golden  # noqa: E402  (the SentencePiece golden script's corpus)

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe")
GGUF = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
C4 = "c4/c4_en_train_first1000.jsonl"

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")

# Edge cases of byte-level BPE beyond the SentencePiece script's: digits, "\n\n2" (where transformers' GGUF
# loader and llama.cpp part: see docs/formats.md), special tokens inside text, contractions in capitals.
BPE_EDGE_CASES = [
    ("number_12345", "12345"),
    ("newlines_digit", "\n\n2"),
    ("newlines_digits_words", "Chapter\n\n2 and 33 of 444\n\n\n5555 x"),
    ("contractions_upper", "I'M YOU'RE WE'LL SHE'D IT'S can't won't"),
    ("specials_chat", "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"),
    ("specials_llama3", "<|begin_of_text|>Hello<|eot_id|> x <|end_of_text|>"),
    ("specials_qwen", "<|endoftext|>a<|im_start|>b<|im_end|>"),
    ("specials_partial", "<|im_start <|im_end| <|begin_of_text|"),
    ("added_strip", "a   <|sep|>   b <|sep|>c"),
    ("added_single_word", "word words sword word. (word)"),
    ("added_single_word_edges", "word_x _word word\u0301 word\u2460 x\u200dword word\u00b2 word- \u00e9word"),
    ("added_normalized", "the cafe\u0301 and the caf\u00e9 <tool> x<tool>y"),
    ("nfc_hangul_jamo", "\u1100\u1161\u11a8 \u1112\u1161\u11ab"),
    ("nfc_combining_stack", "a\u0323\u0302 e\u0301\u0300 A\u030a \u212b"),
    ("spaces_then_newline", "a  \n  b\t\n\n c"),
    ("trailing_newlines", "end\n\n\n"),
    ("unicode_digits", "\u0661\u0662\u0663 \u00b2\u00bd \u2160\u2161"),
    ("code_python", "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(f\"{i:02d}\")  # even\n"),
    ("code_cpp", "int main() {\n  std::vector<int> v{1, 2, 3};\n  return v[0]+v.size();\n}\n"),
]


def ids_sha256(ids):
    return hashlib.sha256(struct.pack("<%di" % len(ids), *ids)).hexdigest()


def corpus_samples(data):
    # The SentencePiece script's corpus, thinned to keep the files small (the whole files cover the bulk):
    # every edge case (its SentencePiece-only ones are plain text to a BPE), a third of the TinyStories
    # samples, the MMLU 0-shot questions of every 4th subject, two 5-shot prompts, eight BoolQ prompts.
    mmlu = sp_golden.mmlu_samples(data)
    mmlu = ([s for s in mmlu if s[0].endswith("/0shot")][::4] + [s for s in mmlu if s[0].endswith("/5shot")][:2] +
            [s for s in mmlu if "/continuation_" in s[0]])
    boolq = [s for s in sp_golden.boolq_samples(data) if s[0].endswith("/prompt")][:8]
    samples = (sp_golden.EDGE_CASES + BPE_EDGE_CASES + sp_golden.tinystories_samples(data)[::3] + mmlu + boolq)
    return samples, sp_golden.EDGE_CASES_BYTES


def read_gguf_vocab(data):
    r = gguf.GGUFReader(os.path.join(data, GGUF))
    f = r.fields
    return dict(tokens=f["tokenizer.ggml.tokens"].contents(), merges=f["tokenizer.ggml.merges"].contents(),
                types=f["tokenizer.ggml.token_type"].contents(), pre=f["tokenizer.ggml.pre"].contents(),
                bos=int(f["tokenizer.ggml.bos_token_id"].contents()),
                eos=int(f["tokenizer.ggml.eos_token_id"].contents()))


def smollm2_tokenizer(v):
    """SmolLM2's tokenizer.json, as HuggingFaceTB ships it, from the GGUF's vocabulary and merges."""
    vocab = {t: i for i, t in enumerate(v["tokens"])}
    merges = [tuple(m.split(" ", 1)) for m in v["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    control = [t for t, ty in zip(v["tokens"], v["types"]) if ty == 3]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    return tok


def training_text(data):
    text = open(os.path.join(data, sp_golden.TINYSTORIES), encoding="utf-8").read()[:300000]
    extra = [t for _, t in sp_golden.mmlu_samples(data) + sp_golden.boolq_samples(data)]
    extra += [t for _, t in sp_golden.EDGE_CASES + BPE_EDGE_CASES]
    return [text[i:i + 2000] for i in range(0, len(text), 2000)] + extra


def trained(data, regex, specials, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_text(data), trainer=trainer)
    return tok


def llama3_style(data):
    tok = trained(data, LLAMA3_REGEX, ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], 2000)
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = True
    # A token no merge sequence reaches (Llama-3's vocabulary has such tokens): with ignore_merges the
    # pre-token "pneumonoultramicroscopicsilicovolcanoconiosis" (the long_word sample) is this one token.
    j["model"]["vocab"]["pneumonoultramicroscopicsilicovolcanoconiosis"] = len(j["model"]["vocab"])
    tok = Tokenizer.from_str(json.dumps(j))
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    tok.add_special_tokens([AddedToken("<|sep|>", special=True, lstrip=True, rstrip=True, normalized=False)])
    tok.add_tokens([AddedToken("word", single_word=True, normalized=False)])
    return tok


def qwen2_style(data):
    tok = trained(data, QWEN2_REGEX, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 2000)
    tok.normalizer = normalizers.NFC()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_tokens([AddedToken("<tool>", normalized=True, special=False),
                    AddedToken("caf\u00e9", normalized=True, special=False)])
    return tok


def to_legacy_merges(tok_json_text):
    """The same tokenizer.json with merges in the "a b" layout tokenizers wrote before 0.20."""
    j = json.loads(tok_json_text)
    j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
    return json.dumps(j, ensure_ascii=False, indent=1)


def sample_records(tok, samples, byte_samples):
    out = []
    for name, text in samples:
        out.append(record(tok, name, text, {"text": text}))
    for name, b in byte_samples:
        out.append(record(tok, name, b.decode("utf-8", errors="replace"), {"text_hex": b.hex()}))
    return out


def record(tok, name, text, key):
    ids = tok.encode(text, add_special_tokens=False).ids
    r = {"name": name, **key, "ids": ids}
    special = tok.encode(text, add_special_tokens=True).ids
    if special != ids:
        r["ids_special"] = special
    decoded = tok.decode(ids, skip_special_tokens=False)
    if decoded != text or "text_hex" in key:
        r["decoded"] = decoded
    skip = tok.decode(ids, skip_special_tokens=True)
    if skip != decoded:
        r["decoded_skip"] = skip
    return r


def whole_files(tok, data):
    out = {}
    ts = open(os.path.join(data, sp_golden.TINYSTORIES), encoding="utf-8").read()
    c4 = "\n\n".join(json.loads(l)["text"] for l in open(os.path.join(data, C4), encoding="utf-8") if l.strip())
    for name, text in (("tinystories", ts), ("c4", c4)):
        ids = tok.encode(text, add_special_tokens=False).ids
        out[name] = {"count": len(ids), "first": ids[:32], "sha256": ids_sha256(ids)}
    return out


def write_json(name, obj):
    path = os.path.join(OUT_DIR, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")
    print("wrote", path, os.path.getsize(path), "bytes")


def llama_cpp_ids(exe, gguf_path, text):
    # llama-tokenize --ids prints a Python list; --no-bos: the ids of the text alone (SmolLM2 adds none anyway);
    # special tokens are parsed (the tool's default), as our GGUF tokenizer does; --stdin: any bytes, no shell
    # quoting; --no-escape: the text as it is (by default the tool turns "\\n" into a newline).
    p = subprocess.run([exe, "-m", gguf_path, "--stdin", "--ids", "--log-disable", "--no-bos", "--no-escape"],
                       input=text.encode("utf-8"), capture_output=True, check=True)
    line = p.stdout.decode().strip().splitlines()[-1]
    return json.loads(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--llama-tokenize", help="llama.cpp's llama-tokenize binary (optional oracle for the GGUF path)")
    args = ap.parse_args()
    os.makedirs(OUT_DIR, exist_ok=True)
    samples, byte_samples = corpus_samples(args.data)

    v = read_gguf_vocab(args.data)
    smol = smollm2_tokenizer(v)
    full = smol.to_str()
    template = json.loads(full)
    template["model"]["vocab"] = {}
    template["model"]["merges"] = []
    write_json("smollm2_template.json", template)
    write_json("smollm2_ids.json", {
        "tokenizers_version": tokenizers.__version__, "source": GGUF, "pre": v["pre"],
        "vocab_size": smol.get_vocab_size(), "merges": len(v["merges"]), "bos_id": v["bos"], "eos_id": v["eos"],
        "samples": sample_records(smol, samples, byte_samples), "whole_files": whole_files(smol, args.data)})

    for name, tok, legacy in (("llama3_style", llama3_style(args.data), False),
                              ("qwen2_style", qwen2_style(args.data), True)):
        text = to_legacy_merges(tok.to_str()) if legacy else json.dumps(json.loads(tok.to_str()), ensure_ascii=False, indent=1)
        with open(os.path.join(OUT_DIR, name + ".json"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        tok = Tokenizer.from_str(text)  # the checked-in file is the reference, whatever layout it has
        write_json(name + "_ids.json", {
            "tokenizers_version": tokenizers.__version__, "vocab_size": tok.get_vocab_size(),
            "samples": sample_records(tok, samples, byte_samples), "whole_files": whole_files(tok, args.data)})

    # GPT-2 style: the Qwen2-style vocabulary behind ByteLevel(add_prefix_space=true, use_regex=true) alone
    # (the C++ test patches qwen2_style.json the same way); the hand-made edge cases only.
    j = json.loads(open(os.path.join(OUT_DIR, "qwen2_style.json"), encoding="utf-8").read())
    j["normalizer"] = None
    j["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    gpt2 = Tokenizer.from_str(json.dumps(j))
    edge = sp_golden.EDGE_CASES + BPE_EDGE_CASES
    write_json("gpt2_style_ids.json", {"tokenizers_version": tokenizers.__version__, "vocab_size": gpt2.get_vocab_size(),
                                       "samples": sample_records(gpt2, edge, byte_samples)})

    if args.llama_tokenize:
        # llama.cpp on vocabulary-only GGUFs of the two trained tokenizers (pre = llama-bpe, qwen2), made in a
        # temporary directory; the hand-made samples only.
        with tempfile.TemporaryDirectory() as tmp:
            for out, name, pre, bos, eos, add_bos in (
                    ("llama3_style", "llama3_style", "llama-bpe", "<|begin_of_text|>", "<|end_of_text|>", True),
                    ("qwen2_style", "qwen2_style", "qwen2", None, "<|endoftext|>", False),
                    ("gpt2_pre", "qwen2_style", "gpt-2", None, "<|endoftext|>", False),
                    ("default_pre", "qwen2_style", "default", None, "<|endoftext|>", False)):
                text = open(os.path.join(OUT_DIR, name + ".json"), encoding="utf-8").read()
                hf = Tokenizer.from_str(text)
                path = os.path.join(tmp, out + ".gguf")
                write_vocab_gguf(path, text, pre, None if bos is None else hf.token_to_id(bos), hf.token_to_id(eos), add_bos)
                write_json(out + "_llama_cpp_ids.json", {
                    "oracle": "llama.cpp llama-tokenize (vendor/llama.cpp of PyPI llama-cpp-python 0.3.36), --no-bos --no-escape --ids",
                    "source": "a vocabulary-only GGUF of " + name + ".json (make_bpe_golden.write_vocab_gguf)", "pre": pre,
                    "samples": llama_cpp_golden(args.llama_tokenize, path, edge, byte_samples, hf)})

        gguf_path = os.path.join(args.data, GGUF)
        recs = llama_cpp_golden(args.llama_tokenize, gguf_path, samples, byte_samples, smol)
        c4 = "\n\n".join(json.loads(l)["text"] for l in open(os.path.join(args.data, C4), encoding="utf-8") if l.strip())
        c4_ids = llama_cpp_ids(args.llama_tokenize, gguf_path, c4)
        write_json("smollm2_llama_cpp_ids.json", {
            "oracle": "llama.cpp llama-tokenize (vendor/llama.cpp of PyPI llama-cpp-python 0.3.36), --no-bos --no-escape --ids",
            "source": GGUF, "pre": v["pre"], "samples": recs,
            "c4": {"count": len(c4_ids), "first": c4_ids[:32], "sha256": ids_sha256(c4_ids)}})


def vocab_of_json(tok_json):
    """A tokenizer.json's vocabulary as a GGUF holds it (what the C++ test's gguf_vocab_of_json() rebuilds):
    tokens by id, merges as "a b", special added tokens as control (3), other added tokens as user-defined
    (4), the rest normal (1)."""
    j = json.loads(tok_json)
    n = max(list(j["model"]["vocab"].values()) + [t["id"] for t in j["added_tokens"]]) + 1
    tokens = [""] * n
    types = [1] * n
    for t, i in j["model"]["vocab"].items():
        tokens[i] = t
    for t in j["added_tokens"]:
        tokens[t["id"]] = t["content"]
        types[t["id"]] = 3 if t["special"] else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    return tokens, types, merges


def write_vocab_gguf(path, tok_json, pre, bos, eos, add_bos):
    """A vocabulary-only GGUF (no tensors) that llama-tokenize loads, like llama.cpp's models/ggml-vocab-*.gguf."""
    tokens, types, merges = vocab_of_json(tok_json)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(2048)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if bos is not None:
        w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(add_bos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()


def llama_cpp_golden(exe, gguf_path, samples, byte_samples, hf):
    recs = []
    for name, text in samples + [(n, b.decode("utf-8", errors="replace")) for n, b in byte_samples]:
        if not text:
            continue  # llama-tokenize --stdin on empty input is not a tokenization
        ids = llama_cpp_ids(exe, gguf_path, text)
        r = {"name": name, "text": text, "ids": ids}
        hf_ids = hf.encode(text, add_special_tokens=False).ids
        if hf_ids != ids:
            r["hf_ids"] = hf_ids
        recs.append(r)
    return recs


if __name__ == "__main__":
    main()
