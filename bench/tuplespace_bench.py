#!/usr/bin/env python3
"""Tuple-space speed, against the proxy's own synchronous call rate, in one run on one machine.

    python bench/tuplespace_bench.py            # full run (1,000,000 unrelated tuples)
    python bench/tuplespace_bench.py --quick    # 100,000 unrelated tuples, shorter windows

Measures, from one Python client of an embedded cluster (the head over its Unix socket):
  - out + in_ pairs per second, against synchronous calls per second of a tether.Proxy to a
    tether.Server in another process over a Unix socket, as the head is (target: pairs >= 0.5x
    calls; a server in the bench's own process would be reached more cheaply, since waking a thread
    of the same process costs less than waking another process's). The two
    are measured in alternating windows, five of each, and each keeps its best: on this VM the cost
    of a round trip changes several times over from one moment to the next (as the scheduler places
    the processes), so a single window of each compared two different machines;
  - the latency of in_ (a tuple written just before) with 10 and with N other tuples in the space
    (target: within 2x).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tether  # noqa: E402
from _table import print_markdown_table  # noqa: E402  (bench/_table.py)


ECHO_SERVER = """
import sys, tether

@tether.expose
class Echo:
    def ping(self, value):
        return value

with tether.Server(unix_path=sys.argv[1]) as server:
    print(server.register(Echo(), "echo"), flush=True)
    sys.stdin.read()
"""


def rate(operation, window: float, warmup: float) -> float:
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        operation()
    count, start = 0, time.perf_counter()
    end = start + window
    while time.perf_counter() < end:
        operation()
        count += 1
    return count / (time.perf_counter() - start)


def best_of_alternating(operations: dict, window: float, warmup: float, rounds: int = 5) -> dict:
    """Each operation's best rate over `rounds` windows, the operations taking turns."""
    best = {name: 0.0 for name in operations}
    for _ in range(rounds):
        for name, operation in operations.items():
            best[name] = max(best[name], rate(operation, window, warmup))
    return best


def fill(space: tether.TupleSpace, count: int) -> None:
    """Writes `count` unrelated tuples, pipelined (a window of calls in flight)."""
    channel = tether.tuplespace._channels.get(space._uri, space._secret)
    window = []
    for i in range(count):
        window.append(channel.call_future("tuplespace", "out", (space.name, ["noise", i], None), None, None, 1))
        if len(window) >= 1000:
            for future in window:
                future.result()
            window.clear()
    for future in window:
        future.result()


def in_latency_us(space: tether.TupleSpace, samples: int) -> float:
    times = []
    for i in range(samples):
        space.out(("probe", i))
        start = time.perf_counter()
        space.in_(("probe", int))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pin", choices=("same", "split", "none"), default="split",
                        help="same: servers and client on CPU 0; split: servers on CPU 0, client on CPU 1 "
                             "(as bench/run.py); none: the OS places them")
    args = parser.parse_args()
    server_cpus = {0} if args.pin != "none" else None
    client_cpus = {1} if args.pin == "split" else server_cpus
    if server_cpus:
        os.sched_setaffinity(0, server_cpus)  # the echo server and the head inherit it when they start
    window, warmup = (0.5, 0.2) if args.quick else (2.0, 0.5)
    many = 100_000 if args.quick else 1_000_000
    samples = 500 if args.quick else 2000

    path = os.path.join(tempfile.mkdtemp(prefix="tether-bench-"), "echo.sock")
    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    proxy = tether.Proxy(server.stdout.readline().strip())
    tether.init(num_cpus=1)
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    try:
        pairs_space = tether.TupleSpace("bench-pairs")
        counter = iter(range(1 << 62))

        def pair():
            i = next(counter)
            pairs_space.out(("k", i))
            pairs_space.in_(("k", int))

        best = best_of_alternating({"calls": lambda: proxy.ping(("k", 1)), "pairs": pair}, window, warmup)
        calls, pairs = best["calls"], best["pairs"]
        proxy.close()
        server.stdin.close()
        server.wait(timeout=30)
        few = tether.TupleSpace("bench-few")
        fill(few, 10)
        in_latency_us(few, samples // 4)  # warm-up: the first calls pay for connections and caches
        latency_few = in_latency_us(few, samples)
        crowded = tether.TupleSpace("bench-many")
        started = time.perf_counter()
        fill(crowded, many)
        fill_seconds = time.perf_counter() - started
        assert crowded.count() == many
        latency_many = in_latency_us(crowded, samples)
    finally:
        tether.shutdown()

    rows = [
        ["out + in_ pairs per second (one client)", f"{pairs:,.0f}", f"{calls:,.0f} proxy calls/s",
         f"{pairs / calls:.2f}x", ">= 0.5x", "yes" if pairs >= 0.5 * calls else "no"],
        [f"in_ latency, 10 other tuples (median of {samples}, us)", f"{latency_few:.1f}", "-", "-", "-", "-"],
        [f"in_ latency, {many:,} other tuples (median of {samples}, us)", f"{latency_many:.1f}",
         f"{latency_few:.1f} with 10", f"{latency_many / latency_few:.2f}x", "<= 2x",
         "yes" if latency_many <= 2 * latency_few else "no"],
    ]
    print_markdown_table(["benchmark", "tuple space", "compared with", "ratio", "target", "met?"], rows)
    print(f"filling {many:,} tuples took {fill_seconds:.1f} s ({many / fill_seconds:,.0f} out/s pipelined); "
          f"load average {os.getloadavg()[0]:.2f}; --pin {args.pin}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
