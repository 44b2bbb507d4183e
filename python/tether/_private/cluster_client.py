"""One process's connection to its node daemon (a driver's or a worker's): ids, references,
submitting tasks, and turning the node's answers back into values. The scheduling is the daemon's."""
from __future__ import annotations

import hashlib
import itertools
import mmap
import os
import struct
import sys
import threading
import time
import weakref

from .. import errors
from ..future import FINISHED, Future
from .delivery import Numbered
from ..security import client_tls
from .runtime import client_runtime
from .serialization import deserialize, serialize

INLINE_LIMIT = 100 * 1024  # values below this travel inside messages; larger ones go to shared memory
_RELEASE_BATCH = 256
_RELEASE_DELAY = 0.05  # seconds
_MSGPACK = 1


def _failure(kind: str, message: str) -> BaseException:
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.TetherError)):
        cls = errors.TetherError
    return cls(message)


def _map_shared(name: str, size: int):
    """A read-only mapping of an object in the node's shared memory (FileNotFoundError if the
    store has spilled it meanwhile)."""
    fd = os.open("/dev/shm/" + name.lstrip("/"), os.O_RDONLY)
    try:
        return mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


def _flush_periodically(client_ref) -> None:
    # Holds the client only while flushing: a client dropped or closed ends this thread.
    while True:
        time.sleep(_RELEASE_DELAY)
        client = client_ref()
        if client is None or client.closed:
            return
        if client._releases:
            client._flush_releases()
        del client


class _Blocking:
    def __init__(self, client):
        self._client = client

    def __enter__(self):
        self._client.channel.call_oneway("node", "blocked", (), None, _MSGPACK)

    def __exit__(self, *exc):
        if not self._client.closed:
            self._client.channel.call_oneway("node", "unblocked", (), None, _MSGPACK)


class _NotBlocking:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


_NOT_BLOCKING = _NotBlocking()


class _OutputSink:
    """What a driver exports for the node to send workers' output lines to (node.hello output=),
    in numbered batches, printed in their order."""

    def __init__(self):
        self._numbered = Numbered(self._print)

    def lines(self, number: int, lines: list) -> None:
        self._numbered.arrived(number, lines)

    @staticmethod
    def _print(lines) -> None:
        for stream, line in lines:
            target = sys.stderr if stream == 1 else sys.stdout
            try:
                if target is not None:
                    target.write(line + "\n")
                    target.flush()
            except (ValueError, OSError):
                pass  # the driver's output is closed: the line is dropped


class ClusterClient:
    """The calls a program makes to its node, with the local bookkeeping of ObjectRefs."""

    def __init__(self, uri: str, secret: bytes, tls=None):
        self.channel = client_runtime().connect(uri, secret=secret, timeout=10.0, tls=client_tls(tls))
        self.uri = uri
        self._lock = threading.Lock()
        self._counts: dict[bytes, int] = {}       # ObjectRefs alive in this process, per id
        self._answers: dict[bytes, tuple] = {}  # id -> (future of the call producing it, index, task id)
        self._functions: set[bytes] = set()
        self.closed = False
        self.is_worker = False
        self._releases: list[bytes] = []  # ids whose last local ObjectRef died, not yet told
        self._flusher = None

    def hello(self, kind: str = "driver", worker_id: int = 0, runner=None, output: bool = False) -> None:
        """Introduces this process to the node. A worker's node may send it tasks at once, so the
        process must be ready to run them before calling this. A driver with `output` gets the
        output lines of every worker of the cluster printed on its own stdout and stderr."""
        args = ("driver", os.getpid()) if kind == "driver" else \
            ("worker", os.getpid(), worker_id, self.channel.export(runner, {"run"}))
        self.is_worker = kind == "worker"
        kwargs = {"output": self.channel.export(_OutputSink(), {"lines"})} if output else None
        info = self.channel.call("node", "hello", args, kwargs, 60.0, _MSGPACK)
        self.node_id = info["node_id"]
        self.client_number = info["client"]
        self.resources = info["resources"]
        self._prefix = struct.pack(">II", self.node_id, self.client_number)
        self._counter = itertools.count(1)

    # ---- plumbing ----

    def call(self, method: str, *args, timeout: float | None = 60.0):
        return self.channel.call("node", method, args, self._take_releases(), timeout, _MSGPACK)

    def call_future(self, method: str, *args):
        return self.channel.call_future("node", method, args, self._take_releases(), None, _MSGPACK)

    def _take_releases(self):
        """Gathered releases ride on the next request (as release=[ids]), not in their own message."""
        if not self._releases:
            return None
        with self._lock:
            ids, self._releases = self._releases, []
        return {"release": ids} if ids else None

    def new_id(self) -> bytes:
        return self._prefix + struct.pack(">Q", next(self._counter))

    def close(self):
        if self._releases:
            self._flush_releases()
        self.closed = True
        self.channel.close()

    # ---- references ----

    def add_ref(self, object_id: bytes, known_to_node: bool) -> None:
        """An ObjectRef for `object_id` now exists here; the node is told of the first one unless it
        already counts this process as a holder (the id came from our own submit or put)."""
        with self._lock:
            count = self._counts.get(object_id, 0)
            self._counts[object_id] = count + 1
        if count == 0 and not known_to_node and not self.closed:
            self.channel.call_oneway("node", "retain", ([object_id],), None, _MSGPACK)

    def drop_ref(self, object_id: bytes) -> None:
        with self._lock:
            count = self._counts.get(object_id, 0) - 1
            if count > 0:
                self._counts[object_id] = count
                return
            self._counts.pop(object_id, None)
            self._answers.pop(object_id, None)
            if self.closed or sys.is_finalizing():
                # The node let go of everything this process held when it disconnected, or will when
                # the process ends. No thread is started then: at interpreter exit, where the
                # ObjectRefs in module globals are dropped, Thread.start() would wait for ever.
                return
            # Releases go out together: with this process's next request, when many gathered,
            # or within _RELEASE_DELAY. Late is safe, early is not.
            self._releases.append(object_id)
            flush_now = len(self._releases) >= _RELEASE_BATCH
            start_flusher = self._flusher is None
            if start_flusher:
                self._flusher = threading.Thread(target=_flush_periodically, args=(weakref.ref(self),),
                                                 name="tether-releases", daemon=True)
        if start_flusher:
            self._flusher.start()
        if flush_now:
            self._flush_releases()

    def _flush_releases(self) -> None:
        with self._lock:
            ids, self._releases = self._releases, []
        if ids and not self.closed:
            try:
                self.channel.call_oneway("node", "release", (ids,), None, _MSGPACK)
            except errors.TetherError:
                pass  # the node is gone, and with it the objects


    # ---- functions, tasks and objects ----

    def register_function(self, blob: bytes) -> bytes:
        function_id = hashlib.sha1(blob).digest()
        if function_id not in self._functions:
            self.channel.call_oneway("node", "register_function", (function_id, blob), None, _MSGPACK)
            self._functions.add(function_id)
        return function_id

    def submit(self, method: str, spec: dict, returns: list[bytes]):
        """Sends a task (submit or actor_call); its answer completes one future shared by its returns."""
        future = self.call_future(method, spec)
        with self._lock:
            for index, object_id in enumerate(returns):
                self._answers[object_id] = (future, index, spec["id"])
        return future

    def task_of(self, object_id: bytes):
        """The id of the task this process submitted that returns `object_id` (for cancel)."""
        answer = self._answers.get(object_id)
        return answer[2] if answer else None

    def answer_future(self, object_id: bytes):
        """The future of the call that produces `object_id`, if this process made it."""
        answer = self._answers.get(object_id)
        return answer[0] if answer else None

    def put(self, value) -> bytes:
        serialized = serialize(value)
        object_id = self.new_id()
        contained = serialized.contained
        if serialized.size < INLINE_LIMIT:
            data = serialized.to_bytes()
            self.call("put", object_id, data, contained)
            entry = {"inline": data}
        else:
            name = self.call("create", object_id, serialized.size)
            self._write_shared(name, serialized)
            self.call("seal", object_id, contained)
            entry = {"shm": [name, serialized.size, False]}  # if spilled meanwhile, get asks the node
        # This process's gets of its own put need no round trip (as Ray's in-process store).
        known = Future()
        known._result, known._state = [entry], FINISHED
        with self._lock:
            self._answers[object_id] = (known, 0, None)
        return object_id

    def store_value(self, object_id: bytes, value) -> tuple[dict, object]:
        """A task's return as the worker reports it (inline, or written into shared memory), and its
        serialized form, whose `refs` the worker keeps until the node has the answer."""
        serialized = serialize(value)
        if serialized.size < INLINE_LIMIT:
            return {"inline": serialized.to_bytes()}, serialized
        name = self.call("create", object_id, serialized.size, False)
        self._write_shared(name, serialized)
        self.call("seal", object_id, serialized.contained, False)
        return {"shm": [name, serialized.size]}, serialized

    @staticmethod
    def _write_shared(name: str, serialized) -> None:
        fd = os.open("/dev/shm/" + name.lstrip("/"), os.O_RDWR)
        # The segment's pages are all about to be written: faulting them in at once (MAP_POPULATE)
        # is about a fifth cheaper than one page fault each.
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        try:
            with mmap.mmap(fd, serialized.size, flags=flags) as mapping:
                view = memoryview(mapping)
                serialized.write_into(view)
                view.release()
        finally:
            os.close(fd)

    def get_entries(self, ids: list[bytes], timeout: float | None) -> list[dict]:
        """The node's answer for each id: our own tasks' answers where we have them, else node.get."""
        with self.blocking():
            return self._get_entries(ids, timeout)

    def blocking(self):
        """Around a wait in a worker's task: the node lends the task's resources meanwhile."""
        return _Blocking(self) if self.is_worker else _NOT_BLOCKING

    def _get_entries(self, ids: list[bytes], timeout: float | None) -> list[dict]:
        deadline = None if timeout is None else time.monotonic() + timeout
        entries: list = [None] * len(ids)
        missing = []
        for i, object_id in enumerate(ids):
            answer = self._answers.get(object_id)
            if answer is None:
                missing.append(i)
                continue
            future, index, _task = answer
            try:
                values = future.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise errors.GetTimeoutError(f"get timed out after {timeout} s") from None
            entries[i] = values[index]
        if missing:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            answer = self.call("get", [ids[i] for i in missing], remaining,
                               timeout=None if remaining is None else remaining + 30)
            if isinstance(answer, dict) and answer.get("timeout"):
                raise errors.GetTimeoutError(f"get timed out after {timeout} s")
            for i, entry in zip(missing, answer):
                entries[i] = entry
        return entries

    def value_of(self, entry: dict, object_id: bytes | None = None):
        """Turns one answer into the value, or raises what the task raised or the node reported.
        A store object is mapped read-only; its arrays are views of that mapping, not copies."""
        if "inline" in entry:
            return deserialize(entry["inline"])
        if "shm" in entry:
            return deserialize(self._mapping(entry["shm"], object_id))
        if "remote" in entry and object_id is not None:  # in another node's store: node.get fetches it
            return self.value_of(self.call("get", [object_id], None)[0], object_id)
        if "error" in entry:
            cause, traceback_text, task_name = deserialize(entry["error"])
            raise errors.as_instance_of_cause(cause, traceback_text, task_name)
        kind, message = entry["failure"]
        raise _failure(kind, message)

    def _mapping(self, shm, object_id):
        name, size, pinned = shm
        try:
            mapping = _map_shared(name, size)
        except FileNotFoundError:
            if pinned or object_id is None:
                raise errors.ObjectLostError(f"object {name} vanished from the store") from None
            # Spilled since the answer came: node.get brings it back and keeps it while mapped.
            entry = self.call("get", [object_id], None)[0]
            return self.value_of_mapping(entry, object_id)
        if pinned:
            weakref.finalize(mapping, self._unmapped, object_id)
        return memoryview(mapping)

    def value_of_mapping(self, entry, object_id):
        if "shm" not in entry:
            raise errors.ObjectLostError(f"object {object_id.hex()} could not be read back")
        return self._mapping(entry["shm"], object_id)

    def _unmapped(self, object_id) -> None:
        if object_id is not None and not self.closed:
            try:
                self.channel.call_oneway("node", "unmapped", ([object_id],), None, _MSGPACK)
            except errors.TetherError:
                pass  # the node is gone, and with it the pin
