"""The process's place in a cluster: its ClusterClient, and the local daemon it started, if any.

Ray's API is module-level (tether.init, tether.get), so this one piece of process state is
unavoidable; everything else receives the client it works with."""
from __future__ import annotations

import atexit
import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path

from .cluster_client import ClusterClient

_lock = threading.RLock()
_client: ClusterClient | None = None
_daemon: subprocess.Popen | None = None
_info: dict = {}
_task_of: dict[bytes, bytes] = {}  # return id -> task id, for tether.cancel
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


def remember_task(returns, task_id: bytes) -> None:
    for object_id in returns:
        _task_of[object_id] = task_id


def task_of(object_id: bytes):
    return _task_of.get(object_id)


def set_dependencies(values) -> None:
    _dependencies.values = values


def resolved_dependency(index: int):
    """Unpickling a task's arguments puts the index-th resolved ObjectRef argument here."""
    return _dependencies.values[index]


def tetherd_path() -> str:
    override = os.environ.get("TETHER_TETHERD")
    if override:
        return override
    path = Path(__file__).resolve().parent.parent / "_bin" / "tetherd"
    if not path.exists():
        raise RuntimeError(f"tetherd is not installed at {path} (reinstall tether, or set TETHER_TETHERD)")
    return str(path)


def _worker_pythonpath() -> str:
    """Workers import what the driver can: the tether package and the driver's own sys.path."""
    package_parent = str(Path(__file__).resolve().parent.parent.parent)
    entries = [package_parent] + [p or os.getcwd() for p in sys.path]
    seen: list[str] = []
    for entry in entries:
        if entry not in seen:
            seen.append(entry)
    return os.pathsep.join(seen)


def _pump(stream, target):
    for line in iter(stream.readline, b""):
        try:
            target.write(line.decode(errors="replace"))
            target.flush()
        except (ValueError, OSError):
            pass  # the driver's stdout is closed: worker output is dropped, not an error


def start(address, *, num_cpus=None, resources=None, secret=None, object_store_memory=None) -> dict:
    global _client, _daemon, _info
    with _lock:
        if address is not None:
            secret_value = secret if secret is not None else os.environ.get("TETHER_SECRET")
            if not secret_value:
                raise ValueError("joining a cluster needs its secret: secret= or $TETHER_SECRET")
            secret_bytes = secret_value.encode() if isinstance(secret_value, str) else bytes(secret_value)
            _client = ClusterClient(f"tether://{address}/node", secret_bytes)
            _client.hello()
            _info = {"address": address}
            return dict(_info)
        cpus = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
        if cpus < 1:
            raise ValueError("num_cpus must be at least 1")
        secret_text = secrets.token_hex(32)
        command = [tetherd_path(), "--head", "--num-cpus", str(cpus), "--python", sys.executable,
                   "--watch-stdin", "--prestart-workers", str(cpus)]
        for name, amount in (resources or {}).items():
            if name == "CPU":
                raise ValueError("give CPUs with num_cpus=, not in resources=")
            command += ["--resource", f"{name}={float(amount)}"]
        if object_store_memory:
            command += ["--object-store-memory", str(int(object_store_memory))]
        env = dict(os.environ, TETHER_SECRET=secret_text, PYTHONPATH=_worker_pythonpath())
        daemon = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                  start_new_session=True)
        ready = daemon.stdout.readline().decode()
        if not ready.startswith("TETHERD READY"):
            daemon.kill()
            daemon.wait()
            raise RuntimeError(f"tetherd did not start: {ready.strip() or 'no output'}")
        fields = dict(part.split("=", 1) for part in ready.split()[2:])
        threading.Thread(target=_pump, args=(daemon.stdout, sys.stdout), name="tether-worker-output",
                         daemon=True).start()
        _daemon = daemon
        _info = {"address": fields["tcp"], "session_dir": fields["dir"], "session": fields["session"],
                 "secret": secret_text, "node_socket": fields["unix"]}
        socket_uri = "tether+unix://" + fields["unix"].replace("%", "%25").replace("/", "%2F") + "/node"
        try:
            _client = ClusterClient(socket_uri, secret_text.encode())
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
    with _lock:
        current, daemon = _client, _daemon
        _client, _daemon, _info = None, None, {}
        _task_of.clear()
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


atexit.register(stop)
