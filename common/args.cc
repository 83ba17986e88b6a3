#include "common/args.h"

#include <cstdlib>
#include <iostream>
#include <sstream>

#include "common/error.h"

namespace layerprune {

ArgParser::ArgParser(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {
  flag("help", "show this help and exit");
}

ArgParser& ArgParser::option(const std::string& name, const std::string& help,
                             std::optional<std::string> default_value) {
  order_.push_back(name);
  specs_[name] = Spec{help, std::move(default_value), false};
  return *this;
}

ArgParser& ArgParser::flag(const std::string& name, const std::string& help) {
  order_.push_back(name);
  specs_[name] = Spec{help, std::nullopt, true};
  return *this;
}

ArgParser& ArgParser::positional(const std::string& name, const std::string& help,
                                 std::optional<std::string> default_value) {
  positionals_.push_back(name);
  specs_[name] = Spec{help, std::move(default_value), false};
  return *this;
}

ArgParser& ArgParser::epilog(const std::string& text) {
  epilog_ = text;
  return *this;
}

bool ArgParser::parse(int argc, char** argv, int first) {
  std::vector<std::string> args;
  for (int i = first; i < argc; ++i) args.emplace_back(argv[i]);
  return parse(args);
}

bool ArgParser::parse(const std::vector<std::string>& args) {
  size_t next_positional = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) {
      if (next_positional >= positionals_.size())
        throw UsageError(command_ + ": unexpected argument '" + a + "' (see --help)");
      values_[positionals_[next_positional++]] = a;
      continue;
    }
    std::string name = a.substr(2), value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    auto it = specs_.find(name);
    if (it == specs_.end()) throw UsageError(command_ + ": unknown option --" + name + " (see --help)");
    if (it->second.is_flag) {
      if (inline_value) throw UsageError(command_ + ": --" + name + " takes no value");
      values_[name] = "1";
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= args.size()) throw UsageError(command_ + ": --" + name + " needs a value");
      value = args[++i];
    }
    values_[name] = value;
  }
  if (flag_set("help")) {
    std::cout << help();
    return false;
  }
  for (const auto& name : positionals_)
    if (!specs_.at(name).default_value && !values_.count(name))
      throw UsageError(command_ + ": " + name + " is required (see --help)");
  for (const auto& name : order_) {
    const Spec& s = specs_.at(name);
    if (!s.is_flag && !s.default_value && !values_.count(name))
      throw UsageError(command_ + ": --" + name + " is required (see --help)");
  }
  return true;
}

std::string ArgParser::get(const std::string& name) const {
  auto v = values_.find(name);
  if (v != values_.end()) return v->second;
  auto s = specs_.find(name);
  if (s == specs_.end() || !s->second.default_value)
    throw std::logic_error("ArgParser: option --" + name + " was not declared with a default");
  return *s->second.default_value;
}

int64_t ArgParser::get_int(const std::string& name) const {
  std::string v = get(name);
  char* end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0') throw UsageError(command_ + ": --" + name + " expects an integer, got '" + v + "'");
  return x;
}

double ArgParser::get_double(const std::string& name) const {
  std::string v = get(name);
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0') throw UsageError(command_ + ": --" + name + " expects a number, got '" + v + "'");
  return x;
}

bool ArgParser::flag_set(const std::string& name) const { return values_.count(name) > 0; }

bool ArgParser::given(const std::string& name) const { return values_.count(name) > 0; }

std::string ArgParser::help() const {
  std::ostringstream o;
  o << "usage: layerprune " << command_;
  for (const auto& name : positionals_) o << " " << (specs_.at(name).default_value ? "[" + name + "]" : name);
  o << " [options]\n\n" << summary_ << "\n\n";
  for (const auto& name : positionals_) {
    const Spec& s = specs_.at(name);
    std::string lhs = "  " + name;
    o << lhs << (lhs.size() < 28 ? std::string(28 - lhs.size(), ' ') : "\n" + std::string(28, ' ')) << s.help;
    if (s.default_value) o << " (default: " << (s.default_value->empty() ? "\"\"" : *s.default_value) << ")";
    o << "\n";
  }
  if (!positionals_.empty()) o << "\n";
  o << "options:\n";
  for (const auto& name : order_) {
    const Spec& s = specs_.at(name);
    std::string lhs = "  --" + name + (s.is_flag ? "" : " VALUE");
    o << lhs;
    if (lhs.size() < 28) o << std::string(28 - lhs.size(), ' ');
    else o << "\n" << std::string(28, ' ');
    o << s.help;
    if (s.default_value) o << " (default: " << (s.default_value->empty() ? "\"\"" : *s.default_value) << ")";
    else if (!s.is_flag) o << " (required)";
    o << "\n";
  }
  if (!epilog_.empty()) o << "\n" << epilog_ << (epilog_.back() == '\n' ? "" : "\n");
  return o.str();
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b <= s.size()) {
    size_t e = s.find(',', b);
    if (e == std::string::npos) e = s.size();
    if (e > b) out.push_back(s.substr(b, e - b));
    b = e + 1;
  }
  return out;
}

}  // namespace layerprune
