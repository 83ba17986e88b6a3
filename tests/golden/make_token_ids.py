#!/usr/bin/python3
"""Golden token ids for tests/test_tokenizer.cc, written by Python's sentencepiece (the reference).

Regenerate, from the repository root, with Debian's python3 (it has python3-sentencepiece; a pyenv python3
earlier on PATH does not):

    /usr/bin/python3 tests/golden/make_token_ids.py --data ../shared/data

Writes, in tests/golden/:
  token_ids_tok512.json          stories260K/tok512.model (llama2.c's 512-piece vocabulary)
  token_ids_llama2.json          llama2/tokenizer/tokenizer.model (Llama-2, 32000 pieces)
  token_ids_tok512_variant.json  tok512.model rewritten by variant_model() below: no byte fallback, four
                                 user-defined pieces, one piece marked unused. The C++ test rebuilds the same
                                 bytes (checked by sha256) to cover sentencepiece's <unk>, user-defined and
                                 unused paths, which neither real model exercises.
  token_ids_synthetic.json       synthetic_model() below, a tiny BPE model made from scratch (the C++ test
                                 builds the same bytes), on the hand-made edge cases only: checks the
                                 algorithm where the shared data directory is absent.

Each file holds:
  model, model_sha256, sentencepiece_version, vocab_size, bos_id, eos_id, unk_id
  samples: [{"name", "text" (or "text_hex" for input that is not valid UTF-8), "ids", "decoded"?}]
      ids = sp.encode(text); "decoded" = sp.decode(ids), present only where it differs from "text".
  decode_cases: [{"ids", "text"}]: sp.decode(ids) of hand-picked and random id sequences.
  whole_file (tok512, llama2): the whole TinyStories excerpt encoded as one string, kept small as a count,
      the first 64 ids and the sha256 of all ids as little-endian int32 (the test recomputes it when the
      data file is present).

Samples are short excerpts of the shared data (TinyStories paragraphs and slices, MMLU questions in the
0-shot and 5-shot prompt layout, BoolQ passages and questions) plus hand-made edge cases. The selection is
deterministic, so rerunning on the same data and sentencepiece version reproduces the files byte for byte.
"""
import argparse
import csv
import hashlib
import json
import os
import random
import struct
import sys

import sentencepiece as spm

GOLDEN_DIR = os.path.dirname(os.path.abspath(__file__))
TINYSTORIES = "tinystories/tinystories_val.txt"
MODELS = {
    "tok512": "stories260K/tok512.model",
    "llama2": "llama2/tokenizer/tokenizer.model",
}


# --------------------------------------------------------------------------------------------------------
# Protobuf wire format, just enough to rewrite a ModelProto (the C++ test has the same few lines).

def _varint(b, i):
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def pb_fields(b):
    """A message as a list of (field, wire_type, value): int for varints, bytes otherwise."""
    i, out = 0, []
    while i < len(b):
        tag, i = _varint(b, i)
        f, w = tag >> 3, tag & 7
        if w == 0:
            v, i = _varint(b, i)
        elif w == 1:
            v, i = b[i:i + 8], i + 8
        elif w == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        elif w == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % w)
        out.append((f, w, v))
    return out


def _enc_varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        c, v = v & 0x7F, v >> 7
        out.append(c | 0x80 if v else c)
        if not v:
            return bytes(out)


def pb_serialize(fields):
    out = bytearray()
    for f, w, v in fields:
        out += _enc_varint(f << 3 | w)
        if w == 0:
            out += _enc_varint(v)
        elif w == 2:
            out += _enc_varint(len(v)) + v
        else:
            out += v
    return bytes(out)


VARIANT_USER_DEFINED = ["<sep>", "\u2581Once\u2581upon", "qzq", "qz"]
VARIANT_UNUSED = "\u2581the"


def variant_model(src):
    """tok512.model with: the 256 byte pieces dropped, TrainerSpec.byte_fallback (35) = 0, the piece
    VARIANT_UNUSED typed UNUSED (5), and VARIANT_USER_DEFINED appended after the last piece as USER_DEFINED
    (4) with score 0. Other records keep their order and bytes."""
    top = pb_fields(src)
    last_piece = max(i for i, (f, _, _) in enumerate(top) if f == 1)
    out = []
    for i, (f, w, v) in enumerate(top):
        if f == 1:
            piece = pb_fields(v)
            d = {pf: pv for pf, _, pv in piece}
            if d.get(3, 1) != 6:  # not BYTE
                if d[1] == VARIANT_UNUSED.encode():
                    piece = [x for x in piece if x[0] != 3] + [(3, 0, 5)]
                out.append((1, 2, pb_serialize(piece)))
            if i == last_piece:
                for u in VARIANT_USER_DEFINED:
                    out.append((1, 2, pb_serialize([(1, 2, u.encode()), (2, 5, b"\0\0\0\0"), (3, 0, 4)])))
        elif f == 2:
            spec = [x for x in pb_fields(v) if x[0] != 35] + [(35, 0, 0)]
            out.append((2, 2, pb_serialize(spec)))
        else:
            out.append((f, w, v))
    return pb_serialize(out)


# A small BPE model made from scratch, so that the test checks the algorithm without the data directory:
# (piece, score, type) with type 1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 6 BYTE. Scores are exact in
# float32. Merge ties ("ab"/"bc", "de"/"ed", "aa" with itself) check that the leftmost pair wins.
SYNTHETIC_PIECES = (
    [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)] + [("<0x%02X>" % b, 0.0, 6) for b in range(256)] +
    [("\u2581", -1.0, 1), ("a", -2.0, 1), ("b", -2.0, 1), ("c", -2.0, 1), ("d", -2.0, 1), ("e", -2.0, 1),
     ("h", -2.0, 1), ("l", -2.0, 1), ("o", -2.0, 1), ("\u00e9", -3.0, 1), ("\u65e5", -3.0, 1),
     ("ab", -1.0, 1), ("bc", -1.0, 1), ("abc", -0.5, 1), ("aa", -2.0, 1), ("cd", -3.0, 1), ("bcd", -0.25, 1),
     ("de", -1.0, 1), ("ed", -1.0, 1), ("\u2581a", -1.5, 1), ("\u2581ab", -0.125, 1), ("\u2581\u2581", -4.0, 1),
     ("\u2581\u2581\u2581\u2581", -4.5, 1), ("e\u2581", -2.5, 1), ("he", -1.25, 1), ("ll", -1.75, 1),
     ("hell", -0.75, 1), ("hello", -0.625, 1), ("\u2581hello", -0.375, 1), ("\u00e9\u00e9", -1.0, 1),
     ("<sep>", 0.0, 4)])


def synthetic_model():
    """SYNTHETIC_PIECES as a ModelProto: BPE, byte fallback, identity normalizer, dummy prefix on, extra
    whitespace kept (as Llama-2)."""
    fields = [(1, 2, pb_serialize([(1, 2, p.encode()), (2, 5, struct.pack("<f", score)), (3, 0, t)]))
              for p, score, t in SYNTHETIC_PIECES]
    fields.append((2, 2, pb_serialize([(3, 0, 2), (4, 0, len(SYNTHETIC_PIECES)), (35, 0, 1)])))
    fields.append((3, 2, pb_serialize([(1, 2, b"identity"), (3, 0, 1), (4, 0, 0)])))
    return pb_serialize(fields)


# --------------------------------------------------------------------------------------------------------
# Samples

def tinystories_samples(data):
    text = open(os.path.join(data, TINYSTORIES), encoding="utf-8").read()
    paras = [p for p in text.split("\n\n") if p.strip()]
    out = []
    for i in range(0, len(paras), len(paras) // 80):
        out.append(("tinystories/para%d" % i, paras[i]))
        if len(out) == 80:
            break
    for i in range(7, len(paras) - 3, len(paras) // 8):  # a few multi-paragraph chunks, "\n\n" inside
        out.append(("tinystories/chunk%d" % i, "\n\n".join(paras[i:i + 3]) + "\n"))
    rng = random.Random(1234)
    for _ in range(20):  # raw slices that cut words and start or end in whitespace
        a = rng.randrange(0, len(text) - 400)
        out.append(("tinystories/slice%d" % a, text[a:a + rng.randrange(1, 400)]))
    return out


def mmlu_rows(data, split, subject):
    path = os.path.join(data, "mmlu/hendrycks_format", split, "%s_%s.csv" % (subject, split))
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def mmlu_question(row, answer):
    """One question in the Hendrycks / lm-evaluation-harness layout; `answer` None leaves it open."""
    s = row[0] + "".join("\n%s. %s" % (l, c) for l, c in zip("ABCD", row[1:5])) + "\nAnswer:"
    return s if answer is None else s + " " + answer + "\n\n"


def mmlu_samples(data):
    subjects = sorted(f[:-len("_test.csv")] for f in os.listdir(os.path.join(data, "mmlu/hendrycks_format/test")))
    out = []
    for n, subject in enumerate(subjects):
        rows = mmlu_rows(data, "test", subject)
        out.append(("mmlu/%s/0shot" % subject, mmlu_question(rows[n % len(rows)], None)))
        if n % 6 == 0:  # the raw fields of a row, as a CSV cell reads
            for j, cell in enumerate(rows[1][:5]):
                out.append(("mmlu/%s/test1/col%d" % (subject, j), cell))
        if n % 11 == 0:  # the 5-shot prompt: header, the five dev questions with answers, the open question
            header = "The following are multiple choice questions (with answers) about %s.\n\n" % (
                subject.replace("_", " "))
            shots = "".join(mmlu_question(r, r[5]) for r in mmlu_rows(data, "dev", subject))
            out.append(("mmlu/%s/5shot" % subject, header + shots + mmlu_question(rows[0], None)))
    for letter in "ABCD":  # the continuations scored after "Answer:"
        out.append(("mmlu/continuation_" + letter, " " + letter))
    return out


def boolq_samples(data):
    out = []
    with open(os.path.join(data, "boolq/val.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    for i in range(0, len(records), len(records) // 30)[:30]:
        r = records[i]
        out.append(("boolq/%d/prompt" % i, "%s\nQuestion: %s?\nAnswer:" % (r["passage"], r["question"])))
        if i % 2 == 0:
            out.append(("boolq/%d/question" % i, r["question"]))
    return out


EDGE_CASES = [
    ("empty", ""),
    ("space", " "),
    ("spaces", "   "),
    ("word", "hello"),
    ("leading_space", " hello"),
    ("leading_spaces", "   hello"),
    ("trailing_space", "hello "),
    ("trailing_spaces", "hello   "),
    ("inner_spaces", "a  b   c    d"),
    ("spaces_around", "  a b  "),
    ("newline", "\n"),
    ("newlines", "\n\n\n"),
    ("newline_words", "one\ntwo\n\nthree\n"),
    ("newline_spaces", "a \n b  \n  c"),
    ("leading_newline", "\nhello"),
    ("crlf", "line one\r\nline two\r\n"),
    ("tab", "\t"),
    ("tabs", "a\tb\t\tc"),
    ("tab_spaces", "  \t  x  "),
    ("form_feed_vt", "a\x0bb\x0cc"),
    ("nul", "a\x00b"),
    ("control_chars", "\x01\x02\x1b[0m\x7f"),
    ("digits", "0123456789"),
    ("numbers", "In 1984, 3.14159 and 2,000,000 and -42 and 1e10."),
    ("long_number", "12345678901234567890123456789012345678901234567890"),
    ("punctuation", "Hello, world! How's it going? (Fine.) [ok] {x} <y> \"q\" 'r' ... -- ;:"),
    ("symbols", "@#$%^&*_+=|\\/~`"),
    ("url", "https://example.com/path?query=1&b=2#frag"),
    ("code", "def f(x):\n    return x ** 2  # square\n"),
    ("control_piece_text", "<s> </s> <unk> <pad>"),
    ("byte_piece_text", "<0x41> <0x0A> <0xFF>"),
    ("space_symbol_text", "\u2581 \u2581\u2581x"),
    ("unk_surface_text", " \u2047 "),
    ("accents", "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe"),
    ("accents_decomposed", "cafe\u0301 nai\u0308ve"),
    ("greek", "\u0391\u03b8\u03ae\u03bd\u03b1 \u03ba\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1"),
    ("cyrillic", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!"),
    ("cjk", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002\u4e2d\u6587\u6587\u672c\u3002"),
    ("korean", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8"),
    ("arabic", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645"),
    ("hindi", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e"),
    ("emoji", "\U0001f600"),
    ("emoji_text", "I love pizza \U0001f355\U0001f355 and cats \U0001f431!"),
    ("emoji_zwj", "\U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f44d\U0001f3fd"),
    ("flags", "\U0001f1fa\U0001f1f8\U0001f1ef\U0001f1f5"),
    ("rare_chars", "\u2603 \u2764\ufe0f \u00a9 \u2122 \u00bd \u221e \u2260 \u03c0"),
    ("supplementary", "\U0001d400\U0001d401 \U00020000 \U0010fffd"),
    ("nbsp", "a\u00a0b \u00a0 c"),
    ("ideographic_space", "a\u3000b"),
    ("other_spaces", "a\u2009b\u200bc\u2028d\u2029e\ufeff"),
    ("replacement_char", "\ufffd"),
    ("fullwidth", "\uff21\uff22\uff23\uff11\uff12\uff13"),
    ("long_word", "pneumonoultramicroscopicsilicovolcanoconiosis"),
    ("very_long_word", "supercalifragilisticexpialidocious" * 8),
    ("repeated_char", "a" * 300),
    ("repeated_space_word", "ha " * 50),
    ("mixed_case", "HELLO hello HeLLo hELLO"),
    ("quote_story", "\"Let's go!\" said Tom. 'Okay,' Sue replied."),
    ("story_start", "Once upon a time, there was a little girl named Lily."),
    ("merge_ties", "abc aaaa aaa abcd bcd bcab dede eded ababab"),
    ("merge_whitespace", "a  ab   abc    hello     hello\u00e9\u00e9\u00e9 he  hell"),
    ("synthetic_user_defined", "a<sep>b <sep> <sep><sep>"),
    ("variant_user_defined", "Once upon a time<sep>qzq qz qzz qzqz q the them"),
    ("variant_unknown_runs", "\u2603\u2603 x \u2603 \u65e5\u672c\n\n\ty"),
]

# Input that is not valid UTF-8, as bytes (sentencepiece reads each malformed byte as U+FFFD).
EDGE_CASES_BYTES = [
    ("invalid_ff", b"\xff"),
    ("invalid_in_word", b"a\xffb"),
    ("invalid_lone_continuation", b"x\x80\x80y"),
    ("invalid_truncated_2byte", b"caf\xc3"),
    ("invalid_truncated_3byte", b"\xe6\x97 ok"),
    ("invalid_truncated_4byte", b"\xf0\x9f\x98"),
    ("invalid_overlong", b"\xc0\xaf \xe0\x80\xaf"),
    ("invalid_surrogate", b"\xed\xa0\x80 \xed\xbf\xbf"),
    ("invalid_beyond_10ffff", b"\xf4\x90\x80\x80"),
    ("invalid_f8", b"\xf8\x88\x80\x80\x80"),
    ("invalid_mixed", b"ok \xfe\xfe ok \xc3\xa9 \xc3"),
]


def decode_cases(sp, rng):
    v = sp.vocab_size()
    byte = lambda b: sp.piece_to_id("<0x%02X>" % b)
    word = sp.encode("hello world")
    cases = [
        [],
        [sp.bos_id()],
        [sp.bos_id()] + word,
        [sp.bos_id(), sp.bos_id()] + word,
        [sp.eos_id()] + word + [sp.eos_id()],
        word + [sp.bos_id()] + word,
        [sp.unk_id()],
        [sp.unk_id()] + word,
        [sp.bos_id(), sp.unk_id()] + word,
    ]
    if sp.piece_to_id("<0x41>") != sp.unk_id():  # byte pieces exist
        cases += [
            [byte(0x41)],
            [byte(0xC3), byte(0xA9)],
            [sp.bos_id(), byte(0xC3), byte(0xA9)] + word,
            [byte(0x20)] + word,
            [sp.bos_id(), byte(0x20)] + word,
            word + [byte(0x20)],
            [byte(0xFF)] + word,
            [byte(0xE6)] + word,
            [byte(0xE6), byte(0x97)],
            [byte(0xED), byte(0xA0), byte(0x80)],
            [byte(0xF0), byte(0x9F), byte(0x98), byte(0x80), byte(0xF0), byte(0x9F)],
            [byte(0xC3), sp.bos_id(), byte(0xA9)],
            [byte(0xEF), byte(0xBF), byte(0xBD)],
            [byte(0x00), byte(0x0A)],
        ]
    space = sp.piece_to_id("\u2581")
    if space != sp.unk_id():
        cases += [[space] + word, [sp.bos_id(), space, space] + word, word + [space]]
    for _ in range(60):  # random sequences: byte runs broken by pieces, controls in the middle, ...
        n = rng.randrange(1, 25)
        cases.append([rng.randrange(v) for _ in range(n)])
    for _ in range(20):  # random byte runs
        if sp.piece_to_id("<0x41>") != sp.unk_id():
            cases.append([byte(rng.randrange(256)) for _ in range(rng.randrange(1, 8))])
    return [{"ids": ids, "text": sp.decode(ids)} for ids in cases]


# --------------------------------------------------------------------------------------------------------

def ids_sha256(ids):
    return hashlib.sha256(struct.pack("<%di" % len(ids), *ids)).hexdigest()


def golden(sp, model_name, model_bytes, samples, data, whole_file):
    out_samples = []
    for name, text in samples:
        ids = sp.encode(text)
        decoded = sp.decode(ids)
        s = {"name": name}
        if isinstance(text, bytes):
            s["text_hex"] = text.hex()
        else:
            s["text"] = text
        s["ids"] = ids
        if decoded != text:
            s["decoded"] = decoded
        out_samples.append(s)
    g = {
        "generated_by": "tests/golden/make_token_ids.py (see its docstring to regenerate)",
        "model": model_name,
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "sentencepiece_version": spm.__version__,
        "vocab_size": sp.vocab_size(),
        "bos_id": sp.bos_id(),
        "eos_id": sp.eos_id(),
        "unk_id": sp.unk_id(),
        "samples": out_samples,
        "decode_cases": decode_cases(sp, random.Random(42)),
    }
    if whole_file:
        path = os.path.join(data, TINYSTORIES)
        raw = open(path, "rb").read()
        ids = sp.encode(raw.decode("utf-8"))
        g["whole_file"] = {"file": TINYSTORIES, "file_sha256": hashlib.sha256(raw).hexdigest(),
                           "count": len(ids), "ids_sha256": ids_sha256(ids), "first_ids": ids[:64]}
    return g


def write_json(name, g):
    # One sample per line: readable diffs, and small enough to check in.
    path = os.path.join(GOLDEN_DIR, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n")
        items = list(g.items())
        for k, (key, value) in enumerate(items):
            f.write("  %s: " % json.dumps(key))
            if isinstance(value, list):
                f.write("[\n")
                f.write(",\n".join("    " + json.dumps(x, ensure_ascii=False) for x in value))
                f.write("\n  ]")
            else:
                f.write(json.dumps(value, ensure_ascii=False))
            f.write(",\n" if k + 1 < len(items) else "\n")
        f.write("}\n")
    print("wrote %s (%d bytes, %d samples)" % (path, os.path.getsize(path), len(g["samples"])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(GOLDEN_DIR, "../../../shared/data"),
                    help="the shared data directory (default ../shared/data beside the repository)")
    args = ap.parse_args()
    samples = (EDGE_CASES + EDGE_CASES_BYTES + tinystories_samples(args.data) + mmlu_samples(args.data) +
               boolq_samples(args.data))
    names = [n for n, _ in samples]
    assert len(names) == len(set(names)), "duplicate sample names"
    for key, rel in MODELS.items():
        model_bytes = open(os.path.join(args.data, rel), "rb").read()
        sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        write_json("token_ids_%s.json" % key, golden(sp, rel, model_bytes, samples, args.data, True))
    synthetic = synthetic_model()
    sp = spm.SentencePieceProcessor(model_proto=synthetic)
    write_json("token_ids_synthetic.json",
               golden(sp, "synthetic_model()", synthetic, EDGE_CASES + EDGE_CASES_BYTES, args.data, False))
    # The variant differs from tok512 in rare paths only: the edge cases and every 4th real sample suffice.
    variant_samples = EDGE_CASES + EDGE_CASES_BYTES + samples[len(EDGE_CASES) + len(EDGE_CASES_BYTES)::4]
    variant = variant_model(open(os.path.join(args.data, MODELS["tok512"]), "rb").read())
    sp = spm.SentencePieceProcessor(model_proto=variant)
    write_json("token_ids_tok512_variant.json",
               golden(sp, "variant_model(%s)" % MODELS["tok512"], variant, variant_samples, args.data, False))


if __name__ == "__main__":
    sys.exit(main())
