"""Linda tuple spaces, as PyBrenda's, with JavaSpaces' leases and notifications: the Python face of
the C++ service "tuplespace" that the cluster's head serves (docs/tuplespace.md).

    space = tether.TupleSpace("jobs")
    space.out(("job", 1, "resize"))
    kind, number, what = space.in_(("job", int, tether.ANY))

Fields are None, bool, int (64-bit), float, str, bytes, or tuples of these; a template field may
also be one of those types, or tether.ANY. A value matches on type and value: 1 matches neither 1.0
nor True."""
from __future__ import annotations

from ._private import head
from ._private.delivery import ItemStream, Numbered
from ._private.head import MSGPACK as _MSGPACK
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1
_TYPE_NAMES = {type(None): "NoneType", bool: "bool", int: "int", float: "float", str: "str", bytes: "bytes",
               tuple: "tuple"}


class _Any:
    """The template field that matches any value."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self):
        return "tether.ANY"

    def __reduce__(self):
        return (_Any, ())


ANY = _Any()


def _field(value, where: str):
    kind = type(value)
    if value is None or kind in (bool, str, bytes, float):
        return value
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError(f"{where}: {value} does not fit in 64 bits")
        return value
    if kind in (tuple, list):
        return [_field(v, where) for v in value]
    raise TypeError(f"{where}: unsupported value of type {kind.__name__} (tuple fields are None, bool, int, "
                    "float, str, bytes, or tuples of these)")


_FLAT = (str, float, bytes, bool, type(None))


def _tuple_fields(values) -> list:
    if not isinstance(values, tuple):
        raise TypeError(f"a tuple space holds tuples, not {type(values).__name__}")
    return [v if type(v) in _FLAT else _field(v, "tuple") for v in values]


def _template_fields(template) -> list:
    if not isinstance(template, tuple):
        raise TypeError(f"a template is a tuple, not {type(template).__name__}")
    fields = []
    for value in template:
        if value is ANY:
            fields.append({"any": True})
        elif isinstance(value, type):
            name = _TYPE_NAMES.get(value)
            if name is None:
                raise TypeError(f"a template field may be the type None, bool, int, float, str, bytes or tuple, "
                                f"not {value.__name__}")
            fields.append({"type": name})
        else:
            fields.append(_field(value, "template"))
    return fields


def _as_tuple(fields):
    return tuple(_as_tuple(f) if isinstance(f, list) else f for f in fields)


def _check_seconds(value, what: str):
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
        raise ValueError(f"{what} must be a non-negative number of seconds or None, got {value!r}")


_channels = head.channels


class TupleSpace:
    """A named tuple space. With no `address`, the one the cluster's head serves (after
    tether.init(), or in a task); with `address` ("host:port"), the one a tetherd head there serves."""

    def __init__(self, name: str = "default", *, address: str | None = None, secret=None):
        if not isinstance(name, str) or not name:
            raise ValueError("a tuple space needs a non-empty name")
        self.name = name
        self._address = address
        self._uri, self._secret = head.service_uri("tuplespace", address, secret)
        self._channel = None

    def _call(self, method: str, *args, timeout=60.0):
        channel = self._channel  # kept: the shared table's lock is not taken on every call
        if channel is None or not channel.is_open:
            channel = self._channel = _channels.get(self._uri, self._secret)
        return channel.call("tuplespace", method, (self.name, *args), None, timeout, _MSGPACK)

    def out(self, values: tuple, lease: float | None = None) -> None:
        """Writes the tuple; with `lease` (seconds) it is gone after that long unless taken before."""
        _check_seconds(lease, "lease")
        self._call("out", _tuple_fields(values), lease)

    def in_(self, template: tuple, timeout: float | None = None) -> tuple:
        """Takes a tuple that matches, waiting for one (first come, first served); TimeoutError
        if none came within `timeout` seconds."""
        return self._wait("take", template, timeout)

    def rd(self, template: tuple, timeout: float | None = None) -> tuple:
        """Reads a tuple that matches without taking it, waiting for one; TimeoutError as in_."""
        return self._wait("read", template, timeout)

    def inp(self, template: tuple):
        """Takes a tuple that matches now, or returns None."""
        found = self._call("take", _template_fields(template), 0)
        return None if found is None else _as_tuple(found)

    def rdp(self, template: tuple):
        """Reads a tuple that matches now, or returns None."""
        found = self._call("read", _template_fields(template), 0)
        return None if found is None else _as_tuple(found)

    def _wait(self, method: str, template: tuple, timeout):
        _check_seconds(timeout, "timeout")
        fields = _template_fields(template)
        found = self._call(method, fields, timeout, timeout=None if timeout is None else timeout + 30.0)
        if found is None:
            raise TimeoutError(f"no tuple matched {template!r} within {timeout} s")
        return _as_tuple(found)

    def count(self) -> int:
        """How many tuples the space holds now."""
        return self._call("count")

    def eval(self, prefix: tuple, function, *args):
        """Runs function(*args) as a cluster task, which then writes prefix + (result,) here.
        Returns the task's ObjectRef (its value is the result)."""
        from .cluster import remote

        if not isinstance(prefix, tuple):
            raise TypeError("eval's prefix is a tuple")
        _tuple_fields(prefix)
        return remote(_evaluate).remote(self.name, self._address, prefix, function, args)

    def notify(self, template: tuple) -> "Notifications":
        """The tuples that match `template` as they are written from now on: iterate (or async
        iterate) over them; close() ends it."""
        return Notifications(self, _template_fields(template))

    def __repr__(self):
        return f"TupleSpace({self.name!r})"


def _evaluate(space_name, address, prefix, function, args):
    result = function(*args)
    TupleSpace(space_name, address=address).out(tuple(prefix) + (result,))
    return result


class Notifications(ItemStream):
    """An iterator (and async iterator) over the tuples a notify() watches for; get(timeout);
    close() ends it."""

    def __init__(self, space: TupleSpace, template_fields: list):
        super().__init__(f"the watch on {space!r}")
        self._space = space
        self._numbered = Numbered(lambda fields: self.put(_as_tuple(fields)))
        channel = _channels.get(space._uri, space._secret)
        sink_id = channel.export(self, {"tuple"})
        self._watch = space._call("notify", template_fields, sink_id)

    def tuple(self, watch: int, number: int, fields) -> None:
        """Called by the head (oneway), numbered."""
        self._numbered.arrived(number, fields)

    def close(self) -> None:
        if self.ended:
            return
        self.end()
        try:
            channel = _channels.get(self._space._uri, self._space._secret)
            channel.call_oneway("tuplespace", "unnotify", (self._space.name, self._watch), None, _MSGPACK)
        except Exception:
            pass  # the space is gone: nothing left to stop

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
