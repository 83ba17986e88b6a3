#include <gtest/gtest.h>

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

TEST(DataLocator, MirrorOverrideAndErrors) {
  testing::TempDir d;
  std::filesystem::create_directories(d.path() + "/mirror/boolq");
  write_file(d.path() + "/mirror/boolq/val.jsonl", "{}\n");
  setenv("LAYERPRUNE_DATA", (d.path() + "/mirror").c_str(), 1);
  setenv("HOME", d.path().c_str(), 1);
  unsetenv("XDG_CACHE_HOME");
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

}  // namespace
}  // namespace layerprune
