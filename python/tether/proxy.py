"""Proxy: calls a remote object as if it were local; sync, future/await, oneway and streams."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading

from . import _core
from ._private.runtime import client_runtime, secret_bytes
from .errors import NoSuchObjectError

_ENCODINGS = {"msgpack": 1, "pickle": 2}


class Future(concurrent.futures.Future):
    """A concurrent.futures.Future that is also awaitable; cancel() tells the server too."""

    _channel = None
    _request_id = None

    def __await__(self):
        return asyncio.wrap_future(self).__await__()

    def cancel(self):
        cancelled = super().cancel()
        if cancelled and self._channel is not None:
            self._channel.cancel(self._request_id)
        return cancelled


class _RemoteMethod:
    __slots__ = ("_proxy", "_name", "_oneway", "_stream")

    def __init__(self, proxy, name, oneway=False, stream=False):
        self._proxy = proxy
        self._name = name
        self._oneway = oneway
        self._stream = stream

    def __call__(self, *args, **kwargs):
        p = self._proxy
        channel = p._channel or p._connect()
        if self._oneway:
            return channel.call_oneway(p._object, self._name, args, kwargs, p._encoding)
        if self._stream:
            return channel.call_stream(p._object, self._name, args, kwargs, p._encoding)
        return channel.call(p._object, self._name, args, kwargs, p.timeout, p._encoding)

    def future(self, *args, **kwargs) -> Future:
        """Starts the call and returns at once; the Future completes when the reply arrives."""
        p = self._proxy
        channel = p._channel or p._connect()
        future = Future()
        future._channel = channel
        future._request_id = channel.call_future(p._object, self._name, args, kwargs, p.timeout, p._encoding, future)
        return future

    def __repr__(self):
        return f"<remote method {self._name} of {self._proxy!r}>"


class Proxy:
    """A proxy for the object at `uri` ('tether://host:port/name' or 'tetherns://ns-host:port/name').

    One connection per proxy, opened on first use; any number of threads may share it. `timeout`
    (seconds, None for no limit) bounds every call."""

    def __init__(self, uri: str, timeout: float | None = None, secret=None, encoding: str = "msgpack",
                 connect_timeout: float = 10.0):
        if encoding not in _ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; use 'msgpack' or 'pickle'")
        kind, _host, _port, _path, name, via_ns, address = _core.parse_uri(uri)
        if via_ns:
            from .naming import locate_ns
            with locate_ns(address, secret=secret) as ns:
                uri = ns.lookup(name)
            kind, _host, _port, _path, name, via_ns, address = _core.parse_uri(uri)
        self._uri = uri
        self._object = name
        self._timeout = None
        self.timeout = timeout
        self._secret = secret_bytes(secret)
        self._encoding = _ENCODINGS[encoding]
        self._connect_timeout = connect_timeout
        self._channel = None
        self._methods = None
        self._lock = threading.Lock()

    @property
    def timeout(self) -> float | None:
        """Seconds every call may take (None: no limit)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value):
        if value is not None and value <= 0:
            raise ValueError("timeout must be positive or None")
        self._timeout = None if value is None else float(value)

    def _connect(self):
        with self._lock:
            if self._channel is None:
                channel = client_runtime().connect(self._uri, secret=self._secret,
                                                   want_pickle=self._encoding == 2, timeout=self._connect_timeout)
                try:
                    methods, oneway, streams = channel.call("$meta", "describe", (self._object,), None,
                                                            self.timeout or float(self._connect_timeout), 1)
                except LookupError as exc:
                    channel.close()
                    raise NoSuchObjectError(f"{self._uri}: {exc}") from None
                except BaseException:
                    channel.close()  # a connection that could not be set up is not left open
                    raise
                self._methods = {m: _RemoteMethod(self, m, m in oneway, m in streams) for m in methods}
                self._channel = channel
            return self._channel

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._methods is None:
            self._connect()
        method = self._methods.get(name)
        if method is None:
            raise AttributeError(f"remote object {self._object!r} has no exposed method {name!r}")
        return method

    def __dir__(self):
        if self._methods is None:
            self._connect()
        return sorted(self._methods)

    def close(self):
        """Closes the connection; the proxy reconnects if used again."""
        with self._lock:
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return f"<tether.Proxy {self._uri}>"

    def __reduce__(self):
        return (Proxy, (self._uri, self.timeout))


class _CallbackProxy:
    """A proxy for an object the peer passed as an argument; calls go back over the same connection."""

    def __init__(self, channel, target):
        self._channel = channel
        self._target = target
        self.timeout = None

    def __call__(self, *args, **kwargs):
        return self._channel.call(self._target, "__call__", args, kwargs, self.timeout, 1)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)

        def method(*args, **kwargs):
            return self._channel.call(self._target, name, args, kwargs, self.timeout, 1)

        return method

    def __repr__(self):
        return f"<tether callback {self._target} via {self._channel.peer}>"
