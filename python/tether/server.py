"""Server: publishes Python objects by name and serves them in the background until close()."""
from __future__ import annotations

import atexit
import weakref

from . import _core
from ._private.runtime import secret_bytes
from .expose import access_of, describe
from .security import identities_bytes, tls_context

_MODES = ("single", "session", "percall")
_open_servers: "weakref.WeakSet[Server]" = weakref.WeakSet()


@atexit.register
def _close_open_servers():
    """A server still open when the interpreter exits is closed while Python can still run it."""
    for server in list(_open_servers):
        server.close()


class _Meta:
    """The built-in "$meta" object: tells proxies which methods an object exposes."""

    def __init__(self, published):
        self._published = published

    def describe(self, name):
        entry = self._published.get(name)
        if entry is None or name.startswith("$"):
            raise LookupError(f"no object named {name!r} on this server")
        methods, oneway, streams = entry[2:5]
        return sorted(methods), sorted(oneway), sorted(streams)


class Server:
    """Listens on host:port (or a Unix socket) and runs requests on a bounded pool of threads.

    `secret` (or the TETHER_SECRET environment variable) makes every client authenticate;
    `allow_pickle` additionally lets authenticated clients send pickle. With `coordination`, the
    server also serves tuple spaces, topics and groups (the C++ services of a cluster's head), so
    `tether.TupleSpace(name, address=server.address)` and the like work against it.
    `max_connections` and `max_handshaking` (connections not through their handshake yet) bound
    what one server lets in; a connection over either is refused with `overloaded`, and those in
    are not touched. A handshake must finish within 10 s.

    `identities` ({name: secret}) lets clients authenticate under names of their own (beside
    `secret`, whose identity is "default"); `pickle_from` limits pickle to those identities (or
    certificate common names). `tls` (a tether.TLSConfig with cert and key) serves TLS: URIs become
    tethers://. Objects and methods can be restricted to identities: register(..., allow=...) and
    @tether.allow; a method sees its caller through tether.current_context()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, unix_path: str | None = None, secret=None,
                 allow_pickle: bool = False, dispatch_threads: int = 8, heartbeat: float = 5.0,
                 idle_timeout: float = 30.0, max_frame: int = 1 << 30, coordination: bool = False,
                 max_connections: int = 4096, max_handshaking: int = 256, identities: dict | None = None,
                 pickle_from=None, tls=None):
        if dispatch_threads < 1:
            raise ValueError("dispatch_threads must be at least 1")
        self._published: dict = {}
        self._published["$meta"] = (_Meta(self._published), "single", frozenset({"describe"}), frozenset(), frozenset())
        self._core = _core.Server(self._published, host, port, unix_path, secret_bytes(secret), allow_pickle,
                                  dispatch_threads, heartbeat, idle_timeout, max_frame, coordination,
                                  max_connections, max_handshaking, identities_bytes(identities),
                                  set(pickle_from or ()), tls_context(tls))
        self._unix_path = unix_path
        self._address = self._core.address
        self._uri_format = self._core.uri("\0")  # kept: uri() also works after close()
        _open_servers.add(self)

    @property
    def address(self) -> str:
        """'host:port' (or the Unix socket path) that clients connect to."""
        return self._address

    @property
    def connection_count(self) -> int:
        """Connections open on this server now (0 once it is closed)."""
        core = self._core
        return core.connection_count() if core is not None else 0

    def uri(self, name: str) -> str:
        """The URI of `name` on this server (tethers:// when it serves TLS)."""
        return self._uri_format.replace("\0", name)

    def register(self, obj, name: str | None = None, mode: str = "single", allow=None) -> str:
        """Publishes `obj` under `name` and returns its URI.

        mode "single": `obj` is the one shared instance; "session": `obj` is a class, one instance per
        client connection; "percall": `obj` is a class, a new instance for every call. `allow`: the
        identities that may call it (None: everyone the server lets in); @tether.allow on a method
        sets that method's own list."""
        if mode not in _MODES:
            raise ValueError(f"unknown instance mode {mode!r}; use one of {_MODES}")
        if mode == "single" and isinstance(obj, type):
            raise TypeError("mode 'single' needs an instance; pass mode='session' or 'percall' for a class")
        if mode != "single" and not isinstance(obj, type):
            raise TypeError(f"mode {mode!r} needs a class to instantiate")
        cls = obj if isinstance(obj, type) else type(obj)
        name = name or cls.__name__
        if not isinstance(name, str) or not name or name[0] in "#$" or "\0" in name or "/" in name:
            raise ValueError(f"invalid object name {name!r}")
        methods, oneway, streams = describe(cls)
        if not methods:
            raise ValueError(f"{cls.__name__} exposes no methods: mark it (or methods) with @tether.expose")
        if allow is not None:
            allow = frozenset([allow] if isinstance(allow, str) else allow)
            if not allow:
                raise ValueError("allow needs at least one identity (None lets everyone in)")
        self._published[name] = (obj, mode, methods, oneway, streams, access_of(cls, methods, allow))
        return self.uri(name)

    def unregister(self, name: str) -> None:
        if name.startswith("$"):
            raise ValueError("built-in objects cannot be unregistered")
        self._published.pop(name, None)

    def close(self) -> None:
        """Stops accepting, closes every connection and joins the dispatch threads."""
        core, self._core = self._core, None
        if core is not None:
            core.close()
        # The engine keeps the published objects through references Python's collector cannot
        # see; objects holding callback proxies would otherwise keep their connections alive.
        self._published.clear()
        _open_servers.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<tether.Server {self.address}>"
