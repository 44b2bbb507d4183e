"""Proxy: calls a remote object as if it were local; sync, future/await, oneway and streams."""
from __future__ import annotations

import os
import threading

from . import _core
from ._private.runtime import client_runtime, secret_bytes
from .errors import NoSuchObjectError
from .security import client_tls

_ENCODINGS = {"msgpack": 1, "pickle": 2}


# proxy.name: a C type whose calls reach the Channel without a Python frame in between (the hot
# path of pipelined futures); `.future(...)` returns a tether.Future. See src/python/pymethod.hpp.
_RemoteMethod = _core.RemoteMethod


class Proxy:
    """A proxy for the object at `uri` ('tether://host:port/name' or 'tetherns://ns-host:port/name').

    One connection per proxy, opened on first use and opened again for the next call when it was
    lost; any number of threads may share it. `timeout` (seconds, None for no limit) bounds every
    call. `secret` (or TETHER_SECRET) authenticates, under `identity` (or TETHER_IDENTITY) when the
    server knows several; `tls` (a tether.TLSConfig, or True for TETHER_TLS_* / system roots) makes
    the connection TLS, as does a tethers:// URI or a TLS configuration in TETHER_TLS_*."""

    def __init__(self, uri: str, timeout: float | None = None, secret=None, encoding: str = "msgpack",
                 connect_timeout: float = 10.0, identity: str | None = None, tls=None, idle_timeout: float = 30.0):
        if encoding not in _ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; use 'msgpack' or 'pickle'")
        kind, _host, _port, _path, name, via_ns, address = _core.parse_uri(uri)
        if via_ns:
            from .naming import locate_ns
            with locate_ns(address, secret=secret, identity=identity, tls=tls) as ns:
                uri = ns.lookup(name)
            kind, _host, _port, _path, name, via_ns, address = _core.parse_uri(uri)
        self._uri = uri
        self._object = name
        self._timeout = None
        self.timeout = timeout
        self._secret = secret_bytes(secret)
        self._identity = identity if identity is not None else os.environ.get("TETHER_IDENTITY", "")
        self._tls = client_tls(tls)
        self._encoding = _ENCODINGS[encoding]
        self._connect_timeout = connect_timeout
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        self._idle_timeout = float(idle_timeout)  # a connection silent this long (heartbeats too) is dropped
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
            if self._channel is not None and not self._channel.is_open:
                self._channel.close()  # lost (peer gone, network cut): new calls reconnect
                self._channel = None
            if self._channel is None:
                channel = client_runtime().connect(self._uri, secret=self._secret,
                                                   want_pickle=self._encoding == 2, timeout=self._connect_timeout,
                                                   identity=self._identity, tls=self._tls,
                                                   idle_timeout=self._idle_timeout,
                                                   heartbeat=min(5.0, self._idle_timeout / 3))
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
                for name, method in self._methods.items():
                    # Found by plain attribute lookup from now on, without a miss into __getattr__;
                    # the proxy's own attributes (close, timeout) keep their meaning.
                    if not hasattr(Proxy, name):
                        self.__dict__[name] = method
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
