// Node: workers' output. Each line a worker prints goes to the daemon's own output (see
// ChildProcesses) and, from here, to the drivers that asked for it in hello; a node other than the
// head also sends its lines to the head, which passes them on the same way. So a driver sees
// every worker's output, whichever node ran it and however it joined the cluster.
#include "cluster/node_internal.hpp"

#include <unistd.h>

namespace tether::cluster {

using service::Call;
using service::ReplyBuilder;

void Node::on_worker_output(int stream, std::string line) {
  pending_output_.emplace_back(stream, std::move(line));
  if (std::exchange(output_flush_posted_, true)) return;
  asio::post(io_, [this] { flush_output(); });  // the lines of one read go out together
}

void Node::flush_output() {
  output_flush_posted_ = false;
  auto lines = std::move(pending_output_);
  pending_output_.clear();
  if (lines.empty()) return;
  auto pack_lines = [&lines](ReplyBuilder& request, std::string_view prefix) {
    auto& p = request.packer();
    p.pack_array(static_cast<std::uint32_t>(lines.size()));
    for (const auto& [stream, line] : lines) {
      p.pack_array(2);
      p.pack_int(stream);
      wire::pack_str(p, std::string(prefix) + line);
    }
  };
  if (!options_.head && peers_.count(1)) {
    ReplyBuilder request;
    request.packer().pack_array(2);
    request.packer().pack_array(1);
    pack_lines(request, "[node " + std::to_string(options_.node_id) + "] ");
    request.packer().pack_nil();
    send_to_peer(1, std::move(request), "output", nullptr);
  }
  for (auto& [connection_id, client] : clients_) {
    auto connection = client->connection.lock();
    if (!client->output_sink || !connection) continue;
    ReplyBuilder request;
    request.packer().pack_array(2);
    request.packer().pack_array(2);
    request.packer().pack_uint64(++client->output_batches);
    pack_lines(request, "");
    request.packer().pack_nil();
    auto frame = request.take_request("#" + std::to_string(client->output_sink), "lines");
    frame.header.flags |= wire::kOneway;
    connection->call(std::move(frame), nullptr);
  }
}

// output([[stream, line], ...]), oneway, from another node: its workers' lines, for our output
// and our drivers.
void Node::output(Call&& call) {
  auto* client = client_of(call);
  auto lines = service::as_array(call.param(0, "lines"), "node.output: argument 'lines'");
  if (!client || !client->peer || !lines) return;
  for (std::uint32_t i = 0; i < (*lines)->size; ++i) {
    const auto& entry = (*lines)->ptr[i];
    if (entry.type != msgpack::type::ARRAY || entry.via.array.size != 2 || entry.via.array.ptr[1].type != msgpack::type::STR) continue;
    int stream = entry.via.array.ptr[0].type == msgpack::type::POSITIVE_INTEGER && entry.via.array.ptr[0].via.u64 == 1 ? 1 : 0;
    std::string line(entry.via.array.ptr[1].via.str.ptr, entry.via.array.ptr[1].via.str.size);
    std::string text = line + "\n";
    for (std::size_t written = 0; written < text.size();) {
      auto n = ::write(stream == 0 ? STDOUT_FILENO : STDERR_FILENO, text.data() + written, text.size() - written);
      if (n <= 0) break;
      written += static_cast<std::size_t>(n);
    }
    pending_output_.emplace_back(stream, std::move(line));
  }
  // Passed on to our drivers only: the head sends nothing on to other nodes.
  if (!std::exchange(output_flush_posted_, true)) asio::post(io_, [this] { flush_output(); });
}

}  // namespace tether::cluster
