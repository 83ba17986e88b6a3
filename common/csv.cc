#include "common/csv.h"

#include "common/error.h"

namespace layerprune {

std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& name) {
  std::vector<CsvRecord> records;
  size_t i = 0;
  const size_t n = text.size();
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) i = 3;
  int64_t line = 1;
  // Consumes one line break at text[i] (\n, \r\n or \r) if there is one.
  auto line_break = [&]() {
    if (i < n && text[i] == '\r') {
      ++i;
      if (i < n && text[i] == '\n') ++i;
      ++line;
      return true;
    }
    if (i < n && text[i] == '\n') {
      ++i;
      ++line;
      return true;
    }
    return false;
  };
  while (i < n) {
    if (line_break()) continue;  // blank line
    CsvRecord rec;
    rec.line = line;
    for (;;) {  // one field per iteration
      std::string field;
      if (text[i] == '"') {
        ++i;
        for (;;) {
          if (i >= n)
            throw InputError(name + ":" + std::to_string(rec.line) + ": unterminated quoted field (field " +
                             std::to_string(rec.fields.size() + 1) + " opens a quote that never closes)");
          char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (c == '\r' || c == '\n') {  // a line break inside the field: kept as written, counted
            size_t b = i;
            line_break();
            field.append(text, b, i - b);
            continue;
          }
          field += c;
          ++i;
        }
        if (i < n && text[i] != ',' && text[i] != '\r' && text[i] != '\n')
          throw InputError(name + ":" + std::to_string(line) + ": unexpected '" + std::string(1, text[i]) +
                           "' after the closing quote of field " + std::to_string(rec.fields.size() + 1) +
                           " (expected a comma or the end of the line; a quote inside a quoted field is written \"\")");
      } else {
        while (i < n && text[i] != ',' && text[i] != '\r' && text[i] != '\n') field += text[i++];
      }
      rec.fields.push_back(std::move(field));
      if (i < n && text[i] == ',') {
        ++i;
        if (i >= n || text[i] == '\r' || text[i] == '\n') {  // a trailing comma: one more empty field
          rec.fields.emplace_back();
          break;
        }
        continue;
      }
      break;
    }
    line_break();
    records.push_back(std::move(rec));
  }
  return records;
}

}  // namespace layerprune
