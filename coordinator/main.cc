// layerprune-coordinator: the gRPC server that owns the experiment database and leases its tasks to
// workers. One per database (a lock file next to it makes sure). Exit status: 0 after SIGTERM/SIGINT,
// 2 for a usage or input error (bad flag, unsafe listen address, database in use), 1 otherwise.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "common/args.h"
#include "common/error.h"
#include "common/text_file.h"
#include "common/version.h"
#include "coordinator/service.h"
#include "coordinator/store.h"

using namespace layerprune;

namespace {

// The database's lock: held while this process lives, released by the kernel even after kill -9.
int lock_database(const std::string& db) {
  const std::string path = db + ".lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    throw InputError(path + ": cannot create the lock file next to the database (" + std::strerror(errno) +
                     "): the database's directory must be writable (SQLite also writes its -wal and -shm files there)");
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {0};
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    throw InputError(db + ": another coordinator (pid " + std::string(buf, n > 0 ? size_t(n) : 0) +
                     ") is serving this database; stop it first, or use another --db");
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The pid is only for the message above; the lock itself is what matters.
  }
  return fd;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// host:port with port 0 replaced by the chosen one; a wildcard host by this machine's name, so the
// address file tells remote workers where to connect.
std::string bound_address(const std::string& listen, int port) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host == "0.0.0.0" || host == "[::]" || host == "::" || host.empty()) {
    char name[256] = {0};
    if (gethostname(name, sizeof name - 1) == 0 && name[0]) host = name;
  }
  return host + ":" + std::to_string(port);
}

}  // namespace

int main(int argc, char** argv) {
  // A write past a file-size limit (RLIMIT_FSIZE) fails with EFBIG, which SQLite reports and rolls back,
  // instead of killing the process with SIGXFSZ.
  ::signal(SIGXFSZ, SIG_IGN);
  ArgParser p("layerprune-coordinator",
              "Serve an experiment database: users submit experiments and query results; workers lease tasks.");
  p.option("db", "SQLite database file (created if missing)")
      .option("listen", "address to listen on (port 0: any free port)", "127.0.0.1:0")
      .option("address-file", "write the bound address here (workers and the CLI read it)", "")
      .option("token-file", "shared secret every call must carry (required off loopback)", "")
      .option("max-message-mb", "largest request or answer in MiB (larger ones are refused)", "256")
      .option("tls-cert", "PEM certificate chain: serve TLS (with --tls-key)", "")
      .option("tls-key", "PEM private key of --tls-cert", "")
      .option("lease-seconds", "a lease lasts this long after each heartbeat", "60")
      .option("max-attempts", "failed or expired attempts before a task fails", "3")
      .option("backoff-seconds", "delay before the first retry of a failed task; doubles per failure", "5")
      .option("max-wait-seconds", "longest a Lease call waits for a task (long poll)", "10")
      .flag("init-only", "create or migrate the database, then exit")
      .epilog(
          "Without --token-file the coordinator only listens on loopback (127.0.0.1, ::1, localhost): any\n"
          "process that can reach the port could submit work or report results. With a token, every call\n"
          "must carry `authorization: Bearer <token>`. Use TLS (--tls-cert/--tls-key) when the token crosses\n"
          "a network you do not trust. State machine and durability: coordinator/README.md.");
  std::unique_ptr<Store> store;
  std::string address;
  ServiceOptions service_options;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<CoordinatorService> service;
  try {
    if (!p.parse(argc, argv)) return 0;
    const std::string db = p.get("db"), listen = p.get("listen");
    if (listen.rfind(':') == std::string::npos) throw UsageError("--listen " + listen + ": expected HOST:PORT");
    if (!p.get("token-file").empty()) {
      service_options.token = trim(read_file(p.get("token-file")));
      if (service_options.token.empty()) throw InputError(p.get("token-file") + ": the token file is empty");
    }
    if (!is_loopback_address(listen) && service_options.token.empty())
      throw InputError("refusing to listen on " + listen +
                       " without --token-file: anyone who can reach that address could submit experiments and "
                       "report results. Give --token-file FILE (a shared secret the workers and the CLI read "
                       "too), or listen on 127.0.0.1");
    if (p.get("tls-cert").empty() != p.get("tls-key").empty())
      throw UsageError("--tls-cert and --tls-key go together");
    service_options.max_wait_ms = int64_t(p.get_double("max-wait-seconds") * 1000);

    StoreOptions so;
    so.lease_ms = int64_t(p.get_double("lease-seconds") * 1000);
    so.max_attempts = int(p.get_int("max-attempts"));
    so.backoff_ms = int64_t(p.get_double("backoff-seconds") * 1000);
    if (so.lease_ms <= 0 || so.max_attempts < 1 || so.backoff_ms < 0)
      throw UsageError("--lease-seconds must be > 0, --max-attempts >= 1, --backoff-seconds >= 0");
    so.backoff_cap_ms = std::max<int64_t>(so.backoff_ms, 600'000);

    lock_database(db);  // held (fd left open) until the process ends
    store = std::make_unique<Store>(db, so);
    if (p.flag_set("init-only")) {
      std::fprintf(stderr, "layerprune-coordinator: %s at schema version %d\n", db.c_str(), store->schema_version());
      return 0;
    }
    // Workers could not heartbeat while no coordinator ran: give every open lease a fresh deadline.
    const int64_t renewed = store->renew_open_leases();

    // Block the stop signals in every thread gRPC starts; main waits for them with sigwait.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
    if (!p.get("tls-cert").empty()) {
      grpc::SslServerCredentialsOptions tls;
      tls.pem_key_cert_pairs.push_back({read_file(p.get("tls-key")), read_file(p.get("tls-cert"))});
      creds = grpc::SslServerCredentials(tls);
    }
    service = std::make_unique<CoordinatorService>(*store, service_options);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(listen, creds, &port);
    // Two coordinators must never share a port (gRPC would let them with SO_REUSEPORT).
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    // A bound on each message: a result or a plan larger than this is refused (RESOURCE_EXHAUSTED) before
    // it is read into memory. The default fits a full MMLU evaluation's per-item records for every variant.
    const int64_t max_message = int64_t(p.get_double("max-message-mb") * (1 << 20));
    if (max_message < 1024 || max_message > (int64_t(1) << 31) - 1)
      throw UsageError("--max-message-mb must be between 0.001 and 2047");
    builder.SetMaxReceiveMessageSize(int(max_message));
    builder.SetMaxSendMessageSize(int(max_message));
    builder.RegisterService(service.get());
    server = builder.BuildAndStart();
    if (!server || port == 0)
      throw InputError("cannot listen on " + listen + " (address in use, or not an address of this machine)");
    address = bound_address(listen, port);
    if (!p.get("address-file").empty()) write_file(p.get("address-file"), address + "\n");
    std::printf("listening on %s\n", address.c_str());
    std::fflush(stdout);
    std::fprintf(stderr,
                 "layerprune-coordinator %s: listening on %s (%s%s), database %s (schema v%d), lease %.1f s, "
                 "%d attempts, back-off %.1f s; %lld open lease(s) renewed\n",
                 layerprune_version(), address.c_str(), service_options.token.empty() ? "no token" : "token required",
                 p.get("tls-cert").empty() ? ", plaintext" : ", TLS", db.c_str(), store->schema_version(),
                 so.lease_ms / 1000.0, so.max_attempts, so.backoff_ms / 1000.0, (long long)renewed);
    if (!service_options.token.empty() && p.get("tls-cert").empty() && !is_loopback_address(listen))
      std::fprintf(stderr, "layerprune-coordinator: warning: the token travels in plaintext (no --tls-cert)\n");

    // The reaper: expires leases whose workers stopped heartbeating.
    std::atomic<bool> running{true};
    std::thread reaper([&] {
      const auto tick = std::chrono::milliseconds(std::clamp<int64_t>(so.lease_ms / 4, 50, 1000));
      while (running.load()) {
        std::this_thread::sleep_for(tick);
        try {
          service->reap();
        } catch (const std::exception& e) {
          std::fprintf(stderr, "layerprune-coordinator: reaper: %s\n", e.what());
        }
      }
    });

    int sig = 0;
    sigwait(&stop_signals, &sig);
    std::fprintf(stderr, "layerprune-coordinator: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    service->stop();
    // In-flight calls get half a second (long polls were just woken; other calls are one transaction);
    // the deadline also bounds the wait gRPC otherwise spends on idle client connections. A call cut off
    // here has either committed or not: the database stays consistent either way.
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    running = false;
    reaper.join();
    server.reset();
    store.reset();  // closes the database (checkpoints the WAL)
    return 0;
  } catch (const InputError& e) {
    std::fprintf(stderr, "layerprune-coordinator: error: %s\n", e.what());
    std::fprintf(stderr, "(layerprune-coordinator --help for the options)\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "layerprune-coordinator: error: %s\n", e.what());
    return 1;
  }
}
