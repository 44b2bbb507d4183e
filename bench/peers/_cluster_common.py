"""The cases of bench/cluster_bench.py, written once against Ray's core API and run by each library's
peer process (ray_cluster_peer.py, tether_cluster_peer.py) on its own module: the same code, the same
counts, so the only difference is the library.

The cases follow `ray microbenchmark` (ray/_private/ray_perf.py): same names, same work per call, same
multipliers. Timing differs from Ray's timeit only in length (no 10 s sleep, shorter windows, so the
suite takes minutes) and in that the best window is reported, like bench/run.py does.

Modes (each prints lines on stdout; progress and the libraries' logs go to stderr):
    PEER cases --config JSON [--cases k1,k2]   READY {info}, then START key / CASE {result} per case, DONE
    PEER first-result                          RESULT {seconds from init() to the first task's value}
    PEER idle-rss --config JSON                RESULT {memory of the idle local cluster}
A peer whose library cannot be imported prints `SKIP reason` and exits with SKIP_EXIT.
"""

import argparse
import json
import math
import os
import sys
import time
import traceback

import _procs

SKIP_EXIT = 3

# key -> (Ray's benchmark name, unit). Order: the order of the report.
CASES = {
    "get_small": ("single client get calls (Plasma Store)", "calls/s"),
    "put_small": ("single client put calls (Plasma Store)", "calls/s"),
    "put_gb": ("single client put gigabytes", "GB/s"),
    "get_gb": ("single client get gigabytes", "GB/s"),
    "tasks_sync": ("single client tasks sync", "tasks/s"),
    "tasks_async": ("single client tasks async", "tasks/s"),
    "tasks_and_get_batch": ("single client tasks and get batch", "batches/s"),
    "actor_sync": ("1:1 actor calls sync", "calls/s"),
    "actor_async": ("1:1 actor calls async", "calls/s"),
    "actor_concurrent": ("1:1 actor calls concurrent", "calls/s"),
    "async_actor_sync": ("1:1 async-actor calls sync", "calls/s"),
    "async_actor_async": ("1:1 async-actor calls async", "calls/s"),
    "nn_actor_async": ("n:n actor calls async", "calls/s"),
    "wait_1k": ("single client wait 1k refs", "rounds/s"),
}


class Skip(Exception):
    """The library is missing or broken: the harness reports it as skipped."""


class Library:
    """What a peer module provides: the API module and how to start and stop a local cluster."""

    def __init__(self, api, label, init, shutdown, describe=None, notes=""):
        self.api = api
        self.label = label
        self.init = init          # init(num_cpus=None): a private local cluster, defaults otherwise
        self.shutdown = shutdown
        self.describe = describe  # describe() -> dict about the running cluster, for the report
        self.notes = notes


def note(text):
    print(text, file=sys.stderr, flush=True)


def emit(kind, payload=None):
    print(kind if payload is None else f"{kind} {json.dumps(payload)}", flush=True)


# ---- timing --------------------------------------------------------------------------------------

def timeit(fn, multiplier, cfg):
    """Ray's timeit, shorter: a warm-up of cfg['warmup_s'], then cfg['reps'] windows of at least
    cfg['window_s'] each, calling fn in steps of about a tenth of the warm-up's count."""
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < cfg["warmup_s"]:
        fn()
        count += 1
    step = count // 10 + 1
    rates = []
    for _ in range(cfg["reps"]):
        start = time.perf_counter()
        count = 0
        while time.perf_counter() - start < cfg["window_s"]:
            for _ in range(step):
                fn()
            count += step
        rates.append(multiplier * count / (time.perf_counter() - start))
    mean = sum(rates) / len(rates)
    sd = math.sqrt(sum((r - mean) ** 2 for r in rates) / len(rates))
    return {"value": max(rates), "mean": mean, "sd": sd, "windows": rates}


# ---- the cases, as in ray_perf.py ----------------------------------------------------------------

def build(api, cfg):
    """Every case as key -> setup(), where setup() returns (fn, multiplier, cleanup). Defined inside
    a function so that cloudpickle sends the functions and classes by value to the workers of either
    library (neither needs to import this file)."""
    import numpy as np

    @api.remote
    def small_value():
        return b"ok"

    @api.remote(num_cpus=0)
    class Actor:
        def small_value(self):
            return b"ok"

    @api.remote
    class AsyncActor:
        async def small_value(self):
            return b"ok"

    def kill_all(actors):
        def cleanup():
            for actor in actors:
                api.kill(actor)
        return cleanup

    def check(value, expected, what):
        if value != expected:
            raise AssertionError(f"{what} returned {value!r}, expected {expected!r}")

    def get_small():
        value = api.put(0)
        check(api.get(value), 0, "get of put(0)")
        return (lambda: api.get(value)), 1, None

    def put_small():
        return (lambda: api.put(0)), 1, None

    def big_array():
        arr = np.zeros(cfg["big_elements"], dtype=np.int64)  # ray_perf: 100 Mi int64 = 800 MiB
        return arr, arr.nbytes / 1e9

    def put_gb():
        arr, gigabytes = big_array()
        return (lambda: api.put(arr)), gigabytes, None

    def get_gb():
        # Not in ray_perf.py: the get of what "put gigabytes" puts. Both libraries hand back a
        # read-only numpy array over their shared memory, so this times that path, not a copy.
        arr, gigabytes = big_array()
        ref = api.put(arr)
        value = api.get(ref)
        check(value.shape, arr.shape, "get of the big array")
        del value
        return (lambda: api.get(ref)), gigabytes, None

    def tasks_sync():
        check(api.get(small_value.remote()), b"ok", "small_value")
        return (lambda: api.get(small_value.remote())), 1, None

    def tasks_async():
        return (lambda: api.get([small_value.remote() for _ in range(1000)])), 1000, None

    def tasks_and_get_batch():
        def batch():
            submitted = [small_value.remote() for _ in range(1000)]
            api.get(submitted)
            return 0
        return batch, 1, None

    def actor_sync():
        a = Actor.remote()
        check(api.get(a.small_value.remote()), b"ok", "Actor.small_value")
        return (lambda: api.get(a.small_value.remote())), 1, kill_all([a])

    def actor_async():
        a = Actor.remote()
        api.get(a.small_value.remote())
        return (lambda: api.get([a.small_value.remote() for _ in range(1000)])), 1000, kill_all([a])

    def actor_concurrent():
        a = Actor.options(max_concurrency=16).remote()
        api.get(a.small_value.remote())
        return (lambda: api.get([a.small_value.remote() for _ in range(1000)])), 1000, kill_all([a])

    def async_actor_sync():
        a = AsyncActor.remote()
        check(api.get(a.small_value.remote()), b"ok", "AsyncActor.small_value")
        return (lambda: api.get(a.small_value.remote())), 1, kill_all([a])

    def async_actor_async():
        a = AsyncActor.remote()
        api.get(a.small_value.remote())
        return (lambda: api.get([a.small_value.remote() for _ in range(1000)])), 1000, kill_all([a])

    def nn_actor_async():
        n = cfg["nn_calls"]  # ray_perf: 5000
        m = 4
        n_cpu = max(1, (os.cpu_count() or 2) // 2)
        actors = [Actor.remote() for _ in range(n_cpu)]
        api.get([a.small_value.remote() for a in actors])

        @api.remote
        def work(actors):
            api.get([actors[i % n_cpu].small_value.remote() for i in range(n)])

        return (lambda: api.get([work.remote(actors) for _ in range(m)])), m * n, kill_all(actors)

    def wait_1k():
        def wait_multiple_refs():
            num_objs = 1000
            not_ready = [small_value.remote() for _ in range(num_objs)]
            fetch_local = True
            for _ in range(num_objs):
                _ready, not_ready = api.wait(not_ready, fetch_local=fetch_local)
                fetch_local = False
        return wait_multiple_refs, 1, None

    return {key: fn for key, fn in locals().items() if key in CASES}


# ---- modes ---------------------------------------------------------------------------------------

def run_cases(library, cfg, keys):
    library.init()
    info = library.describe() if library.describe else {}
    emit("READY", {"label": library.label, "notes": library.notes, "cluster": info})
    cases = build(library.api, cfg)
    try:
        for key in keys:
            print(f"START {key}", flush=True)
            result = {"key": key}
            cleanup = None
            try:
                fn, multiplier, cleanup = cases[key]()
                result.update(timeit(fn, multiplier, cfg))
                note(f"  [{library.label}] {CASES[key][0]}: {result['value']:,.1f} {CASES[key][1]}")
            except Exception as exc:  # one failing case must not hide the others
                result["error"] = f"{type(exc).__name__}: {exc}"
                note(f"  [{library.label}] {CASES[key][0]} failed:\n{traceback.format_exc()}")
            finally:
                if cleanup is not None:
                    try:
                        cleanup()
                    except Exception as exc:
                        result["cleanup_error"] = f"{type(exc).__name__}: {exc}"
            emit("CASE", result)
    finally:
        library.shutdown()
    emit("DONE")


def first_result(library):
    api = library.api

    @api.remote
    def first():
        return b"ok"

    start = time.perf_counter()
    library.init()
    value = api.get(first.remote())
    elapsed = time.perf_counter() - start
    if value != b"ok":
        raise AssertionError(f"first task returned {value!r}")
    start = time.perf_counter()
    library.shutdown()
    emit("RESULT", {"seconds": elapsed, "shutdown_seconds": time.perf_counter() - start})


def idle_rss(library, cfg):
    """init(num_cpus=2), one task on each of the two workers, a pause, then the memory of every
    process of the cluster: all processes below this driver, the driver itself excluded."""
    api = library.api

    @api.remote
    def where(pause):
        time.sleep(pause)
        return os.getpid()

    library.init(num_cpus=2)
    try:
        worker_pids = set()
        for _ in range(5):  # two tasks at once, each holding its CPU, land on two workers
            worker_pids |= set(api.get([where.remote(0.5), where.remote(0.5)]))
            if len(worker_pids) >= 2:
                break
        time.sleep(cfg["settle_s"])
        processes = []
        for pid in _procs.descendants(os.getpid()):
            rss, pss = _procs.memory_kb(pid)
            if rss is None:
                continue  # ended while we looked
            processes.append({"pid": pid, "command": _procs.command_of(pid), "rss_kb": rss, "pss_kb": pss,
                              "ran_a_task": pid in worker_pids})
        # Cross-check: processes that inherited the harness's marker but are not below this driver
        # (a daemonized helper would be one). Reported, not added to the sum.
        outside = []
        mark = os.environ.get("CLUSTER_BENCH_MARK")
        if mark:
            known = {p["pid"] for p in processes}
            for pid in _procs.with_marker("CLUSTER_BENCH_MARK", mark):
                if pid not in known:
                    rss, _ = _procs.memory_kb(pid)
                    outside.append({"pid": pid, "command": _procs.command_of(pid), "rss_kb": rss})
        driver_rss, driver_pss = _procs.memory_kb(os.getpid())
        result = {
            "rss_mb": sum(p["rss_kb"] for p in processes) * 1024 / 1e6,
            "pss_mb": sum(p["pss_kb"] or 0 for p in processes) * 1024 / 1e6,
            "processes": processes,
            "task_workers": len(worker_pids),
            "driver_rss_mb": driver_rss * 1024 / 1e6,
            "driver_pss_mb": (driver_pss or 0) * 1024 / 1e6,
            "settle_s": cfg["settle_s"],
            "marked_outside_tree": outside,
        }
    finally:
        library.shutdown()
    emit("RESULT", result)


def main(load, name):
    """load() -> Library, raising Skip when the library is not there."""
    parser = argparse.ArgumentParser(prog=f"{name}_cluster_peer")
    parser.add_argument("mode", choices=("cases", "first-result", "idle-rss"))
    parser.add_argument("--config", default="{}", help="JSON: the harness's counts and windows")
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    cfg = json.loads(args.config)
    try:
        library = load()
    except Skip as exc:
        print(f"SKIP {exc}", flush=True)
        sys.exit(SKIP_EXIT)
    if args.mode == "cases":
        keys = [k for k in args.cases.split(",") if k]
        unknown = [k for k in keys if k not in CASES]
        if unknown:
            parser.error(f"unknown cases {unknown}")
        run_cases(library, cfg, keys)
    elif args.mode == "first-result":
        first_result(library)
    else:
        idle_rss(library, cfg)
