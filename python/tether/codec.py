"""Custom types in the data-only encoding, and the pickle hooks used when pickle is negotiated."""
from __future__ import annotations

import pickle
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
    try:
        import numpy
    except ImportError:
        return

    def to_state(array):
        shape = list(array.shape)  # before ascontiguousarray, which makes 0-d arrays 1-d
        data = numpy.ascontiguousarray(array)
        return [array.dtype.str, shape, memoryview(data).cast("B") if data.size else b""]

    def from_state(state):
        dtype, shape, data = state
        return numpy.frombuffer(data, dtype=numpy.dtype(dtype)).reshape(shape)

    register_type(numpy.ndarray, "numpy.ndarray", to_state, from_state)


def _pickle_dumps(value):
    import cloudpickle

    buffers: list = []
    data = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return data, [b.raw() for b in buffers]


def _pickle_loads(data, buffers):
    return pickle.loads(data, buffers=buffers)
