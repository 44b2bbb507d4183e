"""Custom types in the data-only encoding, and the pickle hooks used when pickle is negotiated."""
from __future__ import annotations

import importlib.abc
import importlib.util
import pickle
import sys
from typing import Any, Callable

_encoders: dict[type, tuple[str, Callable[[Any], Any]]] = {}
_decoders: dict[str, Callable[[Any], Any]] = {}


def register_type(cls: type, name: str, to_state: Callable[[Any], Any], from_state: Callable[[Any], Any]) -> None:
    """Lets values of `cls` travel in the default encoding: `to_state(value)` must return plain data
    (which may include bytes-like values, sent out of band when large), and the receiver, which must
    register the same `name`, rebuilds the value with `from_state(state)`. Decoding runs only the
    registered `from_state`, so the encoding stays data-only."""
    if not isinstance(name, str) or not name:
        raise ValueError("a registered type needs a non-empty name")
    _encoders[cls] = (name, to_state)
    _decoders[name] = from_state


def _register_numpy() -> None:
    """Registers numpy arrays now if numpy is loaded, else as soon as something imports it (so that
    importing tether does not cost numpy's import time: workers start faster)."""
    # The decoder is there from the start: a peer may send arrays to a process that never imported
    # numpy itself; numpy is loaded when the first one arrives.
    _decoders.setdefault("numpy.ndarray", _array_from_state)
    if "numpy" in sys.modules:
        _register_numpy_now(sys.modules["numpy"])
    elif not any(isinstance(finder, _NumpyImportWatcher) for finder in sys.meta_path):
        sys.meta_path.insert(0, _NumpyImportWatcher())


class _NumpyImportWatcher(importlib.abc.MetaPathFinder):
    """Sees the first `import numpy` and registers the array type once numpy has loaded."""

    def __init__(self):
        self._seen = False

    def find_spec(self, name, path=None, target=None):
        if name != "numpy" or self._seen:
            return None
        self._seen = True  # (not removed from sys.meta_path here: the import system is iterating it)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        original_exec = spec.loader.exec_module

        def exec_module(module):
            original_exec(module)
            _register_numpy_now(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)

        spec.loader.exec_module = exec_module
        return spec


def _array_from_state(state):
    import numpy

    dtype, shape, data = state
    return numpy.frombuffer(data, dtype=numpy.dtype(dtype)).reshape(shape)


def _register_numpy_now(numpy) -> None:
    def to_state(array):
        shape = list(array.shape)  # before ascontiguousarray, which makes 0-d arrays 1-d
        data = numpy.ascontiguousarray(array)
        return [array.dtype.str, shape, memoryview(data).cast("B") if data.size else b""]

    register_type(numpy.ndarray, "numpy.ndarray", to_state, _array_from_state)


def _pickle_dumps(value):
    import cloudpickle

    buffers: list = []
    data = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return data, [b.raw() for b in buffers]


def _pickle_loads(data, buffers):
    return pickle.loads(data, buffers=buffers)
