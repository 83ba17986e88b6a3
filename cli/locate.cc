// `layerprune locate NAME`: where a known model or dataset is on this machine (the data locator).
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/args.h"
#include "common/data_locator.h"

namespace layerprune::cli {

int locate(int argc, char** argv) {
  std::string names;
  for (const auto& a : known_assets()) names += "  " + a.name + ": " + a.description + "\n";
  std::string roots;
  for (const auto& r : data_roots()) roots += "  " + r + "\n";
  ArgParser p("locate", "Print the local path of a known model or dataset (or check that a path exists).");
  p.option("name", "asset name (optionally name/sub/path) or a path").flag("json", "print one JSON document on stdout")
      .epilog("known names:\n" + names + "data roots searched, in order ($LAYERPRUNE_DATA, then the download cache):\n" + roots);
  // `locate NAME` is accepted as well as `locate --name NAME`.
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0].rfind("--", 0) != 0) args.insert(args.begin(), "--name");
  if (!p.parse(args)) return 0;
  std::string path = locate_data(p.get("name"));
  if (p.flag_set("json")) std::cout << nlohmann::json{{"name", p.get("name")}, {"path", path}}.dump() << std::endl;
  else std::printf("%s\n", path.c_str());
  return 0;
}

}  // namespace layerprune::cli
