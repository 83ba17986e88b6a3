// libFuzzer target: a BoolQ JSON Lines file (evaluation/eval_data.h read_boolq, Google's and SuperGLUE's
// layouts), then the prompts lm-evaluation-harness would pose (evaluation/eval_tasks.h boolq_items).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "evaluation/eval_data.h"
#include "evaluation/eval_tasks.h"
#include "fuzz_support.h"

using namespace layerprune;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lpfuzz::scratch().write("boolq.jsonl", data, size);
  lpfuzz::accept_input_errors([&] {
    const std::vector<BoolqQuestion> qs = read_boolq(path);
    for (const EvalItem& item : boolq_items(qs))
      LPFUZZ_CHECK(item.choices.size() == 2 && (item.gold == 0 || item.gold == 1), "two choices, gold among them");
    LPFUZZ_CHECK(read_boolq(path, 1).size() == 1, "limit 1 reads one question");
  });
  return 0;
}
