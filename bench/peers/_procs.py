"""Processes from /proc (Linux), for bench/cluster_bench.py and its cluster peers: a process tree,
its memory, and every process that carries a marker in its environment.

psutil is used for the tree when it is importable; memory is always read from /proc so that both
libraries are measured the same way (RSS from /proc/PID/status, PSS from /proc/PID/smaps_rollup)."""

import os
import signal
import time


def _read(path, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:  # the process ended, or it is not ours to read
        return None


def parent_of(pid):
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # the command name is in parentheses and may hold spaces or parentheses: split after the last ')'
    return int(stat.rsplit(")", 1)[1].split()[1])


def all_pids():
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(root):
    """Every live process below `root` (not `root` itself): psutil if present, else a /proc walk."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return sorted(p.pid for p in psutil.Process(root).children(recursive=True))
        except psutil.Error:
            return []
    children = {}
    for pid in all_pids():
        parent = parent_of(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return sorted(found)


def command_of(pid, limit=160):
    raw = _read(f"/proc/{pid}/cmdline", "rb")
    if not raw:
        comm = _read(f"/proc/{pid}/comm")
        return f"[{comm.strip()}]" if comm else "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:limit]


def memory_kb(pid):
    """(RSS, PSS) of one process in KiB; None for what cannot be read."""
    rss = pss = None
    status = _read(f"/proc/{pid}/status")
    for line in (status or "").splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
            break
    rollup = _read(f"/proc/{pid}/smaps_rollup")
    for line in (rollup or "").splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
            break
    return rss, pss


def with_marker(name, value):
    """PIDs of the processes whose environment holds name=value (they inherited it from us)."""
    needle = f"{name}={value}".encode()
    found = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        environ = _read(f"/proc/{pid}/environ", "rb")
        if environ and needle in environ.split(b"\0"):
            found.append(pid)
    return found


def end_marked(name, value, grace=10.0):
    """Waits up to `grace` seconds for the processes carrying the marker to end by themselves, then
    terminates and kills the rest by PID. Returns [(pid, command)] of those it had to end."""
    deadline = time.monotonic() + grace
    pids = with_marker(name, value)
    while pids and time.monotonic() < deadline:
        time.sleep(0.25)
        pids = with_marker(name, value)
    ended = [(pid, command_of(pid)) for pid in pids]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        stop = time.monotonic() + 3.0
        while pids and time.monotonic() < stop:
            time.sleep(0.1)
            pids = [pid for pid in pids if _read(f"/proc/{pid}/stat") and not _zombie(pid)]
        if not pids:
            break
    return ended


def _zombie(pid):
    stat = _read(f"/proc/{pid}/stat")
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] == "Z"
