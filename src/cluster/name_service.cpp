// NameService: names to URIs with tags, and the sweep of dead servers (see name_service.hpp).
#include "cluster/name_service.hpp"

#include <iostream>
#include <optional>

#include "net/address.hpp"

namespace tether::cluster {

using service::Call;
using service::ReplyBuilder;

namespace {

constexpr auto kConnectPatience = std::chrono::seconds(3);

void fail_value(Call& call, std::string message) { call.fail(ErrorKind::failed, std::move(message), "builtins.ValueError"); }

// Tags: nil, or a list / tuple / set / frozenset (ext 1, 2, 3 holding an array) of str.
Result<std::set<std::string>> tags_of(const msgpack::object* value) {
  std::set<std::string> tags;
  if (!value || value->type == msgpack::type::NIL) return tags;
  msgpack::object_handle inner;
  const msgpack::object* array = value;
  if (value->type == msgpack::type::EXT && value->via.ext.type() >= 1 && value->via.ext.type() <= 3) {
    auto unpacked = wire::unpack_body(std::span(reinterpret_cast<const std::byte*>(value->via.ext.data()), value->via.ext.size));
    if (!unpacked) return unpacked.error();
    inner = std::move(*unpacked);
    array = &inner.get();
  }
  if (array->type != msgpack::type::ARRAY) return Error{ErrorKind::failed, "metadata must be a collection of strings"};
  for (std::uint32_t i = 0; i < array->via.array.size; ++i) {
    const auto& tag = array->via.array.ptr[i];
    if (tag.type != msgpack::type::STR) return Error{ErrorKind::failed, "metadata must be a collection of strings"};
    tags.emplace(tag.via.str.ptr, tag.via.str.size);
  }
  return tags;
}

// One liveness check: does the server at `uri` accept a connection within kConnectPatience?
template <typename Protocol>
void check_endpoint(asio::io_context& io, typename Protocol::endpoint endpoint, std::function<void(bool)> done) {
  auto socket = std::make_shared<typename Protocol::socket>(io);
  auto timer = std::make_shared<asio::steady_timer>(io, kConnectPatience);
  auto finished = std::make_shared<bool>(false);
  auto finish = [socket, timer, finished, done](bool alive) {
    if (std::exchange(*finished, true)) return;
    std::error_code ignored;
    timer->cancel();
    socket->close(ignored);
    done(alive);
  };
  timer->async_wait([finish](std::error_code ec) {
    if (!ec) finish(false);
  });
  socket->async_connect(endpoint, [finish](std::error_code ec) { finish(!ec); });
}

void check_uri(asio::io_context& io, const std::string& uri, std::function<void(bool)> done) {
  auto parsed = net::parse_uri(uri);
  if (!parsed) return done(false);
  const auto& endpoint = parsed->endpoint;
  if (endpoint.kind == net::Endpoint::Kind::unix_socket)
    return check_endpoint<asio::local::stream_protocol>(io, asio::local::stream_protocol::endpoint(endpoint.path), std::move(done));
  std::error_code ec;
  auto address = asio::ip::make_address(endpoint.host, ec);
  if (ec) {
    // A host name: resolved here, once per sweep (names in a cluster are rare; addresses are usual).
    asio::ip::tcp::resolver resolver(io);
    auto results = resolver.resolve(endpoint.host, std::to_string(endpoint.port), ec);
    if (ec || results.empty()) return done(false);
    return check_endpoint<asio::ip::tcp>(io, *results.begin(), std::move(done));
  }
  check_endpoint<asio::ip::tcp>(io, asio::ip::tcp::endpoint(address, endpoint.port), std::move(done));
}

}  // namespace

NameService::NameService(asio::io_context& io, std::chrono::milliseconds sweep_interval)
    : Service("tether.ns"), io_(io), sweep_interval_(sweep_interval), sweep_timer_(io) {
  add_method("register", [this](Call&& call) { register_name(std::move(call)); });
  add_method("lookup", [this](Call&& call) { lookup(std::move(call)); });
  add_method("list", [this](Call&& call) { list(std::move(call)); });
  add_method("lookup_by_metadata", [this](Call&& call) { lookup_by_metadata(std::move(call)); });
  add_method("metadata", [this](Call&& call) { metadata(std::move(call)); });
  add_method("remove", [this](Call&& call) { remove(std::move(call)); });
  if (sweep_interval_.count() > 0) arm_sweep();
}

NameService::~NameService() { sweep_timer_.cancel(); }

void NameService::register_name(Call&& call) {
  auto name = service::as_str(call.param(0, "name"), "name");
  if (!name || name->empty()) return fail_value(call, "a name must be a non-empty string");
  auto uri = service::as_str(call.param(1, "uri"), "uri");
  if (!uri || !(uri->starts_with("tether://") || uri->starts_with("tethers://") || uri->starts_with("tether+unix://")))
    return fail_value(call, "not a tether URI: " + (uri ? std::string(*uri) : std::string("(not a str)")));
  auto tags = tags_of(call.param(2, "metadata"));
  if (!tags) return fail_value(call, tags.error().message);
  Entry entry{std::string(*uri), std::move(*tags)};
  if (auto kept = keep(std::string(*name), entry); !kept) return call.fail(kept.error());
  entries_[std::string(*name)] = std::move(entry);
  call.reply_nil();
}

void NameService::lookup(Call&& call) {
  auto name = service::as_str(call.param(0, "name"), "name");
  auto it = name ? entries_.find(std::string(*name)) : entries_.end();
  if (it == entries_.end()) return call.fail(ErrorKind::failed, name ? std::string(*name) : "name", "builtins.KeyError");
  ReplyBuilder reply;
  wire::pack_str(reply.packer(), it->second.uri);
  call.reply(std::move(reply));
}

void NameService::reply_entries(Call& call, const std::function<bool(const std::string&, const Entry&)>& keep) {
  std::vector<const std::pair<const std::string, Entry>*> kept;
  for (const auto& entry : entries_)
    if (keep(entry.first, entry.second)) kept.push_back(&entry);
  ReplyBuilder reply;
  reply.packer().pack_map(static_cast<std::uint32_t>(kept.size()));
  for (const auto* entry : kept) {
    wire::pack_str(reply.packer(), entry->first);
    wire::pack_str(reply.packer(), entry->second.uri);
  }
  call.reply(std::move(reply));
}

void NameService::list(Call&& call) {
  const auto* prefix_arg = call.param(0, "prefix");
  std::string prefix;
  if (prefix_arg && prefix_arg->type != msgpack::type::NIL) {
    auto text = service::as_str(prefix_arg, "prefix");
    if (!text) return fail_value(call, "prefix must be a str or None");
    prefix = std::string(*text);
  }
  reply_entries(call, [&](const std::string& name, const Entry&) { return name.starts_with(prefix); });
}

void NameService::lookup_by_metadata(Call&& call) {
  auto wanted = tags_of(call.param(0, "tags"));
  if (!wanted) return fail_value(call, wanted.error().message);
  reply_entries(call, [&](const std::string&, const Entry& entry) {
    return std::includes(entry.tags.begin(), entry.tags.end(), wanted->begin(), wanted->end());
  });
}

void NameService::metadata(Call&& call) {
  auto name = service::as_str(call.param(0, "name"), "name");
  auto it = name ? entries_.find(std::string(*name)) : entries_.end();
  if (it == entries_.end()) return call.fail(ErrorKind::failed, name ? std::string(*name) : "name", "builtins.KeyError");
  ReplyBuilder reply;
  reply.packer().pack_array(static_cast<std::uint32_t>(it->second.tags.size()));
  for (const auto& tag : it->second.tags) wire::pack_str(reply.packer(), tag);  // a std::set: sorted
  call.reply(std::move(reply));
}

void NameService::remove(Call&& call) {
  auto name = service::as_str(call.param(0, "name"), "name");
  bool removed = name && entries_.erase(std::string(*name)) > 0;
  if (removed) forget(std::string(*name));
  ReplyBuilder reply;
  reply.packer().pack(removed);
  call.reply(std::move(reply));
}

void NameService::sweep(std::function<void()> done) {
  auto remaining = std::make_shared<std::size_t>(entries_.size());
  auto finished = std::make_shared<std::function<void()>>(std::move(done));
  if (*remaining == 0) {
    if (*finished) (*finished)();
    return;
  }
  for (const auto& [name, entry] : entries_) {
    check_uri(io_, entry.uri, [this, remaining, finished, name = name, uri = entry.uri](bool alive) {
      auto it = entries_.find(name);
      // An entry registered again meanwhile (another URI) is not this check's to remove.
      if (!alive && it != entries_.end() && it->second.uri == uri) {
        entries_.erase(it);
        forget(name);
      }
      if (--*remaining == 0 && *finished) (*finished)();
    });
  }
}

void NameService::arm_sweep() {
  sweep_timer_.expires_after(sweep_interval_);
  sweep_timer_.async_wait([this](std::error_code ec) {
    if (ec) return;
    sweep([this] { arm_sweep(); });
  });
}

// ---- the state store: value = the URI, then each tag, each as u32 length + bytes ----

namespace {

void put_text(std::string& out, const std::string& text) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((text.size() >> shift) & 0xff));
  out += text;
}

std::optional<std::string> take_text(std::string_view& in) {
  if (in.size() < 4) return std::nullopt;
  std::size_t length = 0;
  for (int i = 0; i < 4; ++i) length = (length << 8) | static_cast<unsigned char>(in[i]);
  in.remove_prefix(4);
  if (in.size() < length) return std::nullopt;
  std::string text(in.substr(0, length));
  in.remove_prefix(length);
  return text;
}

}  // namespace

void NameService::keep_in(state::StateStore& store) {
  store_ = &store;
  for (const auto& [name, value] : store.load("names")) {
    std::string_view in(value);
    auto uri = take_text(in);
    if (!uri) continue;  // a record this version did not write
    Entry entry{std::move(*uri), {}};
    while (auto tag = take_text(in)) entry.tags.insert(std::move(*tag));
    entries_[name] = std::move(entry);
  }
}

Status NameService::keep(const std::string& name, const Entry& entry) {
  if (!store_) return ok_status();
  std::string value;
  put_text(value, entry.uri);
  for (const auto& tag : entry.tags) put_text(value, tag);
  return store_->put("names", name, value);
}

void NameService::forget(const std::string& name) {
  if (!store_) return;
  if (auto status = store_->erase("names", name); !status) std::cerr << "names: " << status.error().message << std::endl;
}

}  // namespace tether::cluster
