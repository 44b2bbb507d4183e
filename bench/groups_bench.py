#!/usr/bin/env python3
"""Process-group speed: agreed messages delivered per second to each of 3 member processes, and the
latency of one agreed message, on one machine (the head of an embedded cluster sequences).

    python bench/groups_bench.py            # 3 members x 20,000 messages
    python bench/groups_bench.py --quick    # 3 members x 3,000 messages

Each member process joins, waits for the view of all three, then sends its messages pipelined
(send(wait=False), a window of 1,000 in flight) while it receives; it reports when it delivered its
first and its last message. The rate per member is every message of the run (3 x N) divided by that
member's time from first to last delivery. Target (issue 4): at least 50,000 small messages/s.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tether  # noqa: E402
from _table import print_markdown_table  # noqa: E402  (bench/_table.py)

MEMBER = textwrap.dedent("""
    import json, sys, threading, time, tether
    address, secret, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    tether.init(address=address, secret=secret)
    group = tether.Group(name)
    while len(group.members) < 3:
        group.receive(timeout=60)
    total, delivered, first, last = 3 * count, 0, None, None
    def sender():
        window = []
        for i in range(count):
            window.append(group.send(i, wait=False))
            if len(window) >= 1000:
                window.pop(0).result()
        for future in window:
            future.result()
    thread = threading.Thread(target=sender)
    thread.start()
    while delivered < total:
        item = group.receive(timeout=120)
        if isinstance(item, tether.Message):
            delivered += 1
            now = time.perf_counter()
            first = first or now
            last = now
    thread.join()
    print(json.dumps({"rate": total / (last - first)}), flush=True)
    group.leave()
    tether.shutdown()
""")


def latency_us(samples: int) -> float:
    group = tether.Group(f"latency-{uuid.uuid4().hex[:6]}")
    group.receive(timeout=60)  # its first view
    times = []
    for i in range(samples):
        start = time.perf_counter()
        group.send(i)
        item = group.receive(timeout=60)
        times.append(time.perf_counter() - start)
        assert item.data == i
    group.leave()
    return statistics.median(times) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 3000 if args.quick else 20000
    samples = 300 if args.quick else 2000
    info = tether.init(num_cpus=1)
    try:
        name = f"bench-{uuid.uuid4().hex[:6]}"
        members = [subprocess.Popen([sys.executable, "-c", MEMBER, info["address"], info["secret"], name, str(count)],
                                    stdout=subprocess.PIPE, text=True) for _ in range(3)]
        rates = []
        for member in members:
            out, _ = member.communicate(timeout=600)
            if member.returncode != 0:
                raise SystemExit(f"a member failed (exit {member.returncode})")
            rates.append(json.loads(out.strip().splitlines()[-1])["rate"])
        latency = latency_us(samples)
    finally:
        tether.shutdown()
    slowest = min(rates)
    rows = [
        [f"agreed messages/s delivered to each of 3 members ({count:,} sent by each)",
         ", ".join(f"{r:,.0f}" for r in rates), ">= 50,000", "yes" if slowest >= 50000 else "no"],
        [f"latency of one agreed message, send to own delivery (median of {samples}, us)", f"{latency:.1f}", "-", "-"],
    ]
    print_markdown_table(["benchmark", "tether", "target", "met?"], rows)
    print(f"load average {os.getloadavg()[0]:.2f}; 2 CPUs shared by the head and the three members")
    return 0


if __name__ == "__main__":
    sys.exit(main())
