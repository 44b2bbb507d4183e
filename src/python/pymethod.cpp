// tether._core.RemoteMethod (see pymethod.hpp).
#include "python/pymethod.hpp"

#include <structmember.h>  // PyMemberDef (Python 3.11 keeps it here)

#include <exception>
#include <typeinfo>
#include <optional>
#include <string>

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>

#include "python/pychannel.hpp"

namespace nb = nanobind;

namespace tether::python {
namespace {

enum class Kind { twoway = 0, oneway = 1, stream = 2 };

struct RemoteMethod {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyObject* proxy;
  PyObject* name;  // str
  Kind kind;
};

struct ProxyNames {
  PyObject* channel = PyUnicode_InternFromString("_channel");
  PyObject* connect = PyUnicode_InternFromString("_connect");
  PyObject* object = PyUnicode_InternFromString("_object");
  PyObject* timeout = PyUnicode_InternFromString("_timeout");
  PyObject* encoding = PyUnicode_InternFromString("_encoding");
};

ProxyNames& proxy_names() {
  static ProxyNames instance;  // built on first use, under the GIL
  return instance;
}

// What one call needs from the proxy, read fresh each call (timeout may change; close() reopens).
struct CallTarget {
  nb::object channel_object;
  Channel* channel = nullptr;
  std::string object;
  std::optional<double> timeout;
  int encoding = 1;
};

CallTarget target_of(PyObject* proxy) {
  auto& n = proxy_names();
  CallTarget t;
  t.channel_object = nb::steal(PyObject_GetAttr(proxy, n.channel));
  if (!t.channel_object) throw nb::python_error();
  if (t.channel_object.is_none() || !nb::cast<Channel*>(t.channel_object)->is_open()) {
    // First use, or the connection was lost: a new call gets a new connection (calls that were in
    // flight on the old one have already ended with ConnectionClosedError).
    t.channel_object = nb::steal(PyObject_CallMethodNoArgs(proxy, n.connect));
    if (!t.channel_object) throw nb::python_error();
  }
  t.channel = nb::cast<Channel*>(t.channel_object);
  t.object = nb::cast<std::string>(nb::steal(PyObject_GetAttr(proxy, n.object)));
  nb::object timeout = nb::steal(PyObject_GetAttr(proxy, n.timeout));
  if (!timeout) throw nb::python_error();
  if (!timeout.is_none()) t.timeout = nb::cast<double>(timeout);
  t.encoding = nb::cast<int>(nb::steal(PyObject_GetAttr(proxy, n.encoding)));
  return t;
}

// Splits vectorcall arguments into an args tuple and a kwargs dict (None when there are none).
std::pair<nb::tuple, nb::object> split_arguments(PyObject* const* args, Py_ssize_t count, PyObject* kwnames) {
  Py_ssize_t keywords = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  PyObject* positional = PyTuple_New(count);
  if (!positional) throw nb::python_error();
  for (Py_ssize_t i = 0; i < count; ++i) PyTuple_SET_ITEM(positional, i, Py_NewRef(args[i]));
  nb::tuple tuple = nb::steal<nb::tuple>(positional);
  if (keywords == 0) return {tuple, nb::none()};
  nb::dict kwargs;
  for (Py_ssize_t i = 0; i < keywords; ++i) kwargs[nb::handle(PyTuple_GET_ITEM(kwnames, i))] = nb::handle(args[count + i]);
  return {tuple, kwargs};
}

// Runs `body`, turning C++ exceptions into the Python error they carry.
template <typename Body>
PyObject* guarded(Body&& body) {
  try {
    return body().release().ptr();
  } catch (nb::python_error& e) {
    e.restore();
  } catch (const std::bad_cast&) {
    PyErr_SetString(PyExc_TypeError, "the proxy's connection state has unexpected types");
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

PyObject* call(PyObject* callable, PyObject* const* args, std::size_t nargsf, PyObject* kwnames) {
  auto* self = reinterpret_cast<RemoteMethod*>(callable);
  return guarded([&]() -> nb::object {
    auto target = target_of(self->proxy);
    auto [positional, kwargs] = split_arguments(args, PyVectorcall_NARGS(nargsf), kwnames);
    auto method = nb::cast<std::string>(nb::handle(self->name));
    switch (self->kind) {
      case Kind::oneway:
        target.channel->call_oneway(target.object, method, positional, kwargs, target.encoding);
        return nb::none();
      case Kind::stream:
        return nb::cast(target.channel->call_stream(target.object, method, positional, kwargs, target.encoding));
      case Kind::twoway:
        break;
    }
    return target.channel->call(target.object, method, positional, kwargs, target.timeout, target.encoding);
  });
}

PyObject* future(PyObject* object, PyObject* const* args, Py_ssize_t count, PyObject* kwnames) {
  auto* self = reinterpret_cast<RemoteMethod*>(object);
  return guarded([&]() -> nb::object {
    auto target = target_of(self->proxy);
    auto [positional, kwargs] = split_arguments(args, count, kwnames);
    auto method = nb::cast<std::string>(nb::handle(self->name));
    return target.channel->call_future(target.object, method, positional, kwargs, target.timeout, target.encoding);
  });
}

PyObject* make(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
  static const char* keywords[] = {"proxy", "name", "oneway", "stream", nullptr};
  PyObject *proxy, *name;
  int oneway = 0, stream = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OU|pp", const_cast<char**>(keywords), &proxy, &name, &oneway, &stream))
    return nullptr;
  auto* self = reinterpret_cast<RemoteMethod*>(type->tp_alloc(type, 0));
  if (!self) return nullptr;
  self->vectorcall = call;
  self->proxy = Py_NewRef(proxy);
  self->name = Py_NewRef(name);
  self->kind = oneway ? Kind::oneway : stream ? Kind::stream : Kind::twoway;
  return reinterpret_cast<PyObject*>(self);
}

int traverse(PyObject* object, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(object));  // instances of a heap type hold a reference to it
  Py_VISIT(reinterpret_cast<RemoteMethod*>(object)->proxy);
  return 0;
}

int clear(PyObject* object) {
  Py_CLEAR(reinterpret_cast<RemoteMethod*>(object)->proxy);
  return 0;
}

void dealloc(PyObject* object) {
  auto* self = reinterpret_cast<RemoteMethod*>(object);
  PyObject_GC_UnTrack(object);
  Py_CLEAR(self->proxy);
  Py_CLEAR(self->name);
  PyTypeObject* type = Py_TYPE(object);
  type->tp_free(object);
  Py_DECREF(type);
}

PyObject* repr(PyObject* object) {
  auto* self = reinterpret_cast<RemoteMethod*>(object);
  return PyUnicode_FromFormat("<remote method %U of %R>", self->name, self->proxy ? self->proxy : Py_None);
}

PyObject* get_name(PyObject* object, void*) { return Py_NewRef(reinterpret_cast<RemoteMethod*>(object)->name); }

PyObject* get_kind(PyObject* object, void*) {
  static const char* names[] = {"twoway", "oneway", "stream"};
  return PyUnicode_FromString(names[static_cast<int>(reinterpret_cast<RemoteMethod*>(object)->kind)]);
}

PyMethodDef methods[] = {
    {"future", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(future)), METH_FASTCALL | METH_KEYWORDS,
     "Starts the call and returns at once a tether.Future that the reply completes."},
    {nullptr, nullptr, 0, nullptr},
};

PyMemberDef members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(RemoteMethod, vectorcall), READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

PyGetSetDef getset[] = {
    {"name", get_name, nullptr, "the remote method's name", nullptr},
    {"kind", get_kind, nullptr, "'twoway', 'oneway' or 'stream'", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(make)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_traverse, reinterpret_cast<void*>(traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(clear)},
    {Py_tp_dealloc, reinterpret_cast<void*>(dealloc)},
    {Py_tp_repr, reinterpret_cast<void*>(repr)},
    {Py_tp_methods, methods},
    {Py_tp_members, members},
    {Py_tp_getset, getset},
    {Py_tp_doc, const_cast<char*>("A method of a remote object, bound to its proxy.")},
    {0, nullptr},
};

PyType_Spec spec = {
    "tether._core.RemoteMethod", sizeof(RemoteMethod), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL, slots,
};

}  // namespace

void add_remote_method_type(nb::module_& module) {
  PyObject* type = PyType_FromSpec(&spec);
  if (!type) throw nb::python_error();
  module.attr("RemoteMethod") = nb::steal(type);
}

}  // namespace tether::python
