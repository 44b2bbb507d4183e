"""The name server: names to URIs with metadata tags, served as the object "tether.ns"."""
from __future__ import annotations

import threading

from ._private.runtime import client_runtime, secret_bytes
from .errors import AuthenticationError, CommunicationError, TetherError
from .expose import expose
from .proxy import Proxy
from .security import TLSConfig
from .server import Server

NS_OBJECT = "tether.ns"
# Liveness only: whoever completes a TLS handshake is up, whatever its certificate says.
_PROBE_TLS = TLSConfig(verify=False)


@expose
class _Registry:
    def __init__(self):
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, frozenset]] = {}

    def register(self, name, uri, metadata=None):
        if not isinstance(name, str) or not name:
            raise ValueError("a name must be a non-empty string")
        if not isinstance(uri, str) or not uri.startswith(("tether://", "tethers://", "tether+unix://")):
            raise ValueError(f"not a tether URI: {uri!r}")
        tags = frozenset(metadata or ())
        if not all(isinstance(t, str) for t in tags):
            raise ValueError("metadata must be a collection of strings")
        with self._lock:
            self._entries[name] = (uri, tags)

    def lookup(self, name):
        with self._lock:
            entry = self._entries.get(name)
        if entry is None:
            raise KeyError(name)
        return entry[0]

    def list(self, prefix=None):
        with self._lock:
            return {n: e[0] for n, e in self._entries.items() if prefix is None or n.startswith(prefix)}

    def lookup_by_metadata(self, tags):
        wanted = frozenset(tags)
        with self._lock:
            return {n: e[0] for n, e in self._entries.items() if wanted <= e[1]}

    def metadata(self, name):
        with self._lock:
            entry = self._entries.get(name)
        if entry is None:
            raise KeyError(name)
        return sorted(entry[1])

    def remove(self, name):
        with self._lock:
            return self._entries.pop(name, None) is not None

    def _snapshot(self):
        with self._lock:
            return dict(self._entries)

    def _remove_if_same(self, name, uri):
        with self._lock:
            if self._entries.get(name, (None,))[0] == uri:
                del self._entries[name]


class NameServer:
    """A name server in this process. Entries whose server no longer accepts connections are
    removed by a sweep every `sweep_interval` seconds. With `coordination` it also serves tuple
    spaces, topics and groups (as `tether ns` does)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, secret=None, sweep_interval: float = 10.0,
                 coordination: bool = False, tls=None, identities=None):
        self._registry = _Registry()
        self._server = Server(host, port, secret=secret, coordination=coordination, tls=tls, identities=identities)
        self._server.register(self._registry, NS_OBJECT)
        self._stop = threading.Event()
        self._interval = sweep_interval
        self._sweeper = threading.Thread(target=self._sweep_loop, name="tether-ns-sweep", daemon=True)
        self._sweeper.start()

    @property
    def address(self) -> str:
        return self._server.address

    @property
    def uri(self) -> str:
        return self._server.uri(NS_OBJECT)

    def _sweep_loop(self):
        while not self._stop.wait(self._interval):
            for name, (uri, _tags) in self._registry._snapshot().items():
                if self._stop.is_set():
                    return
                if not _server_alive(uri):
                    self._registry._remove_if_same(name, uri)

    def close(self):
        self._stop.set()
        self._server.close()
        self._sweeper.join(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _server_alive(uri: str) -> bool:
    """A server is alive when it accepts a connection; one that asks for a secret (or for a
    certificate this process cannot show) is alive too."""
    try:
        channel = client_runtime().connect(uri, timeout=3.0, tls=_PROBE_TLS._context() if uri.startswith("tethers://") else None)
    except AuthenticationError:
        return True
    except (CommunicationError, TetherError):
        return False
    channel.close()
    return True


def locate_ns(address: str, *, secret=None, timeout: float | None = 10.0, identity: str | None = None,
              tls=None) -> Proxy:
    """A proxy for the name server at 'host:port' (over TLS with `tls`, see tether.Proxy)."""
    if "://" in address:
        raise ValueError("locate_ns wants 'host:port', not a URI")
    from . import _core

    return Proxy(_core.format_uri(address, NS_OBJECT), timeout=timeout, secret=secret, identity=identity, tls=tls)
