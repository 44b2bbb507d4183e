#!/usr/bin/env python3
"""tether's Ray-compatible cluster API against Ray itself, side by side in one run on one machine.

    python bench/cluster_bench.py            # full run (a few minutes)
    python bench/cluster_bench.py --quick    # short run, smaller counts and windows
    python bench/cluster_bench.py --json results.json

The cases are those of `ray microbenchmark` (ray/_private/ray_perf.py), under the same names, plus
the time from init() to the first task result and the memory of an idle local cluster. Each library
runs in processes of its own (bench/peers/{tether,ray}_cluster_peer.py), never in this one. The
harness keeps the PID of each process it starts and ends it, and every process of a cluster carries a
marker in its environment, so whatever a peer leaves behind is found and ended too (and reported).
"""

import argparse
import atexit
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
import uuid
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PEERS_DIR = BENCH_DIR / "peers"
sys.path.insert(0, str(PEERS_DIR))

import _procs  # noqa: E402
from _cluster_common import CASES  # noqa: E402
from _table import print_markdown_table  # noqa: E402  (bench/_table.py)

LIBRARIES = ("tether", "ray")
TITLES = {"tether": "tether", "ray": "Ray"}

# The targets, as tether / Ray: (">=", x) asks for at least x times Ray's rate; ("<=", x) for
# at most x times Ray's time or memory. Rows not listed here are reported without a target.
TARGETS = {
    "tasks_sync": (">=", 10.0),
    "actor_sync": (">=", 10.0),
    "tasks_async": (">=", 5.0),
    "actor_async": (">=", 5.0),
    "put_gb": (">=", 1.0),
    "get_gb": (">=", 1.0),
    "init_first_result": ("<=", 0.1),   # init() to the first result at least 10x faster
    "idle_rss": ("<=", 0.2),            # an idle cluster in at most a fifth of Ray's memory
}

EXTRA_ROWS = {
    "init_first_result": ("init() to first task result (s, best of {runs} fresh processes)", "s"),
    "idle_rss": ("idle cluster RSS, num_cpus=2, 2 workers (MB)", "MB"),
}

FULL = {"warmup_s": 0.5, "window_s": 1.0, "reps": 3, "big_elements": 100 * 1024 * 1024, "nn_calls": 5000,
        "settle_s": 3.0, "first_result_runs": 3, "case_timeout": 180.0, "start_timeout": 120.0,
        "run_timeout": 180.0}
QUICK = {"warmup_s": 0.2, "window_s": 0.4, "reps": 2, "big_elements": 16 * 1024 * 1024, "nn_calls": 1000,
         "settle_s": 1.0, "first_result_runs": 3, "case_timeout": 90.0, "start_timeout": 120.0,
         "run_timeout": 120.0}
PEER_KEYS = ("warmup_s", "window_s", "reps", "big_elements", "nn_calls", "settle_s")

MARK = "CLUSTER_BENCH_MARK"
STOP_GRACE = 5.0
LEFTOVERS = []  # (library, what, [(pid, command)]) ended by the harness after a peer was done
LIVE = []       # peers running now, ended at exit whatever happens


def note(text):
    print(text, file=sys.stderr, flush=True)


class Peer:
    """One peer process, its marker and its temporary directory; stop() ends all three."""

    def __init__(self, library, args, cfg):
        self.library = library
        self.token = uuid.uuid4().hex
        self.tmp = tempfile.mkdtemp(prefix=f"cb-{library}-")
        env = {k: v for k, v in os.environ.items() if k not in ("TETHER_ADDRESS", "RAY_ADDRESS")}
        env.update({MARK: self.token, "CLUSTER_BENCH_TMP": self.tmp})
        config = json.dumps({k: cfg[k] for k in PEER_KEYS})
        self.stderr_file = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, PEERS_DIR / f"{library}_cluster_peer.py", *args, "--config", config],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr_file, env=env, cwd=PEERS_DIR)
        self.buffer = b""
        LIVE.append(self)

    def read_line(self, timeout):
        """One line of stdout; None on timeout; "" once the process closed stdout."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                line, self.buffer = self.buffer, b""
                return line.decode(errors="replace").strip()
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode(errors="replace").strip() or " "  # a blank line is not the end

    def read_protocol_line(self, timeout):
        """The next line the harness understands (workers' forwarded output is skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_line(max(0.0, deadline - time.monotonic()))
            if line is None or line == "":
                return line
            if line.split(" ", 1)[0] in ("READY", "START", "CASE", "DONE", "RESULT", "SKIP"):
                return line

    def stderr_tail(self, lines=8):
        self.stderr_file.seek(0)
        text = self.stderr_file.read().decode(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self, what):
        if self.proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(STOP_GRACE)
                    break
                except subprocess.TimeoutExpired:
                    pass
        self.proc.wait()
        ended = _procs.end_marked(MARK, self.token)
        if ended:
            LEFTOVERS.append((self.library, what, ended))
            note(f"  [{self.library}] ended {len(ended)} process(es) left behind after {what}")
        self.proc.stdout.close()
        self.stderr_file.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self in LIVE:
            LIVE.remove(self)


def stop_all():
    for peer in list(LIVE):
        peer.stop("an interrupted run")


# --- measuring ------------------------------------------------------------------------------------

def measure_cases(library, cfg, keys):
    """Runs the ray_perf cases in one peer process; a case that hangs is recorded as failed, its
    process tree is ended, and the cases after it go on in a fresh process."""
    results, info = {}, None
    remaining = list(keys)
    while remaining:
        peer = Peer(library, ["cases", "--cases", ",".join(remaining)], cfg)
        current = None
        try:
            line = peer.read_protocol_line(cfg["start_timeout"])
            if line and line.startswith("SKIP "):
                return {"skipped": line[5:]}
            if not line or not line.startswith("READY "):
                reason = "did not start in time" if line is None else f"exited: {peer.stderr_tail()}"
                if info is None:
                    return {"failed": f"peer {reason}"}
                for key in remaining:
                    results[key] = {"key": key, "error": f"peer {reason}"}
                break
            info = info or json.loads(line[6:])
            while remaining:
                line = peer.read_protocol_line(cfg["case_timeout"] if current else cfg["start_timeout"])
                if line is None or line == "":
                    why = (f"timed out after {cfg['case_timeout']:.0f} s" if line is None
                           else f"peer exited: {peer.stderr_tail(3)}")
                    key = current or remaining[0]
                    results[key] = {"key": key, "error": why}
                    note(f"  [{library}] {CASES[key][0]}: {why}")
                    remaining.remove(key)
                    break
                if line.startswith("START "):
                    current = line[6:].strip()
                elif line.startswith("CASE "):
                    result = json.loads(line[5:])
                    results[result["key"]] = result
                    remaining.remove(result["key"])
                    current = None
                    if "error" in result:
                        note(f"  [{library}] {CASES[result['key']][0]} failed: {result['error']}")
                    else:
                        note(f"  [{library}] {CASES[result['key']][0]}: {result['value']:,.1f} "
                             f"{CASES[result['key']][1]}")
                elif line.startswith("DONE"):
                    for key in remaining:  # cannot happen unless the peer skipped a case it was given
                        results[key] = {"key": key, "error": "the peer did not run it"}
                    remaining = []
        finally:
            peer.stop("the ray_perf cases")
    return {"label": info["label"], "notes": info.get("notes", ""), "cluster": info.get("cluster", {}),
            "cases": results}


def run_once(library, mode, cfg):
    """A fresh peer process for one measurement: (result dict) or raises RuntimeError."""
    peer = Peer(library, [mode], cfg)
    try:
        deadline = time.monotonic() + cfg["run_timeout"]
        while True:
            line = peer.read_protocol_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError(f"timed out after {cfg['run_timeout']:.0f} s")
            if line == "":
                raise RuntimeError(f"exited without a result: {peer.stderr_tail(3)}")
            if line.startswith("SKIP "):
                return {"skipped": line[5:]}
            if line.startswith("RESULT "):
                return json.loads(line[7:])
    finally:
        peer.stop(mode)


def measure_first_result(library, cfg):
    runs = []
    for _ in range(cfg["first_result_runs"]):
        result = run_once(library, "first-result", cfg)
        if "skipped" in result:
            return result
        runs.append(result)
    best = min(r["seconds"] for r in runs)
    note(f"  [{library}] init() to first result: best {best:.3f} s of {[round(r['seconds'], 3) for r in runs]}")
    return {"value": best, "runs": runs}


def measure_idle_rss(library, cfg):
    result = run_once(library, "idle-rss", cfg)
    if "skipped" not in result:
        result["value"] = result["rss_mb"]
        note(f"  [{library}] idle cluster: RSS {result['rss_mb']:,.1f} MB, PSS {result['pss_mb']:,.1f} MB "
             f"in {len(result['processes'])} processes")
    return result


def measure_library(library, cfg, keys):
    note(f"{TITLES[library]}:")
    case_keys = [k for k in keys if k in CASES]
    out = measure_cases(library, cfg, case_keys) if case_keys else {"cases": {}}
    if "skipped" in out or ("failed" in out and not out.get("cases")):
        return out
    for key, fn in (("init_first_result", measure_first_result), ("idle_rss", measure_idle_rss)):
        if key not in keys:
            continue
        try:
            result = fn(library, cfg)
        except RuntimeError as exc:
            result = {"error": str(exc)}
            note(f"  [{library}] {key} failed: {exc}")
        if "skipped" in result:
            return {"skipped": result["skipped"]}
        out["cases"][key] = result
    return out


# --- report ---------------------------------------------------------------------------------------

def title_of(key, cfg):
    if key in CASES:
        name, unit = CASES[key]
        extra = f", {cfg['big_elements'] * 8 / 1e9:.2f} GB array" if key in ("put_gb", "get_gb") else ""
        if key == "nn_actor_async":
            extra = f", {cfg['nn_calls']:,} calls per task"
        return f"{name} ({unit}{extra})"
    text, _ = EXTRA_ROWS[key]
    return text.format(runs=cfg["first_result_runs"])


def unit_of(key):
    return CASES[key][1] if key in CASES else EXTRA_ROWS[key][1]


def fmt(value, unit):
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f}"
    if unit == "GB/s" or value < 100:
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def target_text(key):
    if key not in TARGETS:
        return "-"
    op, ratio = TARGETS[key]
    text = f"{op} {ratio:g}x Ray"
    if key == "init_first_result":
        text += f" ({1 / ratio:g}x faster)"
    return text


def build_rows(cfg, libraries, keys):
    rows = []
    for key in keys:
        values = {}
        for name in LIBRARIES:
            case = libraries.get(name, {}).get("cases", {}).get(key, {})
            values[name] = case.get("value")
        ratio = values["tether"] / values["ray"] if values.get("tether") is not None and values.get("ray") else None
        if key not in TARGETS:
            met = "-"
        elif ratio is None:
            met = "n/a"
        else:
            op, minimum = TARGETS[key]
            met = "yes" if (ratio >= minimum if op == ">=" else ratio <= minimum) else "no"
        rows.append({"benchmark": key, "title": title_of(key, cfg), "unit": unit_of(key), "values": values,
                     "tether_over_ray": ratio, "target": target_text(key), "met": met})
    return rows


def cell(name, library, row):
    if "skipped" in library:
        reason = library["skipped"].splitlines()[0]
        return "skipped: " + (reason if len(reason) <= 48 else reason[:45] + "...")
    if "failed" in library:
        return "failed"
    case = library.get("cases", {}).get(row["benchmark"], {})
    if "error" in case:
        return "error"
    return fmt(row["values"][name], row["unit"])


def ratio_text(row):
    ratio = row["tether_over_ray"]
    if ratio is None:
        return "-"
    if row["unit"] == "s":
        return f"{ratio:.3f}x ({1 / ratio:.1f}x faster)" if ratio > 0 else "-"
    return f"{ratio:.2f}x"


def print_table(rows, libraries):
    header = ["benchmark", "tether", "Ray", "tether/Ray", "target", "met?"]
    lines = [[row["title"], *(cell(n, libraries.get(n, {}), row) for n in LIBRARIES), ratio_text(row),
              row["target"], row["met"]] for row in rows]
    print_markdown_table(header, lines)


def short_name(command):
    """'raylet', 'ray::IDLE', 'python dashboard.py', 'python -m tether._private.worker'."""
    words = command.split()
    if not words:
        return "?"
    if words[0].startswith("ray::"):
        return words[0]
    program = words[0].rsplit("/", 1)[-1]
    if not program.startswith("python"):
        return program
    rest = [w for w in words[1:] if not w.startswith("-") or w == "-m"]
    if rest[:1] == ["-m"] and len(rest) > 1:
        return f"python -m {rest[1]}"
    return f"python {rest[0].rsplit('/', 1)[-1]}" if rest else "python"


def is_dashboard(command):
    return "dashboard" in command.lower()


def print_notes(cfg, libraries, machine):
    print()
    print(f"{machine['cpu']}, {machine['cpus']} cpus, {machine['memory_gib']:.0f} GiB, {machine['platform']}, "
          f"python {machine['python']}; load average {machine['loadavg_at_start'][0]:.2f} at start, "
          f"{machine['loadavg_at_end'][0]:.2f} at end; tree {machine['git'] or '?'}")
    print(f"rates: best of {cfg['reps']} windows of {cfg['window_s']:g} s after a {cfg['warmup_s']:g} s warm-up, "
          f"ray_perf's work and multipliers; GB = 10^9 bytes, MB = 10^6 bytes")
    for name in LIBRARIES:
        lib = libraries.get(name)
        if lib is None:
            continue
        if "skipped" in lib:
            print(f"{TITLES[name]}: skipped: {lib['skipped']}")
            continue
        if "failed" in lib:
            print(f"{TITLES[name]}: failed: {lib['failed']}")
            continue
        print(f"{TITLES[name]}: {lib.get('label', '')} ({lib.get('notes', '')})")
        for key, case in lib.get("cases", {}).items():
            if "error" in case:
                print(f"  {key} error: {case['error']}")
            if case.get("cleanup_error"):
                print(f"  {key} cleanup error: {case['cleanup_error']}")
        idle = lib.get("cases", {}).get("idle_rss")
        if idle and "processes" in idle:
            parts = ", ".join(f"{short_name(p['command'])} {p['rss_kb'] * 1024 / 1e6:.0f}" for p in idle["processes"])
            print(f"  idle cluster: RSS {idle['rss_mb']:,.1f} MB, PSS {idle['pss_mb']:,.1f} MB, "
                  f"{idle['task_workers']} task workers; driver (not counted) RSS {idle['driver_rss_mb']:,.1f} MB")
            print(f"  processes (RSS MB): {parts}")
            dash = [p for p in idle["processes"] if is_dashboard(p["command"])]
            if dash:
                rest = sum(p["rss_kb"] for p in idle["processes"] if not is_dashboard(p["command"])) * 1024 / 1e6
                print(f"  without the {len(dash)} dashboard processes: RSS {rest:,.1f} MB")
            for p in idle.get("marked_outside_tree", []):
                print(f"  not below the driver, not counted: {p['pid']} {p['command'][:80]} RSS {p['rss_kb']} kB")
        first = lib.get("cases", {}).get("init_first_result")
        if first and "runs" in first:
            print("  init() to first result, each run: "
                  + ", ".join(f"{r['seconds']:.3f} s (shutdown {r['shutdown_seconds']:.2f} s)" for r in first["runs"]))
    for library, what, ended in LEFTOVERS:
        print(f"{TITLES[library]}: the harness ended {len(ended)} process(es) left after {what}: "
              + "; ".join(f"{pid} {cmd[:60]}" for pid, cmd in ended))


def machine_info():
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) / (1 << 20)
    try:  # the tree measured: tether is imported from wherever PYTHONPATH or the install says
        revision = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=BENCH_DIR, capture_output=True,
                                  text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        revision = None
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cpus": os.cpu_count(), "memory_gib": memory, "loadavg_at_start": os.getloadavg(),
            "git": revision}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts and windows, for checking the harness")
    parser.add_argument("--json", metavar="PATH", help="also write all results to PATH")
    parser.add_argument("--only", default=",".join(LIBRARIES), help="comma-separated subset of tether,ray")
    all_keys = list(CASES) + list(EXTRA_ROWS)
    parser.add_argument("--cases", default=",".join(all_keys),
                        help="comma-separated subset of: " + ", ".join(all_keys))
    args = parser.parse_args()
    only = [n for n in LIBRARIES if n in {p.strip() for p in args.only.split(",")}]
    unknown = {p.strip() for p in args.only.split(",") if p.strip()} - set(LIBRARIES)
    if unknown:
        parser.error(f"unknown libraries in --only: {', '.join(sorted(unknown))}")
    keys = [k for k in all_keys if k in {p.strip() for p in args.cases.split(",")}]
    bad = {p.strip() for p in args.cases.split(",") if p.strip()} - set(all_keys)
    if bad:
        parser.error(f"unknown cases: {', '.join(sorted(bad))}")
    if not sys.platform.startswith("linux"):
        parser.error("the harness reads /proc: Linux only")
    cfg = dict(QUICK if args.quick else FULL)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    atexit.register(stop_all)

    machine = machine_info()
    note(f"python {machine['python']} on {machine['cpus']} cpus, load average {machine['loadavg_at_start'][0]:.2f}")
    if machine["loadavg_at_start"][0] > 0.5 * (machine["cpus"] or 1):
        note("warning: the machine is busy; numbers will be noisy")

    libraries = {name: measure_library(name, cfg, keys) for name in only}
    machine["loadavg_at_end"] = os.getloadavg()
    for name, result in libraries.items():
        if "skipped" in result:
            note(f"{TITLES[name]}: skipped: {result['skipped']}")
        elif "failed" in result:
            note(f"{TITLES[name]}: failed: {result['failed']}")

    rows = build_rows(cfg, libraries, keys)
    print()
    print_table(rows, libraries)
    print_notes(cfg, libraries, machine)
    if args.json:
        report = {"mode": "quick" if args.quick else "full", "config": cfg,
                  "targets": {k: list(v) for k, v in TARGETS.items()}, "machine": machine,
                  "libraries": libraries, "rows": rows,
                  "leftovers": [{"library": lib, "after": what, "processes": ended}
                                for lib, what, ended in LEFTOVERS]}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
