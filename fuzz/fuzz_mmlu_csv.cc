// libFuzzer target: an MMLU CSV file (common/csv.h parse_csv, evaluation/eval_data.h read_mmlu_csv and
// read_mmlu), then the prompts lm-evaluation-harness would pose (evaluation/eval_tasks.h mmlu_items). The
// bytes are one subject's test file and its dev file.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/csv.h"
#include "evaluation/eval_data.h"
#include "evaluation/eval_tasks.h"
#include "fuzz_support.h"

using namespace layerprune;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  lpfuzz::accept_input_errors([&] {
    for (const CsvRecord& r : parse_csv(text, "fuzz.csv")) LPFUZZ_CHECK(r.line >= 1, "records start on a line");
  });
  const std::string test = lpfuzz::scratch().write("mmlu/test/fuzz_subject_test.csv", data, size);
  lpfuzz::scratch().write("mmlu/dev/fuzz_subject_dev.csv", data, size);
  lpfuzz::accept_input_errors([&] {
    const std::vector<MmluQuestion> qs = read_mmlu_csv(test);
    for (const MmluQuestion& q : qs) {
      LPFUZZ_CHECK(q.answer >= 0 && q.answer < 4, "answers are A-D");
      (void)mmlu_question_text(q, true);
      (void)python_strip(q.question);
      (void)python_rstrip(q.choices[3]);
    }
  });
  lpfuzz::accept_input_errors([&] {
    MmluReadOptions o;
    o.shots = 2;
    const std::vector<MmluSubject> subjects = read_mmlu(lpfuzz::scratch().dir() + "/mmlu", o);
    for (const EvalItem& item : mmlu_items(subjects, o.shots)) {
      LPFUZZ_CHECK(item.choices.size() == 4 && item.gold >= 0 && item.gold < 4, "four choices, gold among them");
      LPFUZZ_CHECK(item.shared_prefix_bytes >= 0 && size_t(item.shared_prefix_bytes) <= item.context.size(),
                   "the shared prefix is part of the prompt");
    }
  });
  return 0;
}
