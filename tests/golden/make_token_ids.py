"""Golden token ids from Python's sentencepiece for the C++ tokenizer test (tests/test_tokenizer.cc).

    /usr/bin/python3 tests/golden/make_token_ids.py [DATA_DIR]     # DATA_DIR defaults to ../shared/data

Samples: hand-made edge cases plus real text (TinyStories paragraphs, MMLU questions in the 5-shot prompt
format, BoolQ passages), encoded with both tokenizers. The whole TinyStories file is stored as a count and
a sha256 of its ids (little-endian int32) to keep the golden file small.
"""
import csv
import glob
import hashlib
import json
import os
import random
import struct
import sys

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared", "data")

EDGE = ["", " ", "  ", "Hello world", "  Hello   world  ", "a\nb", "tab\there", "\n", "\n\n\nx", "Ünïcödé café",
        "日本語のテキスト", "emoji 😀🎉 and 👩‍👩‍👧", "x" * 80, "1234567890 3.14159 -42", "\x00\x01\x7f",
        "line1\n\nline2\n", "  leading", "trailing  ", "don't can't won't", "<s> </s> <unk> <0x41>",
        "▁ already escaped", "\u00a0nbsp\u2003em space", "a  b   c    d", "Supercalifragilisticexpialidocious",
        "http://example.com/path?q=1&b=2", "MiXeD CaSe", "\r\nwindows\r\n", "«quotes» “curly” ‘single’"]


def samples():
    random.seed(1234)
    text = open(os.path.join(DATA, "tinystories", "tinystories_val.txt"), encoding="utf-8").read()
    paras = [p for p in text.split("\n\n") if p.strip()]
    out = [("edge", s) for s in EDGE]
    out += [("tinystories", p) for p in random.sample(paras, 60)]
    for f in sorted(glob.glob(os.path.join(DATA, "mmlu", "hendrycks_format", "test", "*.csv")))[:30]:
        with open(f, newline="", encoding="utf-8") as fh:
            r = next(csv.reader(fh))
        subject = os.path.basename(f)[: -len("_test.csv")].replace("_", " ")
        out.append(("mmlu", f"The following are multiple choice questions (with answers) about {subject}.\n\n"
                            f"{r[0]}\nA. {r[1]}\nB. {r[2]}\nC. {r[3]}\nD. {r[4]}\nAnswer:"))
        out.append(("mmlu", f" {r[5]}"))
    with open(os.path.join(DATA, "boolq", "val.jsonl"), encoding="utf-8") as fh:
        rows = [json.loads(l) for l in fh][:30]
    out += [("boolq", f"{j['passage']}\nQuestion: {j['question']}?\nAnswer:") for j in rows]
    return out, text


def main():
    items, text = samples()
    for tag, rel in [("tok512", "stories260K/tok512.model"), ("llama2", "llama2/tokenizer/tokenizer.model")]:
        sp = spm.SentencePieceProcessor(model_file=os.path.join(DATA, rel))
        doc = {"model": rel, "samples": []}
        for kind, s in items:
            ids = sp.encode(s)
            doc["samples"].append({"kind": kind, "text": s, "ids": ids, "decoded": sp.decode(ids)})
        # Invalid UTF-8 cannot live in JSON text: give it as hex.
        for raw in [b"bad \xff\xfe bytes", b"\xc3\x28", b"ok\xe2\x82", b"\xed\xa0\x80 surrogate"]:
            doc["samples"].append({"kind": "invalid_utf8", "hex": raw.hex(), "ids": sp.encode(raw)})
        stream = sp.encode(text)
        doc["tinystories_file"] = {"tokens": len(stream),
                                   "sha256": hashlib.sha256(struct.pack(f"<{len(stream)}i", *stream)).hexdigest()}
        path = os.path.join(HERE, f"token_ids_{tag}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=0)
            f.write("\n")
        print("wrote", path, len(doc["samples"]), "samples")


if __name__ == "__main__":
    main()
