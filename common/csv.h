// CSV as Python's csv module (dialect "excel") and pandas write it: comma-separated, fields optionally in
// double quotes, a quote inside a quoted field doubled (""), commas and line breaks allowed inside quotes,
// records ended by \n, \r\n or \r. Used for MMLU, whose questions carry all of these.
//
// Stricter than Python's lenient reader where a file is certainly broken: an unterminated quoted field and
// text after a closing quote (`"a"b`) are InputErrors naming the file and the line where the record starts.
// A quote inside an unquoted field (`5" screen`) is kept, as Python keeps it. Blank lines are skipped and a
// UTF-8 byte-order mark at the start is dropped.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace layerprune {

struct CsvRecord {
  std::vector<std::string> fields;
  int64_t line = 0;  // 1-based line where the record starts (a record may span lines)
};

// `name` stands for the file in error messages.
std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& name);

}  // namespace layerprune
