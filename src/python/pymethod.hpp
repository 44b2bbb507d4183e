// tether._core.RemoteMethod: what `proxy.name` returns. Its calls go straight from the Python call
// to the Channel, with no Python frame in between (the hot path of pipelined futures).
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <nanobind/nanobind.h>

namespace tether::python {

// Adds the RemoteMethod type to `module`. RemoteMethod(proxy, name, oneway, stream): calling it
// calls `name` on the proxy's object (sync, or oneway, or returning a stream iterator, as the
// server described the method); `.future(...)` starts the call and returns a tether.Future. The
// proxy supplies `_channel` (or `_connect()` to open it), `_object`, `_timeout` and `_encoding`.
void add_remote_method_type(nanobind::module_& module);

}  // namespace tether::python
