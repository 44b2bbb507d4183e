"""Starting and finding node daemons: the embedded cluster of tether.init(), and the detached one
of `tether start --head`, which leaves a record (address, secret) for `tether status`, `tether
stop` and tether.init(address="auto") to find."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def tetherd_path() -> str:
    override = os.environ.get("TETHER_TETHERD")
    if override:
        return override
    path = Path(__file__).resolve().parent.parent / "_bin" / "tetherd"
    if not path.exists():
        raise RuntimeError(f"tetherd is not installed at {path} (reinstall tether, or set TETHER_TETHERD)")
    return str(path)


def record_path() -> Path:
    """Where `tether start --head` records the cluster it started: one per user and machine, in
    $TETHER_STATE_DIR if set."""
    base = os.environ.get("TETHER_STATE_DIR") or Path(tempfile.gettempdir()) / f"tether-{os.getuid()}"
    return Path(base) / "cluster.json"


def worker_pythonpath() -> str:
    """Workers import what the driver can: the tether package and the driver's own sys.path."""
    package_parent = str(Path(__file__).resolve().parent.parent.parent)
    entries = [package_parent] + [p or os.getcwd() for p in sys.path]
    return os.pathsep.join(dict.fromkeys(entries))


def tls_arguments(tls) -> list[str]:
    """tetherd's TLS options for a tether.TLSConfig (None: no TLS)."""
    if tls is None:
        return []
    if not (tls.cert and tls.key):
        raise ValueError("a TLS cluster needs each node's certificate and key (TLSConfig(cert=, key=, ca=))")
    arguments = ["--tls-cert", os.path.abspath(tls.cert), "--tls-key", os.path.abspath(tls.key)]
    if tls.ca:
        arguments += ["--tls-ca", os.path.abspath(tls.ca)]
    if tls.mutual:
        arguments.append("--tls-mutual")
    return arguments


def tls_environment(tls) -> dict:
    """What the daemon's workers need to reach the other nodes over TLS (TETHER_TLS_*)."""
    if tls is None:
        return {}
    files = {"TETHER_TLS_CERT": tls.cert, "TETHER_TLS_KEY": tls.key, "TETHER_TLS_CA": tls.ca}
    return {name: os.path.abspath(path) for name, path in files.items() if path}


def tls_record(tls) -> dict | None:
    return None if tls is None else {"cert": tls.cert and os.path.abspath(tls.cert),
                                     "key": tls.key and os.path.abspath(tls.key),
                                     "ca": tls.ca and os.path.abspath(tls.ca), "mutual": tls.mutual}


def tls_config(record: dict):
    """The tether.TLSConfig a cluster record describes."""
    from ..security import TLSConfig

    return TLSConfig(cert=record.get("cert"), key=record.get("key"), ca=record.get("ca"), mutual=bool(record.get("mutual")))


def daemon_command(num_cpus, resources, object_store_memory, host="127.0.0.1", port=0, prestart=None, join=None,
                   tls=None):
    """The tetherd command line: a head, or with `join` ("host:port" of a head) a node joining it."""
    cpus = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
    if cpus < 1:
        raise ValueError("num_cpus must be at least 1")
    role = ["--address", join] if join else ["--head"]
    command = [tetherd_path(), *role, "--host", host, "--port", str(port), "--num-cpus", str(cpus),
               "--python", sys.executable, "--prestart-workers", str(cpus if prestart is None else prestart)]
    for name, amount in (resources or {}).items():
        if name == "CPU":
            raise ValueError("give CPUs with num_cpus=, not in resources=")
        if not isinstance(amount, (int, float)) or amount < 0:
            raise ValueError(f"resource {name!r} needs a non-negative number, got {amount!r}")
        command += ["--resource", f"{name}={float(amount)}"]
    if object_store_memory:
        command += ["--object-store-memory", str(int(object_store_memory))]
    if os.environ.get("TETHER_NS_SWEEP_INTERVAL"):  # seconds between the name server's liveness sweeps
        command += ["--ns-sweep-interval", os.environ["TETHER_NS_SWEEP_INTERVAL"]]
    if os.environ.get("TETHER_NODE_TIMEOUT"):  # seconds of silence after which a node counts as gone
        command += ["--node-timeout", os.environ["TETHER_NODE_TIMEOUT"]]
    return command + tls_arguments(tls)


def parse_ready(line: str) -> dict:
    if not line.startswith("TETHERD READY"):
        raise RuntimeError(f"tetherd did not start: {line.strip() or 'no output'}")
    fields = dict(part.split("=", 1) for part in line.split()[2:])
    return {"address": fields["tcp"], "node_socket": fields["unix"], "session": fields["session"],
            "session_dir": fields["dir"], "node_id": int(fields.get("node", 1))}


def unix_uri(path: str) -> str:
    return "tether+unix://" + path.replace("%", "%25").replace("/", "%2F") + "/node"


def _pump(stream, forward=True):
    # sys.stdout is looked up for each line, not once at init: output follows a later redirection
    # (contextlib.redirect_stdout, a test's capture) like the driver's own prints do.
    for line in iter(stream.readline, b""):
        target = sys.stdout if forward else None
        if target is None:
            continue
        try:
            target.write(line.decode(errors="replace"))
            target.flush()
        except (ValueError, OSError):
            pass  # the driver's stdout is closed: worker output is dropped, not an error


def start_embedded(num_cpus=None, resources=None, object_store_memory=None, join=None, secret=None,
                   forward_output=True, tls=None):
    """A daemon that lives as long as this process (it watches our end of its stdin) and whose
    workers' output comes to our stdout. Returns (process, info). With `join` (and the cluster's
    `secret`) the daemon joins that cluster's head as one more node."""
    secret = secret or secrets.token_hex(32)
    command = daemon_command(num_cpus, resources, object_store_memory, join=join, tls=tls) + ["--watch-stdin"]
    env = dict(os.environ, TETHER_SECRET=secret, PYTHONPATH=worker_pythonpath(), **tls_environment(tls))
    daemon = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
    try:
        info = parse_ready(daemon.stdout.readline().decode())
    except BaseException:
        daemon.kill()
        daemon.wait()
        raise
    threading.Thread(target=_pump, args=(daemon.stdout, forward_output), name="tether-worker-output", daemon=True).start()
    info["secret"] = secret
    return daemon, info


def start_detached(host, port, num_cpus, resources, object_store_memory, secret=None, join=None, tls=None,
                   state_dir=None) -> dict:
    """`tether start --head` (or `--address`, with `join`): a daemon that outlives this process;
    its output goes to a log file. A head is recorded for status, stop and init("auto")."""
    secret = secret or os.environ.get("TETHER_SECRET") or secrets.token_hex(32)
    record = record_path()
    record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = record.parent / f"tetherd-{int(time.time())}-{os.getpid()}.log"
    command = daemon_command(num_cpus, resources, object_store_memory, host, port, join=join, tls=tls)
    if state_dir:
        command += ["--state-dir", os.path.abspath(state_dir)]
    env = dict(os.environ, TETHER_SECRET=secret, PYTHONPATH=worker_pythonpath(), **tls_environment(tls))
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                  start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        first = log_path.read_text(errors="replace").splitlines()
        if first and first[0].startswith("TETHERD READY"):
            break
        if daemon.poll() is not None:
            raise RuntimeError(f"tetherd exited at start: {log_path.read_text(errors='replace').strip()}")
        time.sleep(0.02)
    else:
        daemon.kill()
        raise RuntimeError("tetherd did not report ready within 15 s")
    info = parse_ready(first[0])
    info.update(secret=secret, pid=daemon.pid, log=str(log_path), tls=tls_record(tls))
    if join:
        return info
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(info, out)
    return info


def read_record() -> dict | None:
    try:
        return json.loads(record_path().read_text())
    except (OSError, ValueError):
        return None


def forget_record() -> None:
    try:
        record_path().unlink()
    except OSError:
        pass


def remove_leftovers(info: dict) -> None:
    """After our daemon ended: what a daemon that was killed could not clean up (its shared-memory
    segments and session directory). A daemon that stopped normally left nothing to find."""
    session = info.get("session")
    if not session:
        return
    prefix = f"tether-{session}-"
    try:
        names = os.listdir("/dev/shm")
    except OSError:
        names = []
    for name in names:
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join("/dev/shm", name))
            except OSError:
                pass
    session_dir = info.get("session_dir")
    if session_dir and Path(session_dir).name == f"tether-{session}":
        shutil.rmtree(session_dir, ignore_errors=True)
