"""A worker process of a node daemon: runs the tasks and the actor the daemon sends it.

Started by tetherd as `python -m tether._private.worker` with TETHER_NODE_URI, TETHER_SECRET and
TETHER_WORKER_ID; it says hello with the object the daemon calls ("run"), and exits when its
connection to the daemon closes."""
from __future__ import annotations

import inspect
import os
import sys
import threading
import time
import traceback

from .. import errors
from . import cluster_state
from .serialization import deserialize, serialize


class _Answer(dict):
    """A task's answer, which also keeps the ObjectRefs inside its results alive. The engine drops
    it only after sending it, so the release of those refs follows the answer that pins them on
    the same connection, and cannot reach the node first."""

    __slots__ = ("refs",)

    def __init__(self, values, contained, refs):
        super().__init__(values=values, contained=contained)
        self.refs = refs


class Runner:
    """The object the daemon calls: run(task) -> {"values": [...], "contained": [...]}."""

    def __init__(self):
        self._functions: dict[bytes, object] = {}
        self._actor = None
        self.ready = threading.Event()  # set once hello returned: the client can make ids

    def run(self, task: dict):
        self.ready.wait()
        kind = task["kind"]
        returns = task["returns"]
        try:
            target = self._target(task)
            args, kwargs = self._arguments(task)
        except BaseException as exc:  # reported as the task's error, like one raised by the task
            return self._failed(exc, task, returns)
        if kind == "actor_create":
            try:
                self._actor = target(*args, **kwargs)
            except BaseException as exc:
                return self._failed(exc, task, [b""])
            return {"values": [], "contained": []}
        if inspect.iscoroutinefunction(target):
            return self._run_coroutine(target, args, kwargs, task, returns)
        try:
            result = target(*args, **kwargs)
        except BaseException as exc:
            return self._failed(exc, task, returns)
        return self._returned(result, returns, task)

    async def _run_coroutine(self, target, args, kwargs, task, returns):
        # Runs on the worker's event loop, so an async actor serves many calls at once.
        try:
            result = await target(*args, **kwargs)
        except BaseException as exc:
            return self._failed(exc, task, returns)
        return self._returned(result, returns, task)

    def _target(self, task):
        if task["kind"] == "actor_method":
            if self._actor is None:
                raise RuntimeError("this worker holds no actor")
            return getattr(self._actor, task["method"])
        function_id = task["function"]
        function = self._functions.get(function_id)
        if function is None:
            blob = cluster_state.client().call("get_function", function_id)
            function = deserialize(blob)
            self._functions[function_id] = function
        return function

    @staticmethod
    def _arguments(task):
        client = cluster_state.client()
        values = [client.value_of(entry) for entry in task["deps"]]  # a failed dependency fails the task
        cluster_state.set_dependencies(values)
        try:
            return deserialize(task["args"])
        finally:
            cluster_state.set_dependencies(None)

    def _returned(self, result, returns, task):
        if len(returns) == 1:
            results = [result]
        else:
            results = list(result) if isinstance(result, (tuple, list)) else None
            if results is None or len(results) != len(returns):
                error = ValueError(f"{task['name']} was declared with num_returns={len(returns)} "
                                   f"but returned {type(result).__name__}")
                return self._failed(error, task, returns)
        client = cluster_state.client()
        values, contained, refs = [], [], []
        for object_id, value in zip(returns, results):
            try:
                entry, serialized = client.store_value(object_id, value)
            except BaseException as exc:  # unpicklable result, or the store is full
                return self._failed(exc, task, returns)
            values.append(entry)
            contained += serialized.contained
            refs += serialized.refs
        return _Answer(values, contained, refs)

    @staticmethod
    def _failed(exc, task, returns):
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        name = task["name"]
        if isinstance(exc, errors.TaskError) and exc.cause is not None:
            # Another task's error passed on (a failed dependency, or a get inside this task): it
            # travels as the original exception, so the caller's error is still an instance of its
            # type (a TaskError of a TaskError cannot be: their MRO conflicts).
            text = f"{exc.remote_traceback}\n(passed on by {name}:)\n{text}"
            exc, name = exc.cause, exc.task_name
        try:
            blob = serialize((exc, text, name)).to_bytes()
        except Exception:  # an exception that cannot be pickled travels as its text
            blob = serialize((RuntimeError(f"{type(exc).__name__}: {exc}"), text, name)).to_bytes()
        entry = {"error": blob, "text": f"{type(exc).__name__}: {exc}"}
        return {"values": [entry] * max(len(returns), 1), "contained": []}


def main() -> None:
    uri = os.environ["TETHER_NODE_URI"]
    secret = os.environ["TETHER_SECRET"].encode()
    worker_id = int(os.environ["TETHER_WORKER_ID"])
    sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    client = cluster_state.connect_worker(uri, secret, worker_id, Runner())
    while client.channel.is_open:
        time.sleep(0.2)
    os._exit(0)  # the daemon is gone or let us go: nothing here is worth a slow interpreter exit


if __name__ == "__main__":
    main()
