// Connection: the read chain, the write queue, pending calls, heartbeats and deadlines.
#include "rpc/connection.hpp"

#include <asio/ssl/error.hpp>

#include "wire/msgpack_util.hpp"

namespace tether::rpc {
namespace {

using wire::MessageType;

std::atomic<std::uint64_t> next_connection_id{1};
thread_local Connection* deferring_connection = nullptr;

Clock::rep now_ticks() { return Clock::now().time_since_epoch().count(); }
Clock::time_point from_ticks(Clock::rep ticks) { return Clock::time_point(Clock::duration(ticks)); }

wire::OutFrame control_frame(MessageType type, std::uint64_t request_id) {
  wire::OutFrame frame;
  frame.header.type = type;
  frame.header.request_id = request_id;
  return frame;
}

}  // namespace

std::shared_ptr<Connection> Connection::create(std::unique_ptr<net::Transport> transport, Role role,
                                               AuthConfig auth, ConnectionOptions options,
                                               std::shared_ptr<RequestHandler> handler,
                                               std::shared_ptr<void> runtime_keepalive) {
  return std::shared_ptr<Connection>(new Connection(std::move(transport), role, std::move(auth), options,
                                                    std::move(handler), std::move(runtime_keepalive)));
}

Connection::Connection(std::unique_ptr<net::Transport> transport, Role role, AuthConfig auth,
                       ConnectionOptions options, std::shared_ptr<RequestHandler> handler,
                       std::shared_ptr<void> runtime_keepalive)
    : runtime_keepalive_(std::move(runtime_keepalive)),
      transport_(std::move(transport)),
      role_(role),
      options_(options),
      handler_(std::move(handler)),
      handshake_(std::make_unique<Handshake>(role, std::move(auth), options.limits, options.heartbeat)),
      description_(transport_->describe()),
      id_(next_connection_id.fetch_add(1)),
      decoder_(options.limits, options.allocate_segment),
      timer_(transport_->executor()),
      last_received_(now_ticks()),
      last_sent_(now_ticks()),
      handshake_deadline_(Clock::now() + options.handshake_timeout) {}

Connection::~Connection() = default;

void Connection::start(HandshakeDone done) {
  handshake_done_ = std::move(done);
  if (handler_) handler_->on_open(*this);
  auto step = handshake_->start();
  for (auto& frame : step.send) send(std::move(frame));
  start_read();
  arm_timer();
}

std::size_t Connection::pending_calls() const {
  std::lock_guard lock(pending_mutex_);
  return pending_.size();
}

// ---- reading ----

void Connection::start_read() {
  auto into = decoder_.prepare();
  transport_->async_read_some(into, [self = shared_from_this()](std::error_code ec, std::size_t n) {
    self->on_read(ec, n);
  });
}

void Connection::on_read(std::error_code ec, std::size_t count) {
  if (ec) {
    std::string why = close_reason_.empty() ? "connection closed by the peer" : "peer closed: " + close_reason_;
    if (ec != asio::error::eof) why = "connection lost: " + ec.message();
    fail(transport_error(ec, why));
    return;
  }
  last_received_.store(now_ticks(), std::memory_order_relaxed);
  std::vector<wire::Frame> frames;
  auto status = decoder_.commit(count, frames);
  if (status) status = read_large_body_now(frames);
  if (!established_.load(std::memory_order_acquire)) {
    // Frames that arrive with the end of the handshake (a request right after WELCOME) are kept.
    std::vector<wire::Frame> after_handshake;
    for (auto& frame : frames) {
      if (established_.load(std::memory_order_acquire)) after_handshake.push_back(std::move(frame));
      else handle_handshake_frame(std::move(frame));
    }
    frames = std::move(after_handshake);
  }
  std::vector<wire::Frame> requests;
  for (auto& frame : frames) handle_frame(std::move(frame), requests);
  if (handler_) handler_->on_batch_end(*this);
  if (!status) {
    protocol_error(status.error());
    return;
  }
  if (closed_.load(std::memory_order_acquire)) return;
  // Queued before the next read starts: the next batch, which another io thread may read, queues behind this one.
  bool queued = !requests.empty() && handler_ && handler_->queues_requests();
  if (queued) handler_->queue_requests(shared_from_this(), std::move(requests));
  // Read on before dispatching, so another io thread can serve this connection meanwhile.
  continue_reading();
  if (queued) return handler_->run_queued();
  if (requests.empty()) return;
  if (!handler_) {
    for (auto& request : requests)
      send_error(request.header.request_id, ErrorKind::unimplemented, "this side serves no objects");
    return;
  }
  handler_->on_requests(shared_from_this(), std::move(requests));
}

// While a large body streams in, this thread keeps reading it, waiting on the socket itself for a
// little while between chunks: far fewer wake-ups than one async completion per socket buffer.
// When the peer pauses longer than that, the async read takes over, so no thread stays pinned.
Status Connection::read_large_body_now(std::vector<wire::Frame>& frames) {
  constexpr auto kPatience = std::chrono::milliseconds(2);
  while (decoder_.in_large_frame()) {
    auto got = transport_->try_read(decoder_.prepare());
    if (!got) return ok_status();  // the async read reports the error
    if (*got == 0) {
      if (!transport_->wait_ready(false, kPatience)) return ok_status();
      continue;
    }
    last_received_.store(now_ticks(), std::memory_order_relaxed);
    auto status = decoder_.commit(*got, frames);
    if (!status) return status;
  }
  return ok_status();
}

void Connection::continue_reading() {
  if (pause_requested_.load(std::memory_order_acquire)) {
    read_parked_.store(true, std::memory_order_release);
    // A resume that ran between the check and the park must not be lost.
    bool parked = true;
    if (pause_requested_.load(std::memory_order_acquire) || !read_parked_.compare_exchange_strong(parked, false)) return;
  }
  start_read();
}

void Connection::adjust_backlog(std::ptrdiff_t delta, std::size_t high) {
  bool resume = false;
  {
    std::lock_guard lock(backlog_mutex_);
    backlog_ = static_cast<std::size_t>(static_cast<std::ptrdiff_t>(backlog_) + delta);
    bool paused = pause_requested_.load(std::memory_order_relaxed);
    if (!paused && backlog_ > high) pause_requested_.store(true, std::memory_order_release);
    resume = paused && backlog_ <= high / 2;
    if (resume) pause_requested_.store(false, std::memory_order_release);
  }
  if (resume) resume_reading();
}

void Connection::resume_reading() {
  bool parked = true;
  if (read_parked_.compare_exchange_strong(parked, false))
    asio::post(transport_->executor(), [self = shared_from_this()] {
      if (self->is_open()) self->start_read();
    });
}

void Connection::handle_handshake_frame(wire::Frame&& frame) {
  if (established_.load(std::memory_order_acquire) || closed_.load()) return;
  handshake_->set_peer_certificate(transport_->peer_certificate_subject());  // TLS is up once frames arrive
  auto step = handshake_->on_frame(frame);
  for (auto& out : step.send) send(std::move(out));
  if (step.failure) {
    if (handshake_done_) std::exchange(handshake_done_, nullptr)(*step.failure);
    fail(*step.failure);
    return;
  }
  if (step.done) {
    negotiated_ = handshake_->negotiated();
    established_.store(true, std::memory_order_release);
    if (handshake_done_) std::exchange(handshake_done_, nullptr)(negotiated_);
  }
}

void Connection::handle_frame(wire::Frame&& frame, std::vector<wire::Frame>& requests) {
  auto id = frame.header.request_id;
  switch (frame.header.type) {
    case MessageType::request:
      requests.push_back(std::move(frame));
      return;
    case MessageType::reply:
      deliver_reply(std::move(frame), true);
      return;
    case MessageType::error:
      if (id == 0) {
        auto body = wire::unpack_error_body(frame.body_span());
        std::lock_guard lock(close_reason_mutex_);
        close_reason_ = body.message;
        return;
      }
      deliver_reply(std::move(frame), true);
      return;
    case MessageType::stream_item:
      deliver_reply(std::move(frame), false);
      return;
    case MessageType::cancel:
      if (handler_) handler_->on_cancel(*this, id);
      return;
    case MessageType::credit: {
      auto handle = wire::unpack_body(frame.body_span());
      if (handler_ && handle && handle->get().type == msgpack::type::POSITIVE_INTEGER)
        handler_->on_credit(*this, id, handle->get().via.u64);
      return;
    }
    case MessageType::ping:
      send(control_frame(MessageType::pong, id));
      return;
    case MessageType::pong:
      return;
    case MessageType::close: {
      auto handle = wire::unpack_body(frame.body_span());
      const msgpack::object* reason = handle ? wire::map_get(handle->get(), "reason") : nullptr;
      std::lock_guard lock(close_reason_mutex_);
      close_reason_ = reason && reason->type == msgpack::type::STR
                          ? std::string(reason->via.str.ptr, reason->via.str.size) : "closed";
      return;
    }
    default:
      send_error(id, ErrorKind::unimplemented,
                 "unknown message type " + std::to_string(static_cast<int>(frame.header.type)));
      return;
  }
}

void Connection::deliver_reply(wire::Frame&& frame, bool final) {
  std::shared_ptr<ReplySink> sink;
  {
    std::lock_guard lock(pending_mutex_);
    auto it = pending_.find(frame.header.request_id);
    if (it == pending_.end()) return;  // cancelled or timed out: the late reply is dropped
    sink = it->second.sink;
    if (final) forget_pending_locked(it);
  }
  sink->on_frame(std::move(frame));
}

// ---- calls ----

void Connection::forget_pending_locked(std::unordered_map<std::uint64_t, PendingCall>::iterator it) {
  if (it->second.deadline) {
    auto [begin, end] = deadlines_.equal_range(*it->second.deadline);
    for (auto d = begin; d != end; ++d)
      if (d->second == it->first) {
        deadlines_.erase(d);
        break;
      }
  }
  pending_.erase(it);
}

Result<std::uint64_t> Connection::call(wire::OutFrame&& frame, std::shared_ptr<ReplySink> sink,
                                       std::optional<Clock::time_point> deadline) {
  if (!is_open()) {
    std::lock_guard lock(close_reason_mutex_);
    return Error{ErrorKind::disconnected, "connection is closed" + (close_reason_.empty() ? "" : ": " + close_reason_)};
  }
  auto id = next_request_id_.fetch_add(1, std::memory_order_relaxed);
  frame.header.request_id = id;
  bool oneway = frame.header.flags & wire::kOneway;
  bool earliest = false;
  if (!oneway) {
    std::lock_guard lock(pending_mutex_);
    pending_.emplace(id, PendingCall{std::move(sink), deadline});
    if (deadline) {
      auto it = deadlines_.emplace(*deadline, id);
      earliest = it == deadlines_.begin();
    }
  }
  auto status = send(std::move(frame));
  if (!status) {
    cancel_call(id, false);
    return status.error();
  }
  if (earliest) arm_timer();
  return id;
}

void Connection::cancel_call(std::uint64_t request_id, bool notify_peer) {
  bool found = false;
  {
    std::lock_guard lock(pending_mutex_);
    auto it = pending_.find(request_id);
    if (it != pending_.end()) {
      forget_pending_locked(it);
      found = true;
    }
  }
  if (found && notify_peer && is_open()) send(control_frame(MessageType::cancel, request_id));
}

void Connection::send_error(std::uint64_t request_id, ErrorKind kind, std::string message) {
  wire::OutFrame frame = control_frame(MessageType::error, request_id);
  frame.header.encoding = wire::Encoding::msgpack;
  frame.payload = wire::pack_error_body(wire::ErrorBody{kind, std::move(message), "", ""});
  send(std::move(frame));
}

// ---- writing ----

std::vector<asio::const_buffer> Connection::gather(const std::deque<QueuedFrame>& queue) {
  static const std::byte zeros[8] = {};
  std::vector<asio::const_buffer> buffers;
  buffers.reserve(queue.size() * 3);
  for (const auto& queued : queue) {
    const auto& f = queued.frame;
    std::size_t skip = queued.written;  // bytes of this frame already on the wire
    auto add = [&](const void* data, std::size_t size) {
      if (size == 0) return;
      if (skip >= size) {
        skip -= size;
        return;
      }
      buffers.emplace_back(static_cast<const std::byte*>(data) + skip, size - skip);
      skip = 0;
    };
    add(f.header_bytes.data(), f.header_bytes.size());
    add(f.meta.data(), f.meta.size());
    add(f.segment_prefix.data(), f.segment_prefix.size());
    add(f.payload.data(), f.payload.size());
    for (const auto& segment : f.segments) {
      add(segment.bytes.data(), segment.bytes.size());
      add(zeros, (8 - segment.bytes.size() % 8) % 8);
    }
  }
  return buffers;
}

Status Connection::send(wire::OutFrame&& frame) {
  frame.finalize();
  // A frame the peer would refuse fails here, alone, instead of costing the whole connection.
  if (established_.load(std::memory_order_acquire) && frame.header.body_length > negotiated_.peer_max_body)
    return Error{ErrorKind::bad_request, "a frame of " + std::to_string(frame.header.body_length) +
                                             " bytes is over the peer's limit of " + std::to_string(negotiated_.peer_max_body)};
  std::unique_lock lock(write_mutex_);
  if (!is_open()) return Error{ErrorKind::disconnected, "connection is closed"};
  last_sent_.store(now_ticks(), std::memory_order_relaxed);
  write_queue_.push_back(QueuedFrame{std::move(frame), 0});
  if (write_in_flight_) return ok_status();  // coalesced into the next write
  if (deferring_connection == this) {
    if (!std::exchange(flush_posted_, true))
      asio::post(transport_->executor(), [self = shared_from_this()] { self->flush(); });
    return ok_status();
  }
  // Fast path: write from the calling thread while the socket has room; no thread hop.
  return write_queued(lock);
}

void Connection::flush() {
  std::unique_lock lock(write_mutex_);
  flush_posted_ = false;
  if (write_in_flight_ || write_queue_.empty() || closed_.load(std::memory_order_acquire)) return;
  write_queued(lock);
}

// Writes the queued frames from this thread as far as the socket takes them without blocking, and
// leaves the rest to an async write. Called with write_mutex_ held and no write in flight.
Status Connection::write_queued(std::unique_lock<std::mutex>& lock) {
  auto buffers = gather(write_queue_);
  auto written = transport_->try_write(buffers);
  if (!written) {
    broken_.store(true, std::memory_order_release);  // closed for new calls now; failed on the io loop
    lock.unlock();
    // Failed from the io loop, not here: the caller may be a service looping over its state, and
    // failing runs its close handler and the other calls' sinks, which change that state.
    asio::post(transport_->executor(), [self = shared_from_this(), error = written.error()] { self->fail(error); });
    return written.error();
  }
  std::size_t remaining = *written;
  std::deque<QueuedFrame> done;
  while (!write_queue_.empty()) {
    std::size_t left = write_queue_.front().frame.wire_size() - write_queue_.front().written;
    if (remaining < left) break;
    remaining -= left;
    done.push_back(std::move(write_queue_.front()));
    write_queue_.pop_front();
  }
  if (!write_queue_.empty()) {
    write_queue_.front().written += remaining;
    if (finish_large_write_now(lock)) {
      done.insert(done.end(), std::make_move_iterator(write_queue_.begin()), std::make_move_iterator(write_queue_.end()));
      write_queue_.clear();
    } else {
      start_async_write_locked();
    }
  }
  lock.unlock();  // the written frames' buffers are released outside the lock (they may need the GIL)
  return ok_status();
}

// A large write goes on from this thread while the socket keeps taking bytes, instead of one async
// completion per socket buffer; true when everything queued was written.
bool Connection::finish_large_write_now(std::unique_lock<std::mutex>&) {
  constexpr std::size_t kLarge = 1 << 20;
  constexpr auto kPatience = std::chrono::milliseconds(2);
  std::size_t left = 0;
  for (const auto& queued : write_queue_) left += queued.frame.wire_size() - queued.written;
  if (left < kLarge) return false;
  while (left > 0) {
    if (!transport_->wait_ready(true, kPatience)) return false;
    auto buffers = gather(write_queue_);
    auto written = transport_->try_write(buffers);
    if (!written) return false;  // the async write reports the error
    std::size_t remaining = *written;
    left -= remaining;
    for (auto& queued : write_queue_) {
      std::size_t frame_left = queued.frame.wire_size() - queued.written;
      std::size_t take = std::min(frame_left, remaining);
      queued.written += take;
      remaining -= take;
      if (remaining == 0) break;
    }
  }
  return true;
}

Connection::DeferFlush::DeferFlush(Connection* connection) : previous_(std::exchange(deferring_connection, connection)) {}
Connection::DeferFlush::~DeferFlush() { deferring_connection = previous_; }

void Connection::start_async_write_locked() {
  write_in_flight_ = true;
  frames_in_flight_ = write_queue_.size();
  transport_->async_write(gather(write_queue_), [self = shared_from_this()](std::error_code ec, std::size_t) {
    self->on_write_done(ec);
  });
}

void Connection::on_write_done(std::error_code ec) {
  std::deque<QueuedFrame> done;
  {
    std::lock_guard lock(write_mutex_);
    for (std::size_t i = 0; i < frames_in_flight_ && !write_queue_.empty(); ++i) {
      done.push_back(std::move(write_queue_.front()));
      write_queue_.pop_front();
    }
    frames_in_flight_ = 0;
    write_in_flight_ = false;
    // Frames queued while that write was in flight go out together, as one coalesced write.
    if (!ec && !write_queue_.empty()) start_async_write_locked();
  }
  if (ec) fail(transport_error(ec, "write failed: " + ec.message()));
}

// A TLS failure (a certificate that does not verify, no client certificate where one is required)
// is an authentication failure, not a lost connection.
Error Connection::transport_error(std::error_code ec, std::string why) const {
  bool refused_by_tls = ec.category() == asio::error::get_ssl_category() || ec.category() == asio::ssl::error::get_stream_category();
  if (refused_by_tls) return Error{ErrorKind::denied, "TLS with " + description_ + " failed: " + ec.message()};
  return Error{ErrorKind::disconnected, std::move(why)};
}

// ---- closing ----

void Connection::fail(Error error) {
  if (closed_.exchange(true, std::memory_order_acq_rel)) return;
  transport_->shutdown();
  {
    std::lock_guard lock(timer_mutex_);
    timer_.cancel();
  }
  std::unordered_map<std::uint64_t, PendingCall> pending;
  {
    std::lock_guard lock(pending_mutex_);
    pending.swap(pending_);
    deadlines_.clear();
  }
  for (auto& [id, call] : pending) call.sink->on_failure(error);
  if (handshake_done_) std::exchange(handshake_done_, nullptr)(error);
  if (handler_) handler_->on_closed(*this, error);
}

void Connection::protocol_error(const Error& error) {
  send_error(0, error.kind, error.message);
  fail(Error{ErrorKind::disconnected, "protocol error: " + error.message});
}

void Connection::close(std::string reason) {
  if (!is_open()) return;
  wire::OutFrame frame = control_frame(MessageType::close, 0);
  frame.header.encoding = wire::Encoding::msgpack;
  wire::ByteSink sink{&frame.payload};
  wire::Packer packer(sink);
  packer.pack_map(1);
  wire::pack_str(packer, "reason");
  wire::pack_str(packer, reason);
  send(std::move(frame));
  fail(Error{ErrorKind::disconnected, "connection closed: " + reason});
}

// ---- timers: heartbeat, idle timeout, call deadlines ----

void Connection::arm_timer() {
  if (!is_open()) return;
  auto next = from_ticks(last_sent_.load()) + options_.heartbeat;
  next = std::min(next, from_ticks(last_received_.load()) + options_.idle_timeout);
  if (!established_.load()) next = std::min(next, handshake_deadline_);
  {
    std::lock_guard lock(pending_mutex_);
    if (!deadlines_.empty()) next = std::min(next, deadlines_.begin()->first);
  }
  std::lock_guard lock(timer_mutex_);
  timer_.expires_at(next);
  timer_.async_wait([weak = weak_from_this()](std::error_code ec) {
    if (ec == asio::error::operation_aborted) return;
    if (auto self = weak.lock()) self->on_timer();
  });
}

void Connection::on_timer() {
  if (!is_open()) return;
  auto now = Clock::now();
  // While this side has paused reading (backpressure), silence is its own doing, not the peer's.
  bool reading_paused = pause_requested_.load() || read_parked_.load();
  if (!reading_paused && now - from_ticks(last_received_.load()) >= options_.idle_timeout) {
    fail(Error{ErrorKind::disconnected, "idle timeout: nothing heard from the peer"});
    return;
  }
  if (!established_.load() && now >= handshake_deadline_) {
    fail(Error{ErrorKind::timeout, "handshake timed out"});
    return;
  }
  if (established_.load() && now - from_ticks(last_sent_.load()) >= options_.heartbeat)
    send(control_frame(MessageType::ping, 0));
  std::vector<std::shared_ptr<ReplySink>> expired;
  std::vector<std::uint64_t> expired_ids;
  {
    std::lock_guard lock(pending_mutex_);
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      auto id = deadlines_.begin()->second;
      deadlines_.erase(deadlines_.begin());
      auto it = pending_.find(id);
      if (it == pending_.end()) continue;
      expired.push_back(std::move(it->second.sink));
      expired_ids.push_back(id);
      pending_.erase(it);
    }
  }
  for (auto id : expired_ids) send(control_frame(MessageType::cancel, id));
  for (auto& sink : expired) sink->on_failure(Error{ErrorKind::timeout, "call timed out"});
  arm_timer();
}

// ---- WaitingSink ----

void WaitingSink::on_frame(wire::Frame&& frame) {
  {
    std::lock_guard lock(mutex_);
    outcome_.emplace(std::move(frame));
  }
  ready_.notify_one();
}

void WaitingSink::on_failure(const Error& error) {
  {
    std::lock_guard lock(mutex_);
    if (!outcome_) outcome_.emplace(error);
  }
  ready_.notify_one();
}

std::optional<Result<wire::Frame>> WaitingSink::wait(std::optional<Clock::time_point> deadline) {
  std::unique_lock lock(mutex_);
  if (deadline) {
    if (!ready_.wait_until(lock, *deadline, [&] { return outcome_.has_value(); })) return std::nullopt;
  } else {
    ready_.wait(lock, [&] { return outcome_.has_value(); });
  }
  return std::move(outcome_);
}

}  // namespace tether::rpc
