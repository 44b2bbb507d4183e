// Python exceptions to ERROR bodies and back, and core errors to Python exceptions.
#include "python/pycodec.hpp"

namespace tether::python {
PyObject* exception_from_error(const wire::ErrorBody& error) {
  auto kind = to_string(error.kind);
  return PyObject_CallFunction(hooks().make_error, "s#s#s#Os#", kind.data(), Py_ssize_t(kind.size()),
                               error.message.data(), Py_ssize_t(error.message.size()), error.type.data(),
                               Py_ssize_t(error.type.size()), Py_None, error.traceback.data(),
                               Py_ssize_t(error.traceback.size()));
}

PyObject* exception_from_frame(const wire::Frame& frame) {
  PyRef decoded(decode_body(frame, nullptr, false));  // error bodies are data only, never pickle
  if (!decoded || !PyDict_Check(decoded.p)) {
    PyErr_Clear();
    return exception_from_error(wire::unpack_error_body(frame.body_span()));
  }
  auto field = [&](const char* key) {
    PyObject* value = PyDict_GetItemString(decoded.p, key);
    return value ? value : Py_None;
  };
  return PyObject_CallFunctionObjArgs(hooks().make_error, field("kind"), field("message"), field("type"),
                                      field("args"), field("traceback"), nullptr);
}

PyObject* exception_from_error(const Error& error) {
  return exception_from_error(wire::ErrorBody{error.kind, error.message, "", ""});
}

std::nullptr_t raise_error(const Error& error) {
  PyObject* exception = exception_from_error(error);
  if (exception) {
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exception)), exception);
    Py_DECREF(exception);
  }
  return nullptr;
}

std::vector<std::byte> error_body_from_current_exception(ErrorKind kind) {
  PyObject *type = nullptr, *exception = nullptr, *traceback_object = nullptr;
  PyErr_Fetch(&type, &exception, &traceback_object);
  PyErr_NormalizeException(&type, &exception, &traceback_object);
  if (exception && traceback_object) PyException_SetTraceback(exception, traceback_object);
  Py_XDECREF(type);
  Py_XDECREF(traceback_object);
  PyRef held(exception);
  wire::ErrorBody body;
  body.kind = kind;
  PyRef text(PyObject_Str(exception));
  if (text) body.message = PyUnicode_AsUTF8(text.p) ? PyUnicode_AsUTF8(text.p) : "";
  PyErr_Clear();
  // (type name, args, traceback text) from the Python layer; args travel when they are plain data.
  PyRef described(hooks().format_exception ? PyObject_CallOneArg(hooks().format_exception, exception) : nullptr);
  std::vector<std::byte> out;
  wire::ByteSink sink{&out};
  wire::Packer packer(sink);
  packer.pack_map(5);
  wire::pack_str(packer, "kind");
  wire::pack_str(packer, to_string(kind));
  wire::pack_str(packer, "message");
  wire::pack_str(packer, body.message);
  std::string type_name, traceback;
  PyObject* args = nullptr;
  if (described && PyTuple_Check(described.p) && PyTuple_GET_SIZE(described.p) == 3) {
    const char* t = PyUnicode_AsUTF8(PyTuple_GET_ITEM(described.p, 0));
    const char* tb = PyUnicode_AsUTF8(PyTuple_GET_ITEM(described.p, 2));
    type_name = t ? t : "";
    traceback = tb ? tb : "";
    args = PyTuple_GET_ITEM(described.p, 1);
  }
  PyErr_Clear();
  wire::pack_str(packer, "type");
  wire::pack_str(packer, type_name);
  wire::pack_str(packer, "args");
  std::size_t mark = out.size();
  EncodeContext context{&out, nullptr, nullptr};
  if (!args || !encode_value(args, packer, context)) {
    PyErr_Clear();
    out.resize(mark);
    packer.pack_array(1);
    wire::pack_str(packer, body.message);
  }
  wire::pack_str(packer, "traceback");
  wire::pack_str(packer, traceback);
  return out;
}

}  // namespace tether::python
