#include "worker/worker_tasks.h"

#include <fstream>
#include <set>

#include "common/error.h"

namespace layerprune {

nlohmann::json ForwardTask::to_json() const {
  return {{"id", id}, {"kind", "forward"}, {"model", model}, {"dtype", dtype}, {"tokens", tokens},
          {"layers", layers}, {"hidden", hidden}, {"logits", logits}, {"repeat", repeat}};
}

ForwardTask ForwardTask::from_json(const nlohmann::json& j, const std::string& where) {
  auto fail = [&](const std::string& what) { throw InputError(where + ": " + what); };
  if (!j.is_object()) fail("a task must be a JSON object");
  static const std::set<std::string> known = {"id", "kind", "model", "dtype", "tokens", "layers", "hidden", "logits", "repeat"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!known.count(it.key())) fail("unknown field \"" + it.key() + "\"");
  auto str = [&](const char* key, bool required, const std::string& fallback) -> std::string {
    if (!j.contains(key)) {
      if (required) fail(std::string("missing field \"") + key + "\"");
      return fallback;
    }
    if (!j[key].is_string() || j[key].get<std::string>().empty()) fail(std::string("\"") + key + "\" must be a non-empty string");
    return j[key].get<std::string>();
  };
  auto boolean = [&](const char* key, bool fallback) {
    if (!j.contains(key)) return fallback;
    if (!j[key].is_boolean()) fail(std::string("\"") + key + "\" must be true or false");
    return j[key].get<bool>();
  };
  auto ints = [&](const nlohmann::json& a, const std::string& what) {
    if (!a.is_array()) fail(what + " must be an array of integers");
    std::vector<int64_t> out;
    for (const auto& v : a) {
      if (!v.is_number_integer()) fail(what + " must be an array of integers (found " + v.dump() + ")");
      out.push_back(v.get<int64_t>());
    }
    return out;
  };
  ForwardTask t;
  t.id = str("id", true, "");
  if (t.id.find_first_of("/\\") != std::string::npos || t.id[0] == '.') fail("\"id\" must be a plain file name");
  std::string kind = str("kind", false, "forward");
  if (kind != "forward") fail("unknown task kind \"" + kind + "\" (known: forward)");
  t.model = str("model", true, "");
  t.dtype = str("dtype", false, "float32");
  if (!j.contains("tokens")) fail("missing field \"tokens\"");
  if (!j["tokens"].is_array() || j["tokens"].empty()) fail("\"tokens\" must be a non-empty array of token-id arrays");
  for (size_t i = 0; i < j["tokens"].size(); ++i) {
    t.tokens.push_back(ints(j["tokens"][i], "\"tokens\"[" + std::to_string(i) + "]"));
    if (t.tokens.back().empty()) fail("\"tokens\"[" + std::to_string(i) + "] is empty");
  }
  if (j.contains("layers")) t.layers = ints(j["layers"], "\"layers\"");
  t.hidden = boolean("hidden", false);
  t.logits = boolean("logits", true);
  if (j.contains("repeat")) {
    if (!j["repeat"].is_number_integer() || j["repeat"].get<int64_t>() < 1) fail("\"repeat\" must be a positive integer");
    t.repeat = j["repeat"].get<int64_t>();
  }
  return t;
}

nlohmann::json ExperimentTaskLine::to_json() const {
  return {{"id", id}, {"kind", kind}, {"payload", payload}, {"inputs", inputs}};
}

ExperimentTaskLine ExperimentTaskLine::from_json(const nlohmann::json& j, const std::string& where) {
  auto fail = [&](const std::string& what) { throw InputError(where + ": " + what); };
  static const std::set<std::string> known = {"id", "kind", "payload", "inputs"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!known.count(it.key())) fail("unknown field \"" + it.key() + "\" in an experiment task (id, kind, payload, inputs)");
  ExperimentTaskLine t;
  if (!j.contains("id") || !j["id"].is_string() || j["id"].get<std::string>().empty()) fail("missing \"id\"");
  t.id = j["id"].get<std::string>();
  if (t.id.find_first_of("/\\") != std::string::npos || t.id[0] == '.') fail("\"id\" must be a plain file name");
  t.kind = j.at("kind").get<std::string>();
  if (!j.contains("payload") || !j["payload"].is_object()) fail("\"payload\" must be an object");
  t.payload = j["payload"];
  if (j.contains("inputs")) {
    if (!j["inputs"].is_object()) fail("\"inputs\" must be an object (dependency key -> result)");
    t.inputs = j["inputs"];
  }
  return t;
}

WorkerTask WorkerTask::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw InputError(where + ": a task must be a JSON object");
  WorkerTask t;
  t.kind = j.contains("kind") && j["kind"].is_string() ? j["kind"].get<std::string>() : "forward";
  if (t.kind == "forward")
    t.forward = ForwardTask::from_json(j, where);
  else if (t.kind == "distances" || t.kind == "evaluate" || t.kind == "heal")
    t.experiment = ExperimentTaskLine::from_json(j, where);
  else
    throw InputError(where + ": unknown task kind \"" + t.kind + "\" (forward, distances, evaluate, heal)");
  return t;
}

std::vector<WorkerTask> read_tasks(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot open the tasks file");
  std::vector<WorkerTask> tasks;
  std::set<std::string> ids;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string where = path + ":" + std::to_string(lineno);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw InputError(where + ": not valid JSON (" + e.what() + ")");
    }
    tasks.push_back(WorkerTask::from_json(j, where));
    if (!ids.insert(tasks.back().id()).second) throw InputError(where + ": duplicate task id \"" + tasks.back().id() + "\"");
  }
  if (tasks.empty()) throw InputError(path + ": no tasks");
  return tasks;
}

}  // namespace layerprune
