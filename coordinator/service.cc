#include "coordinator/service.h"

#include "coordinator/sqlite.h"
#include "formats/json_input.h"

#include <algorithm>
#include <chrono>
#include <thread>

namespace layerprune {

namespace {

using Clock = std::chrono::steady_clock;

// The store's errors as gRPC statuses: a message the user can act on, with the right code.
template <typename F>
grpc::Status answer(F&& f) {
  try {
    f();
    return grpc::Status::OK;
  } catch (const NotFound& e) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, e.what());
  } catch (const ExperimentExists& e) {
    return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, e.what());
  } catch (const InputError& e) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, e.what());
  } catch (const sqlite::WriteFailed& e) {  // a full disk: nothing committed; the caller may try again later
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, std::string("coordinator: ") + e.what());
  } catch (const std::exception& e) {
    return grpc::Status(grpc::StatusCode::INTERNAL, std::string("coordinator: ") + e.what());
  }
}

}  // namespace

void to_proto(const ExperimentStatus& s, v1::ExperimentStatus* out) {
  out->set_experiment_id(s.experiment_id);
  out->set_name(s.name);
  out->set_state(s.state);
  for (const auto& [state, n] : s.task_counts) (*out->mutable_task_counts())[state] = n;
  out->set_points_total(s.points_total);
  out->set_points_done(s.points_done);
  out->set_finished(s.finished);
  out->set_created_ms(s.created_ms);
  for (const TaskStatus& t : s.tasks) {
    auto* p = out->add_tasks();
    p->set_key(t.key);
    p->set_kind(t.kind);
    p->set_model(t.model);
    p->set_state(t.state);
    p->set_worker(t.worker);
    p->set_attempts(t.attempts);
    p->set_failures(t.failures);
    p->set_error(t.error);
  }
}

bool is_loopback_address(const std::string& address) {
  std::string host = address;
  if (!host.empty() && host[0] == '[') {
    host = host.substr(1, host.find(']') == std::string::npos ? std::string::npos : host.find(']') - 1);
  } else if (auto colon = host.rfind(':'); colon != std::string::npos && host.find(':') == colon) {
    host = host.substr(0, colon);
  }
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

CoordinatorService::CoordinatorService(Store& store, ServiceOptions options)
    : store_(store), options_(std::move(options)) {}

grpc::Status CoordinatorService::authorize(const grpc::ServerContext* context) const {
  if (options_.token.empty()) return grpc::Status::OK;
  const std::string expected = "Bearer " + options_.token;
  const auto& md = context->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end())
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "this coordinator requires a token: pass the file given to its --token-file "
                        "(or set LAYERPRUNE_COORDINATOR_TOKEN_FILE)");
  const std::string given(it->second.data(), it->second.size());
  // Constant time in the token's length: no early exit on the first wrong byte.
  unsigned diff = given.size() != expected.size();
  for (size_t i = 0; i < expected.size(); ++i) diff |= unsigned(char(expected[i] ^ (i < given.size() ? given[i] : 0)));
  if (diff)
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "wrong token: use the same file as the coordinator's --token-file");
  return grpc::Status::OK;
}

void CoordinatorService::changed() {
  ++generation_;
  cv_.notify_all();
}

int64_t CoordinatorService::reap() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t n = store_.expire_leases();
  if (n) changed();
  return n;
}

void CoordinatorService::stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = true;
  cv_.notify_all();
}

// ---- users ----

grpc::Status CoordinatorService::Submit(grpc::ServerContext* ctx, const v1::SubmitRequest* req,
                                        v1::SubmitReply* rep) {
  if (auto s = authorize(ctx); !s.ok()) return s;
  return answer([&] {
    Submission sub;
    sub.name = req->name();
    sub.experiment_json = req->experiment_json();
    sub.points = points_from_json(parse_json_input(req->points_json(), "points_json", kMaxJsonDepth));
    sub.tasks = tasks_from_json(parse_json_input(req->tasks_json(), "tasks_json", kMaxJsonDepth));
    std::lock_guard<std::mutex> lock(mu_);
    SubmitOutcome o = store_.submit(sub);
    if (!o.existed) changed();
    rep->set_experiment_id(o.experiment_id);
    rep->set_existed(o.existed);
    rep->set_points(o.points);
    rep->set_tasks(o.tasks);
  });
}

grpc::Status CoordinatorService::WatchStatus(grpc::ServerContext* ctx, const v1::WatchStatusRequest* req,
                                             grpc::ServerWriter<v1::ExperimentStatus>* writer) {
  if (auto s = authorize(ctx); !s.ok()) return s;
  for (;;) {
    v1::ExperimentStatus msg;
    uint64_t seen = 0;
    bool finished = false;
    grpc::Status st = answer([&] {
      std::lock_guard<std::mutex> lock(mu_);
      ExperimentStatus s = store_.status(req->experiment_id(), req->include_tasks());
      seen = generation_;
      finished = s.finished;
      to_proto(s, &msg);
    });
    if (!st.ok()) return st;
    if (!writer->Write(msg)) return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    if (!req->follow() || finished) return grpc::Status::OK;
    // At most one update a second however fast tasks finish (a status reads the whole experiment's task
    // list under the store's mutex), and one every few seconds when nothing changes (a keep-alive the
    // client's deadline relies on).
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::seconds(1), [&] { return stopping_; });
      cv_.wait_for(lock, std::chrono::seconds(2), [&] { return generation_ != seen || stopping_; });
      if (stopping_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down");
    }
    if (ctx->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
  }
}

grpc::Status CoordinatorService::Cancel(grpc::ServerContext* ctx, const v1::CancelRequest* req, v1::CancelReply* rep) {
  if (auto s = authorize(ctx); !s.ok()) return s;
  return answer([&] {
    std::lock_guard<std::mutex> lock(mu_);
    CancelOutcome c = store_.cancel(req->experiment_id());
    changed();
    rep->set_cancelled(c.cancelled);
    rep->set_leased(c.leased);
  });
}

grpc::Status CoordinatorService::ListExperiments(grpc::ServerContext* ctx, const v1::ListExperimentsRequest*,
                                                 v1::ListExperimentsReply* rep) {
  if (auto s = authorize(ctx); !s.ok()) return s;
  return answer([&] {
    std::lock_guard<std::mutex> lock(mu_);
    for (const ExperimentStatus& s : store_.list()) to_proto(s, rep->add_experiments());
  });
}

grpc::Status CoordinatorService::QueryResults(grpc::ServerContext* ctx, const v1::QueryResultsRequest* req,
                                              v1::QueryResultsReply* rep) {
  if (auto s = authorize(ctx); !s.ok()) return s;
  return answer([&] {
    const std::string what = req->what().empty() ? "results" : req->what();
    std::lock_guard<std::mutex> lock(mu_);
    if (what == "results") {
      for (const ResultRow& r : store_.results(req->experiment_id(), req->model(), req->point())) {
        auto* p = rep->add_results();
        p->set_point(r.point);
        p->set_model(r.model);
        p->set_n(r.n);
        p->set_layers(r.layers);
        p->set_strategy(r.strategy);
        p->set_healing(r.healing);
        p->set_seed(r.seed);
        p->set_metric(r.metric);
        p->set_value(r.value);
      }
    } else if (what == "items") {
      rep->set_json(store_.eval_items(req->experiment_id(), req->point()).dump());
    } else if (what == "distances") {
      rep->set_json(store_.distances(req->experiment_id(), req->model()).dump());
    } else if (what == "provenance") {
      rep->set_json(store_.provenance(req->experiment_id()).dump());
    } else {
      throw InputError("unknown query \"" + what + "\" (expected results, items, distances or provenance)");
    }
  });
}

// ---- workers ----

grpc::Status CoordinatorService::RegisterWorker(grpc::ServerContext* ctx, const v1::RegisterWorkerRequest* req,
                                                v1::RegisterWorkerReply* rep) {
  if (auto s = authorize(ctx); !s.ok()) return s;
  return answer([&] {
    std::lock_guard<std::mutex> lock(mu_);
    rep->set_worker_id(store_.register_worker({req->name(), req->host(), req->code_version(), req->pid()}));
    rep->set_lease_ms(store_.options().lease_ms);
    rep->set_heartbeat_ms(std::max<int64_t>(1, store_.options().lease_ms / 3));
  });
}

grpc::Status CoordinatorService::Lease(grpc::ServerContext* ctx, const v1::LeaseRequest* req, v1::LeaseReply* rep) {
  if (auto s = authorize(ctx); !s.ok()) return s;
  return answer([&] {
    const auto until = Clock::now() + std::chrono::milliseconds(std::clamp<int64_t>(req->wait_ms(), 0, options_.max_wait_ms));
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      std::optional<layerprune::Lease> l = store_.lease(req->worker_id(), req->loaded_model(), req->tp());
      if (l) {
        changed();
        rep->set_granted(true);
        auto* p = rep->mutable_lease();
        p->set_task_id(l->task_id);
        p->set_task_key(l->task_key);
        p->set_kind(l->kind);
        p->set_model(l->model);
        p->set_experiment_id(l->experiment_id);
        p->set_experiment(l->experiment);
        p->set_payload_json(l->payload.dump());
        p->set_points_json(l->points.dump());
        p->set_dependencies_json(l->dependencies.dump());
        p->set_attempt(l->attempt);
        p->set_checkpoint(l->checkpoint);
        p->set_token(l->token);
        p->set_lease_ms(l->lease_ms);
        return;
      }
      const auto now = Clock::now();
      if (stopping_ || now >= until || ctx->IsCancelled()) break;
      // Woken by any change; the 500 ms tick catches back-offs that end without one (it also bounds the
      // empty lease transactions idle workers cause: two per second each).
      cv_.wait_until(lock, std::min(until, now + std::chrono::milliseconds(500)));
    }
    rep->set_granted(false);
    rep->set_drained(store_.drained());
    rep->set_retry_after_ms(rep->drained() ? 1000 : 250);
  });
}

grpc::Status CoordinatorService::Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                                           v1::HeartbeatReply* rep) {
  if (auto s = authorize(ctx); !s.ok()) return s;
  return answer([&] {
    std::lock_guard<std::mutex> lock(mu_);
    HeartbeatAnswer a = store_.heartbeat(req->worker_id(), req->task_id(), req->token(), req->checkpoint());
    if (a.action == LeaseAction::kLost) changed();  // may have expired the lease on the spot
    rep->set_action(a.action == LeaseAction::kContinue ? v1::HeartbeatReply::CONTINUE
                    : a.action == LeaseAction::kCancel ? v1::HeartbeatReply::CANCEL
                                                       : v1::HeartbeatReply::LEASE_LOST);
    rep->set_reason(a.reason);
    rep->set_lease_ms(a.lease_ms);
  });
}

grpc::Status CoordinatorService::Report(grpc::ServerContext* ctx, const v1::ReportRequest* req, v1::ReportReply* rep) {
  if (auto s = authorize(ctx); !s.ok()) return s;
  return answer([&] {
    std::lock_guard<std::mutex> lock(mu_);
    Verdict v = store_.report(req->worker_id(), req->task_id(), req->token(), req->result_json());
    changed();
    rep->set_accepted(v.accepted);
    rep->set_duplicate(v.duplicate);
    rep->set_reason(v.reason);
  });
}

grpc::Status CoordinatorService::Fail(grpc::ServerContext* ctx, const v1::FailRequest* req, v1::FailReply* rep) {
  if (auto s = authorize(ctx); !s.ok()) return s;
  return answer([&] {
    std::lock_guard<std::mutex> lock(mu_);
    Verdict v = store_.fail(req->worker_id(), req->task_id(), req->token(), req->error(), req->retryable());
    changed();
    rep->set_accepted(v.accepted);
    rep->set_duplicate(v.duplicate);
    rep->set_reason(v.reason);
    rep->set_task_state(v.task_state);
  });
}

grpc::Status CoordinatorService::Release(grpc::ServerContext* ctx, const v1::ReleaseRequest* req,
                                         v1::ReleaseReply* rep) {
  if (auto s = authorize(ctx); !s.ok()) return s;
  return answer([&] {
    std::lock_guard<std::mutex> lock(mu_);
    Verdict v = store_.release(req->worker_id(), req->task_id(), req->token(), req->checkpoint(), req->reason());
    changed();
    rep->set_accepted(v.accepted);
    rep->set_duplicate(v.duplicate);
    rep->set_reason(v.reason);
  });
}

}  // namespace layerprune
