// JSON from files a user hands us (config.json, tokenizer.json, tokenizer_config.json, shard indexes): one
// guarded parse, so every reader refuses the same hostile inputs with the same words.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace layerprune {

// Parses `text`; InputError naming `name` for a NUL byte (nlohmann's lexer would stop there and leave the
// rest unread), for arrays/objects nested deeper than max_depth (checked before parsing: nlohmann's parser
// and destructor recurse, so a file nested a million deep would exhaust the stack), and for malformed JSON
// (nlohmann's message, with its line and column).
nlohmann::json parse_json_input(const std::string& text, const std::string& name, int max_depth = 64);

}  // namespace layerprune
