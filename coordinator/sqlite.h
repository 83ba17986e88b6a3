// A thin RAII layer over the SQLite C API for the coordinator's store: one connection, cached prepared
// statements, transactions. Errors throw std::runtime_error with SQLite's message and the statement, but
// for the faults a user must act on, which say what to do:
//   a damaged file or not a database (SQLITE_CORRUPT, SQLITE_NOTADB)  -> InputError (move it aside)
//   a read-only file or directory (SQLITE_READONLY, SQLITE_CANTOPEN)  -> InputError (make it writable)
//   a write that failed (SQLITE_FULL, SQLITE_IOERR: a full disk, a file-size limit) -> WriteFailed; the
//   transaction is rolled back, so the database keeps what it had before the call.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

struct sqlite3;
struct sqlite3_stmt;

namespace layerprune::sqlite {

class WriteFailed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Database;

// A prepared statement, reset and unbound when the Statement handle goes out of scope, so a cached
// statement can be reused by the next caller.
class Statement {
 public:
  Statement(sqlite3_stmt* stmt, Database* db) : stmt_(stmt), db_(db) {}
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // Parameters are numbered from 1 as in SQL's ?1, ?2.
  Statement& bind(int i, int64_t v);
  Statement& bind(int i, int v) { return bind(i, int64_t(v)); }
  Statement& bind(int i, double v);
  Statement& bind(int i, const std::string& v);
  Statement& bind(int i, const char* v) { return bind(i, std::string(v)); }
  Statement& bind_null(int i);
  Statement& bind(int i, const std::optional<std::string>& v) { return v ? bind(i, *v) : bind_null(i); }

  // True while a row is available.
  bool step();
  // Runs to completion (statements without result rows).
  void run();

  int64_t int64(int col) const;
  double real(int col) const;
  std::string text(int col) const;  // "" for NULL
  bool is_null(int col) const;

 private:
  sqlite3_stmt* stmt_;
  Database* db_;
};

class Database {
 public:
  // Opens (creating if needed) the file. Throws naming the path when it cannot.
  explicit Database(const std::string& path);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Runs one or more statements without parameters.
  void exec(const std::string& sql);
  // A cached prepared statement for `sql` (one statement).
  Statement prepare(const std::string& sql);
  int64_t last_insert_id() const;
  int64_t changes() const;
  const std::string& path() const { return path_; }

  [[noreturn]] void fail(const std::string& what) const;
  // Throws as above for SQLite result code `code` with message `message`.
  [[noreturn]] void fail(int code, const std::string& message, const std::string& what) const;

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
  std::map<std::string, sqlite3_stmt*> cache_;
};

// BEGIN IMMEDIATE on construction (the write lock up front: no upgrade deadlocks), COMMIT on commit(),
// ROLLBACK if destroyed without commit (an exception on the way).
class Transaction {
 public:
  explicit Transaction(Database& db);
  ~Transaction();
  void commit();

 private:
  Database& db_;
  bool done_ = false;
};

}  // namespace layerprune::sqlite
