"""Shared plumbing for the peer processes that bench/run.py starts: server lifetime and client timing.

A peer module defines `start_server() -> address` and `connect(address) -> Client`, then calls `main()`.
Run as `python peers/NAME_peer.py server` it serves until its stdin closes (the harness holds the other
end) or its lifetime runs out, whichever comes first. Run as `python peers/NAME_peer.py client ADDRESS
...` it measures and prints one line `RESULT {json}` on stdout; progress goes to stderr.
A peer whose library cannot be imported or started prints `SKIP reason` and exits with SKIP_EXIT.
"""

import argparse
import json
import os
import sys
import threading
import time

SKIP_EXIT = 3


class Skip(Exception):
    """The library under test is missing or broken: the harness reports the peer as skipped."""


class Client:
    """What the timing loops need from one library. `pipelined` is None when it has no such mechanism."""

    label = ""            # library name and version, filled by the peer module
    pipelined_label = ""  # how the pipelined calls are made, shown in the report

    def echo(self, x):  # replaced by a bound remote method, so the loop times only the call
        raise NotImplementedError

    pipelined = None  # optional: pipelined(n) makes n calls echo(0..n-1) in flight at once, returns the last result

    def echo_big(self, payload):
        """Sends payload and returns the echoed value as bytes."""
        raise NotImplementedError

    def close(self):
        pass


def _exit_when_stdin_closes():
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)


def _serve(start_server, lifetime):
    try:
        address = start_server()
    except Skip as exc:
        print(f"SKIP {exc}", flush=True)
        os._exit(SKIP_EXIT)
    timer = threading.Timer(lifetime, os._exit, (4,))
    timer.daemon = True
    timer.start()
    print(f"READY {address}", flush=True)
    _exit_when_stdin_closes()


def _timed(fn, count, reps, cap_seconds=None):
    """Best wall time of `reps` runs of fn(count); stops early once cap_seconds have been spent."""
    best = None
    spent = 0.0
    for _ in range(reps):
        start = time.perf_counter()
        fn(count)
        elapsed = time.perf_counter() - start
        spent += elapsed
        best = elapsed if best is None else min(best, elapsed)
        if cap_seconds is not None and spent >= cap_seconds:
            break
    return best


def _measure(client, args, name):
    results = {"label": client.label, "errors": {}}

    def note(text):
        print(f"  [{name}] {text}", file=sys.stderr, flush=True)

    if args.sync_calls > 0:
        try:
            echo = client.echo

            def sync_loop(n):
                r = None
                for i in range(n):
                    r = echo(i)
                if r != n - 1:
                    raise AssertionError(f"echo returned {r!r}, expected {n - 1}")

            sync_loop(max(100, args.sync_calls // 10))
            best = _timed(sync_loop, args.sync_calls, args.reps)
            results["sync_calls_per_s"] = args.sync_calls / best
            note(f"sync: {results['sync_calls_per_s']:,.0f} calls/s")
        except Exception as exc:  # one failing benchmark must not hide the others
            results["errors"]["sync"] = f"{type(exc).__name__}: {exc}"
            note(f"sync failed: {exc!r}")

    if args.pipe_calls > 0 and client.pipelined is not None:
        try:
            def pipe_loop(n):
                last = client.pipelined(n)
                if last != n - 1:
                    raise AssertionError(f"last pipelined result {last!r}, expected {n - 1}")

            pipe_loop(max(100, args.pipe_calls // 10))
            best = _timed(pipe_loop, args.pipe_calls, args.reps)
            results["pipelined_calls_per_s"] = args.pipe_calls / best
            results["pipelined_label"] = client.pipelined_label
            note(f"pipelined ({client.pipelined_label}): {results['pipelined_calls_per_s']:,.0f} calls/s")
        except Exception as exc:
            results["errors"]["pipelined"] = f"{type(exc).__name__}: {exc}"
            note(f"pipelined failed: {exc!r}")

    if args.big_bytes > 0:
        try:
            # Random bytes: RPyC compresses frames over 3000 bytes with zlib, so a compressible payload
            # would measure zlib rather than transport.
            payload = os.urandom(args.big_bytes)
            warm = payload[: 1 << 20]
            if client.echo_big(warm) != warm:
                raise AssertionError("1 MiB warm-up echo differs")

            def big_loop(_):
                echoed = client.echo_big(payload)
                if len(echoed) != len(payload):
                    raise AssertionError(f"echoed {len(echoed)} bytes of {len(payload)}")

            best = _timed(big_loop, 1, args.reps, cap_seconds=args.big_cap_seconds)
            # Bytes moved both ways: the echo sends the payload and gets it back, one after the other,
            # so this is comparable with a one-way stream rate.
            results["big_mb_per_s"] = 2 * args.big_bytes / 1e6 / best
            results["big_seconds_per_call"] = best
            note(f"{args.big_bytes >> 20} MiB echo: {results['big_mb_per_s']:,.1f} MB/s ({best:.2f} s/call)")
        except Exception as exc:
            results["errors"]["big"] = f"{type(exc).__name__}: {exc}"
            note(f"big echo failed: {exc!r}")
    return results


def main(start_server, connect, name):
    parser = argparse.ArgumentParser(prog=f"{name}_peer")
    sub = parser.add_subparsers(dest="mode", required=True)
    srv = sub.add_parser("server")
    srv.add_argument("--lifetime", type=float, default=900.0, help="exit after this many seconds regardless")
    cli = sub.add_parser("client")
    cli.add_argument("address")
    cli.add_argument("--sync-calls", type=int, default=20_000)
    cli.add_argument("--pipe-calls", type=int, default=50_000)
    cli.add_argument("--big-bytes", type=int, default=64 << 20)
    cli.add_argument("--big-cap-seconds", type=float, default=30.0,
                     help="stop repeating the big echo once this much time has been spent on it")
    cli.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    if args.mode == "server":
        _serve(start_server, args.lifetime)
        return
    try:
        client = connect(args.address)
    except Skip as exc:
        print(f"SKIP {exc}", flush=True)
        sys.exit(SKIP_EXIT)
    try:
        results = _measure(client, args, name)
    finally:
        client.close()
    print("RESULT " + json.dumps(results), flush=True)
