#!/usr/bin/env python3
"""tether against Pyro5, RPyC and raw loopback TCP, measured side by side in one run on one machine.

    python bench/run.py            # full run (a few minutes)
    python bench/run.py --quick    # short run, smaller counts
    python bench/run.py --json results.json

Every server runs in its own process (bench/peers/NAME_peer.py server, or the C raw_pingpong), and
so does every client, so no library's threads share an interpreter with another's. The harness starts
each process, keeps its PID, and ends it: servers exit when their stdin closes, are terminated by PID
if they do not, and exit by themselves after --lifetime seconds in any case. Loopback only.
"""

import argparse
import atexit
import glob
import json
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from _table import print_markdown_table  # bench/_table.py, beside this script

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
RAW_SOURCE = BENCH_DIR / "raw_pingpong.c"
RAW_BINARY = BENCH_DIR / "raw_pingpong"  # ignored by .gitignore

# tether_tls is tether over TLS: the price of encryption, shown beside the plain column (the targets
# are the plain column's).
PEERS = ("tether", "tether_tls", "pyro5", "rpyc")
TITLES = {"tether": "tether", "tether_tls": "tether+TLS", "pyro5": "Pyro5", "rpyc": "RPyC", "raw": "raw"}
OTHER_PEERS = ("pyro5", "rpyc")

FULL = {"sync_calls": 20_000, "pipe_calls": 50_000, "big_bytes": 64 << 20, "reps": 3,
        "big_cap_seconds": 30.0, "raw_round_trips": 100_000, "raw_stream_bytes": 1 << 30,
        "client_timeout": 900.0, "core_timeout": 600.0}
QUICK = {"sync_calls": 2_000, "pipe_calls": 5_000, "big_bytes": 16 << 20, "reps": 2,
         "big_cap_seconds": 10.0, "raw_round_trips": 20_000, "raw_stream_bytes": 256 << 20,
         "client_timeout": 240.0, "core_timeout": 180.0}

# The bar is PRODUCT.md's "faster than all of them". A target is a list of (against, minimum ratio):
# "best_peer" compares tether with the faster of Pyro5 and RPyC, "raw" with raw loopback TCP.
# The targets: sync small calls at least 2x the faster of Pyro5 and RPyC; pipelined futures
# at least 5x RPyC's pipelined async_; the big echo at least half the raw loopback stream rate.
TARGETS = {
    "sync": [("best_peer", 2.0)],
    "pipelined": [("rpyc", 5.0)],
    "big": [("raw", 0.5)],
}
TARGET_NAMES = {"best_peer": "best peer", "raw": "raw", "rpyc": "RPyC"}

SERVER_READY_TIMEOUT = 30.0
STOP_GRACE = 3.0

# CPU placement, set from --pin: {"server": cpus, "client": cpus}, or None to leave it to the OS.
# On virtual machines a wake-up on another CPU costs tens of microseconds, so where the scheduler
# happens to put the two ends can change small-call numbers several times over; pinning makes runs
# comparable with each other.
PLACEMENT = None


def pin_to(role):
    """A preexec_fn that pins the child to the CPUs of its role, or None when nothing is pinned."""
    if PLACEMENT is None:
        return None
    cpus = PLACEMENT[role]
    return lambda: os.sched_setaffinity(0, cpus)


def placement_for(mode):
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if mode == "none" or not available:
        return None
    if mode == "same" or len(available) < 2:
        return {"server": {available[0]}, "client": {available[0]}}
    return {"server": {available[0]}, "client": {available[1]}}


class Child:
    """A process this harness started and therefore must end, by PID."""

    live = []

    def __init__(self, argv, *, env=None, stops_on_stdin_eof=True, role="server"):
        self.argv = [str(a) for a in argv]
        self.stops_on_stdin_eof = stops_on_stdin_eof
        self.stderr_file = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr_file, env=env, cwd=BENCH_DIR,
                                     preexec_fn=pin_to(role))
        Child.live.append(self)

    @property
    def pid(self):
        return self.proc.pid

    def read_line(self, timeout):
        """One line of stdout, or None if none arrives in time or the process ends first."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                return buf.decode(errors="replace").strip() or None
            buf += chunk
        return buf.split(b"\n", 1)[0].decode(errors="replace").strip()

    def stderr_tail(self, lines=5):
        self.stderr_file.seek(0)
        text = self.stderr_file.read().decode(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            if self.stops_on_stdin_eof:
                try:
                    self.proc.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    pass
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if self.proc.poll() is not None:
                    break
                os.kill(self.pid, sig)
                try:
                    self.proc.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    pass
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream and not stream.closed:
                stream.close()
        self.stderr_file.close()
        if self in Child.live:
            Child.live.remove(self)

    @classmethod
    def stop_all(cls):
        for child in list(cls.live):
            child.stop()


def run_to_end(argv, timeout, *, env=None, pinned=True):
    """Runs a client process to completion; kills it by PID past the timeout. Returns (rc, stdout)."""
    proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            env=env, cwd=BENCH_DIR, preexec_fn=pin_to("client") if pinned else None)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, ""
    finally:
        if proc.poll() is None:  # timed out, or the harness itself is being stopped
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
    return proc.returncode, out.decode(errors="replace")


def note(text):
    print(text, file=sys.stderr, flush=True)


# --- peers -------------------------------------------------------------------------------------------

def measure_peer(name, cfg, lifetime):
    script = PEERS_DIR / f"{name}_peer.py"
    note(f"{TITLES[name]}: starting server")
    server = Child([sys.executable, script, "server", "--lifetime", lifetime])
    try:
        line = server.read_line(SERVER_READY_TIMEOUT)
        if line and line.startswith("SKIP "):
            return {"skipped": line[5:]}
        if not line or not line.startswith("READY "):
            return {"failed": f"server did not start: {line!r}; stderr: {server.stderr_tail()}"}
        address = line[6:]
        argv = [sys.executable, script, "client", address,
                "--sync-calls", cfg["sync_calls"], "--pipe-calls", cfg["pipe_calls"],
                "--big-bytes", cfg["big_bytes"], "--big-cap-seconds", cfg["big_cap_seconds"],
                "--reps", cfg["reps"]]
        rc, out = run_to_end(argv, cfg["client_timeout"])
        if rc is None:
            return {"failed": f"client exceeded {cfg['client_timeout']:.0f} s and was killed"}
        for line in out.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[7:])
            if line.startswith("SKIP "):
                return {"skipped": line[5:]}
        return {"failed": f"client exited {rc} without a result; server stderr: {server.stderr_tail()}"}
    finally:
        server.stop()


# --- raw loopback TCP --------------------------------------------------------------------------------

def build_raw():
    """Compiles raw_pingpong.c with the system C compiler; returns the binary or raises RuntimeError."""
    if RAW_BINARY.exists() and RAW_BINARY.stat().st_mtime >= RAW_SOURCE.stat().st_mtime:
        return RAW_BINARY
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (cc) found")
    result = subprocess.run([cc, "-O2", "-std=c11", "-o", RAW_BINARY, RAW_SOURCE],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"cc failed: {result.stderr.strip()[-500:]}")
    return RAW_BINARY


def best_raw_run(binary, mode, count, cfg, lifetime):
    """Best of cfg['reps'] runs of a raw_pingpong client against a fresh server of the matching kind."""
    server_mode, client_mode, key = {
        "pingpong": ("server", "client", "round_trips_per_s"),
        "stream": ("stream-server", "stream-client", "mb_per_s"),
    }[mode]
    env = dict(os.environ, RAW_PINGPONG_LIFETIME=str(int(lifetime)))
    server = Child([binary, server_mode, 0], env=env, stops_on_stdin_eof=False)
    try:
        line = server.read_line(SERVER_READY_TIMEOUT)
        if not line or not line.startswith("PORT "):
            raise RuntimeError(f"raw {server_mode} did not start: {server.stderr_tail()}")
        port = line.split()[1]
        best = None
        for _ in range(cfg["reps"]):
            rc, out = run_to_end([binary, client_mode, port, count], cfg["client_timeout"])
            values = [float(l.split()[1]) for l in out.splitlines() if l.startswith(key + " ")]
            if rc != 0 or not values:
                raise RuntimeError(f"raw {client_mode} failed (exit {rc})")
            best = values[0] if best is None else max(best, values[0])
        return best
    finally:
        server.stop()


def measure_raw(cfg, lifetime):
    note("raw: compiling and running raw_pingpong")
    try:
        binary = build_raw()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return {"failed": str(exc)}
    results = {"label": "C, TCP_NODELAY, 127.0.0.1", "errors": {}}
    for mode, count, key in (("pingpong", cfg["raw_round_trips"], "round_trips_per_s"),
                             ("stream", cfg["raw_stream_bytes"], "stream_mb_per_s")):
        try:
            results[key] = best_raw_run(binary, mode, count, cfg, lifetime)
            note(f"  [raw] {mode}: {results[key]:,.1f} {'round trips/s' if mode == 'pingpong' else 'MB/s'}")
        except RuntimeError as exc:
            results["errors"][mode] = str(exc)
    return results


# --- the C++ core benchmark --------------------------------------------------------------------------

def find_core_bench():
    explicit = os.environ.get("TETHER_BENCH_CORE")
    if explicit:
        return Path(explicit)
    patterns = ("build/*/bench/tether_bench_core", "build/*/tether_bench_core",
                "build/bench/tether_bench_core", "build/tether_bench_core")
    found = [Path(p) for pattern in patterns for p in glob.glob(str(REPO_DIR / pattern))]
    found = [p for p in found if p.is_file() and os.access(p, os.X_OK)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def measure_core(cfg, quick):
    binary = find_core_bench()
    if binary is None:
        return {"status": "not built"}
    if not binary.is_file():
        return {"status": f"not built (TETHER_BENCH_CORE={binary} does not exist)"}
    note(f"core: running {binary}")
    env = dict(os.environ, TETHER_BENCH_QUICK="1" if quick else "0")
    rc, out = run_to_end([binary], cfg["core_timeout"], env=env, pinned=False)
    if rc is None:
        return {"status": f"killed after {cfg['core_timeout']:.0f} s", "binary": str(binary)}
    return {"status": "ok" if rc == 0 else f"exit {rc}", "binary": str(binary),
            "output": out.strip().splitlines()}


# --- report ------------------------------------------------------------------------------------------

def fmt(value, unit):
    if value is None:
        return "-"
    return f"{value:,.0f}" if unit == "calls" else f"{value:,.1f}"


def build_rows(cfg, peers, raw):
    rows = []
    specs = (
        ("sync", "sync small calls (calls/s)", "sync_calls_per_s", "calls", "round_trips_per_s"),
        ("pipelined", f"pipelined, {cfg['pipe_calls']:,} in flight (calls/s)", "pipelined_calls_per_s",
         "calls", None),
        ("big", f"{cfg['big_bytes'] >> 20} MiB bytes echo (MB/s)", "big_mb_per_s", "mb", "stream_mb_per_s"),
    )
    for key, title, field, unit, raw_field in specs:
        values = {name: peers.get(name, {}).get(field) for name in PEERS}
        raw_value = raw.get(raw_field) if raw_field else None
        others = [(values[n], n) for n in OTHER_PEERS if values[n] is not None]
        best_value, best_name = max(others) if others else (None, None)
        tether = values["tether"]
        ratios = {
            "best_peer": tether / best_value if tether is not None and best_value else None,
            "raw": tether / raw_value if tether is not None and raw_value else None,
            "rpyc": tether / values["rpyc"] if tether is not None and values.get("rpyc") else None,
        }
        checks = [ratios[against] >= minimum if ratios[against] is not None else None
                  for against, minimum in TARGETS[key]]
        met = "n/a" if None in checks else ("yes" if all(checks) else "no")
        target = ", ".join(f">= {m:.2f}x {TARGET_NAMES[a]}" for a, m in TARGETS[key])
        rows.append({"benchmark": key, "title": title, "unit": unit, "values": values, "raw": raw_value,
                     "best_peer": best_name, "tether_over_best_peer": ratios["best_peer"],
                     "tether_over_raw": ratios["raw"], "target": target, "met": met})
    return rows


def cell(name, peer, row):
    if "skipped" in peer:
        return "skipped"
    if "failed" in peer:
        return "failed"
    if row["values"][name] is None:
        return "error" if row["benchmark"] in peer.get("errors", {}) else "-"
    return fmt(row["values"][name], row["unit"])


def print_table(rows, peers):
    header = ["benchmark", "tether", "tether+TLS", "Pyro5", "RPyC", "raw", "tether/best-peer", "tether/raw", "target", "met?"]
    lines = []
    for row in rows:
        ratio = row["tether_over_best_peer"]
        lines.append([
            row["title"],
            *(cell(n, peers.get(n, {}), row) for n in PEERS),
            fmt(row["raw"], row["unit"]),
            f"{ratio:.2f}x (vs {TITLES[row['best_peer']]})" if ratio is not None else "-",
            f"{row['tether_over_raw']:.2f}x" if row["tether_over_raw"] is not None else "-",
            row["target"], row["met"],
        ])
    print_markdown_table(header, lines)


def print_notes(cfg, peers, raw, core, machine):
    print()
    print(f"python {machine['python']}, {machine['cpus']} cpus, placement {machine['placement']}, "
          f"load average at start {machine['loadavg_at_start'][0]:.2f}")
    for name in PEERS:
        peer = peers.get(name)
        if peer is None:
            continue
        if "skipped" in peer:
            print(f"{TITLES[name]}: skipped: {peer['skipped']}")
        elif "failed" in peer:
            print(f"{TITLES[name]}: failed: {peer['failed']}")
        else:
            extra = f"; pipelined via {peer['pipelined_label']}" if peer.get("pipelined_label") else ""
            print(f"{TITLES[name]}: {peer.get('label', '')}{extra}")
            for bench, error in peer.get("errors", {}).items():
                print(f"  {bench} error: {error}")
    if raw:
        if "failed" in raw:
            print(f"raw: failed: {raw['failed']}")
        else:
            print(f"raw: {raw['label']}; sync column = 1-byte ping-pong round trips/s, "
                  f"echo column = one-way stream of {cfg['raw_stream_bytes'] >> 20} MiB")
            for bench, error in raw.get("errors", {}).items():
                print(f"  {bench} error: {error}")
    print(f"echo MB/s counts the payload both ways (2 x {cfg['big_bytes'] >> 20} MiB per call); "
          f"MB = 10^6 bytes; each number is the best of {cfg['reps']} timed runs after a warm-up.")
    if core is not None:
        if core.get("output"):
            for line in core["output"]:
                print(f"C++ core ({core['status']}): {line}")
        else:
            print(f"C++ core: {core['status']}")


def machine_info():
    load = os.getloadavg()
    placement = ({role: sorted(cpus) for role, cpus in PLACEMENT.items()} if PLACEMENT else "os scheduler")
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "loadavg_at_start": load, "placement": placement}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, for checking the harness")
    parser.add_argument("--json", metavar="PATH", help="also write all results to PATH")
    parser.add_argument("--only", default="tether,tether_tls,pyro5,rpyc,raw,core",
                        help="comma-separated subset of tether,pyro5,rpyc,raw,core")
    parser.add_argument("--pin", choices=("split", "same", "none"), default="split",
                        help="split: servers on one CPU, clients on another (default); same: all on one "
                             "CPU; none: leave placement to the OS scheduler")
    parser.add_argument("--lifetime", type=float, default=1800.0,
                        help="every server started exits by itself after this many seconds")
    args = parser.parse_args()
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = only - set(PEERS) - {"raw", "core"}
    if unknown:
        parser.error(f"unknown names in --only: {', '.join(sorted(unknown))}")
    cfg = dict(QUICK if args.quick else FULL)
    global PLACEMENT
    PLACEMENT = placement_for(args.pin)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    atexit.register(Child.stop_all)

    machine = machine_info()
    note(f"python {machine['python']} on {machine['cpus']} cpus, load average "
         f"{machine['loadavg_at_start'][0]:.2f}, placement {machine['placement']}")
    if machine["loadavg_at_start"][0] > 0.5 * (machine["cpus"] or 1):
        note("warning: the machine is busy; numbers will be noisy")

    peers = {name: measure_peer(name, cfg, args.lifetime) for name in PEERS if name in only}
    for name, result in peers.items():
        if "skipped" in result:
            note(f"{TITLES[name]}: skipped: {result['skipped']}")
        elif "failed" in result:
            note(f"{TITLES[name]}: failed: {result['failed']}")
    raw = measure_raw(cfg, args.lifetime) if "raw" in only else {}
    core = measure_core(cfg, args.quick) if "core" in only else None

    rows = build_rows(cfg, peers, raw)
    print()
    print_table(rows, peers)
    print_notes(cfg, peers, raw, core, machine)
    if args.json:
        report = {"mode": "quick" if args.quick else "full", "config": cfg, "targets": TARGETS,
                  "machine": machine, "peers": peers, "raw": raw, "core": core, "rows": rows}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
