#include "proto/client.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "common/error.h"
#include "common/text_file.h"
#include "proto/layerprune.grpc.pb.h"

namespace layerprune {

namespace {

using Clock = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;

std::string trim(std::string s) {
  while (!s.empty() && std::isspace((unsigned char)s.back())) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace((unsigned char)s[i])) ++i;
  return s.substr(i);
}

bool is_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

const char* code_name(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    default: return "error";
  }
}

ExperimentStatus from_proto(const v1::ExperimentStatus& p) {
  ExperimentStatus s;
  s.experiment_id = p.experiment_id();
  s.name = p.name();
  s.state = p.state();
  for (const auto& [state, n] : p.task_counts()) s.task_counts[state] = n;
  s.points_total = p.points_total();
  s.points_done = p.points_done();
  s.finished = p.finished();
  s.created_ms = p.created_ms();
  for (const auto& t : p.tasks())
    s.tasks.push_back(TaskStatus{t.key(), t.kind(), t.model(), t.state(), t.worker(), t.error(), t.attempts(), t.failures()});
  return s;
}

}  // namespace

CoordinatorEndpoint find_coordinator(const std::string& where, const std::string& token_file, const std::string& tls_ca) {
  CoordinatorEndpoint e;
  std::string w = where;
  std::string source = "the given address";
  if (w.empty()) {
    const char* env = std::getenv("LAYERPRUNE_COORDINATOR");
    if (!env || !*env)
      throw InputError(
          "where is the coordinator? Give its address (host:port) or the file its --address-file wrote, or set "
          "LAYERPRUNE_COORDINATOR to either");
    w = env;
    source = "$LAYERPRUNE_COORDINATOR";
  }
  if (is_file(w)) {
    std::istringstream in(read_file(w));
    std::getline(in, e.address);
    e.address = trim(e.address);
    if (e.address.empty()) throw InputError(w + ": the address file is empty (has the coordinator started?)");
    e.address_file = w;
  } else if (w.find(':') != std::string::npos && w.find('/') == std::string::npos) {
    e.address = w;
  } else {
    throw InputError(source + " \"" + w + "\" is neither host:port nor an existing address file");
  }
  std::string tf = token_file;
  if (tf.empty())
    if (const char* env = std::getenv("LAYERPRUNE_COORDINATOR_TOKEN_FILE"); env && *env) tf = env;
  if (!tf.empty()) {
    e.token = trim(read_file(tf));
    if (e.token.empty()) throw InputError(tf + ": the token file is empty");
  }
  e.tls_ca = tls_ca;
  return e;
}

struct CoordinatorClient::Impl {
  ClientOptions options;
  std::shared_ptr<grpc::ChannelCredentials> creds;
  std::mutex mu;  // guards address and stub: the heartbeat thread and the main thread share one client
  std::string address;
  std::shared_ptr<v1::Coordinator::Stub> stub;
  int64_t lease_ms = 0, heartbeat_ms = 0;

  Impl(std::string addr, ClientOptions opts) : options(std::move(opts)), address(std::move(addr)) {
    creds = grpc::InsecureChannelCredentials();
    if (!options.tls_ca.empty()) {
      grpc::SslCredentialsOptions tls;
      tls.pem_root_certs = read_file(options.tls_ca);
      creds = grpc::SslCredentials(tls);
    }
    stub = connect();
  }

  std::shared_ptr<v1::Coordinator::Stub> connect() const {
    grpc::ChannelArguments args;
    // Own subchannels, not gRPC's process-wide pool: a new channel (below) then means a new connection.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetMaxReceiveMessageSize(256 << 20);
    args.SetMaxSendMessageSize(256 << 20);
    return v1::Coordinator::NewStub(grpc::CreateCustomChannel(address, creds, args));
  }

  std::shared_ptr<v1::Coordinator::Stub> current() {
    std::lock_guard<std::mutex> lock(mu);
    return stub;
  }
  std::string where() {
    std::lock_guard<std::mutex> lock(mu);
    return address;
  }

  // After a failed call: a fresh channel. A channel whose coordinator was killed kept answering
  // "connection refused" for seconds after a new coordinator listened on the same address (measured with
  // gRPC 1.51), which would leave workers idle (and their leases expiring) after a coordinator restart.
  // The coordinator may also have moved: its address file (when the address came from one) says where.
  void reconnect(const std::shared_ptr<v1::Coordinator::Stub>& failed) {
    std::lock_guard<std::mutex> lock(mu);
    if (stub != failed) return;
    if (!options.address_file.empty()) {
      std::string now;
      try {
        std::istringstream in(read_file(options.address_file));
        std::getline(in, now);
        now = trim(now);
      } catch (const std::exception&) {  // withdrawn while it restarts: keep trying the last one
      }
      if (!now.empty() && now != address) {
        std::fprintf(stderr, "coordinator client: %s now says %s (was %s)\n", options.address_file.c_str(), now.c_str(),
                     address.c_str());
        address = now;
      }
    }
    stub = connect();
  }

  void prepare(grpc::ClientContext* ctx, ms timeout) const {
    ctx->set_deadline(std::chrono::system_clock::now() + timeout);
    if (!options.token.empty()) ctx->AddMetadata("authorization", "Bearer " + options.token);
  }

  [[noreturn]] void answer_error(const char* what, const grpc::Status& s) {
    std::string msg = std::string(what) + ": the coordinator at " + where() + " answered " +
                      code_name(s.error_code()) + ": " + s.error_message();
    throw CoordinatorError(int(s.error_code()), msg);
  }

  // One unary call, retried while the coordinator cannot be reached (UNAVAILABLE) or does not answer in
  // time (DEADLINE_EXCEEDED), for options.retry_for; any other error is the coordinator's answer.
  template <typename Req, typename Rep>
  Rep call(const char* what,
           grpc::Status (v1::Coordinator::Stub::*method)(grpc::ClientContext*, const Req&, Rep*),
           const Req& req, ms extra = ms(0)) {
    const auto start = Clock::now();
    ms pause(100);
    int tries = 0;
    for (;;) {
      grpc::ClientContext ctx;
      prepare(&ctx, options.rpc_timeout + extra);
      Rep rep;
      auto used = current();
      grpc::Status s = (used.get()->*method)(&ctx, req, &rep);
      ++tries;
      if (s.ok()) return rep;
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE && s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED)
        answer_error(what, s);
      const auto elapsed = Clock::now() - start;
      if (elapsed + pause > options.retry_for) {
        std::ostringstream m;
        m.precision(2);
        m << what << ": cannot reach the coordinator at " << where() << " (" << tries << " tries over " << std::fixed
          << std::chrono::duration<double>(elapsed).count() << " s; last error: " << code_name(s.error_code())
          << ": " << s.error_message()
          << "). Is layerprune-coordinator running, and is this its address (its --address-file, or "
             "$LAYERPRUNE_COORDINATOR)?";
        throw CoordinatorUnavailable(m.str());
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, ms(1000));
      if (s.error_code() == grpc::StatusCode::UNAVAILABLE) reconnect(used);
    }
  }
};

CoordinatorClient::CoordinatorClient(std::string address, std::string token, std::string tls_ca) {
  ClientOptions o;
  o.token = std::move(token);
  o.tls_ca = std::move(tls_ca);
  impl_ = std::make_unique<Impl>(std::move(address), std::move(o));
}

CoordinatorClient::CoordinatorClient(std::string address, ClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(address), std::move(options))) {}

CoordinatorClient::CoordinatorClient(const CoordinatorEndpoint& endpoint, ClientOptions options) {
  options.token = endpoint.token;
  if (!endpoint.tls_ca.empty()) options.tls_ca = endpoint.tls_ca;
  if (options.address_file.empty()) options.address_file = endpoint.address_file;
  impl_ = std::make_unique<Impl>(endpoint.address, std::move(options));
}

CoordinatorClient::~CoordinatorClient() = default;

std::string CoordinatorClient::address() const { return impl_->where(); }
int64_t CoordinatorClient::lease_ms() const { return impl_->lease_ms; }
int64_t CoordinatorClient::heartbeat_ms() const { return impl_->heartbeat_ms; }

std::string CoordinatorClient::register_worker(const WorkerInfo& info) {
  v1::RegisterWorkerRequest req;
  req.set_name(info.name);
  req.set_host(info.host);
  req.set_pid(info.pid);
  req.set_code_version(info.code_version);
  auto rep = impl_->call("register worker", &v1::Coordinator::Stub::RegisterWorker, req);
  impl_->lease_ms = rep.lease_ms();
  impl_->heartbeat_ms = rep.heartbeat_ms();
  return rep.worker_id();
}

std::optional<Lease> CoordinatorClient::lease(const std::string& worker_id, const std::string& loaded_model,
                                              std::chrono::milliseconds wait, bool* drained, int tp) {
  v1::LeaseRequest req;
  req.set_worker_id(worker_id);
  req.set_loaded_model(loaded_model);
  req.set_tp(tp);
  req.set_wait_ms(wait.count());
  auto rep = impl_->call("lease", &v1::Coordinator::Stub::Lease, req, wait);
  if (drained) *drained = rep.drained();
  if (!rep.granted()) return std::nullopt;
  const auto& p = rep.lease();
  Lease l;
  l.task_id = p.task_id();
  l.task_key = p.task_key();
  l.kind = p.kind();
  l.model = p.model();
  l.experiment_id = p.experiment_id();
  l.experiment = p.experiment();
  l.payload = nlohmann::json::parse(p.payload_json());
  l.points = nlohmann::json::parse(p.points_json());
  l.dependencies = nlohmann::json::parse(p.dependencies_json());
  l.attempt = p.attempt();
  l.checkpoint = p.checkpoint();
  l.token = p.token();
  l.lease_ms = p.lease_ms();
  return l;
}

HeartbeatAnswer CoordinatorClient::heartbeat(const std::string& worker_id, const Lease& lease,
                                             const std::string& checkpoint) {
  v1::HeartbeatRequest req;
  req.set_worker_id(worker_id);
  req.set_task_id(lease.task_id);
  req.set_token(lease.token);
  req.set_checkpoint(checkpoint);
  auto rep = impl_->call("heartbeat", &v1::Coordinator::Stub::Heartbeat, req);
  HeartbeatAnswer a;
  a.action = rep.action() == v1::HeartbeatReply::CONTINUE ? LeaseAction::kContinue
             : rep.action() == v1::HeartbeatReply::CANCEL ? LeaseAction::kCancel
                                                          : LeaseAction::kLost;
  a.reason = rep.reason();
  a.lease_ms = rep.lease_ms();
  return a;
}

Verdict CoordinatorClient::report(const std::string& worker_id, const Lease& lease, const nlohmann::json& result) {
  v1::ReportRequest req;
  req.set_worker_id(worker_id);
  req.set_task_id(lease.task_id);
  req.set_token(lease.token);
  req.set_result_json(result.dump());
  auto rep = impl_->call("report", &v1::Coordinator::Stub::Report, req);
  return Verdict{rep.accepted(), rep.duplicate(), rep.reason(), rep.accepted() ? "done" : ""};
}

Verdict CoordinatorClient::fail(const std::string& worker_id, const Lease& lease, const std::string& error,
                                bool retryable) {
  v1::FailRequest req;
  req.set_worker_id(worker_id);
  req.set_task_id(lease.task_id);
  req.set_token(lease.token);
  req.set_error(error);
  req.set_retryable(retryable);
  auto rep = impl_->call("fail", &v1::Coordinator::Stub::Fail, req);
  return Verdict{rep.accepted(), rep.duplicate(), rep.reason(), rep.task_state()};
}

Verdict CoordinatorClient::release(const std::string& worker_id, const Lease& lease, const std::string& checkpoint,
                                   const std::string& reason) {
  v1::ReleaseRequest req;
  req.set_worker_id(worker_id);
  req.set_task_id(lease.task_id);
  req.set_token(lease.token);
  req.set_checkpoint(checkpoint);
  req.set_reason(reason);
  auto rep = impl_->call("release", &v1::Coordinator::Stub::Release, req);
  return Verdict{rep.accepted(), rep.duplicate(), rep.reason(), ""};
}

SubmitOutcome CoordinatorClient::submit(const Submission& s) {
  v1::SubmitRequest req;
  req.set_name(s.name);
  req.set_experiment_json(s.experiment_json);
  req.set_points_json(points_json(s.points).dump());
  req.set_tasks_json(tasks_json(s.tasks).dump());
  auto rep = impl_->call("submit", &v1::Coordinator::Stub::Submit, req);
  return SubmitOutcome{rep.experiment_id(), rep.existed(), rep.points(), rep.tasks()};
}

ExperimentStatus CoordinatorClient::watch_status(int64_t experiment_id, bool follow,
                                                 const std::function<void(const ExperimentStatus&)>& on_status,
                                                 bool include_tasks) {
  v1::WatchStatusRequest req;
  req.set_experiment_id(experiment_id);
  req.set_follow(follow);
  req.set_include_tasks(include_tasks);
  ExperimentStatus last;
  const auto start = Clock::now();
  auto last_contact = start;
  for (;;) {
    grpc::ClientContext ctx;
    if (!impl_->options.token.empty()) ctx.AddMetadata("authorization", "Bearer " + impl_->options.token);
    // A followed stream gets a deadline too (the coordinator re-sends the status at least every few
    // seconds): a coordinator that stops answering is noticed, and the stream is simply reopened.
    ctx.set_deadline(std::chrono::system_clock::now() + (follow ? 3 : 1) * impl_->options.rpc_timeout);
    auto stub = impl_->current();
    auto reader = stub->WatchStatus(&ctx, req);
    v1::ExperimentStatus msg;
    bool got = false;
    while (reader->Read(&msg)) {
      got = true;
      last_contact = Clock::now();
      last = from_proto(msg);
      if (on_status) on_status(last);
    }
    grpc::Status s = reader->Finish();
    if (s.ok() && got && (!follow || last.finished)) return last;
    if (!s.ok() && s.error_code() != grpc::StatusCode::UNAVAILABLE &&
        s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED)
      impl_->answer_error("watch status", s);
    // The stream broke (the coordinator restarted): reconnect while within the retry window.
    if (Clock::now() - last_contact > impl_->options.retry_for)
      throw CoordinatorUnavailable("watch status: lost the coordinator at " + impl_->where() + " (" +
                                   s.error_message() + ") and could not reconnect");
    std::this_thread::sleep_for(ms(200));
    impl_->reconnect(stub);
  }
}

CancelOutcome CoordinatorClient::cancel(int64_t experiment_id) {
  v1::CancelRequest req;
  req.set_experiment_id(experiment_id);
  auto rep = impl_->call("cancel", &v1::Coordinator::Stub::Cancel, req);
  return CancelOutcome{rep.cancelled(), rep.leased()};
}

std::vector<ExperimentStatus> CoordinatorClient::list() {
  v1::ListExperimentsRequest req;
  auto rep = impl_->call("list experiments", &v1::Coordinator::Stub::ListExperiments, req);
  std::vector<ExperimentStatus> out;
  for (const auto& e : rep.experiments()) out.push_back(from_proto(e));
  return out;
}

std::vector<ResultRow> CoordinatorClient::query_results(int64_t experiment_id, const std::string& model,
                                                        const std::string& point) {
  v1::QueryResultsRequest req;
  req.set_experiment_id(experiment_id);
  req.set_what("results");
  req.set_model(model);
  req.set_point(point);
  auto rep = impl_->call("query results", &v1::Coordinator::Stub::QueryResults, req);
  std::vector<ResultRow> rows;
  rows.reserve(size_t(rep.results_size()));
  for (const auto& r : rep.results())
    rows.push_back(ResultRow{r.point(), r.model(), r.n(), r.layers(), r.strategy(), r.healing(), r.seed(), r.metric(),
                             r.value()});
  return rows;
}

nlohmann::json CoordinatorClient::query(int64_t experiment_id, const std::string& what, const std::string& model,
                                        const std::string& point) {
  v1::QueryResultsRequest req;
  req.set_experiment_id(experiment_id);
  req.set_what(what);
  req.set_model(model);
  req.set_point(point);
  auto rep = impl_->call("query", &v1::Coordinator::Stub::QueryResults, req);
  return nlohmann::json::parse(rep.json());
}

}  // namespace layerprune
