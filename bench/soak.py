#!/usr/bin/env python3
"""A soak: many clients call one server process for a long time, and the server's memory and file
descriptors are watched for growth. Not run in CI.

    python bench/soak.py                        # 10 minutes, 24 clients, cuts every 10 s
    python bench/soak.py --minutes 2            # a shorter check
    python bench/soak.py --cut-every 0          # no network faults
    python bench/soak.py --actions sync,futures,reconnect

The server (a tether.Server in a child process) is called by `--clients` threads of this process,
each with its own Proxy, going round: 20 sync calls, 100 futures, a stream of 200 items, a 128 KiB
echo, 10 oneway calls, and a reconnect (close, then call again; every tenth time a new Proxy);
`--actions` picks a subset, to find which one makes something grow.
Half of the clients go through a FaultProxy (tests/python/faultproxy.py) that cuts or resets their
connections every `--cut-every` seconds; their calls may then fail with CommunicationError, which
is counted, not an error. A result that is not the one asked for is an error.

Every `--report` seconds (30) a line gives the server process's RSS, open file descriptors and
threads (from /proc/PID/status and /proc/PID/fd), the connections it counts, and the calls made so
far. At the end, once every client has closed its connection, the verdict compares the first and
last thirds of the run (median RSS, median fds) and the fds and connections left after the clients
against those before them. Exit status: 0 stable, 1 growth or a wrong result, 2 could not run.
"""
import argparse
import itertools
import os
import random
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))

import tether  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402

SERVER = textwrap.dedent("""
    import os, sys, threading
    import tether

    @tether.expose
    class Soak:
        def __init__(self, server):
            self._server = server
            self.notes = 0

        def add(self, a, b):
            return a + b

        def echo(self, value):
            return value

        def items(self, n):
            yield from range(n)

        @tether.oneway
        def note(self, value):
            self.notes += 1

        def connections(self):
            return self._server.connection_count

    # However the soak ends, this process does not outlive it by much.
    threading.Timer(float(sys.argv[1]), os._exit, (3,)).start()
    with tether.Server(host="127.0.0.1", port=0) as server:
        print(server.register(Soak(server), "soak"), flush=True)
        sys.stdin.read()  # until the soak closes our stdin
    os._exit(0)
""")

BLOB = bytes(range(256)) * 512  # 128 KiB: travels as an out-of-band segment


class Counts:
    def __init__(self):
        self.calls = 0
        self.failed = 0  # CommunicationError: expected behind the cutting proxy
        self.wrong = []  # results that were not the ones asked for, and unexpected exceptions


ACTIONS = ("sync", "futures", "stream", "large", "oneway", "reconnect")


def client(n: int, uri: str, stop: threading.Event, counts: Counts, chosen):
    rnd = random.Random(n)
    proxy = tether.Proxy(uri, timeout=60)

    def sync():
        base = rnd.randrange(1 << 30)
        for k in range(20):
            if proxy.add(k, base) != k + base:
                counts.wrong.append(("add", k, base))
        return 20

    def futures():
        base = rnd.randrange(1 << 30)
        pending = [proxy.add.future(k, base) for k in range(100)]
        for k, future in enumerate(pending):
            if future.result(120) != k + base:
                counts.wrong.append(("future", k, base))
        return len(pending)

    def stream():
        if list(proxy.items(200)) != list(range(200)):
            counts.wrong.append(("stream",))
        return 1

    def large():
        if proxy.echo(BLOB) != BLOB:
            counts.wrong.append(("echo",))
        return 1

    def oneway():
        for k in range(10):
            proxy.note(k)
        return 10

    reconnects = itertools.count(1)

    def reconnect():
        nonlocal proxy
        proxy.close()
        if next(reconnects) % 10 == 0:
            proxy = tether.Proxy(uri, timeout=60)
        if proxy.add(1, 1) != 2:
            counts.wrong.append(("reconnect",))
        return 1

    actions = [action for action in (sync, futures, stream, large, oneway, reconnect) if action.__name__ in chosen]
    for i in itertools.count():
        if stop.is_set():
            break
        try:
            counts.calls += actions[i % len(actions)]()
        except tether.CommunicationError:
            counts.failed += 1
        except Exception as exc:  # anything else is a finding
            counts.wrong.append(repr(exc))
    proxy.close()


def cutter(faults: FaultProxy, every: float, stop: threading.Event):
    for i in itertools.count():
        if stop.wait(every):
            return
        faults.cut() if i % 2 == 0 else faults.reset()


def sample(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mib": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def fd_kinds(pid: int) -> dict:
    """The server's open fds by what they are: socket, pipe, anon_inode:[eventfd], a path..."""
    kinds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":[")[0] if target.startswith(("socket:", "pipe:")) else target
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def child_env() -> dict:
    env = dict(os.environ)
    package_parent = str(Path(tether.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def verdict(samples: list, before: dict, after: dict, counts: list, args) -> bool:
    """Prints the verdict; True when nothing grew and every result was right."""
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    rss_first = statistics.median(s["rss_mib"] for s in first)
    rss_last = statistics.median(s["rss_mib"] for s in last)
    fds_first = statistics.median(s["fds"] for s in first)
    fds_last = statistics.median(s["fds"] for s in last)
    rss_allowed = max(args.rss_slack_mib, rss_first * args.rss_slack_pct / 100)
    wrong = [w for c in counts for w in c.wrong]
    checks = [  # (what, good, the word for a bad line)
        (f"RSS, median of the first and last thirds: {rss_first:.1f} -> {rss_last:.1f} MiB "
         f"(allowed growth {rss_allowed:.1f} MiB)", rss_last - rss_first <= rss_allowed, "GREW"),
        (f"fds, median of the first and last thirds: {fds_first:g} -> {fds_last:g} "
         f"(allowed growth {args.fd_slack})", fds_last - fds_first <= args.fd_slack, "GREW"),
        (f"fds with no client connected, before and after: {before['fds']} -> {after['fds']}",
         after["fds"] <= before["fds"], "GREW"),
        (f"connections the server counts with only the observer connected, before and after: "
         f"{before['connections']} -> {after['connections']}", after["connections"] <= before["connections"], "GREW"),
        (f"threads, before and after: {before['threads']} -> {after['threads']}", after["threads"] <= before["threads"],
         "GREW"),
        (f"results that were not the ones asked for, or unexpected exceptions: {len(wrong)} {wrong[:3]}", not wrong,
         "FAIL"),
    ]
    print("\nverdict")
    for text, good, bad in checks:
        print(f"  {'ok' if good else bad:<5} {text}")
    stable = all(good for _, good, _ in checks)
    print("VERDICT:", "stable" if stable else "growth or errors: see the lines marked above")
    return stable


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--cut-every", type=float, default=10.0, help="seconds between cuts (0: no faults)")
    parser.add_argument("--actions", default=",".join(ACTIONS),
                        help="what each client does, in turn (a comma-separated subset of the default)")
    parser.add_argument("--report", type=float, default=30.0, help="seconds between report lines")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples for the verdict")
    parser.add_argument("--rss-slack-mib", type=float, default=16.0)
    parser.add_argument("--rss-slack-pct", type=float, default=10.0)
    parser.add_argument("--fd-slack", type=int, default=8)
    args = parser.parse_args()
    seconds = args.minutes * 60
    chosen = args.actions.split(",")
    if not chosen or set(chosen) - set(ACTIONS):
        parser.error(f"--actions takes a comma-separated subset of {','.join(ACTIONS)}")

    server = subprocess.Popen([sys.executable, "-c", SERVER, str(seconds + 300)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=child_env())
    stop = threading.Event()
    threads, counts, faults, observer = [], [], None, None
    try:
        uri = server.stdout.readline().strip()
        if not uri.startswith("tether://"):
            print(f"the server did not start (exit status {server.wait(timeout=30)})", file=sys.stderr)
            return 2
        observer = tether.Proxy(uri, timeout=60)
        connections = observer.connections()  # the observer's own connection is open from here on
        before = dict(sample(server.pid), connections=connections, kinds=fd_kinds(server.pid))
        faults = FaultProxy(uri.split("/")[2])
        faulty_uri = f"tether://{faults.address}/soak"
        faulty = (f"{args.clients // 2} through a proxy that cuts every {args.cut_every:g} s" if args.cut_every
                  else "all connected directly")
        print(f"soak: {args.minutes:g} min, {args.clients} clients ({faulty}), actions {','.join(chosen)}, "
              f"server PID {server.pid}")
        print(f"before: RSS {before['rss_mib']:.1f} MiB, {before['fds']} fds, {before['threads']} threads")
        print(f"{'time':>6} {'RSS MiB':>8} {'fds':>5} {'threads':>7} {'conns':>5} {'calls':>10} {'failed':>7} {'wrong':>5}")
        for n in range(args.clients):
            counts.append(Counts())
            target = faulty_uri if args.cut_every and n % 2 else uri
            threads.append(threading.Thread(target=client, args=(n, target, stop, counts[n], chosen), name=f"client-{n}"))
        if args.cut_every:
            threads.append(threading.Thread(target=cutter, args=(faults, args.cut_every, stop), name="cutter"))
        for thread in threads:
            thread.start()
        samples = []
        started = time.monotonic()
        next_report = args.report
        while (elapsed := time.monotonic() - started) < seconds:
            time.sleep(min(args.sample, seconds - elapsed))
            elapsed = time.monotonic() - started
            samples.append(sample(server.pid))
            if elapsed >= next_report - 1e-6 or elapsed >= seconds:
                next_report += args.report
                s = samples[-1]
                print(f"{int(elapsed) // 60:>3}:{int(elapsed) % 60:02d} {s['rss_mib']:>8.1f} {s['fds']:>5} "
                      f"{s['threads']:>7} {observer.connections():>5} {sum(c.calls for c in counts):>10} "
                      f"{sum(c.failed for c in counts):>7} {sum(len(c.wrong) for c in counts):>5}", flush=True)
        stop.set()
        for thread in threads:
            thread.join(180)
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            print(f"threads still running 180 s after the end: {stuck}", file=sys.stderr)
        faults.close()
        time.sleep(1.0)  # the server sees the last closes
        connections = observer.connections()
        after = dict(sample(server.pid), connections=connections, kinds=fd_kinds(server.pid))
        print(f"after the clients left: RSS {after['rss_mib']:.1f} MiB, {after['fds']} fds, "
              f"{after['threads']} threads, {after['connections']} connections counted")
        if after["kinds"] != before["kinds"]:
            print(f"  fds by kind, before: {before['kinds']}\n  fds by kind, after:  {after['kinds']}")
        return 0 if verdict(samples, before, after, counts, args) and not stuck else 1
    finally:
        stop.set()
        if observer is not None:
            observer.close()
        if faults is not None:
            faults.close()
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()  # our child, by its PID
            server.wait()


if __name__ == "__main__":
    sys.exit(main())
