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

// A NaN or Inf where a result was computed (logits, a loss, a distance, a gradient): never a number to
// report. The message names the stage, the first layer whose output was non-finite and the input. It is an
// InputError (a model's weights or a run's settings produced it: retrying cannot help), so the CLI exits 2
// and the worker fails the task without retries.
struct NonFiniteError : InputError {
  using InputError::InputError;
};

}  // namespace layerprune
