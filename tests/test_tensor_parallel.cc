// Tensor parallelism end to end: the layout's rules and refusals in-process, then layerprune-worker under
// `mpirun -np 1|2|4` (oversubscribed on a small machine) against the single-process model: logits and every
// hidden state within 1e-5, exactly 2 all-reduces per kept layer with the predicted byte volume, each
// rank's loaded bytes equal to its shard, groups, and failures that end the job instead of hanging it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/text_file.h"
#include "tests/llama_shapes.h"
#include "tests/test_support.h"
#include "experiment/experiment.h"
#include "model/llama.h"
#include "model/llama2c.h"
#include "model/make_model.h"
#include "formats/safetensors.h"
#include "model/tensor_io.h"
#include "model/tensor_parallel.h"

namespace layerprune {
namespace {

LlamaConfig shape(int64_t dim, int64_t layers, int64_t heads, int64_t kv, int64_t ffn, int64_t vocab, bool tie = false) {
  LlamaConfig c = testing::llama_shape(dim, ffn, layers, heads, kv, vocab, 64);
  c.tie_word_embeddings = tie;
  return c;
}

// ---- the layout, in-process ----

TEST(TensorParallelPlan, RefusesShapesThatDoNotSplitNamingTheNumbers) {
  std::string m = testing::input_error([] { plan_tensor_parallel(shape(64, 1, 8, 8, 64, 32), 3, 0); });
  EXPECT_CONTAINS(m, "8 attention heads");
  EXPECT_CONTAINS(m, "8 % 3 = 2");
  m = testing::input_error([] { plan_tensor_parallel(shape(96, 1, 12, 4, 64, 32), 3, 0); });
  EXPECT_CONTAINS(m, "4 key/value heads");
  EXPECT_CONTAINS(m, "4 % 3 = 1");
  EXPECT_CONTAINS(m, "3 % 4 = 3");
}

TEST(TensorParallelPlan, SplitsHeadsFfnAndVocabIntoDisjointCoveringRanges) {
  // 8 heads / 2 KV heads at TP 4: each KV head replicated on 2 ranks, whose query heads all use it.
  LlamaConfig c = shape(64, 1, 8, 2, 170, 101);
  int64_t ffn = 0, vocab = 0;
  for (int r = 0; r < 4; ++r) {
    TensorParallelPlan p = plan_tensor_parallel(c, 4, r);
    EXPECT_EQ(p.heads, 2);
    EXPECT_EQ(p.head_begin, 2 * r);
    EXPECT_TRUE(p.kv_replicated);
    EXPECT_EQ(p.kv_heads, 1);
    EXPECT_EQ(p.kv_head_begin, r / 2);
    for (int64_t h = p.head_begin; h < p.head_begin + p.heads; ++h) EXPECT_EQ(h / (8 / 2), p.kv_head_begin) << h;
    EXPECT_EQ(p.ffn_begin, ffn);
    ffn = p.ffn_end;
    EXPECT_EQ(p.vocab_begin, vocab);
    vocab = p.vocab_end;
    EXPECT_EQ(p.vocab_shard, 26);  // ceil(101 / 4)
  }
  EXPECT_EQ(ffn, 170);
  EXPECT_EQ(vocab, 101);
  // KV % TP == 0: each rank owns its own KV heads.
  TensorParallelPlan p = plan_tensor_parallel(shape(64, 1, 8, 4, 64, 32), 2, 1);
  EXPECT_FALSE(p.kv_replicated);
  EXPECT_EQ(p.kv_heads, 2);
  EXPECT_EQ(p.kv_head_begin, 2);
}

TEST(TensorParallelPlan, ColumnParallelInRowsRowParallelInColumns) {
  LlamaConfig c = shape(64, 2, 8, 4, 96, 50);
  TensorParallelPlan p = plan_tensor_parallel(c, 2, 1);
  auto rule = [&](const std::string& n) { return shard_rule(n, c, p); };
  EXPECT_EQ(rule("model.layers.1.self_attn.q_proj.weight").kind, ShardRule::kRows);
  EXPECT_EQ(rule("model.layers.1.self_attn.q_proj.weight").begin, 32);  // heads 4..7 x head_dim 8
  EXPECT_EQ(rule("model.layers.1.self_attn.k_proj.weight").begin, 16);  // KV heads 2..3
  EXPECT_EQ(rule("model.layers.1.self_attn.o_proj.weight").kind, ShardRule::kColumns);
  EXPECT_EQ(rule("model.layers.0.mlp.up_proj.weight").kind, ShardRule::kRows);
  EXPECT_EQ(rule("model.layers.0.mlp.down_proj.weight").kind, ShardRule::kColumns);
  EXPECT_EQ(rule("model.layers.0.mlp.down_proj.weight").begin, 48);
  EXPECT_EQ(rule("lm_head.weight").begin, 25);
  EXPECT_EQ(rule("model.embed_tokens.weight").kind, ShardRule::kReplicated);
  EXPECT_EQ(rule("model.layers.0.input_layernorm.weight").kind, ShardRule::kReplicated);
  // Qwen2's biases go with their weight's rows.
  EXPECT_EQ(rule("model.layers.1.self_attn.q_proj.bias").kind, ShardRule::kRows);
  EXPECT_EQ(rule("model.layers.1.self_attn.q_proj.bias").begin, 32);
  EXPECT_EQ(rule("model.layers.1.self_attn.q_proj.bias").end, 64);
  EXPECT_EQ(rule("model.layers.1.self_attn.k_proj.bias").begin, 16);
  EXPECT_EQ(rule("model.layers.1.self_attn.v_proj.bias").end, 32);
  // Replicated KV heads (tp 4 > 2 KV heads): ranks 2 and 3 both hold KV head 1 and its bias.
  LlamaConfig gqa2 = shape(64, 1, 8, 2, 96, 50);
  for (int r : {2, 3}) {
    ShardRule b = shard_rule("model.layers.0.self_attn.k_proj.bias", gqa2, plan_tensor_parallel(gqa2, 4, r));
    EXPECT_EQ(b.begin, 8);
    EXPECT_EQ(b.end, 16);
  }
}

// ---- layerprune-worker under mpirun ----

struct MpiRun {
  int status = -1;
  std::string err;
  double seconds = 0;
};

MpiRun mpirun(int np, const std::string& args, const std::string& env = "") {
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);  // CI containers run as root
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  testing::TempDir logs;
  std::string cmd = env + " " + LAYERPRUNE_MPIEXEC + " --oversubscribe -np " + std::to_string(np) + " " +
                    LAYERPRUNE_BINARY_DIR + "/worker/layerprune-worker " + args + " > /dev/null 2> " + logs.file("err");
  auto start = std::chrono::steady_clock::now();
  int st = std::system(cmd.c_str());
  MpiRun r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.err = read_file(logs.file("err"));
  return r;
}

std::vector<std::vector<int64_t>> test_batch(int64_t vocab) {
  // Two sequences of different lengths (right-padded in one batch), ids spread over the vocabulary.
  std::vector<std::vector<int64_t>> b(2);
  for (int64_t t = 0; t < 11; ++t) b[0].push_back(1 + (t * 37) % (vocab - 1));
  for (int64_t t = 0; t < 6; ++t) b[1].push_back(1 + (t * 53 + 7) % (vocab - 1));
  return b;
}

struct Expected {
  at::Tensor logits;
  std::vector<at::Tensor> hidden;
};

Expected single_process(const std::string& dir, const std::vector<std::vector<int64_t>>& seqs,
                        const std::vector<int64_t>& layers) {
  LlamaModel m = LlamaModel::load(dir);
  int64_t T = 0;
  for (const auto& s : seqs) T = std::max<int64_t>(T, int64_t(s.size()));
  at::Tensor tokens = at::zeros({int64_t(seqs.size()), T}, at::kLong);
  for (size_t b = 0; b < seqs.size(); ++b)
    for (size_t t = 0; t < seqs[b].size(); ++t) tokens[int64_t(b)][int64_t(t)] = seqs[b][t];
  ForwardOptions o;
  o.layers = layers;
  o.return_hidden = true;
  ForwardResult r = m.forward(tokens, o);
  return {r.logits, r.hidden};
}


// The largest |a - b| / (1 + |b|): "equal within 1e-5" as torch.allclose(rtol=1e-5, atol=1e-5) means it. A
// row-parallel product sums its partial products in another order than one GEMM does, so float32 logits of
// magnitude ~15 (stories260K) differ by a few ulps (1 ulp = 1e-6 there) from the single-process model.
double max_rel_diff(const at::Tensor& a, const at::Tensor& b) { return ((a - b).abs() / (1 + b.abs())).max().item<double>(); }

// ---- logits at chosen positions, ranks as threads of this process ----

// A tensor-parallel group whose ranks are threads: each collective is a rendezvous where every rank posts
// its tensor and the last to arrive stacks them (enough for the model's all-reduce and all-gather). A rank
// that does not arrive within a minute makes the others throw CommError instead of hanging the test.
class ThreadGroup {
 public:
  explicit ThreadGroup(int size) : posted_(size_t(size)) {}
  int size() const { return int(posted_.size()); }
  at::Tensor exchange(int rank, const at::Tensor& t) {  // [size, *t.shape]
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t generation = generation_;
    posted_[size_t(rank)] = t.clone();
    if (++arrived_ == size()) {
      stacked_ = at::stack(posted_);
      arrived_ = 0;
      ++generation_;
      done_.notify_all();
    } else if (!done_.wait_for(lock, std::chrono::seconds(60), [&] { return generation_ != generation; })) {
      throw CommError("thread group: a rank did not reach the collective");
    }
    return stacked_;  // the next collective replaces the handle, not this tensor
  }

 private:
  std::mutex mutex_;
  std::condition_variable done_;
  std::vector<at::Tensor> posted_;
  at::Tensor stacked_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
};

class ThreadRank : public Communicator {
 public:
  ThreadRank(ThreadGroup& group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_.size(); }
  std::string backend() const override { return "threads"; }
  void all_reduce_sum(at::Tensor& t) override { t.copy_(group_.exchange(rank_, t).sum(0)); }
  void broadcast(at::Tensor& t, int root) override { t.copy_(group_.exchange(rank_, t)[root]); }
  at::Tensor all_gather(const at::Tensor& t) override { return group_.exchange(rank_, t); }
  void barrier() override { group_.exchange(rank_, at::zeros({1})); }
  void broadcast_string(std::string&, int) override { throw std::logic_error("ThreadRank: no strings"); }
  bool any(bool flag) override { return group_.exchange(rank_, at::full({1}, flag ? 1.0 : 0.0)).sum().item<double>() > 0; }

 private:
  ThreadGroup& group_;
  int rank_;
};

// The vocab-parallel head on gathered rows: each rank multiplies its vocabulary rows by the N chosen
// positions' hidden states only, and the all-gather assembles [N, V] (an uneven split: 301 words at tp 2
// and 4). On every rank the result equals that rank's full logits' rows (same group, same sums, only the
// head's GEMM shape differs) and the single-process model's (the row-parallel sums differ by rounding).
TEST(TensorParallelLogitPositions, EqualTheFullLogitsRowsOnEveryRank) {
  testing::TempDir d;
  LlamaConfig c = shape(64, 2, 8, 4, 96, 301);
  make_random_model(c, d.path(), MakeModelOptions{});
  const std::vector<std::vector<int64_t>> seqs = test_batch(c.vocab_size);
  at::Tensor tokens = at::zeros({2, 11}, at::kLong);
  for (size_t b = 0; b < seqs.size(); ++b)
    for (size_t t = 0; t < seqs[b].size(); ++t) tokens[int64_t(b)][int64_t(t)] = seqs[b][t];
  at::Tensor positions = at::tensor(std::vector<int64_t>{10, 0, 16, 5, 10}, at::kLong);  // any order, repeats
  at::Tensor whole = LlamaModel::load(d.path()).forward(tokens).logits.reshape({22, c.vocab_size});
  for (int tp : {2, 4}) {
    ThreadGroup group(tp);
    const size_t ranks_n = static_cast<size_t>(tp);
    std::vector<at::Tensor> full(ranks_n), picked(ranks_n);
    std::vector<std::string> errors(ranks_n);
    std::vector<std::thread> ranks;
    for (int r = 0; r < tp; ++r)
      ranks.emplace_back([&, r] {
        try {
          LoadOptions lo;
          lo.comm = std::make_shared<ThreadRank>(group, r);
          LlamaModel m = LlamaModel::load(d.path(), lo);
          full[size_t(r)] = m.forward(tokens).logits;
          ForwardOptions o;
          o.logit_positions = positions;
          picked[size_t(r)] = m.forward(tokens, o).logits;
        } catch (const std::exception& e) {
          errors[size_t(r)] = e.what();
        }
      });
    for (std::thread& t : ranks) t.join();
    for (int r = 0; r < tp; ++r) {
      ASSERT_EQ(errors[size_t(r)], "") << "tp " << tp << " rank " << r;
      ASSERT_EQ(picked[size_t(r)].sizes(), (std::vector<int64_t>{5, c.vocab_size})) << "tp " << tp << " rank " << r;
      at::Tensor rows = full[size_t(r)].reshape({22, c.vocab_size}).index_select(0, positions);
      EXPECT_LE(max_rel_diff(picked[size_t(r)], rows), 1e-6) << "tp " << tp << " rank " << r;
      EXPECT_LE(max_rel_diff(picked[size_t(r)], whole.index_select(0, positions)), 1e-5) << "tp " << tp << " rank " << r;
    }
  }
}

// Bytes of rank `rank`'s shard, from the layout's definition (not from the loader).
uint64_t expected_shard_bytes(const LlamaConfig& c, int tp, int rank, uint64_t elem) {
  TensorParallelPlan p = plan_tensor_parallel(c, tp, rank);
  const uint64_t D = c.hidden_size, hd = c.head_dim();
  uint64_t layer = 2 * D                                   // norms
                   + 2 * p.heads * hd * D                  // q rows, o columns
                   + 2 * p.kv_heads * hd * D               // k, v rows
                   + 3 * uint64_t(p.ffn_end - p.ffn_begin) * D;
  if (c.qkv_bias()) layer += (p.heads + 2 * p.kv_heads) * hd;  // Qwen2: the biases of those rows
  if (c.o_bias()) layer += D;                                  // Llama attention_bias: o_proj's, replicated
  uint64_t total = c.num_hidden_layers * layer + D + uint64_t(c.vocab_size) * D;  // + final norm, embedding
  if (!c.tie_word_embeddings) total += uint64_t(p.vocab_end - p.vocab_begin) * D;
  return total * elem;
}

// Drops the checkpoint's pages from the page cache, so the ranks' resident pages are the ones they read.
void evict_from_page_cache(const std::string& dir) {
  for (const auto& f : Checkpoint::open(dir).files()) {
    int fd = open(f->path().c_str(), O_RDONLY);
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
  }
}

class WorkerTp : public ::testing::Test {
 protected:
  void SetUp() override { at::manual_seed(0); }

  // Runs one forward task at tp = np and checks it against the single-process model.
  nlohmann::json check(const std::string& dir, int np, const std::vector<int64_t>& layers = {}, double tol = 1e-5) {
    LlamaConfig c = LlamaConfig::from_file(dir + "/config.json");
    auto seqs = test_batch(c.vocab_size);
    nlohmann::json task = {{"id", "t"}, {"model", dir}, {"tokens", seqs}, {"hidden", true}};
    if (!layers.empty()) task["layers"] = layers;
    write_file(tmp_.file("tasks.jsonl"), task.dump() + "\n");
    std::string out = tmp_.file("out" + std::to_string(np));
    MpiRun r = mpirun(np, "--tp " + std::to_string(np) + " --tasks " + tmp_.file("tasks.jsonl") + " --out " + out);
    EXPECT_EQ(r.status, 0) << r.err;
    if (r.status != 0) return {};

    Expected want = single_process(dir, seqs, layers);
    Checkpoint got = Checkpoint::open(out + "/t.safetensors");
    auto keep = got.keepalive();
    EXPECT_LE(max_rel_diff(tensor_from_view(got.tensor("logits"), keep), want.logits), tol) << "tp " << np;
    for (size_t k = 0; k < want.hidden.size(); ++k)
      EXPECT_LE(max_rel_diff(tensor_from_view(got.tensor("hidden." + std::to_string(k)), keep), want.hidden[k]), tol)
          << "tp " << np << " hidden state " << k;
    EXPECT_EQ(got.find("hidden." + std::to_string(want.hidden.size())), nullptr);

    // Traffic: one all-reduce after attention and one after the MLP per kept layer, each B x T x D
    // float32; the vocab-parallel head adds one all-gather of B x T x ceil(V / tp) float32 per rank.
    nlohmann::json doc = nlohmann::json::parse(read_file(out + "/t.json"));
    const uint64_t kept = layers.empty() ? c.num_hidden_layers : layers.size(), B = 2, T = 11;
    const auto& comm = doc.at("comm");
    EXPECT_EQ(comm.at("all_reduce").get<uint64_t>(), np > 1 ? 2 * kept : 0);
    EXPECT_EQ(comm.at("all_reduce_bytes").get<uint64_t>(), np > 1 ? 2 * kept * B * T * c.hidden_size * 4 : 0);
    EXPECT_EQ(comm.at("all_gather").get<uint64_t>(), np > 1 ? 1u : 0u);
    EXPECT_EQ(comm.at("all_gather_bytes").get<uint64_t>(), np > 1 ? B * T * ((c.vocab_size + np - 1) / np) * 4 : 0);
    EXPECT_EQ(doc.at("ranks").size(), size_t(np));
    for (int rank = 0; rank < np; ++rank)
      EXPECT_EQ(doc["ranks"][rank].at("loaded_bytes").get<uint64_t>(), expected_shard_bytes(c, np, rank, 4))
          << "rank " << rank << " of " << np;
    return doc;
  }

  testing::TempDir tmp_;
};

TEST_F(WorkerTp, Stories260KEqualsTheSingleProcessModelAtTp1To4) {
  LP_REQUIRE_DATA(bin, "stories260K/stories260K.bin");
  LP_REQUIRE_DATA(tok, "stories260K/tok512.model");
  std::string dir = tmp_.file("stories260K");
  convert_llama2c(bin, tok, dir);  // 8 heads / 4 KV heads, FFN 172, tied head
  for (int np : {1, 2, 4}) check(dir, np);
  check(dir, 2, {0, 2, 4});  // a pruned layer list: 2 all-reduces per kept layer only
}

TEST_F(WorkerTp, GqaModelsWithOwnAndReplicatedKvHeads) {
  std::string gqa4 = tmp_.file("gqa4"), gqa2 = tmp_.file("gqa2");
  MakeModelOptions sharded;
  sharded.max_shard_bytes = 200'000;  // several shard files, so slices come from different mappings
  make_random_model(shape(64, 3, 8, 4, 150, 301), gqa4, sharded);
  MakeModelOptions tied;
  tied.seed = 1;
  make_random_model(shape(64, 2, 8, 2, 96, 256, /*tie=*/true), gqa2, tied);
  for (int np : {2, 4}) check(gqa4, np);
  check(gqa2, 4);  // TP 4 > 2 KV heads: each replicated on 2 ranks
}

// The families' transformers-made models (tests/golden/family_*): Qwen2's biases split with their rows,
// Mistral's sliding window (4, shorter than the 11-token test sequence) on every rank. Their weights are
// N(0, 0.2^2), ten times HF's initialisation, so the residual stream grows large and the row-parallel sums
// (another summation order) differ by slightly more than 1e-5 relative (measured 1.06e-5): 3e-5 here.
TEST_F(WorkerTp, FamilyModelsWithBiasesAndSlidingWindow) {
  const double tol = 3e-5;
  check(testing::source_file("tests/golden/family_qwen2"), 1, {}, tol);
  check(testing::source_file("tests/golden/family_qwen2"), 2, {}, tol);
  check(testing::source_file("tests/golden/family_qwen2"), 2, {1}, tol);
  check(testing::source_file("tests/golden/family_mistral"), 2, {}, tol);
  check(testing::source_file("tests/golden/family_llama3"), 2, {}, tol);
  check(testing::source_file("tests/golden/family_linear"), 2, {}, tol);  // attention_bias: o_proj's too
}

TEST_F(WorkerTp, EachRankHoldsItsShardNotTheModel) {
  // Large enough that the shard is many pages: 4 layers of dim 256, FFN 768 (about 13 MB in float32).
  std::string dir = tmp_.file("m");
  make_random_model(shape(256, 4, 8, 4, 768, 512), dir, MakeModelOptions{});
  LlamaConfig c = LlamaConfig::from_file(dir + "/config.json");
  const double model_bytes = double(Checkpoint::open(dir).total_bytes());
  for (int np : {2, 4}) {
    evict_from_page_cache(dir);
    nlohmann::json doc = check(dir, np);
    if (doc.empty()) continue;
    for (const auto& r : doc["ranks"]) {
      // The forward pass touched every weight: the rank maps its row slices from the checkpoint (the
      // embedding only at the looked-up rows) and holds its strided column slices in its own memory. The
      // kernel maps pages at its own granularity (fault-around, large page-cache folios), so the measured
      // figure exceeds the shard by a margin; the bound says "a shard, not the model" (shard: 1/np of the
      // layers plus the replicated embedding, about 52% of this model at TP 2 and 28% at TP 4).
      double resident = r.at("resident_checkpoint_bytes").get<double>(), mapped = r.at("mapped_bytes").get<double>();
      double embedding = double(c.vocab_size * c.hidden_size * 4);
      EXPECT_GE(resident, mapped - embedding - 64 * 1024) << r.dump();
      EXPECT_LT(resident + r.at("copied_bytes").get<double>(), (np == 2 ? 0.75 : 0.5) * model_bytes) << r.dump();
    }
  }
}

TEST_F(WorkerTp, GroupsSplitTheWorldAndTheTasks) {
  std::string dir = tmp_.file("m");
  make_random_model(shape(64, 2, 8, 4, 96, 128), dir, MakeModelOptions{});
  std::string tasks;
  for (int i = 0; i < 3; ++i)
    tasks += nlohmann::json({{"id", "t" + std::to_string(i)}, {"model", dir}, {"tokens", test_batch(128)}}).dump() + "\n";
  write_file(tmp_.file("tasks.jsonl"), tasks);
  MpiRun r = mpirun(4, "--tp 2 --tasks " + tmp_.file("tasks.jsonl") + " --out " + tmp_.file("out"));
  ASSERT_EQ(r.status, 0) << r.err;
  Expected want = single_process(dir, test_batch(128), {});
  for (int i = 0; i < 3; ++i) {
    std::string base = tmp_.file("out/t" + std::to_string(i));
    nlohmann::json doc = nlohmann::json::parse(read_file(base + ".json"));
    EXPECT_EQ(doc.at("groups"), 2);
    EXPECT_EQ(doc.at("group"), i % 2) << "task i goes to group i mod G";
    EXPECT_EQ(doc.at("tp"), 2);
    Checkpoint got = Checkpoint::open(base + ".safetensors");
    EXPECT_LE(max_rel_diff(tensor_from_view(got.tensor("logits"), got.keepalive()), want.logits), 1e-5);
  }
}

TEST_F(WorkerTp, BadInputIsReportedOnceWithExitStatusTwo) {
  std::string dir = tmp_.file("m");
  make_random_model(shape(64, 1, 8, 4, 96, 128), dir, MakeModelOptions{});
  write_file(tmp_.file("bad.jsonl"), "{\"id\": \"a\", \"model\": \"" + dir + "\", \"tokens\": [[1, 2]]}\n{\"id\": 3}\n");
  MpiRun r = mpirun(2, "--tp 2 --tasks " + tmp_.file("bad.jsonl") + " --out " + tmp_.file("o"));
  EXPECT_EQ(r.status, 2);
  EXPECT_CONTAINS(r.err, "bad.jsonl:2");
  r = mpirun(3, "--tp 2 --tasks " + tmp_.file("bad.jsonl") + " --out " + tmp_.file("o"));
  EXPECT_EQ(r.status, 2);
  EXPECT_CONTAINS(r.err, "3 ranks, not a multiple of --tp 2");
  write_file(tmp_.file("t.jsonl"), "{\"id\": \"a\", \"model\": \"" + dir + "\", \"tokens\": [[1, 2]]}\n");
  r = mpirun(3, "--tp 3 --tasks " + tmp_.file("t.jsonl") + " --out " + tmp_.file("o"));
  EXPECT_EQ(r.status, 2);
  EXPECT_CONTAINS(r.err, "8 % 3 = 2");
}

TEST_F(WorkerTp, AFailedRankEndsItsGroupInsteadOfHangingIt) {
  std::string dir = tmp_.file("m");
  make_random_model(shape(64, 1, 8, 4, 96, 128), dir, MakeModelOptions{});
  write_file(tmp_.file("t.jsonl"), "{\"id\": \"a\", \"model\": \"" + dir + "\", \"tokens\": [[1, 2, 3]]}\n");
  std::string args = "--tp 2 --comm-timeout 3 --tasks " + tmp_.file("t.jsonl") + " --out " + tmp_.file("o");
  // Rank 1 cannot load its shard: the group agrees, rank 0 reports it, everyone exits with status 2.
  MpiRun r = mpirun(2, args, "LAYERPRUNE_TEST_FAULT=load@1");
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_CONTAINS(r.err, "rank 1: cannot load");
  EXPECT_CONTAINS(r.err, "could not load");
  EXPECT_FALSE(std::ifstream(tmp_.file("o/a.json")).good());
  // Rank 1 stalls before the forward pass: rank 0's first all-reduce times out and the job is aborted.
  r = mpirun(2, args, "LAYERPRUNE_TEST_FAULT=stall@1");
  EXPECT_NE(r.status, 0);
  EXPECT_CONTAINS(r.err, "did not complete within 3 s");
  EXPECT_LT(r.seconds, 60) << "bounded by --comm-timeout, not by the stalled rank";
}


// ---- experiment tasks (worker/experiment_tasks.h) in the worker ----

// A heal task and an evaluate task on stories260K with small budgets, as the coordinator would lease them.
struct ExperimentTasks {
  std::string model_dir;
  nlohmann::json heal, evaluate;
  ExperimentTasks(const std::string& dir, int64_t steps, int64_t checkpoint_every) : model_dir(dir) {
    const std::string text = testing::data_file("tinystories/tinystories_val.txt");
    ModelSpec m;
    m.name = "s";
    m.path = dir;
    m.dtype = "float32";
    m.layers = 5;
    EvaluationSpec e;
    e.boolq = true;
    e.boolq_data = testing::data_file("boolq/val.jsonl");
    e.boolq_limit = 12;
    e.loss = true;
    e.loss_data = text;
    e.loss_seq_len = 128;
    e.loss_windows = 6;
    HealingSpec h;
    h.name = "lora";
    h.enabled = true;
    h.quant = "none";
    h.train_data = text;
    h.steps = steps;
    h.global_batch = 4;
    h.micro_batch = 2;
    h.seq_len = 64;
    h.lr = 2e-3;
    h.warmup = 2;
    h.checkpoint_every = checkpoint_every;
    auto point = [](int64_t n, const std::string& strategy, const std::string& healing) {
      GridPoint p;
      p.model = "s";
      p.n = n;
      p.layers = 5;
      p.strategy = strategy;
      p.healing = healing;
      p.key = "s/n=" + std::to_string(n) + "/" + strategy + "/" + healing + "/seed=0";
      return p.to_json();
    };
    heal = {{"id", "heal"}, {"kind", "heal"},
            {"payload", {{"experiment", "x"}, {"model", m}, {"seed", 0}, {"evaluation", e}, {"healing", h},
                         {"points", {point(2, "simple", "lora")}}}}};
    evaluate = {{"id", "eval"}, {"kind", "evaluate"},
                {"payload", {{"experiment", "x"}, {"model", m}, {"seed", 0}, {"evaluation", e},
                             {"points", {point(0, "none", "off"), point(1, "simple", "off"), point(2, "simple", "off")}}}}};
  }
};

nlohmann::json result(const std::string& file) { return nlohmann::json::parse(read_file(file)); }

TEST_F(WorkerTp, HealAndEvaluateTasksAtTp2EqualTp1) {
  LP_REQUIRE_DATA(bin, "stories260K/stories260K.bin");
  LP_REQUIRE_DATA(tok, "stories260K/tok512.model");
  LP_REQUIRE_DATA(text, "tinystories/tinystories_val.txt");
  const std::string dir = tmp_.file("stories260K");
  convert_llama2c(bin, tok, dir);
  ExperimentTasks t(dir, 8, 0);
  write_file(tmp_.file("tasks.jsonl"), t.evaluate.dump() + "\n" + t.heal.dump() + "\n");
  for (int np : {1, 2}) {
    MpiRun r = mpirun(np, "--tp " + std::to_string(np) + " --tasks " + tmp_.file("tasks.jsonl") + " --out " +
                              tmp_.file("o" + std::to_string(np)));
    ASSERT_EQ(r.status, 0) << r.err;
  }
  for (const char* id : {"eval", "heal"}) {
    nlohmann::json a = result(tmp_.file(std::string("o1/") + id + ".json")), b = result(tmp_.file(std::string("o2/") + id + ".json"));
    ASSERT_EQ(a["points"].size(), b["points"].size()) << id;
    EXPECT_EQ(b["provenance"]["tp"], 2);
    // Memory: the planner's per-rank figure for the task beside the device's measured peak (GPUs only).
    for (const nlohmann::json* r : {&a, &b}) {
      const nlohmann::json& m = (*r)["provenance"]["device_memory"];
      EXPECT_EQ(m["device"], "cpu") << id;
      EXPECT_GT(m["planned_bytes"].get<double>(), 0) << id << " " << m.dump();
      EXPECT_EQ(m["plan"]["healing"], std::string(id) == "heal") << m.dump();
      EXPECT_FALSE(m.contains("peak_allocated_bytes")) << "no device peak on the CPU";
    }
    EXPECT_LT(b["provenance"]["device_memory"]["planned_bytes"].get<double>(),
              a["provenance"]["device_memory"]["planned_bytes"].get<double>()) << id << ": a rank of tp 2 holds less";
    for (size_t i = 0; i < a["points"].size(); ++i) {
      const nlohmann::json &pa = a["points"][i], &pb = b["points"][i];
      EXPECT_EQ(pa["dropped"], pb["dropped"]);
      const double la = pa["metrics"]["loss"], lb = pb["metrics"]["loss"];
      EXPECT_LT(std::abs(la - lb) / la, 1e-5) << id << " " << pa["key"];
      ASSERT_EQ(pa["items"].size(), 12u);
      for (size_t k = 0; k < pa["items"].size(); ++k)
        for (size_t c = 0; c < 2; ++c)  // BoolQ: two choices
          EXPECT_NEAR(pa["items"][k]["loglikelihoods"][c].get<double>(), pb["items"][k]["loglikelihoods"][c].get<double>(), 1e-3)
              << id << " item " << k;
    }
  }
  const nlohmann::json h1 = result(tmp_.file("o1/heal.json")), h2 = result(tmp_.file("o2/heal.json"));
  EXPECT_LT(std::abs(h1["points"][0]["healing"]["train_loss"].get<double>() -
                     h2["points"][0]["healing"]["train_loss"].get<double>()), 1e-4);
  const nlohmann::json e1 = result(tmp_.file("o1/eval.json"));
  EXPECT_LT(h1["points"][0]["metrics"]["loss"].get<double>(), e1["points"][2]["metrics"]["loss"].get<double>())
      << "healing lowers the loss of the model with layers 2-3 dropped";
}

// The distances task's block influence (ShortGPT) at tp 2 equals tp 1, and an evaluate task given that result
// drops the block_influence point's two lowest-BI layers.
TEST_F(WorkerTp, BlockInfluenceAtTp2EqualsTp1AndPlansTheEvaluatePoint) {
  LP_REQUIRE_DATA(bin, "stories260K/stories260K.bin");
  LP_REQUIRE_DATA(tok, "stories260K/tok512.model");
  LP_REQUIRE_DATA(text, "tinystories/tinystories_val.txt");
  const std::string dir = tmp_.file("stories260K");
  convert_llama2c(bin, tok, dir);
  ExperimentTasks t(dir, 8, 0);
  CalibrationSpec cal;
  cal.data = text;
  cal.samples = 6;
  cal.seq_len = 48;
  const nlohmann::json distances = {{"id", "dist"}, {"kind", "distances"},
                                    {"payload", {{"experiment", "x"}, {"model", t.evaluate["payload"]["model"]},
                                                 {"calibration", cal}}}};
  write_file(tmp_.file("d.jsonl"), distances.dump() + "\n");
  for (int np : {1, 2}) {
    MpiRun r = mpirun(np, "--tp " + std::to_string(np) + " --tasks " + tmp_.file("d.jsonl") + " --out " +
                              tmp_.file("d" + std::to_string(np)));
    ASSERT_EQ(r.status, 0) << r.err;
  }
  const nlohmann::json d1 = result(tmp_.file("d1/dist.json")), d2 = result(tmp_.file("d2/dist.json"));
  const std::vector<double> bi1 = d1["distances"]["block_influence"].get<std::vector<double>>(),
                            bi2 = d2["distances"]["block_influence"].get<std::vector<double>>();
  ASSERT_EQ(bi1.size(), 5u);
  ASSERT_EQ(bi2.size(), 5u);
  for (size_t l = 0; l < 5; ++l) {
    EXPECT_NEAR(bi1[l], bi2[l], 1e-6) << "BI_" << l;
    EXPECT_GT(bi1[l], 0.0) << "BI_" << l;
  }
  std::vector<size_t> order{0, 1, 2, 3, 4};
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return bi1[a] < bi1[b]; });
  std::vector<int64_t> lowest{int64_t(order[0]), int64_t(order[1])};
  std::sort(lowest.begin(), lowest.end());
  nlohmann::json eval = t.evaluate;
  eval["id"] = "bi";
  GridPoint p;
  p.model = "s";
  p.n = 2;
  p.layers = 5;
  p.strategy = "block_influence";
  p.healing = "off";
  p.key = "s/n=2/block_influence/off/seed=0";
  eval["payload"]["points"] = nlohmann::json::array({p.to_json()});
  eval["inputs"] = {{"distances/s", d1}};
  write_file(tmp_.file("e.jsonl"), eval.dump() + "\n");
  MpiRun r = mpirun(1, "--tp 1 --tasks " + tmp_.file("e.jsonl") + " --out " + tmp_.file("e1"));
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json e = result(tmp_.file("e1/bi.json"));
  ASSERT_EQ(e["points"].size(), 1u);
  EXPECT_EQ(e["points"][0]["dropped"], nlohmann::json(lowest));
  EXPECT_EQ(e["provenance"]["distance_key"], d1["distances"]["key"]);
}

TEST_F(WorkerTp, SigtermCheckpointsAHealingTaskAndTheNextRunResumesIt) {
  LP_REQUIRE_DATA(bin, "stories260K/stories260K.bin");
  LP_REQUIRE_DATA(tok, "stories260K/tok512.model");
  LP_REQUIRE_DATA(text, "tinystories/tinystories_val.txt");
  const std::string dir = tmp_.file("stories260K");
  convert_llama2c(bin, tok, dir);
  ExperimentTasks t(dir, 240, 2);  // about 8 s of training (30 steps/s): the signal lands mid-run
  write_file(tmp_.file("tasks.jsonl"), t.heal.dump() + "\n");
  const std::string args = "--tasks " + tmp_.file("tasks.jsonl") + " --out ";
  MpiRun whole = mpirun(1, args + tmp_.file("whole"));
  ASSERT_EQ(whole.status, 0) << whole.err;

  // Interrupted: SIGTERM to mpirun (which forwards it to the ranks) once the first checkpoint exists.
  const std::string out = tmp_.file("cut");
  const pid_t pid = fork();
  if (pid == 0) {
    const std::string cmd = std::string("exec ") + LAYERPRUNE_MPIEXEC + " --oversubscribe -np 1 " + LAYERPRUNE_BINARY_DIR +
                            "/worker/layerprune-worker " + args + out + " > /dev/null 2> " + tmp_.file("cut.err");
    execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
    _exit(127);
  }
  const std::string first = out + "/checkpoints/x/heal/step-000002.safetensors";
  for (int i = 0; i < 600 && !std::ifstream(first).good(); ++i) usleep(100'000);
  ASSERT_TRUE(std::ifstream(first).good()) << read_file(tmp_.file("cut.err"));
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string err = read_file(tmp_.file("cut.err"));
  EXPECT_CONTAINS(err, "stopped (checkpointed)");
  const nlohmann::json stopped = result(out + "/heal.json");
  ASSERT_TRUE(stopped.value("stopped", false)) << stopped.dump();
  const int64_t at = stopped["healing"]["final_step"];
  EXPECT_GE(at, 2);
  EXPECT_LT(at, 240) << "the signal came mid-training";

  // The same task again (a re-lease): resumes from the newest checkpoint and ends where the whole run did.
  MpiRun again = mpirun(1, args + out);
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_CONTAINS(again.err, "resumed");
  const nlohmann::json a = result(tmp_.file("whole/heal.json")), b = result(out + "/heal.json");
  EXPECT_EQ(b["points"][0]["healing"]["steps_run"].get<int64_t>(), 240 - at);
  EXPECT_EQ(a["points"][0]["healing"]["train_loss"], b["points"][0]["healing"]["train_loss"]) << "bit for bit";
  EXPECT_EQ(a["points"][0]["metrics"], b["points"][0]["metrics"]);
}

}  // namespace
}  // namespace layerprune
