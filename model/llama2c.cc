#include "model/llama2c.h"

#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/text_file.h"
#include "formats/safetensors.h"
#include "model/tensor_io.h"
#include "formats/tokenizer.h"

namespace layerprune {

namespace {

// llama2.c's export of later versions starts with this magic ("ak42"); only version 0 has a bare header.
constexpr uint32_t kVersionedMagic = 0x616b3432;

// llama2.c rotates interleaved pairs (2i, 2i+1) of each head; HF rotates (i, i + hd/2). Reordering the
// output rows of W_q and W_k per head as [even rows | odd rows] makes the two computations identical.
at::Tensor permute_for_rotate_half(const at::Tensor& w, int64_t heads) {
  int64_t out = w.size(0), in = w.size(1), hd = out / heads;
  return w.view({heads, hd / 2, 2, in}).transpose(1, 2).reshape({out, in}).contiguous();
}

}  // namespace

Llama2cImport convert_llama2c(const std::string& checkpoint, const std::string& tokenizer_model,
                              const std::string& out_dir) {
  std::ifstream in(checkpoint, std::ios::binary);
  if (!in) throw InputError(checkpoint + ": cannot open llama2.c checkpoint");
  uint64_t file_size = std::filesystem::file_size(checkpoint);
  int32_t h[7];
  if (file_size < sizeof h) throw InputError(checkpoint + ": file is " + std::to_string(file_size) +
                                              " bytes, shorter than the 28-byte llama2.c header");
  in.read(reinterpret_cast<char*>(h), sizeof h);
  if (uint32_t(h[0]) == kVersionedMagic)
    throw InputError(checkpoint + ": this is a versioned llama2.c export (magic 'ak42', version " +
                     std::to_string(h[1]) + "); only the legacy version-0 format is supported");
  const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < 7; ++i) {
    int64_t v = i == 5 ? std::abs(int64_t(h[i])) : h[i];
    if (v <= 0 || v > (1 << 20))
      throw InputError(checkpoint + ": header field " + names[i] + " = " + std::to_string(h[i]) +
                       " is not a plausible size (is this a llama2.c checkpoint?)");
  }
  Llama2cImport r;
  LlamaConfig& c = r.config;
  c.hidden_size = h[0];
  c.intermediate_size = h[1];
  c.num_hidden_layers = h[2];
  c.num_attention_heads = h[3];
  c.num_key_value_heads = h[4];
  r.shared_classifier = h[5] > 0;
  c.vocab_size = std::abs(int64_t(h[5]));
  c.max_position_embeddings = h[6];
  c.rms_norm_eps = 1e-5;  // run.c's rmsnorm epsilon
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = r.shared_classifier;
  c.torch_dtype = "float32";
  c.validate(checkpoint);

  const int64_t D = c.hidden_size, F = c.intermediate_size, L = c.num_hidden_layers, V = c.vocab_size;
  const int64_t kv = c.kv_dim(), hd = c.head_dim();
  // Segments in file order (run.c memory_map_weights).
  struct Segment {
    const char* name;
    std::vector<int64_t> shape;
  };
  std::vector<Segment> segs = {
      {"token_embedding", {V, D}}, {"rms_att", {L, D}},    {"wq", {L, D, D}},       {"wk", {L, kv, D}},
      {"wv", {L, kv, D}},          {"wo", {L, D, D}},      {"rms_ffn", {L, D}},     {"w1", {L, F, D}},
      {"w2", {L, D, F}},           {"w3", {L, F, D}},      {"rms_final", {D}},
      {"freq_cis_real", {c.max_position_embeddings, hd / 2}}, {"freq_cis_imag", {c.max_position_embeddings, hd / 2}}};
  if (!r.shared_classifier) segs.push_back({"wcls", {V, D}});
  uint64_t floats = 0;
  for (const auto& s : segs) {
    uint64_t n = 1;
    for (int64_t d : s.shape) n *= uint64_t(d);
    floats += n;
  }
  uint64_t expected = sizeof h + 4 * floats;
  if (file_size != expected)
    throw InputError(checkpoint + ": " + std::to_string(file_size) + " bytes, but the header (dim " +
                     std::to_string(D) + ", hidden_dim " + std::to_string(F) + ", " + std::to_string(L) +
                     " layers, vocab " + std::to_string(V) + (r.shared_classifier ? ", shared" : ", separate") +
                     " classifier) implies " + std::to_string(expected) + " bytes" +
                     (file_size < expected ? " (truncated?)" : " (trailing data?)"));

  std::vector<at::Tensor> seg;
  for (const auto& s : segs) {
    at::Tensor t = at::empty(s.shape, at::kFloat);
    in.read(reinterpret_cast<char*>(t.data_ptr<float>()), std::streamsize(t.numel() * 4));
    if (!in) throw InputError(checkpoint + ": read error in segment " + s.name);
    seg.push_back(t);
  }
  r.parameters = int64_t(floats) - 2 * c.max_position_embeddings * (hd / 2);

  // The tokenizer must be the one the checkpoint was trained with (at least, of the same size).
  Tokenizer tok = Tokenizer::load(tokenizer_model);
  if (tok.vocab_size() != V)
    throw InputError(tokenizer_model + ": tokenizer has " + std::to_string(tok.vocab_size()) +
                     " pieces but the checkpoint's vocabulary is " + std::to_string(V));
  c.bos_token_id = tok.bos_id();
  c.eos_token_id = tok.eos_id();

  std::vector<std::pair<std::string, at::Tensor>> out;
  out.emplace_back("model.embed_tokens.weight", seg[0]);
  for (int64_t l = 0; l < L; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    out.emplace_back(p + "input_layernorm.weight", seg[1][l]);
    out.emplace_back(p + "self_attn.q_proj.weight", permute_for_rotate_half(seg[2][l], c.num_attention_heads));
    out.emplace_back(p + "self_attn.k_proj.weight", permute_for_rotate_half(seg[3][l], c.num_key_value_heads));
    out.emplace_back(p + "self_attn.v_proj.weight", seg[4][l]);
    out.emplace_back(p + "self_attn.o_proj.weight", seg[5][l]);
    out.emplace_back(p + "post_attention_layernorm.weight", seg[6][l]);
    out.emplace_back(p + "mlp.gate_proj.weight", seg[7][l]);  // w1
    out.emplace_back(p + "mlp.down_proj.weight", seg[8][l]);  // w2
    out.emplace_back(p + "mlp.up_proj.weight", seg[9][l]);    // w3
  }
  out.emplace_back("model.norm.weight", seg[10]);
  if (!r.shared_classifier) out.emplace_back("lm_head.weight", seg[13]);

  std::filesystem::create_directories(out_dir);
  std::vector<TensorToWrite> writes;
  for (auto& [name, t] : out) {
    t = t.contiguous();
    writes.push_back(tensor_to_write(name, t));
  }
  write_safetensors(out_dir + "/model.safetensors", writes,
                    {{"format", "pt"}, {"converted_from", std::filesystem::path(checkpoint).filename().string()}});
  write_file(out_dir + "/config.json", c.to_json());
  std::filesystem::copy_file(tokenizer_model, out_dir + "/tokenizer.model",
                             std::filesystem::copy_options::overwrite_existing);
  // What transformers needs to load the tokenizer without guessing, and what decides BOS here and in
  // lm-evaluation-harness: llama2.c's run.c starts every prompt with BOS, so add_bos_token is true.
  nlohmann::json tc{{"tokenizer_class", "LlamaTokenizer"}, {"add_bos_token", true}, {"add_eos_token", false},
                    {"model_max_length", c.max_position_embeddings}, {"legacy", true}};
  if (tok.bos_id() >= 0) tc["bos_token"] = tok.piece(tok.bos_id());
  if (tok.eos_id() >= 0) tc["eos_token"] = tok.piece(tok.eos_id());
  if (tok.unk_id() >= 0) tc["unk_token"] = tok.piece(tok.unk_id());
  write_file(out_dir + "/tokenizer_config.json", tc.dump(2) + "\n");
  return r;
}

}  // namespace layerprune
