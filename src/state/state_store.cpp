// StateStore over SQLite: one table of (kind, key, value), prepared statements, one connection
// used from the head's io thread.
#include "state/state_store.hpp"

#include <sqlite3.h>

namespace tether::state {
namespace {

class SqliteStore final : public StateStore {
 public:
  ~SqliteStore() override {
    for (auto* statement : {put_, erase_, load_}) sqlite3_finalize(statement);
    sqlite3_close(db_);
  }

  static Result<std::unique_ptr<StateStore>> open(const std::filesystem::path& file) {
    auto store = std::unique_ptr<SqliteStore>(new SqliteStore);
    if (sqlite3_open(file.c_str(), &store->db_) != SQLITE_OK)
      return Error{ErrorKind::failed, "cannot open the state store " + file.string() + ": " + sqlite3_errmsg(store->db_)};
    const char* setup =
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
        "CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,"
        " PRIMARY KEY (kind, key)) WITHOUT ROWID;";
    if (auto status = store->exec(setup); !status) return status.error();
    if (!store->prepare("INSERT OR REPLACE INTO records (kind, key, value) VALUES (?1, ?2, ?3)", &store->put_) ||
        !store->prepare("DELETE FROM records WHERE kind = ?1 AND key = ?2", &store->erase_) ||
        !store->prepare("SELECT key, value FROM records WHERE kind = ?1 ORDER BY key", &store->load_))
      return Error{ErrorKind::failed, "the state store " + file.string() + ": " + sqlite3_errmsg(store->db_)};
    return std::unique_ptr<StateStore>(std::move(store));
  }

  Status put(std::string_view kind, std::string_view key, std::string_view value) override {
    bind(put_, 1, kind, false);
    bind(put_, 2, key, true);
    bind(put_, 3, value, true);
    return step(put_, "keep");
  }

  Status erase(std::string_view kind, std::string_view key) override {
    bind(erase_, 1, kind, false);
    bind(erase_, 2, key, true);
    return step(erase_, "forget");
  }

  std::vector<std::pair<std::string, std::string>> load(std::string_view kind) override {
    std::vector<std::pair<std::string, std::string>> records;
    bind(load_, 1, kind, false);
    while (sqlite3_step(load_) == SQLITE_ROW) records.emplace_back(column(0), column(1));
    sqlite3_reset(load_);
    return records;
  }

 private:
  SqliteStore() = default;

  Status exec(const char* sql) {
    char* message = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) == SQLITE_OK) return ok_status();
    Error error{ErrorKind::failed, std::string("the state store: ") + (message ? message : "error")};
    sqlite3_free(message);
    return error;
  }

  bool prepare(const char* sql, sqlite3_stmt** statement) {
    return sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, statement, nullptr) == SQLITE_OK;
  }

  static void bind(sqlite3_stmt* statement, int index, std::string_view bytes, bool blob) {
    if (blob)
      sqlite3_bind_blob64(statement, index, bytes.data(), bytes.size(), SQLITE_TRANSIENT);
    else
      sqlite3_bind_text64(statement, index, bytes.data(), bytes.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  }

  Status step(sqlite3_stmt* statement, const char* what) {
    int code = sqlite3_step(statement);
    sqlite3_reset(statement);
    if (code == SQLITE_DONE) return ok_status();
    return Error{ErrorKind::failed, std::string("cannot ") + what + " it in the state store: " + sqlite3_errmsg(db_)};
  }

  std::string column(int index) const {
    auto* data = static_cast<const char*>(sqlite3_column_blob(load_, index));
    return std::string(data ? data : "", static_cast<std::size_t>(sqlite3_column_bytes(load_, index)));
  }

  sqlite3* db_ = nullptr;
  sqlite3_stmt* put_ = nullptr;
  sqlite3_stmt* erase_ = nullptr;
  sqlite3_stmt* load_ = nullptr;
};

}  // namespace

Result<std::unique_ptr<StateStore>> open_state_store(const std::filesystem::path& directory) {
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  if (ec) return Error{ErrorKind::failed, "cannot create the state directory " + directory.string() + ": " + ec.message()};
  return SqliteStore::open(directory / "head.sqlite3");
}

}  // namespace tether::state
