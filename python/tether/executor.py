"""PEP 3148 over the cluster: tether.Executor, and tether.call / tether.map for one-line offloading
(in the spirit of PiCloud's cloud.call and SCOOP's futures.map)."""
from __future__ import annotations

import concurrent.futures
import itertools
import threading

from . import cluster
from ._private import cluster_state


def _run_chunk(function, chunk):
    return [function(*arguments) for arguments in chunk]


class Executor(concurrent.futures.Executor):
    """Runs each submitted call as a cluster task. Futures are concurrent.futures.Futures, so
    wait() and as_completed() work with them; cancel() of a pending one cancels its task.
    With no cluster yet, the first submit starts a local one (tether.init())."""

    def __init__(self, max_retries: int = 3, num_cpus: float = 1, resources: dict | None = None):
        self._options = {"max_retries": max_retries, "num_cpus": num_cpus, "resources": resources}
        self._remote_functions: dict[int, tuple[object, cluster.RemoteFunction]] = {}
        self._pending: set[concurrent.futures.Future] = set()
        self._lock = threading.Lock()
        self._shutdown = False

    def _remote(self, function) -> cluster.RemoteFunction:
        known = self._remote_functions.get(id(function))
        if known is None or known[0] is not function:
            known = (function, cluster.remote(**self._options)(function))
            self._remote_functions[id(function)] = known
        return known[1]

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
        if not cluster_state.is_initialized():
            cluster.init(ignore_reinit_error=True)
        ref = self._remote(fn).remote(*args, **kwargs)
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._pending.add(future)
        _complete_when_ready(ref, future, on_done=lambda: self._forget(future))
        future.add_done_callback(lambda f: f.cancelled() and cluster.cancel(ref))
        return future

    def _forget(self, future) -> None:
        with self._lock:
            self._pending.discard(future)

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        arguments = iter(zip(*iterables))
        chunks = iter(lambda: list(itertools.islice(arguments, chunksize)), [])
        results = super().map(lambda chunk: _run_chunk(fn, chunk), chunks, timeout=timeout)
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            concurrent.futures.wait(pending)


def _complete_when_ready(ref, future: concurrent.futures.Future, on_done=None) -> None:
    """Completes `future` with the value of `ref` (or its error) without a thread per future."""

    def settle(_=None):
        try:
            value = cluster.get(ref)
        except BaseException as exc:  # the future carries whatever get raises
            if not future.cancelled():
                _set(future.set_exception, exc)
        else:
            if not future.cancelled():
                _set(future.set_result, value)
        if on_done:
            on_done()

    answer = cluster_state.client().answer_future(ref.binary())
    if answer is not None:
        answer.add_done_callback(settle)  # runs when the node's answer arrives
    else:
        threading.Thread(target=settle, name="tether-executor-get", daemon=True).start()


def _set(setter, value) -> None:
    try:
        setter(value)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled meanwhile


def call(function, *args, **kwargs):
    """Runs function(*args, **kwargs) as a cluster task and returns its result."""
    if not cluster_state.is_initialized():
        cluster.init(ignore_reinit_error=True)
    return cluster.get(cluster.remote(function).remote(*args, **kwargs))


def map(function, *iterables):  # noqa: A001 - the name SCOOP and PiCloud use
    """[function(*args) for args in zip(*iterables)], each call a cluster task, results in order."""
    if not cluster_state.is_initialized():
        cluster.init(ignore_reinit_error=True)
    remote_function = cluster.remote(function)
    return cluster.get([remote_function.remote(*args) for args in zip(*iterables)])
