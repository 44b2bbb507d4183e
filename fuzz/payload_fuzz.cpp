// libFuzzer target: arbitrary bytes as a msgpack (tether profile) payload decoded into Python
// objects by the real decoder, with and without the segment layout. CPython is embedded.
#include "python/pycodec.hpp"

using namespace tether;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Py_Initialize();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  wire::Frame frame;
  frame.header.type = wire::MessageType::request;
  frame.header.encoding = wire::Encoding::msgpack;
  frame.header.flags = (data[0] & 1) ? wire::kSegments : 0;
  frame.body = std::make_shared<wire::Bytes>(size - 1);
  if (size > 1) std::memcpy(frame.body->data(), data + 1, size - 1);
  PyObject* value = python::decode_body(frame, nullptr, false);
  Py_XDECREF(value);
  PyErr_Clear();
  return 0;
}
