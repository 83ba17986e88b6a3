// The coordinator's gRPC service (proto/layerprune.proto) over the store: every call is checked for the
// shared token (when one is set), then answered from the store under one mutex, so the store has exactly
// one writer and mutations are serialised. Lease is a long poll: it waits (up to a cap) for a task to
// become ready instead of making workers spin.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>

#include "coordinator/store.h"
#include "proto/layerprune.grpc.pb.h"

namespace layerprune {

struct ServiceOptions {
  std::string token;            // shared secret; "" = calls are not authenticated (loopback only)
  int64_t max_wait_ms = 10'000;  // cap on a Lease long poll
};

class CoordinatorService final : public v1::Coordinator::Service {
 public:
  CoordinatorService(Store& store, ServiceOptions options);

  grpc::Status Submit(grpc::ServerContext*, const v1::SubmitRequest*, v1::SubmitReply*) override;
  grpc::Status WatchStatus(grpc::ServerContext*, const v1::WatchStatusRequest*,
                           grpc::ServerWriter<v1::ExperimentStatus>*) override;
  grpc::Status Cancel(grpc::ServerContext*, const v1::CancelRequest*, v1::CancelReply*) override;
  grpc::Status ListExperiments(grpc::ServerContext*, const v1::ListExperimentsRequest*,
                               v1::ListExperimentsReply*) override;
  grpc::Status QueryResults(grpc::ServerContext*, const v1::QueryResultsRequest*, v1::QueryResultsReply*) override;
  grpc::Status RegisterWorker(grpc::ServerContext*, const v1::RegisterWorkerRequest*,
                              v1::RegisterWorkerReply*) override;
  grpc::Status Lease(grpc::ServerContext*, const v1::LeaseRequest*, v1::LeaseReply*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*, v1::HeartbeatReply*) override;
  grpc::Status Report(grpc::ServerContext*, const v1::ReportRequest*, v1::ReportReply*) override;
  grpc::Status Fail(grpc::ServerContext*, const v1::FailRequest*, v1::FailReply*) override;
  grpc::Status Release(grpc::ServerContext*, const v1::ReleaseRequest*, v1::ReleaseReply*) override;

  // Expires overdue leases (the reaper thread calls this); wakes waiting long polls when any expired.
  int64_t reap();
  // Ends long polls and status streams: before the server shuts down.
  void stop();

 private:
  grpc::Status authorize(const grpc::ServerContext* context) const;
  void changed();  // with mu_ held: wake long polls and status streams

  Store& store_;
  ServiceOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t generation_ = 0;  // bumped at every change (status streams wait for it)
  bool stopping_ = false;
};

void to_proto(const ExperimentStatus& s, v1::ExperimentStatus* out);

// "127.0.0.1:0", "localhost:50051", "[::1]:7000": is the host part a loopback address?
bool is_loopback_address(const std::string& address);

}  // namespace layerprune
