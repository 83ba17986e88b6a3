// libFuzzer target: a text corpus (common/text_file.h read_documents and read_text_stream, what the
// calibration, loss and healing data go through): the bytes as C4-style JSON Lines (`*.jsonl`, one object
// with a string "text" per line) and as plain text (documents separated by blank lines).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/text_file.h"
#include "fuzz_support.h"

using namespace layerprune;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (const char* name : {"c4.jsonl", "c4.txt"}) {
    const std::string path = lpfuzz::scratch().write(name, data, size);
    lpfuzz::accept_input_errors([&] {
      const std::vector<std::string> docs = read_documents(path);
      LPFUZZ_CHECK(!docs.empty(), "read_documents returns documents or refuses");
      const std::string stream = read_text_stream(path);
      if (std::string(name) == "c4.txt") LPFUZZ_CHECK(!stream.empty(), "plain text: the stream is not empty");
    });
  }
  return 0;
}
