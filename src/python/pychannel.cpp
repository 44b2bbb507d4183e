// Channel, StreamIterator and Responder: calls from Python over one connection.
#include "python/pychannel.hpp"

#include <cmath>

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>

#include "python/pycodec.hpp"
#include "python/pydispatch.hpp"
#include "python/pyfuture.hpp"

namespace tether::python {
namespace {

std::optional<rpc::Clock::time_point> deadline_after(std::optional<double> timeout) {
  if (!timeout) return std::nullopt;
  return rpc::Clock::now() + std::chrono::duration_cast<rpc::Clock::duration>(std::chrono::duration<double>(*timeout));
}

[[noreturn]] void throw_current() { throw nb::python_error(); }

[[noreturn]] void throw_error(const Error& error) {
  raise_error(error);
  throw_current();
}

// Turns a REPLY into a value or an ERROR into the raised exception (GIL held).
nb::object outcome_of(const wire::Frame& frame, PyObject* channel, bool pickle_allowed) {
  if (frame.header.type == wire::MessageType::error) {
    PyObject* exception = exception_from_frame(frame);
    if (!exception) throw_current();
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exception)), exception);
    Py_DECREF(exception);
    throw_current();
  }
  PyObject* value = decode_body(frame, channel, pickle_allowed);
  if (!value) throw_current();
  return nb::steal(value);
}

}  // namespace

class StreamIterator::Sink final : public rpc::ReplySink {
 public:
  void on_frame(wire::Frame&& frame) override {
    {
      std::lock_guard lock(mutex_);
      items_.emplace_back(std::move(frame));
    }
    ready_.notify_one();
  }
  void on_failure(const Error& error) override {
    {
      std::lock_guard lock(mutex_);
      items_.emplace_back(error);
    }
    ready_.notify_one();
  }
  Result<wire::Frame> pop() {
    std::unique_lock lock(mutex_);
    ready_.wait(lock, [&] { return !items_.empty(); });
    auto item = std::move(items_.front());
    items_.pop_front();
    return item;
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Result<wire::Frame>> items_;
};

wire::OutFrame Channel::request_frame(const std::string& object, const std::string& method, nb::tuple args,
                                      nb::object kwargs, int encoding, std::optional<double> timeout) {
  wire::OutFrame frame;
  frame.header.type = wire::MessageType::request;
  if (timeout && *timeout > 0)  // how long the caller will wait, so the callee can tell
    frame.header.timeout_ms = static_cast<std::uint32_t>(std::min(std::ceil(*timeout * 1000.0), 4294967295.0));
  frame.meta.reserve(object.size() + method.size() + 1);
  frame.meta.append(object).push_back('\0');
  frame.meta.append(method);
  auto wanted = static_cast<wire::Encoding>(encoding);
  if (wanted == wire::Encoding::pickle && !pickle_allowed())
    throw_error(Error{ErrorKind::denied, "the server does not allow pickle on this connection (it needs allow_pickle=True and a secret)"});
  nb::list request;
  request.append(nb::list(args));
  request.append(kwargs.is_none() || nb::len(kwargs) == 0 ? nb::none() : kwargs);
  // This channel's own Python object: callbacks in the arguments are exported on this connection.
  if (!encode_into(request.ptr(), wanted, frame, nb::find(this).ptr())) throw_current();
  return frame;
}

nb::object Channel::call(const std::string& object, const std::string& method, nb::tuple args, nb::object kwargs,
                         std::optional<double> timeout, int encoding) {
  auto frame = request_frame(object, method, args, kwargs, encoding, timeout);
  auto deadline = deadline_after(timeout);
  auto sink = std::make_shared<rpc::WaitingSink>();
  std::optional<Result<wire::Frame>> outcome;
  Error failure;
  {
    nb::gil_scoped_release release;
    auto id = connection_->call(std::move(frame), sink);
    if (!id) {
      failure = id.error();
    } else {
      outcome = sink->wait(deadline);
      if (!outcome) {
        connection_->cancel_call(*id);
        failure = Error{ErrorKind::timeout, "call to " + object + "." + method + " timed out after " + std::to_string(*timeout) + " s"};
      }
    }
  }
  if (!outcome) throw_error(failure);
  if (!*outcome) throw_error(outcome->error());
  return outcome_of(outcome->value(), nb::find(this).ptr(), connection_->negotiated().pickle_allowed);
}

void Channel::call_oneway(const std::string& object, const std::string& method, nb::tuple args, nb::object kwargs, int encoding) {
  auto frame = request_frame(object, method, args, kwargs, encoding);
  frame.header.flags |= wire::kOneway;
  Result<std::uint64_t> sent = Error{};
  {
    nb::gil_scoped_release release;
    sent = connection_->call(std::move(frame), nullptr);
  }
  if (!sent) throw_error(sent.error());
}

nb::object Channel::call_future(const std::string& object, const std::string& method, nb::tuple args, nb::object kwargs,
                                std::optional<double> timeout, int encoding) {
  auto frame = request_frame(object, method, args, kwargs, encoding, timeout);
  nb::object channel = nb::find(this);
  // The request id is known once the call is sent, and the reply may arrive before this thread has
  // the GIL back; the sink holds the future from the start and the id is filled in afterwards.
  nb::object future = nb::steal(new_future(channel.ptr(), 0));
  if (!future) throw_current();
  auto* state = static_cast<ConnectionState*>(connection_->attachment());
  auto sink = std::make_shared<FutureSink>(future.ptr(), channel.ptr(), state, pickle_allowed());
  Result<std::uint64_t> sent = Error{};
  std::size_t size = frame.payload.size();
  for (const auto& segment : frame.segments) size += segment.bytes.size();
  if (size >= (1u << 20)) {
    nb::gil_scoped_release release;  // a large request may take a while to write
    sent = connection_->call(std::move(frame), std::move(sink), deadline_after(timeout));
  } else {
    // Like Nagle's algorithm: with nothing in flight the request leaves at once (a lone future is
    // as quick as a sync call); while earlier calls are in flight it joins the next flush, so a
    // burst of futures leaves in a few writes instead of one system call each. A small send never
    // blocks, so the GIL stays held: releasing it per call would hand it to the io thread
    // completing earlier futures, and a burst would cost a thread switch per call. (No io thread
    // takes the GIL while holding a core lock, so this cannot deadlock.)
    rpc::Connection::DeferFlush defer(connection_->pending_calls() > 0 ? connection_.get() : nullptr);
    sent = connection_->call(std::move(frame), std::move(sink), deadline_after(timeout));
  }
  if (!sent) throw_error(sent.error());
  set_future_request_id(future.ptr(), *sent);
  return future;
}

std::unique_ptr<StreamIterator> Channel::call_stream(const std::string& object, const std::string& method, nb::tuple args,
                                                     nb::object kwargs, int encoding) {
  auto frame = request_frame(object, method, args, kwargs, encoding);
  auto sink = std::make_shared<StreamIterator::Sink>();
  Result<std::uint64_t> sent = Error{};
  {
    nb::gil_scoped_release release;
    sent = connection_->call(std::move(frame), sink);
  }
  if (!sent) throw_error(sent.error());
  return std::make_unique<StreamIterator>(connection_, sink, *sent);
}

std::uint64_t Channel::export_object(nb::object object, nb::object methods) {
  auto* state = static_cast<ConnectionState*>(connection_->attachment());
  if (!state->exports) state->exports = PyDict_New();
  auto id = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(object.ptr()));
  nb::object key = nb::int_(id);
  nb::object entry = nb::make_tuple(object, methods);
  PyDict_SetItem(state->exports, key.ptr(), entry.ptr());
  return id;
}

void Channel::close(const std::string& reason) {
  nb::gil_scoped_release release;
  connection_->close(reason);
}

// Half the initial credit: the producer never runs dry while the consumer keeps up.
constexpr std::uint64_t kCreditBatch = 32;

StreamIterator::StreamIterator(std::shared_ptr<rpc::Connection> connection, std::shared_ptr<Sink> sink, std::uint64_t id)
    : connection_(std::move(connection)), sink_(std::move(sink)), id_(id) {}

StreamIterator::~StreamIterator() { close(); }

nb::object StreamIterator::next() {
  if (finished_) throw nb::stop_iteration();
  std::optional<Result<wire::Frame>> item;
  {
    nb::gil_scoped_release release;
    item.emplace(sink_->pop());
  }
  if (!*item) {
    finished_ = true;
    throw_error(item->error());
  }
  auto& frame = item->value();
  if (frame.header.type != wire::MessageType::stream_item) {
    finished_ = true;
    if (frame.header.type == wire::MessageType::reply) throw nb::stop_iteration();
  } else if (++consumed_since_credit_ == kCreditBatch) {
    // Items are granted back as the program consumes them, so a slow consumer slows the producer.
    connection_->send(wire::credit_frame(id_, std::exchange(consumed_since_credit_, 0)));
  }
  nb::object channel = nb::steal(make_channel_object(connection_));
  return outcome_of(frame, channel.ptr(), connection_->negotiated().pickle_allowed);
}

void StreamIterator::close() {
  if (finished_) return;
  finished_ = true;
  connection_->cancel_call(id_);
}

void Responder::reply(nb::handle value) {
  if (std::exchange(done_, true)) return;
  forget_async_call(*connection_, id_);
  wire::OutFrame frame;
  frame.header.type = wire::MessageType::reply;
  frame.header.request_id = id_;
  if (!encode_into(value.ptr(), encoding_, frame, channel_for(connection_)))
    return send_current_exception(*connection_, id_, ErrorKind::bad_request);
  nb::gil_scoped_release release;  // a large reply may take a while to write
  connection_->send(std::move(frame));
}

void Responder::fail(nb::handle exception) {
  if (std::exchange(done_, true)) return;
  forget_async_call(*connection_, id_);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exception.ptr())), exception.ptr());
  send_current_exception(*connection_, id_, ErrorKind::failed);
}

PyObject* make_channel_object(const std::shared_ptr<rpc::Connection>& connection) {
  return nb::cast(Channel(connection)).release().ptr();
}

PyObject* make_responder_object(const std::shared_ptr<rpc::Connection>& connection, std::uint64_t id, wire::Encoding encoding) {
  return nb::cast(Responder(connection, id, encoding)).release().ptr();
}

}  // namespace tether::python
