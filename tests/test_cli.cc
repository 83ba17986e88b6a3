// The `layerprune` program as a user runs it: exit statuses, --help, --json, and the model commands on
// stories260K end to end.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/text_file.h"
#include "tests/test_support.h"

namespace layerprune {
namespace {

struct CliRun {
  int status;
  std::string out;  // stdout only (stderr goes to the test log)
};

CliRun run(const std::string& args) {
  // The data locator of the child reads $LAYERPRUNE_DATA: hand it the directory the tests use.
  std::string cmd = "LAYERPRUNE_DATA='" + testing::data_dir() + "' " + std::string(LAYERPRUNE_BINARY_DIR) +
                    "/cli/layerprune " + args;
  FILE* p = popen(cmd.c_str(), "r");
  CliRun r{-1, ""};
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

TEST(Cli, HelpAndUsageErrors) {
  EXPECT_EQ(run("--help").status, 0);
  EXPECT_EQ(run("").status, 2);
  EXPECT_EQ(run("no-such-command").status, 2);
  for (const char* cmd : {"convert", "eval", "generate", "loss", "make-model", "plan"}) {
    CliRun r = run(std::string(cmd) + " --help");
    EXPECT_EQ(r.status, 0) << cmd;
    EXPECT_NE(r.out.find("usage: layerprune " + std::string(cmd)), std::string::npos) << r.out;
  }
  EXPECT_NE(run("loss --help").out.find("non-overlapping"), std::string::npos) << "the loss recipe is in its help";
  EXPECT_CONTAINS(run("eval --help").out, "_encode_pair");
  EXPECT_EQ(run("generate --bogus 1").status, 2);
  EXPECT_EQ(run("generate").status, 2) << "--model is required";
}

TEST(Cli, InputErrorsExitTwoWithJsonError) {
  testing::TempDir d;
  CliRun r = run("generate --model " + d.path() + "/missing --json");
  EXPECT_EQ(r.status, 2);
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("exit_status"), 2);
  EXPECT_NE(j.at("error").get<std::string>().find("missing"), std::string::npos);
}

TEST(Cli, ConvertGenerateLossOnStories260K) {
  LP_REQUIRE_DATA(bin, "stories260K/stories260K.bin");
  LP_REQUIRE_DATA(tok, "stories260K/tok512.model");
  LP_REQUIRE_DATA(text, "tinystories/tinystories_val.txt");
  testing::TempDir d;
  std::string model = d.path() + "/stories260K";
  CliRun c = run("convert --llama2c " + bin + " --tokenizer " + tok + " --out " + model + " --json");
  ASSERT_EQ(c.status, 0) << c.out;
  EXPECT_EQ(nlohmann::json::parse(c.out).at("parameters"), 260032);
  CliRun g = run("generate --model " + model + " --prompt 'Once upon a time' --max-new-tokens 20 --threads 1");
  ASSERT_EQ(g.status, 0);
  EXPECT_EQ(g.out.rfind("Once upon a time, there was a little girl named Lily.", 0), 0u) << g.out;
  CliRun gj = run("generate --model " + model + " --prompt 'Once upon a time' --max-new-tokens 5 --json");
  ASSERT_EQ(gj.status, 0);
  EXPECT_EQ(nlohmann::json::parse(gj.out).at("new_ids").size(), 5u);
  CliRun l = run("loss --model " + model + " --data " + text + " --max-windows 4 --json --threads 1");
  ASSERT_EQ(l.status, 0) << l.out;
  auto lj = nlohmann::json::parse(l.out);
  EXPECT_EQ(lj.at("windows"), 4);
  EXPECT_EQ(lj.at("predicted_tokens"), 4 * 511);
  EXPECT_GT(lj.at("mean_nll").get<double>(), 0.5);
  EXPECT_LT(lj.at("mean_nll").get<double>(), 3.0);
  // The loss of a pruned model (layers 2-3 dropped) is higher.
  CliRun lp = run("loss --model " + model + " --data " + text + " --max-windows 4 --json --threads 1 --drop 2-3");
  ASSERT_EQ(lp.status, 0) << lp.out;
  auto lpj = nlohmann::json::parse(lp.out);
  EXPECT_EQ(lpj.at("layers"), nlohmann::json({0, 1, 4}));
  EXPECT_GT(lpj.at("mean_nll").get<double>(), lj.at("mean_nll").get<double>() + 0.5);
  // --device: cpu is the default; cuda runs there where a GPU is visible (the same loss within float32
  // rounding) and is otherwise refused, saying so, before any weight is read; a bad name is a usage error.
  CliRun lc = run("loss --model " + model + " --data " + text + " --max-windows 4 --json --threads 1 --device cpu");
  ASSERT_EQ(lc.status, 0) << lc.out;
  EXPECT_EQ(nlohmann::json::parse(lc.out).at("mean_nll"), lj.at("mean_nll"));
  CliRun lg = run("loss --model " + model + " --data " + text + " --max-windows 4 --json --threads 1 --device cuda");
  if (lg.status == 0) {
    EXPECT_NEAR(nlohmann::json::parse(lg.out).at("mean_nll").get<double>(), lj.at("mean_nll").get<double>(), 1e-4);
  } else {
    EXPECT_EQ(lg.status, 2) << lg.out;
    EXPECT_CONTAINS(nlohmann::json::parse(lg.out).at("error").get<std::string>(), "no CUDA GPU is visible");
  }
  CliRun bad = run("loss --model " + model + " --data " + text + " --device gpu0 --json");
  EXPECT_EQ(bad.status, 2);
  EXPECT_CONTAINS(nlohmann::json::parse(bad.out).at("error").get<std::string>(), "unknown device 'gpu0'");
  // Four NaN in model.norm.weight (bytes patched in the file): `check` finds them by name; loss and eval
  // exit 2 naming the stage and where the numbers went bad instead of printing a NaN or an accuracy.
  CliRun clean = run("check --model " + model + " --json");
  ASSERT_EQ(clean.status, 0) << clean.out;
  EXPECT_EQ(nlohmann::json::parse(clean.out).at("ok"), true);
  const std::string nan_model = d.path() + "/nan";
  std::filesystem::copy(model, nan_model);
  {
    std::fstream f(nan_model + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    uint64_t header = 0;
    f.read(reinterpret_cast<char*>(&header), 8);
    std::string json_text(header, '\0');
    f.read(json_text.data(), std::streamsize(header));
    const auto entry = nlohmann::json::parse(json_text).at("model.norm.weight");
    ASSERT_EQ(entry.at("dtype"), "F32");
    const float nan[4] = {NAN, NAN, NAN, NAN};
    f.seekp(std::streamoff(8 + header + entry.at("data_offsets")[0].get<uint64_t>() + 8));  // elements 2-5
    f.write(reinterpret_cast<const char*>(nan), sizeof nan);
  }
  CliRun found = run("check --model " + nan_model + " --json");
  EXPECT_EQ(found.status, 2) << found.out;
  const auto report = nlohmann::json::parse(found.out);
  EXPECT_EQ(report.at("ok"), false);
  ASSERT_EQ(report.at("non_finite").size(), 1u) << report.dump();
  EXPECT_EQ(report.at("non_finite")[0].at("tensor"), "model.norm.weight");
  EXPECT_EQ(report.at("non_finite")[0].at("nan"), 4);
  EXPECT_EQ(report.at("non_finite")[0].at("first_index"), 2);
  CliRun nan_loss = run("loss --model " + nan_model + " --data " + text + " --max-windows 2 --json --threads 1");
  EXPECT_EQ(nan_loss.status, 2) << nan_loss.out;
  EXPECT_CONTAINS(nlohmann::json::parse(nan_loss.out).at("error").get<std::string>(), "the final norm or the LM head");
  CliRun nan_eval = run("eval --model " + nan_model + " --task boolq --limit 3 --json --threads 1");
  EXPECT_EQ(nan_eval.status, 2) << nan_eval.out;
  EXPECT_CONTAINS(nlohmann::json::parse(nan_eval.out).at("error").get<std::string>(), "non-finite logits");
}

// convert --gguf on the real GGUF (the formats are tested in test_gguf; this is the command around them).
TEST(Cli, ConvertGgufSmolLM2) {
  LP_REQUIRE_DATA(gguf, "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
  testing::TempDir d;
  const std::string model = d.path() + "/smollm2";
  CliRun c = run("convert --gguf " + gguf + " --out " + model + " --json");
  ASSERT_EQ(c.status, 0) << c.out;
  auto j = nlohmann::json::parse(c.out);
  EXPECT_EQ(j.at("parameters"), 134515008);
  EXPECT_EQ(j.at("layers"), 30);
  EXPECT_EQ(j.at("shared_classifier"), true);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    EXPECT_TRUE(std::filesystem::exists(model + "/" + f)) << f;
  EXPECT_EQ(run("convert --gguf " + gguf + " --llama2c x.bin --out " + model).status, 2);
  CliRun bad = run("convert --gguf " + d.path() + "/smollm2/config.json --out " + d.path() + "/x --json");
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.out.find("not a GGUF file"), std::string::npos) << bad.out;
}

// distances -> cache -> prune -> sweep, as a user runs them on stories260K.
TEST(Cli, DistancesPruneSweepOnStories260K) {
  LP_REQUIRE_DATA(bin, "stories260K/stories260K.bin");
  LP_REQUIRE_DATA(tok, "stories260K/tok512.model");
  LP_REQUIRE_DATA(text, "tinystories/tinystories_val.txt");
  LP_REQUIRE_DATA(boolq, "boolq/val.jsonl");
  testing::TempDir d;
  const std::string model = d.path() + "/m", cal = " --data " + text + " --samples 8 --seq-len 64 --cache " + d.path() + "/cache";
  ASSERT_EQ(run("convert --llama2c " + bin + " --tokenizer " + tok + " --out " + model).status, 0);
  CliRun a = run("distances --model " + model + cal + " --json --svg " + d.path() + "/d.svg");
  ASSERT_EQ(a.status, 0) << a.out;
  auto aj = nlohmann::json::parse(a.out);
  EXPECT_EQ(aj.at("layers"), 5);
  EXPECT_EQ(aj.at("distances").size(), 6u);
  EXPECT_EQ(aj.at("best").size(), 5u);
  EXPECT_EQ(aj.at("calibration").at("recipe").at("samples"), 8);
  const std::string svg = read_file(d.path() + "/d.svg");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_CONTAINS(svg, "</svg>");
  // The second run reads the cache: same key, same numbers.
  CliRun b = run("distances --model " + model + cal + " --json");
  ASSERT_EQ(b.status, 0);
  EXPECT_EQ(nlohmann::json::parse(b.out).at("distances"), aj.at("distances"));
  EXPECT_TRUE(std::filesystem::exists(d.path() + "/cache/" + aj.at("key").get<std::string>() + ".json"));

  // Prune with the similarity strategy: the block l*(2), read from the same cache.
  CliRun p = run("prune --model " + model + cal + " --n 2 --out " + d.path() + "/p --json");
  ASSERT_EQ(p.status, 0) << p.out;
  auto pj = nlohmann::json::parse(p.out);
  const int64_t l2 = aj.at("best")[1].at("l_star").get<int64_t>();
  EXPECT_EQ(pj.at("dropped"), nlohmann::json({l2, l2 + 1}));
  EXPECT_EQ(pj.at("how").at("distance_key"), aj.at("key"));
  EXPECT_CONTAINS(read_file(d.path() + "/p/config.json"), "\"num_hidden_layers\": 3");
  // Block influence (ShortGPT) from the same cached result: the 2 layers of lowest BI, ties to the lower index.
  ASSERT_EQ(aj.at("block_influence").size(), 5u);
  std::vector<double> bi = aj.at("block_influence").get<std::vector<double>>();
  std::vector<int64_t> order{0, 1, 2, 3, 4};
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return bi[size_t(x)] < bi[size_t(y)]; });
  std::vector<int64_t> lowest{order[0], order[1]};
  std::sort(lowest.begin(), lowest.end());
  CliRun s = run("prune --model " + model + cal + " --strategy block_influence --n 2 --out " + d.path() + "/s --json");
  ASSERT_EQ(s.status, 0) << s.out;
  auto sj = nlohmann::json::parse(s.out);
  EXPECT_EQ(sj.at("dropped"), nlohmann::json(lowest));
  EXPECT_EQ(sj.at("how").at("rule"), "block_influence");
  EXPECT_EQ(sj.at("how").at("first_dropped"), lowest[0]);
  EXPECT_EQ(sj.at("how").at("distance_key"), aj.at("key"));
  EXPECT_EQ(sj.at("kept").size(), 3u);
  EXPECT_CONTAINS(read_file(d.path() + "/s/config.json"), "\"num_hidden_layers\": 3");
  EXPECT_EQ(run("prune --model " + model + " --out " + d.path() + "/q --strategy block_influence --n 1").status, 2)
      << "block_influence needs --data";
  CliRun unknown = run("prune --model " + model + " --out " + d.path() + "/q --strategy shortgpt --n 1 2>&1");
  EXPECT_EQ(unknown.status, 2);
  EXPECT_CONTAINS(unknown.out, "similarity, simple or block_influence");
  EXPECT_EQ(run("prune --model " + model + " --out " + d.path() + "/q --strategy simple --n 9").status, 2);
  EXPECT_EQ(run("prune --model " + model + " --out " + d.path() + "/q --n 1 --keep 0").status, 2) << "two rules";
  EXPECT_EQ(run("prune --model " + model + " --out " + d.path() + "/q --n 1").status, 2) << "similarity needs --data";

  // The sweep prints one point per (strategy, n); n = 0 is the same model for both.
  CliRun w = run("sweep --model " + model + cal + " --tasks boolq --boolq-limit 3 --fractions 0,0.4 --json --threads 1");
  ASSERT_EQ(w.status, 0) << w.out;
  auto wj = nlohmann::json::parse(w.out);
  ASSERT_EQ(wj.at("points").size(), 4u);
  EXPECT_EQ(wj.at("variants"), 3) << "n = 0 merged";
  EXPECT_EQ(wj.at("points")[0].at("boolq"), wj.at("points")[1].at("boolq"));
  EXPECT_EQ(wj.at("points")[3].at("dropped"), nlohmann::json({2, 3})) << "simple n=2 drops L-3..L-2";
  EXPECT_LT(wj.at("layer_evals_shared").get<int64_t>(), wj.at("layer_evals_naive").get<int64_t>());
  CliRun e = run("eval --model " + model + " --task boolq --limit 3 --json --threads 1");
  ASSERT_EQ(e.status, 0) << e.out;
  EXPECT_EQ(wj.at("truncated"), nlohmann::json::parse(e.out).at("truncated")) << "the sweep reports truncation as eval";
  EXPECT_EQ(wj.at("points")[0].at("boolq"), nlohmann::json::parse(e.out).at("acc")) << "n = 0 is the whole model";
  EXPECT_EQ(run("sweep --model " + model + " --tasks boolq --strategies random").status, 2);
  // The sweep with block influence: its n = 2 point drops what prune dropped.
  CliRun wb = run("sweep --model " + model + cal + " --strategies block_influence --tasks boolq --boolq-limit 3 "
                  "--fractions 0.4 --json --threads 1");
  ASSERT_EQ(wb.status, 0) << wb.out;
  auto wbj = nlohmann::json::parse(wb.out);
  ASSERT_EQ(wbj.at("points").size(), 1u);
  EXPECT_EQ(wbj.at("points")[0].at("strategy"), "block_influence");
  EXPECT_EQ(wbj.at("points")[0].at("dropped"), nlohmann::json(lowest));
  EXPECT_EQ(wbj.at("distance_key"), aj.at("key"));
}

// The healing check: stories260K with the simple strategy's 2 layers (2-3) removed, healed on
// TinyStories text and evaluated on held-out paragraphs, recovers at least half of the loss gap to the
// unpruned model; the merged export has the healed model's loss.
TEST(Cli, HealRecoversHalfTheGapOnStories260K) {
  LP_REQUIRE_DATA(bin, "stories260K/stories260K.bin");
  LP_REQUIRE_DATA(tok, "stories260K/tok512.model");
  LP_REQUIRE_DATA(text, "tinystories/tinystories_val.txt");
  testing::TempDir d;
  const std::string model = d.path() + "/m";
  ASSERT_EQ(run("convert --llama2c " + bin + " --tokenizer " + tok + " --out " + model).status, 0);
  // Paragraphs 0..89% train, the rest held out.
  std::string all = read_file(text), train, held;
  std::vector<std::string> paras;
  for (size_t pos = 0; pos < all.size();) {
    size_t end = all.find("\n\n", pos);
    paras.push_back(all.substr(pos, end == std::string::npos ? std::string::npos : end - pos));
    pos = end == std::string::npos ? all.size() : end + 2;
  }
  for (size_t i = 0; i < paras.size(); ++i) (i < paras.size() * 9 / 10 ? train : held) += paras[i] + "\n\n";
  write_file(d.path() + "/train.txt", train);
  write_file(d.path() + "/held.txt", held);
  CliRun h = run("heal --model " + model + " --drop 2-3 --train-data " + d.path() + "/train.txt --eval-data " +
                 d.path() + "/held.txt --eval-windows 8 --steps 60 --global-batch 16 --micro-batch 16 --seq-len 128 "
                 "--lr 3e-3 --warmup 10 --rank 16 --json --out " + d.path() + "/healed --checkpoint-dir " + d.path() + "/ck");
  ASSERT_EQ(h.status, 0) << h.out;
  auto j = nlohmann::json::parse(h.out);
  const double base = j.at("val_loss_unpruned"), pruned = j.at("val_loss_pruned"), healed = j.at("val_loss_healed");
  std::printf("validation loss: unpruned %.4f, pruned %.4f, healed %.4f (%.0f%% of the gap)\n", base, pruned, healed,
              100 * j.at("gap_recovered").get<double>());
  EXPECT_GT(pruned, base + 1.0) << "dropping 2 of 5 layers hurts";
  EXPECT_GE(j.at("gap_recovered").get<double>(), 0.5);
  EXPECT_TRUE(std::filesystem::exists(d.path() + "/ck/step-000060.safetensors"));
  CliRun l = run("loss --model " + d.path() + "/healed --data " + d.path() + "/held.txt --max-windows 8 --json");
  ASSERT_EQ(l.status, 0) << l.out;
  EXPECT_NEAR(nlohmann::json::parse(l.out).at("mean_nll").get<double>(), healed, 1e-4)
      << "the merged export is the healed model";
  EXPECT_CONTAINS(read_file(d.path() + "/healed/config.json"), "\"num_hidden_layers\": 3");
  // QLoRA: the same healing on an NF4 base.
  CliRun q = run("heal --model " + model + " --drop 2-3 --train-data " + d.path() + "/train.txt --eval-data " +
                 d.path() + "/held.txt --eval-windows 8 --steps 60 --global-batch 16 --micro-batch 16 --seq-len 128 "
                 "--lr 3e-3 --warmup 10 --rank 16 --quant nf4 --json");
  ASSERT_EQ(q.status, 0) << q.out;
  auto qj = nlohmann::json::parse(q.out);
  std::printf("QLoRA: healed %.4f (%.0f%% of the gap)\n", qj.at("val_loss_healed").get<double>(),
              100 * qj.at("gap_recovered").get<double>());
  EXPECT_EQ(qj.at("quant"), "nf4");
  EXPECT_GE(qj.at("gap_recovered").get<double>(), 0.5);
}

TEST(Cli, EvalOnStories260K) {
  LP_REQUIRE_DATA(bin, "stories260K/stories260K.bin");
  LP_REQUIRE_DATA(tok, "stories260K/tok512.model");
  LP_REQUIRE_DATA(mmlu, "mmlu/hendrycks_format");
  LP_REQUIRE_DATA(boolq, "boolq/val.jsonl");
  testing::TempDir d;
  std::string model = d.path() + "/stories260K";
  ASSERT_EQ(run("convert --llama2c " + bin + " --tokenizer " + tok + " --out " + model).status, 0);
  // BoolQ through the data locator (LAYERPRUNE_DATA), whole model.
  CliRun b = run("eval --model " + model + " --task boolq --limit 4 --json --threads 1");
  ASSERT_EQ(b.status, 0) << b.out;
  auto bj = nlohmann::json::parse(b.out);
  EXPECT_EQ(bj.at("total"), 4);
  EXPECT_EQ(bj.at("layers"), nlohmann::json({0, 1, 2, 3, 4}));
  EXPECT_EQ(bj.at("data_sha256").begin().value(), "21acbfbd1e7908fddd9e626bc2a6101c5a5430bda3fbf74985b979af7a63b989");
  EXPECT_CONTAINS(bj.at("truncation").get<std::string>(), "left-truncated to 512 tokens");
  EXPECT_FALSE(bj.at("code_version").get<std::string>().empty());
  // BOS as the converted directory's tokenizer_config.json says (llama2.c models start with BOS); the flags win.
  EXPECT_EQ(bj.at("add_bos"), true);
  EXPECT_EQ(nlohmann::json::parse(read_file(model + "/tokenizer_config.json")).at("add_bos_token"), true);
  CliRun nb = run("eval --model " + model + " --task boolq --limit 4 --json --threads 1 --no-add-bos");
  ASSERT_EQ(nb.status, 0) << nb.out;
  EXPECT_EQ(nlohmann::json::parse(nb.out).at("add_bos"), false);
  EXPECT_EQ(run("eval --model " + model + " --task boolq --limit 4 --add-bos --no-add-bos").status, 2);
  // MMLU 5-shot with layers 2 and 3 dropped: the reference's predictions (tests/golden/stories260k_eval.json,
  // scored without BOS).
  std::string records = d.path() + "/records.jsonl";
  CliRun m = run("eval --model " + model + " --task mmlu --data " + mmlu +
                 " --subjects world_religions --limit 2 --drop 2,3 --batch 3 --json --threads 1 --no-add-bos --records " + records);
  ASSERT_EQ(m.status, 0) << m.out;
  auto mj = nlohmann::json::parse(m.out);
  EXPECT_EQ(mj.at("layers"), nlohmann::json({0, 1, 4}));
  EXPECT_EQ(mj.at("total"), 2);
  EXPECT_EQ(mj.at("truncated"), 2);
  EXPECT_EQ(mj.at("data_sha256").size(), 2u) << "dev and test file";
  auto golden = nlohmann::json::parse(read_file(testing::source_file("tests/golden/stories260k_eval.json")));
  int want_correct = 0;
  std::vector<int> want_pred;
  for (const auto& it : golden.at("sets").at("mmlu_5shot.drop_2_3").at("items"))
    if (it.at("subject") == "world_religions" && it.at("index").get<int>() < 2) {
      want_correct += it.at("correct").get<bool>();
      want_pred.push_back(it.at("pred"));
    }
  EXPECT_EQ(mj.at("subjects").at("world_religions").at("correct"), want_correct);
  std::string lines = read_file(records);
  size_t pos = 0;
  for (int i = 0; i < 2; ++i) {
    size_t end = lines.find('\n', pos);
    ASSERT_NE(end, std::string::npos);
    auto r = nlohmann::json::parse(lines.substr(pos, end - pos));
    EXPECT_EQ(r.at("pred"), want_pred[size_t(i)]);
    EXPECT_EQ(r.at("loglikelihoods").size(), 4u);
    pos = end + 1;
  }
  // 0-shot prompts fit stories260K's 512 positions, so the subject's prefix (its description) is cached;
  // --no-prefix-cache runs full prompts: the same answers.
  std::string zero = "eval --model " + model + " --task mmlu --data " + mmlu +
                     " --subjects world_religions --limit 3 --shots 0 --json --threads 1";
  CliRun c = run(zero), f = run(zero + " --no-prefix-cache");
  ASSERT_EQ(c.status, 0) << c.out;
  ASSERT_EQ(f.status, 0) << f.out;
  auto cj = nlohmann::json::parse(c.out), fj = nlohmann::json::parse(f.out);
  EXPECT_EQ(cj.at("prefix_cache").at("enabled"), true);
  EXPECT_EQ(cj.at("prefix_cache").at("cached_items"), 3);
  EXPECT_EQ(fj.at("prefix_cache").at("enabled"), false);
  EXPECT_EQ(cj.at("correct"), fj.at("correct"));
  EXPECT_EQ(cj.at("prefix_cache").at("full_prompt_tokens"), fj.at("prefix_cache").at("tokens_processed"));
  EXPECT_LT(cj.at("prefix_cache").at("tokens_processed"), fj.at("prefix_cache").at("tokens_processed"));
  // Input errors exit 2 with the file and line, or the subject, in the JSON error.
  std::filesystem::create_directories(d.path() + "/bad/test");
  std::ofstream(d.path() + "/bad/test/x_test.csv") << "q,a,b,c,d,A\nq,a,b,c,d,E\n";
  CliRun bad = run("eval --model " + model + " --task mmlu --shots 0 --data " + d.path() + "/bad --json");
  EXPECT_EQ(bad.status, 2);
  EXPECT_CONTAINS(nlohmann::json::parse(bad.out).at("error").get<std::string>(), "x_test.csv:2: answer 'E'");
  CliRun nope = run("eval --model " + model + " --task mmlu --subjects nope --json");
  EXPECT_EQ(nope.status, 2);
  EXPECT_CONTAINS(nlohmann::json::parse(nope.out).at("error").get<std::string>(), "subject 'nope'");
  EXPECT_EQ(run("eval --model " + model + " --task boolq --drop 9").status, 2);
  EXPECT_EQ(run("eval --model " + model + " --task squad").status, 2);
}

TEST(Cli, MakeModelWritesALoadableModel) {
  testing::TempDir d;
  CliRun m = run("make-model --out " + d.path() + "/m --dim 32 --layers 2 --heads 4 --kv-heads 2 --ffn 48 --vocab 64 --context 32 --json");
  ASSERT_EQ(m.status, 0) << m.out;
  auto j = nlohmann::json::parse(m.out);
  EXPECT_EQ(j.at("num_key_value_heads"), 2);
  EXPECT_TRUE(std::ifstream(d.path() + "/m/model.safetensors").good());
  CliRun bad = run("make-model --out " + d.path() + "/b --dim 30 --heads 4");
  EXPECT_EQ(bad.status, 2) << "30 is not divisible by 4 heads";
}

// The families' published configs (tests/golden/configs/): parameters as published, Qwen2's biases counted.
TEST(Cli, PlanOnTheFamiliesConfigs) {
  const std::pair<const char*, int64_t> configs[] = {{"Llama-3.1-8B.json", 8030261248LL},
                                                     {"Llama-3.2-1B.json", 1235814400LL},
                                                     {"Mistral-7B-v0.1.json", 7241732096LL},
                                                     {"Qwen2-7B.json", 7615616512LL}};
  for (const auto& [name, params] : configs) {
    const std::string config = testing::source_file(std::string("tests/golden/configs/") + name);
    CliRun r = run("plan --config " + config + " --tp 2 --quant nf4 --prune-fraction 0.25 --healing --json");
    ASSERT_EQ(r.status, 0) << name << ": " << r.out;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j.at("model").at("parameters"), params) << name;
    EXPECT_EQ(j.at("per_rank").contains("biases_bytes"), std::string(name) == "Qwen2-7B.json") << name;
  }
}

TEST(Cli, PlanOn70BConfig) {
  LP_REQUIRE_DATA(config, "llama2/Llama-2-70b-chat-hf/config.json");
  CliRun r = run("plan --config " + config + " --tp 8 --quant nf4 --prune-fraction 0.5 --healing --json");
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("pruning").at("kept_layers"), 40);
  EXPECT_EQ(j.at("model").at("parameters"), 68976648192LL);
  EXPECT_TRUE(j.at("per_rank").contains("healing_total_bytes"));
  CliRun t = run("plan --config " + config + " --quant nf4 --prune-fraction 0.5");
  ASSERT_EQ(t.status, 0);
  EXPECT_CONTAINS(t.out, "quantisation constants");
  EXPECT_CONTAINS(t.out, "18.706");  // GB of weights, tp 1
  CliRun bad = run("plan --config " + config + " --tp 3 --json");
  EXPECT_EQ(bad.status, 2);
  const std::string e = nlohmann::json::parse(bad.out).at("error");
  EXPECT_CONTAINS(e, "64 % 3 = 1");
  EXPECT_EQ(run("plan --config " + config + " --prune-fraction 1").status, 2);
  CliRun help = run("plan --help");
  EXPECT_EQ(help.status, 0);
  EXPECT_CONTAINS(help.out, "0.515869140625");
}

}  // namespace
}  // namespace layerprune
