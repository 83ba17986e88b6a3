// The evaluation datasets as the paper uses them (Gromov et al. 2024, Sec. 4: MMLU 5-shot, BoolQ 0-shot):
// readers that turn the files into questions, and say which file and line is wrong when one is.
//
// MMLU comes in two layouts, detected per file from its first record:
//   Hendrycks (the original data.tar): no header, `question,A,B,C,D,answer`, answer a letter A-D;
//   export (pandas to_csv of the Hugging Face cais/mmlu dataset): a header row, then the same 6 columns
//   with the answer an index 0-3.
// The first record is a header when its last field is neither A-D nor 0-3 and longer than one character
// (a single wrong letter such as "E" is a bad answer, not a header). Files are <root>/<split>/<subject>_<split>.csv.
//
// BoolQ is JSON Lines: Google's layout {question, passage, answer: bool} or SuperGLUE's
// {question, passage, label} with label true/false as a JSON bool, "true"/"false", or 1/0.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace layerprune {

struct MmluQuestion {
  std::string question;
  std::array<std::string, 4> choices;
  int answer = 0;     // 0..3 (A..D)
  int64_t line = 0;   // where the record starts in its file
};

// One MMLU file in either layout. InputError naming file:line for a record without 6 fields or with an
// answer outside A-D / 0-3.
std::vector<MmluQuestion> read_mmlu_csv(const std::string& path);

struct MmluSubject {
  std::string name;                   // file stem: "abstract_algebra"
  std::vector<MmluQuestion> dev;      // few-shot examples, file order
  std::vector<MmluQuestion> eval;     // the questions asked (test or val split)
  std::string dev_file, eval_file;
};

struct MmluReadOptions {
  std::vector<std::string> subjects;  // empty: every subject with an <split> file
  std::string split = "test";         // test | val
  int64_t shots = 5;                  // dev rows each subject must have (0: dev not read)
  int64_t limit = 0;                  // first N questions per subject (0: all)
};

// Subjects in name order. InputError for a root without <split>/, a requested subject without its file
// or with no questions (named, never silently skipped), and a subject with fewer dev rows than shots.
std::vector<MmluSubject> read_mmlu(const std::string& root, const MmluReadOptions& options);

struct BoolqQuestion {
  std::string question, passage;
  bool answer = false;
  int64_t line = 0;
};

// InputError naming file:line for invalid JSON, a missing or non-string question/passage, or a label that
// is not a boolean in one of the accepted spellings. limit: first N questions (0: all).
std::vector<BoolqQuestion> read_boolq(const std::string& path, int64_t limit = 0);

}  // namespace layerprune
