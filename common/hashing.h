// Content hashes recorded with results (provenance: which model, which data).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace layerprune {

// SHA-256 as lowercase hex.
std::string sha256_hex(const void* data, size_t size);
std::string sha256_hex(const std::string& bytes);
std::string sha256_file(const std::string& path);

}  // namespace layerprune
