// Errors a user can act on. InputError means "what you gave us is wrong" (a file, a flag, a data row):
// the CLI maps it to exit status 2; anything else is exit status 1.
#pragma once
#include <stdexcept>
#include <string>

namespace layerprune {

struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A bad command line (unknown flag, missing value). Also exit status 2.
struct UsageError : InputError {
  using InputError::InputError;
};

}  // namespace layerprune
