// The msgpack tether profile for Python values: packing with msgpack-cxx's packer, unpacking with
// its event visitor so Python objects are built directly with no intermediate tree.
#include "python/pycodec.hpp"

#include <sys/mman.h>

#include <cstdint>
#include <cstring>

namespace tether::python {
namespace {

constexpr std::size_t kSegmentThreshold = 64 * 1024;
constexpr int kMaxDepth = 200;

enum ExtType : std::int8_t { kTuple = 1, kSet = 2, kFrozenSet = 3, kBigInt = 4, kSegment = 5, kCustom = 6, kRef = 7 };

// Keeps a Python object alive for a segment until the frame is written, possibly on an io thread.
std::shared_ptr<void> hold(PyObject* object) {
  Py_INCREF(object);
  return std::shared_ptr<void>(object, [](void* p) {
    if (!Py_IsInitialized()) return;
    PyGILState_STATE state = PyGILState_Ensure();
    Py_DECREF(static_cast<PyObject*>(p));
    PyGILState_Release(state);
  });
}

std::shared_ptr<void> hold_buffer(Py_buffer* view) {
  return std::shared_ptr<void>(view, [](void* p) {
    auto* v = static_cast<Py_buffer*>(p);
    if (Py_IsInitialized()) {
      PyGILState_STATE state = PyGILState_Ensure();
      PyBuffer_Release(v);
      PyGILState_Release(state);
    }
    delete v;
  });
}

// An ext with a 32-bit length patched after its contents are written, so nesting needs no copies.
std::size_t begin_ext(std::vector<std::byte>& out, ExtType type) {
  std::size_t at = out.size();
  out.push_back(std::byte{0xc9});
  out.resize(out.size() + 4);
  out.push_back(std::byte(static_cast<std::uint8_t>(type)));
  return at;
}
void end_ext(std::vector<std::byte>& out, std::size_t at) {
  auto length = static_cast<std::uint32_t>(out.size() - at - 6);
  for (int i = 0; i < 4; ++i) out[at + 1 + i] = std::byte((length >> (8 * (3 - i))) & 0xff);
}

bool encode(PyObject* value, wire::Packer& packer, EncodeContext& context, int depth);

bool encode_bytes_like(PyObject* owner, std::shared_ptr<void> keepalive, const char* data, std::size_t size,
                       wire::Packer& packer, EncodeContext& context) {
  if (size >= kSegmentThreshold && context.segments) {
    auto index = static_cast<std::uint32_t>(context.segments->size());
    context.segments->push_back(
        {std::span(reinterpret_cast<const std::byte*>(data), size), keepalive ? std::move(keepalive) : hold(owner)});
    char le[4];
    for (int i = 0; i < 4; ++i) le[i] = static_cast<char>((index >> (8 * i)) & 0xff);
    packer.pack_ext(4, kSegment);
    packer.pack_ext_body(le, 4);
    return true;
  }
  packer.pack_bin(static_cast<std::uint32_t>(size));
  packer.pack_bin_body(data, static_cast<std::uint32_t>(size));
  return true;
}

bool encode_int(PyObject* value, wire::Packer& packer) {
  int overflow = 0;
  long long small = PyLong_AsLongLongAndOverflow(value, &overflow);
  if (!overflow) {
    if (small == -1 && PyErr_Occurred()) return false;
    packer.pack_int64(small);
    return true;
  }
  if (overflow > 0) {
    unsigned long long big = PyLong_AsUnsignedLongLong(value);
    if (!PyErr_Occurred()) {
      packer.pack_uint64(big);
      return true;
    }
    PyErr_Clear();
  }
  PyRef bits(PyObject_CallMethod(value, "bit_length", nullptr));
  if (!bits) return false;
  Py_ssize_t length = PyLong_AsSsize_t(bits.p) / 8 + 1;
  PyRef method(PyObject_GetAttrString(value, "to_bytes"));
  PyRef args(Py_BuildValue("(ns)", length, "big"));
  PyRef kwargs(Py_BuildValue("{s:O}", "signed", Py_True));
  PyRef bytes(method ? PyObject_Call(method.p, args.p, kwargs.p) : nullptr);
  if (!bytes) return false;
  auto size = static_cast<std::uint32_t>(PyBytes_GET_SIZE(bytes.p));
  packer.pack_ext(size, kBigInt);
  packer.pack_ext_body(PyBytes_AS_STRING(bytes.p), size);
  return true;
}

bool encode_items(PyObject* sequence, wire::Packer& packer, EncodeContext& context, int depth) {
  PyRef fast(PySequence_Fast(sequence, "expected a sequence"));
  if (!fast) return false;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(fast.p);
  PyObject** items = PySequence_Fast_ITEMS(fast.p);
  packer.pack_array(static_cast<std::uint32_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i)
    if (!encode(items[i], packer, context, depth + 1)) return false;
  return true;
}

bool encode_wrapped(ExtType type, PyObject* sequence, wire::Packer& packer, EncodeContext& context, int depth) {
  auto at = begin_ext(*context.out, type);
  if (!encode_items(sequence, packer, context, depth)) return false;
  end_ext(*context.out, at);
  return true;
}

bool encode_ref(long long kind, PyObject* value, wire::Packer& packer, EncodeContext& context, int depth) {
  auto at = begin_ext(*context.out, kRef);
  packer.pack_array(2);
  packer.pack_int64(kind);
  if (!encode(value, packer, context, depth + 1)) return false;
  end_ext(*context.out, at);
  return true;
}

bool encode_custom(PyObject* value, PyObject* entry, wire::Packer& packer, EncodeContext& context, int depth) {
  PyRef state(PyObject_CallOneArg(PyTuple_GET_ITEM(entry, 1), value));
  if (!state) return false;
  auto at = begin_ext(*context.out, kCustom);
  packer.pack_array(2);
  if (!encode(PyTuple_GET_ITEM(entry, 0), packer, context, depth + 1)) return false;
  if (!encode(state.p, packer, context, depth + 1)) return false;
  end_ext(*context.out, at);
  return true;
}

// Values that are not data: a registered custom type, a proxy or an exported callback, else an error.
bool encode_other(PyObject* value, wire::Packer& packer, EncodeContext& context, int depth) {
  auto& h = hooks();
  if (h.encoders) {
    PyObject* entry = PyDict_GetItem(h.encoders, reinterpret_cast<PyObject*>(Py_TYPE(value)));
    if (entry) return encode_custom(value, entry, packer, context, depth);
  }
  if (PyObject_CheckBuffer(value)) {
    auto* view = new Py_buffer;
    if (PyObject_GetBuffer(value, view, PyBUF_C_CONTIGUOUS) != 0) {
      delete view;
      return false;
    }
    auto keep = hold_buffer(view);
    return encode_bytes_like(value, keep, static_cast<const char*>(view->buf), static_cast<std::size_t>(view->len), packer, context);
  }
  if (h.export_object) {
    // (kind, value) for a proxy (1, uri) or an exported callback (0, id); None when not exportable.
    PyRef exported(PyObject_CallFunctionObjArgs(h.export_object, context.channel ? context.channel : Py_None, value, nullptr));
    if (!exported) return false;
    if (exported.p != Py_None) {
      long long kind = PyLong_AsLongLong(PyTuple_GET_ITEM(exported.p, 0));
      return encode_ref(kind, PyTuple_GET_ITEM(exported.p, 1), packer, context, depth);
    }
  }
  PyErr_Format(PyExc_TypeError,
               "tether cannot encode a value of type '%.200s' (register it with tether.register_type, "
               "or enable pickle)", Py_TYPE(value)->tp_name);
  return false;
}

bool encode(PyObject* value, wire::Packer& packer, EncodeContext& context, int depth) {
  if (depth > kMaxDepth) {
    PyErr_SetString(PyExc_ValueError, "value nested too deeply to encode");
    return false;
  }
  if (value == Py_None) {
    packer.pack_nil();
    return true;
  }
  if (value == Py_True || value == Py_False) {
    packer.pack(value == Py_True);
    return true;
  }
  auto& h = hooks();
  // Registered types win over the builtin shapes they may derive from (IntEnum, namedtuple...).
  if (h.encoders && PyDict_GET_SIZE(h.encoders) && !PyUnicode_CheckExact(value) && !PyLong_CheckExact(value)) {
    PyObject* entry = PyDict_GetItem(h.encoders, reinterpret_cast<PyObject*>(Py_TYPE(value)));
    if (entry) return encode_custom(value, entry, packer, context, depth);
  }
  if (PyLong_Check(value)) return encode_int(value, packer);
  if (PyFloat_Check(value)) {
    // Always float64 on the wire: msgpack-cxx's pack_double would send 1.0 or -0.0 as an integer,
    // and the profile promises that a float arrives as a float.
    double number = PyFloat_AS_DOUBLE(value);
    std::uint64_t bits;
    std::memcpy(&bits, &number, sizeof bits);
    char out[9];
    out[0] = static_cast<char>(0xcb);
    for (int i = 0; i < 8; ++i) out[1 + i] = static_cast<char>((bits >> (8 * (7 - i))) & 0xff);
    context.out->insert(context.out->end(), reinterpret_cast<std::byte*>(out), reinterpret_cast<std::byte*>(out) + 9);
    return true;
  }
  if (PyUnicode_Check(value)) {
    Py_ssize_t size = 0;
    const char* text = PyUnicode_AsUTF8AndSize(value, &size);
    if (!text) return false;
    packer.pack_str(static_cast<std::uint32_t>(size));
    packer.pack_str_body(text, static_cast<std::uint32_t>(size));
    return true;
  }
  if (PyBytes_Check(value))
    return encode_bytes_like(value, nullptr, PyBytes_AS_STRING(value), static_cast<std::size_t>(PyBytes_GET_SIZE(value)), packer, context);
  if (PyList_Check(value)) return encode_items(value, packer, context, depth);
  if (PyTuple_Check(value)) return encode_wrapped(kTuple, value, packer, context, depth);
  if (PyDict_Check(value)) {
    packer.pack_map(static_cast<std::uint32_t>(PyDict_GET_SIZE(value)));
    PyObject *key, *item;
    Py_ssize_t pos = 0;
    while (PyDict_Next(value, &pos, &key, &item)) {
      if (!encode(key, packer, context, depth + 1) || !encode(item, packer, context, depth + 1)) return false;
    }
    return true;
  }
  if (PyAnySet_Check(value)) {
    PyRef items(PySequence_List(value));
    if (!items) return false;
    return encode_wrapped(PyFrozenSet_Check(value) ? kFrozenSet : kSet, items.p, packer, context, depth);
  }
  if (PyByteArray_Check(value))
    return encode_bytes_like(value, nullptr, PyByteArray_AS_STRING(value), static_cast<std::size_t>(PyByteArray_GET_SIZE(value)), packer, context);
  return encode_other(value, packer, context, depth);
}

// ---- decoding ----

struct DecodeContext {
  std::span<const std::span<const std::byte>> segments;
  PyObject* channel;
  const std::vector<wire::SegmentBuffer>* buffers;  // set when segments were read into bytes objects
};

PyObject* decode_span(const char* data, std::size_t size, DecodeContext& context, int depth);

PyObject* decode_ext(const char* data, std::uint32_t size, DecodeContext& context, int depth) {
  if (size < 1) {
    PyErr_SetString(PyExc_ValueError, "empty msgpack ext");
    return nullptr;
  }
  auto type = static_cast<std::int8_t>(data[0]);
  const char* body = data + 1;
  std::uint32_t length = size - 1;
  switch (type) {
    case kTuple:
    case kSet:
    case kFrozenSet: {
      PyRef items(decode_span(body, length, context, depth + 1));
      if (!items) return nullptr;
      if (!PyList_Check(items.p)) {
        PyErr_SetString(PyExc_ValueError, "tuple/set ext must hold an array");
        return nullptr;
      }
      if (type == kTuple) return PyList_AsTuple(items.p);
      return type == kSet ? PySet_New(items.p) : PyFrozenSet_New(items.p);
    }
    case kBigInt: {
      PyRef bytes(PyBytes_FromStringAndSize(body, length));
      PyRef kwargs(Py_BuildValue("{s:O}", "signed", Py_True));
      PyRef args(Py_BuildValue("(Os)", bytes.p, "big"));
      PyRef from_bytes(PyObject_GetAttrString(reinterpret_cast<PyObject*>(&PyLong_Type), "from_bytes"));
      if (!from_bytes || !args) return nullptr;
      return PyObject_Call(from_bytes.p, args.p, kwargs.p);
    }
    case kSegment: {
      if (length != 4) {
        PyErr_SetString(PyExc_ValueError, "segment ext must hold a 4-byte index");
        return nullptr;
      }
      std::uint32_t index = 0;
      for (int i = 0; i < 4; ++i) index |= std::uint32_t(static_cast<unsigned char>(body[i])) << (8 * i);
      if (index >= context.segments.size()) {
        PyErr_Format(PyExc_ValueError, "segment %u does not exist", index);
        return nullptr;
      }
      if (context.buffers && (*context.buffers)[index].object)
        return Py_NewRef(static_cast<PyObject*>((*context.buffers)[index].object));  // read into it: no copy
      auto segment = context.segments[index];
      return PyBytes_FromStringAndSize(reinterpret_cast<const char*>(segment.data()), static_cast<Py_ssize_t>(segment.size()));
    }
    case kCustom: {
      PyRef pair(decode_span(body, length, context, depth + 1));
      if (!pair) return nullptr;
      if (!PyList_Check(pair.p) || PyList_GET_SIZE(pair.p) != 2) {
        PyErr_SetString(PyExc_ValueError, "custom ext must hold [name, state]");
        return nullptr;
      }
      PyObject* decoder = hooks().decoders ? PyDict_GetItem(hooks().decoders, PyList_GET_ITEM(pair.p, 0)) : nullptr;
      if (!decoder) {
        PyErr_Format(PyExc_TypeError, "no decoder registered for custom type %R", PyList_GET_ITEM(pair.p, 0));
        return nullptr;
      }
      return PyObject_CallOneArg(decoder, PyList_GET_ITEM(pair.p, 1));
    }
    case kRef: {
      PyRef pair(decode_span(body, length, context, depth + 1));
      if (!pair) return nullptr;
      if (!PyList_Check(pair.p) || PyList_GET_SIZE(pair.p) != 2 || !hooks().make_ref) {
        PyErr_SetString(PyExc_ValueError, "reference ext must hold [kind, value]");
        return nullptr;
      }
      return PyObject_CallFunctionObjArgs(hooks().make_ref, context.channel ? context.channel : Py_None,
                                          PyList_GET_ITEM(pair.p, 0), PyList_GET_ITEM(pair.p, 1), nullptr);
    }
    default:
      PyErr_Format(PyExc_ValueError, "unknown msgpack ext type %d", int(type));
      return nullptr;
  }
}

// Builds Python objects from msgpack-cxx parse events; containers live on an explicit stack.
class Builder {
 public:
  Builder(DecodeContext& context, int depth, std::size_t size) : context_(context), depth_(depth), size_(size) {}
  ~Builder() {
    for (auto& f : stack_) {
      Py_XDECREF(f.container);
      Py_XDECREF(f.key);
    }
    Py_XDECREF(result_);
  }
  PyObject* take() { return std::exchange(result_, nullptr); }
  bool failed() const { return failed_; }

  bool visit_nil() { return add(Py_NewRef(Py_None)); }
  bool visit_boolean(bool v) { return add(PyBool_FromLong(v)); }
  bool visit_positive_integer(std::uint64_t v) { return add(PyLong_FromUnsignedLongLong(v)); }
  bool visit_negative_integer(std::int64_t v) { return add(PyLong_FromLongLong(v)); }
  bool visit_float32(float v) { return add(PyFloat_FromDouble(v)); }
  bool visit_float64(double v) { return add(PyFloat_FromDouble(v)); }
  bool visit_str(const char* v, std::uint32_t size) { return add(PyUnicode_DecodeUTF8(v, size, "strict")); }
  bool visit_bin(const char* v, std::uint32_t size) { return add(PyBytes_FromStringAndSize(v, size)); }
  bool visit_ext(const char* v, std::uint32_t size) { return add(decode_ext(v, size, context_, depth_)); }
  // A container cannot hold more elements than the payload has bytes: refuse before allocating.
  bool start_array(std::uint32_t n) { return n <= size_ ? push(PyList_New(n), false) : too_many(); }
  bool start_array_item() { return true; }
  bool end_array_item() { return true; }
  bool end_array() { return pop(); }
  bool start_map(std::uint32_t n) { return std::size_t(n) * 2 <= size_ ? push(PyDict_New(), true) : too_many(); }
  bool start_map_key() { return true; }
  bool end_map_key() { return true; }
  bool start_map_value() { return true; }
  bool end_map_value() { return true; }
  bool end_map() { return pop(); }
  void parse_error(std::size_t, std::size_t) { fail("malformed msgpack payload"); }
  void insufficient_bytes(std::size_t, std::size_t) { fail("truncated msgpack payload"); }
  bool referenced() const { return false; }
  void set_referenced(bool) {}

 private:
  struct Level {
    PyObject* container;
    bool is_map;
    Py_ssize_t index;
    PyObject* key;
  };

  bool too_many() {
    fail("msgpack container declares more elements than the payload holds");
    return false;
  }

  void fail(const char* why) {
    failed_ = true;
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, why);
  }

  bool push(PyObject* container, bool is_map) {
    if (!container) return failed_ = true, false;
    if (static_cast<int>(stack_.size()) + depth_ > kMaxDepth) {
      Py_DECREF(container);
      fail("value nested too deeply to decode");
      return false;
    }
    stack_.push_back(Level{container, is_map, 0, nullptr});
    return true;
  }

  bool pop() {
    Level level = stack_.back();
    stack_.pop_back();
    return add(level.container);
  }

  // Takes ownership of `value`.
  bool add(PyObject* value) {
    if (!value) return failed_ = true, false;
    if (stack_.empty()) {
      result_ = value;
      return true;
    }
    Level& top = stack_.back();
    if (!top.is_map) {
      PyList_SET_ITEM(top.container, top.index++, value);
      return true;
    }
    if (!top.key) {
      top.key = value;
      return true;
    }
    int rc = PyDict_SetItem(top.container, top.key, value);
    Py_DECREF(value);
    Py_CLEAR(top.key);
    if (rc != 0) return failed_ = true, false;
    return true;
  }

  DecodeContext& context_;
  int depth_;
  std::size_t size_;
  std::vector<Level> stack_;
  PyObject* result_ = nullptr;
  bool failed_ = false;
};

PyObject* decode_span(const char* data, std::size_t size, DecodeContext& context, int depth) {
  Builder builder(context, depth, size);
  std::size_t offset = 0;
  bool complete = false;
  try {
    complete = msgpack::v2::parse(data, size, offset, builder);
  } catch (const std::exception& e) {
    if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "malformed msgpack payload: %s", e.what());
    return nullptr;
  }
  if (builder.failed() || !complete) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "malformed msgpack payload");
    return nullptr;
  }
  if (offset != size) {
    PyErr_SetString(PyExc_ValueError, "trailing bytes after msgpack payload");
    return nullptr;
  }
  return builder.take();
}

PyObject* decode_pickle(std::span<const std::byte> main, std::span<const std::span<const std::byte>> segments) {
  PyRef data(PyBytes_FromStringAndSize(reinterpret_cast<const char*>(main.data()), static_cast<Py_ssize_t>(main.size())));
  PyRef buffers(PyList_New(static_cast<Py_ssize_t>(segments.size())));
  if (!data || !buffers) return nullptr;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    PyObject* bytes = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(segments[i].data()), static_cast<Py_ssize_t>(segments[i].size()));
    if (!bytes) return nullptr;
    PyList_SET_ITEM(buffers.p, static_cast<Py_ssize_t>(i), bytes);
  }
  return PyObject_CallFunctionObjArgs(hooks().pickle_loads, data.p, buffers.p, nullptr);
}

}  // namespace

wire::SegmentBuffer allocate_bytes_segment(std::size_t size) {
  if (!Py_IsInitialized()) return {};
  PyGILState_STATE state = PyGILState_Ensure();
  PyObject* bytes = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(size));
  if (!bytes) PyErr_Clear();
  PyGILState_Release(state);
  if (!bytes) return {};
  // Fresh memory faults in page by page as the socket fills it; huge pages make that 512 times
  // fewer faults for a large segment (where the kernel offers them on request).
  constexpr std::uintptr_t kHuge = 2u << 20;
  if (size >= 2 * kHuge) {
    auto start = (reinterpret_cast<std::uintptr_t>(PyBytes_AS_STRING(bytes)) + kHuge - 1) & ~(kHuge - 1);
    auto end = (reinterpret_cast<std::uintptr_t>(PyBytes_AS_STRING(bytes)) + size) & ~(kHuge - 1);
    if (end > start) ::madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
  }
  std::shared_ptr<void> owner(bytes, [](void* p) {
    if (!Py_IsInitialized()) return;
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_DECREF(static_cast<PyObject*>(p));
    PyGILState_Release(gil);
  });
  return {reinterpret_cast<std::byte*>(PyBytes_AS_STRING(bytes)), size, std::move(owner), bytes};
}

Hooks& hooks() {
  static Hooks instance;  // set once at import by the Python layer; read under the GIL
  return instance;
}

bool encode_value(PyObject* value, wire::Packer& packer, EncodeContext& context) {
  return encode(value, packer, context, 0);
}

bool encode_into(PyObject* value, wire::Encoding encoding, wire::OutFrame& frame, PyObject* channel) {
  frame.header.encoding = encoding;
  if (encoding == wire::Encoding::pickle) {
    PyRef pickled(PyObject_CallOneArg(hooks().pickle_dumps, value));
    if (!pickled) return false;
    PyObject* data = PyTuple_GET_ITEM(pickled.p, 0);
    PyObject* buffers = PyTuple_GET_ITEM(pickled.p, 1);
    auto* p = reinterpret_cast<const std::byte*>(PyBytes_AS_STRING(data));
    frame.payload.assign(p, p + PyBytes_GET_SIZE(data));
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(buffers); ++i) {
      auto* view = new Py_buffer;
      if (PyObject_GetBuffer(PyList_GET_ITEM(buffers, i), view, PyBUF_C_CONTIGUOUS) != 0) {
        delete view;
        return false;
      }
      frame.segments.push_back({std::span(static_cast<const std::byte*>(view->buf), static_cast<std::size_t>(view->len)), hold_buffer(view)});
    }
    return true;
  }
  wire::ByteSink sink{&frame.payload};
  wire::Packer packer(sink);
  EncodeContext context{&frame.payload, &frame.segments, channel};
  return encode(value, packer, context, 0);
}

PyObject* decode_body(const wire::Frame& frame, PyObject* channel, bool pickle_allowed) {
  if (frame.header.encoding == wire::Encoding::pickle && !pickle_allowed) {
    PyErr_SetString(PyExc_PermissionError,
                    "refused a pickle payload on a connection that did not negotiate pickle");
    return nullptr;
  }
  std::span<const std::byte> main = frame.body_span();
  std::vector<std::span<const std::byte>> segments;
  if (frame.header.flags & wire::kSegments) {
    auto split = wire::split_segments(frame);
    if (!split) {
      PyErr_SetString(PyExc_ValueError, split.error().message.c_str());
      return nullptr;
    }
    main = split->main;
    segments = std::move(split->segments);
  }
  if (frame.header.encoding == wire::Encoding::pickle) return decode_pickle(main, segments);
  if (frame.header.encoding != wire::Encoding::msgpack) {
    PyErr_Format(PyExc_ValueError, "unknown payload encoding %d", int(frame.header.encoding));
    return nullptr;
  }
  DecodeContext context{segments, channel, frame.segment_buffers.empty() ? nullptr : &frame.segment_buffers};
  return decode_span(reinterpret_cast<const char*>(main.data()), main.size(), context, 0);
}

}  // namespace tether::python
