// Command-line parsing for the `layerprune` subcommands: declared options, generated --help, and
// UsageError (exit status 2) for anything unknown or missing.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace layerprune {

class ArgParser {
 public:
  ArgParser(std::string command, std::string summary);

  // --name VALUE. Without a default the option is required.
  ArgParser& option(const std::string& name, const std::string& help,
                    std::optional<std::string> default_value = std::nullopt);
  // --name (boolean, false unless given).
  ArgParser& flag(const std::string& name, const std::string& help);
  // A positional argument (`layerprune run EXPERIMENT.yaml`), in declaration order; read with get(name).
  // Without a default it is required.
  ArgParser& positional(const std::string& name, const std::string& help,
                        std::optional<std::string> default_value = std::nullopt);
  // Free text printed after the option list (recipes, examples).
  ArgParser& epilog(const std::string& text);

  // Parses argv[first..argc). Returns false when --help was given (help already printed on stdout).
  bool parse(int argc, char** argv, int first = 1);
  bool parse(const std::vector<std::string>& args);

  std::string get(const std::string& name) const;
  int64_t get_int(const std::string& name) const;
  double get_double(const std::string& name) const;
  bool flag_set(const std::string& name) const;
  // True when the option was given on the command line (not defaulted).
  bool given(const std::string& name) const;

  std::string help() const;

 private:
  struct Spec {
    std::string help;
    std::optional<std::string> default_value;
    bool is_flag = false;
  };
  std::string command_, summary_, epilog_;
  std::vector<std::string> order_, positionals_;
  std::map<std::string, Spec> specs_;
  std::map<std::string, std::string> values_;
};

// "a,b,,c" -> {"a", "b", "c"}: a comma-separated option value, empty items dropped.
std::vector<std::string> split_commas(const std::string& s);

}  // namespace layerprune
