// libFuzzer target: the tuple space's decoding of tuples and templates, its indexes and its
// matcher, driven through the real service as a peer drives it: the input is a run of records
// [method][length, 2 bytes][bytes], each sent as the REQUEST `tuplespace.<method>("s", <bytes>, 0)`
// where <bytes> is spliced in as the tuple or template. Writes store tuples that later templates
// (read, take, count, notify) are matched against, within one input.
#include <cstring>

#include "net/memory_transport.hpp"
#include "rpc/connection.hpp"
#include "service/service.hpp"
#include "tuplespace/tuple_space.hpp"
#include "wire/msgpack_util.hpp"

using namespace tether;

namespace {

constexpr const char* kMethods[] = {"out", "take", "read", "count", "notify", "unnotify"};

wire::Frame request(std::uint64_t id, const std::string& method, const std::uint8_t* raw, std::size_t size) {
  std::vector<std::byte> body;
  wire::ByteSink sink{&body};
  wire::Packer packer(sink);
  packer.pack_array(2);
  packer.pack_array(3);
  wire::pack_str(packer, "s");
  auto* p = reinterpret_cast<const std::byte*>(raw);
  body.insert(body.end(), p, p + size);  // the tuple or template, as the fuzzer wrote it
  packer.pack_uint8(0);                  // timeout 0 for take/read, a lease of 0 s for out, sink 0 for notify
  packer.pack_nil();
  wire::Frame frame;
  frame.header.type = wire::MessageType::request;
  frame.header.encoding = wire::Encoding::msgpack;
  frame.header.request_id = id;
  frame.meta = "tuplespace\0" + method;
  frame.meta[10] = '\0';
  frame.header.meta_length = static_cast<std::uint32_t>(frame.meta.size());
  frame.header.body_length = body.size();
  frame.body = std::make_shared<wire::Bytes>(body.size());
  if (!body.empty()) std::memcpy(frame.body->data(), body.data(), body.size());
  return frame;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  asio::io_context io;
  tuplespace::TupleSpaces spaces(io);
  service::ServiceHost host;
  host.add(spaces);
  auto [client_end, server_end] = net::make_memory_pipe(io.get_executor());
  auto connection = rpc::Connection::create(std::move(server_end), rpc::Connection::Role::server, {}, {}, nullptr);
  std::uint64_t id = 1;
  for (std::size_t offset = 0; offset + 3 <= size;) {
    std::string method = kMethods[data[offset] % std::size(kMethods)];
    std::size_t length = std::min<std::size_t>((std::size_t(data[offset + 1]) << 8) | data[offset + 2], size - offset - 3);
    host.on_request(connection, request(id++, method, data + offset + 3, length));
    offset += 3 + length;
  }
  io.poll();  // leases of 0 s expire, timers fire
  spaces.stop();
  io.poll();
  connection->close("fuzz input done");
  io.poll();
  return 0;
}
