// Reading user files: whole files, and text corpora (C4-style JSONL or plain text) for loss, calibration
// and healing. Errors name the file and line.
#pragma once
#include <string>
#include <vector>

namespace layerprune {

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);  // via a temp file + rename

// Documents of a corpus. `*.jsonl` / `*.json`: one JSON object per line with a string field "text"
// (C4 layout; blank lines allowed). Anything else: plain text, documents separated by blank lines.
std::vector<std::string> read_documents(const std::string& path);

// The corpus as one text stream, as `loss` reads it: plain text verbatim; JSONL documents joined with "\n\n".
std::string read_text_stream(const std::string& path);

}  // namespace layerprune
