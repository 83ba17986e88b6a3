#include "formats/json_input.h"

#include "common/error.h"

namespace layerprune {

namespace {
void check_nesting(const std::string& text, const std::string& name, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth)
        throw InputError(name + ": JSON nested deeper than " + std::to_string(max_depth) + " levels (at byte " +
                         std::to_string(i) + ")");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}
}  // namespace

nlohmann::json parse_json_input(const std::string& text, const std::string& name, int max_depth) {
  if (text.find('\0') != std::string::npos) throw InputError(name + ": not valid JSON (it contains a NUL byte)");
  check_nesting(text, name, max_depth);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range 406 for a number like 1e999
    throw InputError(name + ": not valid JSON (" + e.what() + ")");
  }
}

}  // namespace layerprune
