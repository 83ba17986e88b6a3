// libFuzzer target: the coordinator's request handlers (coordinator/service.h CoordinatorService) over a
// real Store (coordinator/store.h) on a fresh SQLite database per input, in the scratch directory. The
// handlers are called directly, as gRPC's server would call them, with a default-constructed
// grpc::ServerContext, no token (authorize() passes) and max_wait_ms = 0 (Lease never waits).
//
// Input: records, each [1 byte b][2 bytes little-endian length n][n bytes: the serialized request], until
// fewer than 3 bytes are left (a length past the end takes what is left). The request is that of RPC
// b % 10, in the proto's order without WatchStatus (it needs a ServerWriter):
//   0 Submit  1 Cancel  2 ListExperiments  3 QueryResults  4 RegisterWorker
//   5 Lease   6 Heartbeat  7 Report  8 Fail  9 Release
// bytes that do not parse as that request (ParseFromArray false) are skipped. b / 10 drives the clock:
// before each record the store's clock moves on by 1 ms + (b / 10) s, and from b >= 200 the reaper runs
// (service.reap(), as main.cc's reaper thread does) before the call: leases last 5 s, a failed task waits
// 1 s (doubling, capped at 8 s), 3 attempts, so time jumps expire leases and end back-offs.
//
// Worker ids are random ("w1-1a2b3c4d"): a worker_id that is the part before the '-' of a worker registered
// earlier in the same input ("w1") is replaced by the full id, so inputs can name the workers they
// registered; any other id reaches the store as it is. Experiment, task and attempt (token) ids come from
// a fresh database and so are the same on every run of an input: 1, 2, 3, ...
//
// Nothing is submitted or registered before the records: the seeds (fuzz/make_seeds.py) begin with a
// Submit of a small valid plan and a RegisterWorker, so mutations start from deep states, and the Submit
// itself (the plan's checks) is fuzzed too; every state an input reaches comes from its own bytes.
//
// The rule: every handler returns a grpc::Status (any code) and never throws, crashes or trips ASan/UBSan.
// After every record the store's invariants (coordinator/invariants.h, the queries bench/chaos.cc checks)
// must hold, and an accepted report must have left its task done: otherwise abort() with a message.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "coordinator/invariants.h"
#include "coordinator/service.h"
#include "coordinator/sqlite.h"
#include "coordinator/store.h"
#include "fuzz_support.h"

using namespace layerprune;

namespace {

int64_t g_now = 0;  // the store's clock (ms), moved on by the records

int64_t count(sqlite::Database& db, const char* sql) {
  auto st = db.prepare(sql);
  st.step();
  return st.int64(0);
}

class Session {
 public:
  explicit Session(const std::string& path) : store_(path, store_options()), service_(store_, service_options()) {}

  void record(uint8_t b, const uint8_t* p, size_t n) {
    g_now += 1 + int64_t(b / 10) * 1000;
    if (b >= 200) service_.reap();
    switch (b % 10) {
      case 0: feed<v1::SubmitRequest, v1::SubmitReply>(p, n, &CoordinatorService::Submit); break;
      case 1: feed<v1::CancelRequest, v1::CancelReply>(p, n, &CoordinatorService::Cancel); break;
      case 2: feed<v1::ListExperimentsRequest, v1::ListExperimentsReply>(p, n, &CoordinatorService::ListExperiments); break;
      case 3: feed<v1::QueryResultsRequest, v1::QueryResultsReply>(p, n, &CoordinatorService::QueryResults); break;
      case 4: {
        v1::RegisterWorkerReply rep;
        if (feed<v1::RegisterWorkerRequest>(p, n, &CoordinatorService::RegisterWorker, &rep)) {
          LPFUZZ_CHECK(!rep.worker_id().empty(), "a registered worker has an id");
          workers_.push_back(rep.worker_id());
        }
        break;
      }
      case 5: {
        v1::LeaseReply rep;
        if (feed<v1::LeaseRequest>(p, n, &CoordinatorService::Lease, &rep) && rep.granted())
          LPFUZZ_CHECK(state(rep.lease().task_id()) == "leased", "a granted lease leaves its task leased");
        break;
      }
      case 6: feed<v1::HeartbeatRequest, v1::HeartbeatReply>(p, n, &CoordinatorService::Heartbeat); break;
      case 7: {
        v1::ReportRequest req;
        v1::ReportReply rep;
        if (feed(p, n, &CoordinatorService::Report, &rep, &req) && rep.accepted())
          LPFUZZ_CHECK(state(req.task_id()) == "done", "an accepted report leaves its task done");
        break;
      }
      case 8: feed<v1::FailRequest, v1::FailReply>(p, n, &CoordinatorService::Fail); break;
      default: feed<v1::ReleaseRequest, v1::ReleaseReply>(p, n, &CoordinatorService::Release); break;
    }
    check_invariants();
  }

 private:
  static StoreOptions store_options() {
    StoreOptions o;
    o.lease_ms = 5000;
    o.max_attempts = 3;
    o.backoff_ms = 1000;
    o.backoff_cap_ms = 8000;
    o.clock = [] { return g_now; };
    return o;
  }
  static ServiceOptions service_options() {
    ServiceOptions o;
    o.max_wait_ms = 0;
    return o;
  }

  // "w1" -> the full id of the worker registered as w1 in this input.
  template <class Req>
  void name_worker(Req& req) {
    for (const std::string& w : workers_)
      if (w.compare(0, w.find('-'), req.worker_id()) == 0 && req.worker_id().size() == w.find('-')) {
        req.set_worker_id(w);
        return;
      }
  }
  void name_worker(v1::SubmitRequest&) {}
  void name_worker(v1::CancelRequest&) {}
  void name_worker(v1::ListExperimentsRequest&) {}
  void name_worker(v1::QueryResultsRequest&) {}
  void name_worker(v1::RegisterWorkerRequest&) {}

  // Parses the request and calls the handler; true when the reply is OK. An exception escapes (a finding).
  template <class Req, class Rep>
  bool feed(const uint8_t* p, size_t n,
            grpc::Status (CoordinatorService::*handler)(grpc::ServerContext*, const Req*, Rep*), Rep* rep = nullptr,
            Req* request = nullptr) {
    Req local;
    Req& req = request ? *request : local;
    if (!req.ParseFromArray(p, int(n))) {
      if (lpfuzz::verbose()) std::fprintf(stderr, "lpfuzz: %s: does not parse, skipped\n", Req::descriptor()->name().c_str());
      return false;
    }
    name_worker(req);
    Rep local_rep;
    grpc::ServerContext ctx;
    const grpc::Status s = (service_.*handler)(&ctx, &req, rep ? rep : &local_rep);
    if (lpfuzz::verbose())
      std::fprintf(stderr, "lpfuzz: %s: status %d %.300s%.300s\n", Req::descriptor()->name().c_str(),
                   int(s.error_code()), s.error_message().c_str(),
                   s.ok() ? (rep ? rep : &local_rep)->ShortDebugString().c_str() : "");
    return s.ok();
  }

  std::string state(int64_t task_id) {
    auto st = store_.database().prepare("SELECT state FROM tasks WHERE id = ?1");
    return st.bind(1, task_id).step() ? st.text(0) : std::string("(no such task)");
  }

  void check_invariants() {
    for (const StoreInvariant& i : kStoreInvariants) {
      const int64_t n = count(store_.database(), i.sql);
      if (n != 0) {
        std::fprintf(stderr, "lpfuzz: store invariant broken: %s: %lld rows\n  %s\n", i.what, (long long)n, i.sql);
        std::abort();
      }
    }
  }

  Store store_;
  CoordinatorService service_;
  std::vector<std::string> workers_;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs every string field that is not UTF-8 (ParseFromArray refuses it): quiet unless verbose.
  if (!lpfuzz::verbose()) google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = lpfuzz::scratch().dir() + "/coordinator.db";
  std::error_code ec;
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix, ec);
  g_now = 1'700'000'000'000;
  Session session(path);
  while (size >= 3) {
    const uint8_t b = data[0];
    const size_t n = std::min(size - 3, size_t(data[1]) | size_t(data[2]) << 8);
    session.record(b, data + 3, n);
    data += 3 + n;
    size -= 3 + n;
  }
  return 0;
}
