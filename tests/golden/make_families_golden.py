"""Golden files for the Llama-3, Mistral and Qwen2 families (see tests/golden/README.md), from Hugging Face
transformers itself, never from layerprune:

    HF_HUB_OFFLINE=1 ~/.cache/layerprune/compare-venv/bin/python tests/golden/make_families_golden.py

Writes, under tests/golden/:
  family_*/            tiny seeded random models saved by transformers' save_pretrained (config.json as
                       transformers 5.x writes it; family_linear's rewritten in the 4.x layout), and
                       golden.safetensors: right-padded `tokens`, `lengths`, `logits` [B, T, V] (each
                       sequence run alone through the transformers model, eager attention, float32)
  family_rope.json     RoPE inverse frequencies from transformers' ROPE_INIT_FUNCTIONS for the real configs
                       in configs/ and the random models
Deterministic: seeded, single-threaded. Needs transformers 5.x (tested with 5.24.0) and torch.
"""
import json
import os
import sys

import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference_llama as ref  # noqa: E402  (its safetensors writer only)

torch.set_num_threads(1)
assert transformers.__version__.startswith("5."), transformers.__version__

COMMON = dict(num_hidden_layers=2, vocab_size=128, max_position_embeddings=64, rms_norm_eps=1e-6,
              bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
SPECS = {
    # Llama 3.1-style scaling; hd 16 with original context 32 puts frequencies in all three bands
    # (wavelength < 8 kept, 8..32 interpolated, > 32 divided by the factor).
    "family_llama3": (LlamaConfig, LlamaForCausalLM, dict(
        COMMON, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 32})),
    # attention_bias: biases on q, k, v and o_proj.
    "family_linear": (LlamaConfig, LlamaForCausalLM, dict(
        COMMON, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=4,
        tie_word_embeddings=True, attention_bias=True, rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0})),
    # A window of 4 against sequences of up to 17 tokens.
    "family_mistral": (MistralConfig, MistralForCausalLM, dict(
        COMMON, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
        sliding_window=4, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    # q/k/v biases; 4 heads and 2 KV heads split at tp 2.
    "family_qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(
        COMMON, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
}


def to_4x_layout(cfg):
    """transformers 4.x's spelling of the same config: top-level rope_theta, rope_scaling with the legacy
    "type" key, torch_dtype."""
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    rtype = rp.pop("rope_type")
    cfg["rope_scaling"] = None if rtype == "default" else dict(rp, type=rtype)
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    return cfg


def random_models():
    for seed, (name, (config_cls, model_cls, spec)) in enumerate(SPECS.items()):
        torch.manual_seed(2000 + seed)
        config = config_cls(**spec)
        config._attn_implementation = "eager"
        model = model_cls(config).eval()
        g = torch.Generator().manual_seed(3000 + seed)
        with torch.no_grad():  # transformers initialises biases to 0 and norms to 1: randomise every tensor
            for pname, p in model.named_parameters():
                if pname.endswith("norm.weight"):
                    p.copy_(1 + torch.randn(p.shape, generator=g) * 0.1)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        d = os.path.join(HERE, name)
        os.makedirs(d, exist_ok=True)
        model.save_pretrained(d)
        for junk in ("generation_config.json",):
            if os.path.exists(os.path.join(d, junk)):
                os.remove(os.path.join(d, junk))
        if name == "family_linear":
            path = os.path.join(d, "config.json")
            cfg = to_4x_layout(json.load(open(path)))
            with open(path, "w") as f:
                json.dump(cfg, f, indent=2, sort_keys=True)
                f.write("\n")
            # The rewritten file must load as the same model.
            again = config_cls.from_pretrained(d)
            for k in ("rope_type", "rope_theta", "factor"):
                assert again.rope_parameters[k] == config.rope_parameters[k], (again.rope_parameters, k)
        lengths = [9, 4, 1, 17]
        T, V = max(lengths), config.vocab_size
        tokens = torch.zeros(len(lengths), T, dtype=torch.int64)
        logits = torch.zeros(len(lengths), T, V)
        for b, n in enumerate(lengths):
            ids = [1] + torch.randint(3, V, (n - 1,), generator=g).tolist()
            tokens[b, :n] = torch.tensor(ids)
            with torch.no_grad():
                logits[b, :n] = model(torch.tensor([ids])).logits[0].float()
        if name == "family_mistral":
            # The window must matter: the same weights without it give other logits past position 4.
            config.sliding_window = None
            with torch.no_grad():
                full = model(tokens[3:4, :17]).logits[0]
            assert (full - logits[3, :17]).abs().max() > 1e-2
            assert (full[:4] - logits[3, :4]).abs().max() < 1e-5
        ref.write_safetensors(os.path.join(d, "golden.safetensors"),
                              {"tokens": tokens, "lengths": torch.tensor(lengths, dtype=torch.int64),
                               "logits": logits})
        print("wrote", d, sorted(os.listdir(d)))


def rope_frequencies():
    out = {}
    configs = {f: os.path.join(HERE, "configs", f) for f in sorted(os.listdir(os.path.join(HERE, "configs")))}
    configs.update({n: os.path.join(HERE, n, "config.json") for n in SPECS})
    for name, path in configs.items():
        raw = json.load(open(path))
        cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[raw["model_type"]]
        config = cls.from_dict(raw)
        rtype = config.rope_parameters.get("rope_type", "default")
        if rtype == "default":
            base, dim = config.rope_parameters["rope_theta"], config.hidden_size // config.num_attention_heads
            inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        else:
            inv, attention_factor = ROPE_INIT_FUNCTIONS[rtype](config, "cpu")
            assert attention_factor == 1.0
        out[name] = {"rope_type": rtype, "inv_freq": [float(x) for x in inv]}
    with open(os.path.join(HERE, "family_rope.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "float32 inv_freq by config": out}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    random_models()
    rope_frequencies()
