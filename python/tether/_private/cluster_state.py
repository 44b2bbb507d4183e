"""The process's place in a cluster: its ClusterClient, and the local daemon it started, if any.

Ray's API is module-level (tether.init, tether.get), so this one piece of process state is
unavoidable; everything else receives the client it works with."""
from __future__ import annotations

import atexit
import os
import subprocess
import threading

from . import launcher
from .cluster_client import ClusterClient

_lock = threading.RLock()
_client: ClusterClient | None = None
_daemon: subprocess.Popen | None = None
_info: dict = {}
_dependencies = threading.local()


def client() -> ClusterClient:
    current = _client
    if current is None:
        raise RuntimeError("tether.init() has not been called (or tether.shutdown() was)")
    return current


def is_initialized() -> bool:
    return _client is not None


def info() -> dict:
    return dict(_info)


def set_dependencies(values) -> None:
    _dependencies.values = values


def resolved_dependency(index: int):
    """Unpickling a task's arguments puts the index-th resolved ObjectRef argument here."""
    return _dependencies.values[index]


def start(address, *, num_cpus=None, resources=None, secret=None, object_store_memory=None,
          log_to_driver=True, tls=None) -> dict:
    """Joins the cluster at `address` ("host:port"; "auto": the one `tether start --head` recorded;
    None: $TETHER_ADDRESS if set, else a new private cluster). With `log_to_driver`, workers' output
    reaches this process's stdout and stderr: sent by the node it joined, or read from the output
    of the daemon it started (where other nodes' lines arrive too)."""
    global _client, _daemon, _info
    with _lock:
        if address is None:
            address = os.environ.get("TETHER_ADDRESS") or None
        if address is not None:
            if address == "auto":
                record = launcher.read_record()
                if record is None:
                    raise ConnectionError("no cluster was started on this machine (tether start --head)")
                address, secret = record["address"], secret or record["secret"]
                if tls is None and record.get("tls"):
                    tls = launcher.tls_config(record["tls"])
            if any(v is not None for v in (num_cpus, resources, object_store_memory)):
                raise ValueError("num_cpus, resources and object_store_memory describe a new cluster; "
                                 "they cannot be given when joining one")
            secret_value = secret if secret is not None else os.environ.get("TETHER_SECRET")
            if not secret_value:
                raise ValueError("joining a cluster needs its secret: secret= or $TETHER_SECRET")
            secret_bytes = secret_value.encode() if isinstance(secret_value, str) else bytes(secret_value)
            joined = ClusterClient(f"tether://{address}/node", secret_bytes, tls=tls)
            joined.hello(output=log_to_driver and os.environ.get("TETHER_LOG_TO_DRIVER") != "0")
            _client, _info = joined, {"address": address, "secret": secret_value, "tls": tls}
            return dict(_info)
        daemon, started = launcher.start_embedded(num_cpus, resources, object_store_memory,
                                                  forward_output=log_to_driver, tls=tls)
        started["tls"] = tls
        _daemon, _info = daemon, started
        try:
            _client = ClusterClient(launcher.unix_uri(started["node_socket"]), started["secret"].encode())
            _client.hello()
        except BaseException:
            stop()
            raise
        return dict(_info)


def connect_worker(uri: str, secret: bytes, worker_id: int, runner) -> ClusterClient:
    global _client
    _client = ClusterClient(uri, secret)
    _client.hello("worker", worker_id, runner)  # tasks may arrive before this returns: see Runner.ready
    runner.ready.set()
    return _client


def stop() -> None:
    global _client, _daemon, _info
    from . import head  # (imported here: head imports this module)

    head.channels.close_all()  # tuple spaces, topics and groups of this cluster go with it
    with _lock:
        current, daemon, started = _client, _daemon, _info
        _client, _daemon, _info = None, None, {}
        if current is not None:
            if daemon is not None:
                try:
                    current.call("shutdown", timeout=5)
                except Exception:
                    pass  # it may be gone already; closing stdin below stops it too
            current.close()
        if daemon is not None:
            try:
                daemon.stdin.close()
            except OSError:
                pass
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            launcher.remove_leftovers(started)


atexit.register(stop)
