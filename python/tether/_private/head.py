"""Connections to the services of the cluster's head (tuple spaces, topics): one per server and
secret, shared by the whole process, made on a thread of its own (a cluster worker runs its tasks on
an io thread, which must not block)."""
from __future__ import annotations

import atexit
import threading

from . import cluster_state
from ..security import client_tls
from .runtime import client_runtime, secret_bytes

MSGPACK = 1


class _Channels:
    def __init__(self):
        self._lock = threading.Lock()
        self._channels: dict = {}

    def get(self, uri: str, secret):
        with self._lock:
            channel = self._channels.get((uri, secret))
            if channel is None or not channel.is_open:
                channel = _connect(uri, secret)
                self._channels[(uri, secret)] = channel
            return channel

    def close_all(self) -> None:
        """Closes every connection: nothing arrives for the process's objects after this (called by
        tether.shutdown() and at exit, before the runtime's threads stop)."""
        with self._lock:
            open_channels, self._channels = list(self._channels.values()), {}
        for channel in open_channels:
            try:
                channel.close()
            except Exception:
                pass  # closed already


def _connect(uri: str, secret):
    outcome: list = []

    def connect():
        try:
            tls = client_tls(cluster_state.info().get("tls"))  # the cluster's, else TETHER_TLS_*
            outcome.append(client_runtime().connect(uri, secret=secret, timeout=10.0, tls=tls))
        except BaseException as exc:  # raised below, in the caller's thread
            outcome.append(exc)

    thread = threading.Thread(target=connect, name="tether-connect")
    thread.start()
    thread.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


channels = _Channels()
atexit.register(channels.close_all)  # runs before the runtime's own exit hook (registered earlier)


def service_uri(service: str, address: str | None = None, secret=None) -> tuple[str, bytes | None]:
    """(uri, secret) of `service` on the head at `address`, or on the head of this process's
    cluster (tether.init, or a worker's own cluster) when address is None."""
    if address is not None:
        return f"tether://{address}/{service}", secret_bytes(secret)
    info = cluster_state.info()
    if info.get("node_socket") and info.get("node_id", 1) == 1:
        path = info["node_socket"]
        return "tether+unix://" + path.replace("%", "%25").replace("/", "%2F") + "/" + service, secret_bytes(info.get("secret"))
    head = [n for n in cluster_state.client().call("status")["nodes"] if n[0] == 1]
    if not head:
        raise ConnectionError("the cluster's head is not known to this node")
    return f"tether://{head[0][1]}/{service}", secret_bytes(info.get("secret"))
