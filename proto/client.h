// The C++ client of the coordinator, for workers and the CLI (Torch-free; gRPC stays inside client.cc).
//
// Every call has a deadline. A coordinator that cannot be reached (not running, wrong address, restarting)
// is retried with back-off for ClientOptions::retry_for, then CoordinatorUnavailable says which address
// was tried, how often, and the last error: never a hang. Report, Fail and Release are safe to retry
// (the coordinator answers a repeat of the same token as a duplicate), and so is Submit (idempotent by
// name and configuration).
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "proto/records.h"
#include "experiment/submission.h"

namespace layerprune {

// Exit status of a program that gives up on an unreachable coordinator (0 ok, 1 error, 2 usage/input,
// 3 stopped by SIGTERM after a checkpoint).
constexpr int kExitCoordinatorUnavailable = 4;

// No answer from the coordinator within the retry window.
struct CoordinatorUnavailable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The coordinator answered with an error: code is the gRPC status code (3 INVALID_ARGUMENT, 5 NOT_FOUND,
// 6 ALREADY_EXISTS, 16 UNAUTHENTICATED, ...), the message says what to fix.
struct CoordinatorError : std::runtime_error {
  CoordinatorError(int grpc_code, const std::string& message) : std::runtime_error(message), code(grpc_code) {}
  int code;
};

struct ClientOptions {
  std::string token;   // shared secret ("" when the coordinator runs without --token-file)
  std::string tls_ca;  // PEM file of the CA that signed the coordinator's certificate ("": plaintext)
  std::chrono::milliseconds rpc_timeout{10'000};  // deadline of one call (a long poll adds its wait)
  std::chrono::milliseconds retry_for{30'000};    // keep retrying an unreachable coordinator this long
  // The file the address came from (its --address-file), or "". While the coordinator does not answer, the
  // client re-reads it before each retry and follows a new address there: a coordinator restarted
  // elsewhere (a requeued Slurm job) is found again within the retry window.
  std::string address_file;
};

// Where the coordinator is: an address, or the file its --address-file wrote.
struct CoordinatorEndpoint {
  std::string address;  // host:port
  std::string address_file;  // where it was read from ("" when given as host:port)
  std::string token;
  std::string tls_ca;
};

// `where` is "host:port" or the path of an address file; "" reads $LAYERPRUNE_COORDINATOR (either form).
// The token comes from `token_file`, else $LAYERPRUNE_COORDINATOR_TOKEN_FILE, else none. InputError says
// what to set when no address can be found.
CoordinatorEndpoint find_coordinator(const std::string& where = "", const std::string& token_file = "",
                                     const std::string& tls_ca = "");

class CoordinatorClient {
 public:
  CoordinatorClient(std::string address, std::string token = "", std::string tls_ca = "");
  CoordinatorClient(std::string address, ClientOptions options);
  explicit CoordinatorClient(const CoordinatorEndpoint& endpoint, ClientOptions options = {});
  ~CoordinatorClient();
  CoordinatorClient(const CoordinatorClient&) = delete;
  CoordinatorClient& operator=(const CoordinatorClient&) = delete;

  std::string address() const;  // the one in use (it follows ClientOptions::address_file)

  // ---- workers ----
  // Returns the worker id. Remembers the coordinator's lease length and heartbeat interval.
  std::string register_worker(const WorkerInfo& info);
  int64_t lease_ms() const;
  int64_t heartbeat_ms() const;
  // The next task, waiting up to `wait` on the coordinator for one (long poll); nullopt when none came.
  // *drained (if given) tells whether nothing at all is left to do.
  // tp > 0: only tasks of that tensor-parallel size (the group's); 0: any.
  std::optional<Lease> lease(const std::string& worker_id, const std::string& loaded_model,
                             std::chrono::milliseconds wait = std::chrono::milliseconds(5000),
                             bool* drained = nullptr, int tp = 0);
  HeartbeatAnswer heartbeat(const std::string& worker_id, const Lease& lease, const std::string& checkpoint = "");
  Verdict report(const std::string& worker_id, const Lease& lease, const nlohmann::json& result);
  Verdict fail(const std::string& worker_id, const Lease& lease, const std::string& error, bool retryable = true);
  Verdict release(const std::string& worker_id, const Lease& lease, const std::string& checkpoint = "",
                  const std::string& reason = "");

  // ---- users ----
  SubmitOutcome submit(const Submission& submission);
  // Needs Experiment::to_json (lp_experiment) at link time, only where it is called.
  SubmitOutcome submit(const ExperimentPlan& plan) {
    return submit(make_submission(plan, plan.experiment.to_json().dump()));
  }
  // The status now; with follow, every update until the experiment is finished. on_status sees each one;
  // the last is returned.
  ExperimentStatus watch_status(int64_t experiment_id, bool follow,
                                const std::function<void(const ExperimentStatus&)>& on_status = {},
                                bool include_tasks = false);
  CancelOutcome cancel(int64_t experiment_id);
  std::vector<ExperimentStatus> list();
  std::vector<ResultRow> query_results(int64_t experiment_id, const std::string& model = "",
                                       const std::string& point = "");
  // what: "items" | "distances" | "provenance": a JSON array (coordinator/store.h).
  nlohmann::json query(int64_t experiment_id, const std::string& what, const std::string& model = "",
                       const std::string& point = "");

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace layerprune
