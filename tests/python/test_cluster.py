"""Tests of the cluster API (tether.init, @tether.remote, get/put/wait/cancel, actors) against a real
node daemon and its worker processes.

Most tests share one cluster of 2 CPUs per module (started lazily by the `cluster` fixture); tests
that need special options start a private one with `private_cluster`, which first ends the shared
one. A task that must stay running waits for a "gate" file that the test creates to release it, so
every task a test starts ends by itself (at the latest when the `gates` fixture opens all gates)."""

import asyncio
import glob
import os
import re
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import tether
from polling import eventually
from tether._private import cluster_state

# Every get/wait in this module waits at most this long, so a hang becomes a failure.
TIMEOUT = 30


# ---- helpers and fixtures ----


def node_status() -> dict:
    return cluster_state.client().call("status")




def process_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def shm_path(ref) -> str:
    """The shared-memory file of a large object in the current cluster's store."""
    return f"/dev/shm/tether-{cluster_state.info()['session']}-{ref.hex()}"


def assert_cluster_works():
    """The cluster still runs new tasks."""
    assert tether.get([square.remote(i) for i in range(4)], timeout=TIMEOUT) == [0, 1, 4, 9]


@pytest.fixture(scope="module")
def _shared_cluster():
    yield
    if tether.is_initialized():
        tether.shutdown()


@pytest.fixture
def cluster(_shared_cluster):
    """The module's shared cluster of 2 CPUs, started on first use (again if a private one ended it)."""
    if not tether.is_initialized():
        tether.init(num_cpus=2)
    yield


@pytest.fixture
def private_cluster():
    """Ends the shared cluster; `start(**options)` starts one with special options, shut down after."""
    if tether.is_initialized():
        tether.shutdown()

    def start(**options):
        return tether.init(**options)

    yield start
    tether.shutdown()


class Gates:
    """Files that blocked tasks wait for (`new`); `release` creates one, which lets its tasks return."""

    def __init__(self, directory: Path):
        self._directory = directory
        self._paths: list[Path] = []
        self._markers = 0

    def new(self, name: str = "") -> str:
        path = self._directory / f"gate-{len(self._paths)}-{name}"
        self._paths.append(path)
        return str(path)

    def started_marker(self, name: str = "") -> str:
        """A file a task writes its pid to when it starts (see wait_for_marker)."""
        self._markers += 1
        return str(self._directory / f"started-{self._markers}-{name}")

    @staticmethod
    def release(path: str) -> None:
        Path(path).touch()

    def release_all(self) -> None:
        for path in self._paths:
            path.touch()


@pytest.fixture
def gates(tmp_path):
    """Gates for blocked tasks; all are released when the test ends, so no task outlives it."""
    made = Gates(tmp_path)
    yield made
    made.release_all()


def wait_for_marker(path: str) -> int:
    """Waits until a task wrote its pid into `path` (it started running); returns the pid."""
    assert eventually(lambda: os.path.exists(path) and Path(path).read_text()), f"the task never started ({path})"
    return int(Path(path).read_text())


# ---- remote functions and actor classes ----


@tether.remote
def square(x):
    return x * x


@tether.remote
def add(a, b):
    return a + b


@tether.remote
def echo_arguments(*args, **kwargs):
    return args, kwargs


@tether.remote(num_returns=3)
def three_values(x):
    return x, x + 1, x + 2


@tether.remote
def type_name(value):
    return type(value).__name__


@tether.remote
def total(values):
    return float(np.sum(values))


@tether.remote
def big_array(n):
    return np.arange(n, dtype=np.float64)


@tether.remote
def look_inside(items):
    """Reports which items arrived as ObjectRefs, then gets them inside the task."""
    kinds = [isinstance(item, tether.ObjectRef) for item in items]
    return kinds, tether.get(list(items), timeout=TIMEOUT)


@tether.remote
def sum_of_squares(n):
    """A task that submits tasks and gets their results."""
    return sum(tether.get([square.remote(i) for i in range(n)], timeout=TIMEOUT))


@tether.remote
def return_refs(x):
    """Returns ObjectRefs (inside a list) to a value it put and to a task it submitted and waited for."""
    task_ref = square.remote(x)
    tether.get(task_ref, timeout=TIMEOUT)
    return [tether.put(f"put {x}"), task_ref]


@tether.remote
def put_large():
    """Returns a ref (inside a list) to a large value it put."""
    return [tether.put(np.ones(1_000_000))]


@tether.remote
def block(gate, started=None, value=None, limit=60.0):
    """Writes its pid to `started`, then waits for the file `gate` (at most `limit` seconds)."""
    if started:
        Path(started).write_text(str(os.getpid()))
    deadline = time.monotonic() + limit
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid() if value is None else value


@tether.remote
def submit_blocked(gate):
    """Returns a reference to a blocked task it submitted (the driver gets it through the node)."""
    return [block.remote(gate, value="released")]


@tether.remote
def fail_with(message):
    raise ValueError(message)


@tether.remote
def return_lock():
    return threading.Lock()


@tether.remote(max_retries=0)
def crash():
    os._exit(1)


@tether.remote
def crash_first_time(marker):
    """Crashes its worker unless `marker` exists (it creates it first): succeeds on a retry."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return "second attempt"


@tether.remote
def crash_always(attempts):
    with open(attempts, "a") as f:
        f.write(f"{os.getpid()}\n")
    os._exit(1)


@tether.remote
def shout(text):
    print(text)
    return os.getpid()


@tether.remote
def bump(counter, times):
    """Calls the actor whose handle it was given."""
    return [tether.get(counter.incr.remote(), timeout=TIMEOUT) for _ in range(times)]


@tether.remote
class Counter:
    def __init__(self, start=0):
        self.value = start

    def incr(self, by=1):
        self.value += by
        return self.value

    def read(self):
        return self.value

    def pid(self):
        return os.getpid()

    def die(self):
        os._exit(1)

    def wait_for(self, gate, started):
        Path(started).write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        return "released"

    def say(self, text):
        print(text)
        return os.getpid()


@tether.remote
class Log:
    def __init__(self):
        self.items = []

    def append(self, item):
        self.items.append(item)
        return len(self.items)

    def snapshot(self):
        return list(self.items)


@tether.remote
class Broken:
    def __init__(self):
        raise RuntimeError("this constructor fails")

    def ping(self):
        return "pong"


@tether.remote
class Rendezvous:
    """Two calls of `meet` each wait for the other: they finish only if they run at the same time."""

    def __init__(self):
        self._async_events = {}
        self._thread_events = {}
        self._lock = threading.Lock()

    def _async_event(self, name):
        return self._async_events.setdefault(name, asyncio.Event())

    def _thread_event(self, name):
        with self._lock:
            return self._thread_events.setdefault(name, threading.Event())

    async def meet(self, mine, theirs):
        self._async_event(mine).set()
        await asyncio.wait_for(self._async_event(theirs).wait(), 20)
        return mine

    def meet_in_thread(self, mine, theirs):
        self._thread_event(mine).set()
        if not self._thread_event(theirs).wait(20):
            raise TimeoutError(f"{theirs} never came")
        return mine


# ---- 1. tasks ----


def test_task_returns_its_result(cluster):
    """A task's return value comes back through get."""
    ref = square.remote(7)
    assert isinstance(ref, tether.ObjectRef)
    assert tether.get(ref, timeout=TIMEOUT) == 49


def test_many_tasks(cluster):
    """Hundreds of tasks all complete with their own results."""
    refs = [square.remote(i) for i in range(300)]
    assert tether.get(refs, timeout=TIMEOUT) == [i * i for i in range(300)]


def test_num_returns_gives_one_ref_per_value(cluster):
    """num_returns=3 gives three ObjectRefs, one per returned value; .options sets it per call."""
    refs = three_values.remote(10)
    assert isinstance(refs, list) and len(refs) == 3
    assert tether.get(refs, timeout=TIMEOUT) == [10, 11, 12]
    a, b = add.options(num_returns=2).remote(("left",), ("right",))
    assert tether.get([a, b], timeout=TIMEOUT) == ["left", "right"]


def test_num_returns_mismatch_is_an_error(cluster):
    """A task returning the wrong number of values for num_returns fails with ValueError."""
    refs = three_values.options(num_returns=2).remote(1)
    with pytest.raises(ValueError, match="num_returns=2"):
        tether.get(refs[0], timeout=TIMEOUT)


def test_kwargs_and_objectref_kwargs(cluster):
    """Keyword arguments reach the task; an ObjectRef passed as a keyword is resolved."""
    ref = tether.put("resolved")
    args, kwargs = tether.get(echo_arguments.remote(1, "two", three=3, four=ref), timeout=TIMEOUT)
    assert args == (1, "two")
    assert kwargs == {"three": 3, "four": "resolved"}


def test_objectref_arguments_are_resolved_before_the_task_runs(cluster):
    """Top-level ObjectRef arguments arrive as their values: chains and diamonds of tasks compute."""
    assert tether.get(type_name.remote(square.remote(3)), timeout=TIMEOUT) == "int"
    chain = square.remote(2)
    for _ in range(4):
        chain = add.remote(chain, 1)
    assert tether.get(chain, timeout=TIMEOUT) == 8
    top = square.remote(3)
    left, right = add.remote(top, 1), add.remote(top, 2)
    assert tether.get(add.remote(left, right), timeout=TIMEOUT) == 21


def test_nested_objectrefs_are_not_resolved(cluster):
    """ObjectRefs inside a list arrive as ObjectRefs, and the task can get them itself."""
    items = [tether.put("put value"), square.remote(5)]
    kinds, values = tether.get(look_inside.remote(items), timeout=TIMEOUT)
    assert kinds == [True, True]
    assert values == ["put value", 25]


def test_task_returning_objectref(cluster):
    """ObjectRefs a task returns inside its value (to a put, to a finished task) stay valid for the driver."""
    for i in range(100):
        put_ref, task_ref = tether.get(return_refs.remote(i), timeout=TIMEOUT)
        assert isinstance(put_ref, tether.ObjectRef) and isinstance(task_ref, tether.ObjectRef)
        assert tether.get([put_ref, task_ref], timeout=TIMEOUT) == [f"put {i}", i * i]


def test_task_submits_tasks_and_gets_their_results(cluster):
    """A task can submit tasks and get their results."""
    assert tether.get(sum_of_squares.remote(10), timeout=TIMEOUT) == sum(i * i for i in range(10))


def test_tasks_waiting_for_their_subtasks_do_not_deadlock(cluster):
    """More tasks than CPUs, each getting the results of tasks it submitted, all complete."""
    refs = [sum_of_squares.remote(n) for n in range(2, 8)]
    assert tether.get(refs, timeout=TIMEOUT) == [sum(i * i for i in range(n)) for n in range(2, 8)]


def test_object_returned_inside_a_result_is_freed_when_dropped(cluster):
    """An object a task put and returned a ref to is freed once the driver drops that ref."""
    [ref] = tether.get(put_large.remote(), timeout=TIMEOUT)
    assert tether.get(ref, timeout=TIMEOUT).shape == (1_000_000,)
    segment = shm_path(ref)
    assert os.path.exists(segment)
    del ref
    assert eventually(lambda: not os.path.exists(segment), timeout=5), f"{segment} is still in the store"


def test_closure_capturing_local_variables(cluster):
    """A remote function defined as a closure sees the variables it captured."""
    offset = 41
    table = {"a": [1, 2, 3]}

    @tether.remote
    def uses_closure(key):
        return offset + len(table[key])

    assert tether.get(uses_closure.remote("a"), timeout=TIMEOUT) == 44


def test_remote_function_is_not_callable_directly(cluster):
    """Calling a remote function like a plain one is a TypeError naming .remote."""
    with pytest.raises(TypeError, match=r"\.remote"):
        square(3)


# ---- 2. get, wait ----


def test_get_with_a_list_keeps_the_order(cluster):
    """get of a list returns the values in the list's order, puts and tasks mixed."""
    refs = [square.remote(3), tether.put("x"), add.remote(1, 2), tether.put(None)]
    assert tether.get(refs, timeout=TIMEOUT) == [9, "x", 3, None]
    assert tether.get([], timeout=TIMEOUT) == []


def test_get_rejects_what_is_not_an_objectref(cluster):
    """get of something other than ObjectRefs is a TypeError."""
    with pytest.raises(TypeError):
        tether.get(3)
    with pytest.raises(TypeError):
        tether.get([square.remote(1), 3])


def test_get_timeout_on_a_blocked_task(cluster, gates):
    """get with a timeout raises GetTimeoutError (a TimeoutError) while the task runs; later it gets the value."""
    gate = gates.new()
    ref = block.remote(gate, value="done")
    with pytest.raises(tether.GetTimeoutError) as excinfo:
        tether.get(ref, timeout=0.2)
    assert isinstance(excinfo.value, TimeoutError)
    with pytest.raises(TimeoutError):
        tether.get([square.remote(2), ref], timeout=0)
    gates.release(gate)
    assert tether.get(ref, timeout=TIMEOUT) == "done"


def test_get_timeout_on_a_ref_received_from_a_task(cluster, gates):
    """get with a timeout also works for an ObjectRef another process submitted (asked of the node)."""
    gate = gates.new()
    [inner] = tether.get(submit_blocked.remote(gate), timeout=TIMEOUT)
    with pytest.raises(tether.GetTimeoutError):
        tether.get(inner, timeout=0.2)
    gates.release(gate)
    assert tether.get(inner, timeout=TIMEOUT) == "released"


def test_wait_splits_ready_and_not_ready(cluster, gates):
    """wait returns num_returns ready refs and the rest; with a timeout, what is ready by then."""
    gate = gates.new()
    slow = block.remote(gate, value="slow")
    fast = [square.remote(2), square.remote(3)]
    refs = [slow] + fast
    ready, not_ready = tether.wait(refs, num_returns=2, timeout=TIMEOUT)
    assert ready == fast and not_ready == [slow]
    ready, not_ready = tether.wait(refs, num_returns=3, timeout=0.2)
    assert ready == fast and not_ready == [slow]
    ready, not_ready = tether.wait(refs, num_returns=1, timeout=TIMEOUT)
    assert len(ready) == 1 and ready[0] in fast
    assert len(not_ready) == 2 and slow in not_ready
    gates.release(gate)
    ready, not_ready = tether.wait(refs, num_returns=3, timeout=TIMEOUT)
    assert ready == refs and not_ready == []
    assert tether.get(slow, timeout=TIMEOUT) == "slow"


def test_wait_rejects_bad_arguments(cluster):
    """wait refuses num_returns beyond the list and the same ref twice."""
    ref = square.remote(1)
    with pytest.raises(ValueError):
        tether.wait([ref], num_returns=2)
    with pytest.raises(ValueError):
        tether.wait([ref, ref], num_returns=1)


# ---- 3. objects ----


def test_put_get_small_values(cluster):
    """Small values of many types come back equal from put/get."""
    values = [None, 0, -3.5, "text", b"\x00bytes", [1, [2, 3]], {"a": (1, 2)}, {1, 2}, np.arange(5)]
    refs = [tether.put(v) for v in values]
    got = tether.get(refs, timeout=TIMEOUT)
    for expected, actual in zip(values[:-1], got[:-1]):
        assert actual == expected
    assert np.array_equal(got[-1], values[-1])


def test_put_get_large_array_is_equal_and_read_only(cluster):
    """A numpy array of several MB comes back equal and read-only (mapped from shared memory)."""
    array = np.random.default_rng(0).random(1_000_000)  # 8 MB
    ref = tether.put(array)
    back = tether.get(ref, timeout=TIMEOUT)
    assert np.array_equal(back, array)
    assert back.flags.writeable is False
    with pytest.raises(ValueError):
        back[0] = 1.0


def test_large_task_result_is_equal_and_read_only(cluster):
    """A task returning a large array: the driver gets it equal and read-only."""
    back = tether.get(big_array.remote(2_000_000), timeout=TIMEOUT)
    assert np.array_equal(back, np.arange(2_000_000, dtype=np.float64))
    assert back.flags.writeable is False


def test_put_value_passed_to_tasks(cluster):
    """A put value passed to tasks (small and large, at top level) arrives as the value."""
    large = np.ones(1_000_000)
    large_ref = tether.put(large)
    assert tether.get([total.remote(large_ref), total.remote(large_ref)], timeout=TIMEOUT) == [1e6, 1e6]
    assert tether.get(total.remote(tether.put([1, 2, 3])), timeout=TIMEOUT) == 6.0
    assert tether.get(total.remote(large), timeout=TIMEOUT) == 1e6  # a large argument by value


def test_put_of_an_objectref_is_refused(cluster):
    """put of an ObjectRef is a TypeError."""
    with pytest.raises(TypeError):
        tether.put(tether.put(1))


def test_dropped_refs_free_their_objects(cluster):
    """Objects, small and in shared memory, are freed on the node once the driver drops its last ObjectRef."""
    before = node_status()["objects"]["count"]  # what earlier tests left can only go
    refs = [tether.put(i) for i in range(50)] + [square.remote(i) for i in range(50)]
    large = [tether.put(np.full(100_000, i)) for i in range(3)] + [big_array.remote(100_000)]
    tether.get(refs + large, timeout=TIMEOUT)
    assert node_status()["objects"]["count"] >= 104
    segments = [shm_path(ref) for ref in large]
    assert all(os.path.exists(segment) for segment in segments)
    copy = large[0]
    del refs, large
    assert os.path.exists(segments[0])  # another ObjectRef to it remains
    assert eventually(lambda: not any(os.path.exists(s) for s in segments[1:])), segments
    del copy
    assert eventually(lambda: not os.path.exists(segments[0])), segments[0]
    assert eventually(lambda: node_status()["objects"]["count"] <= before), node_status()["objects"]


# ---- 4. errors ----


def test_task_exception_is_task_error_and_original_type(cluster):
    """A task raising ValueError: get raises a TaskError that is also a ValueError, with the remote traceback."""
    with pytest.raises(ValueError) as excinfo:
        tether.get(fail_with.remote("bad input"), timeout=TIMEOUT)
    error = excinfo.value
    assert isinstance(error, tether.TaskError)
    assert error.args == ("bad input",)
    assert "fail_with" in error.remote_traceback
    assert "bad input" in str(error)
    assert_cluster_works()


def test_failed_dependency_error_keeps_its_type(cluster):
    """A task whose argument's task raised gets that error: still a TaskError and a ValueError."""
    with pytest.raises(ValueError) as excinfo:
        tether.get(add.remote(fail_with.remote("upstream"), 1), timeout=TIMEOUT)
    assert isinstance(excinfo.value, tether.TaskError)
    assert "upstream" in str(excinfo.value)
    assert "fail_with" in excinfo.value.remote_traceback


def test_error_from_get_inside_a_task_keeps_its_type(cluster):
    """A task whose inner get raises passes the inner task's error on, still a ValueError."""
    with pytest.raises(ValueError) as excinfo:
        tether.get(look_inside.remote([fail_with.remote("inner")]), timeout=TIMEOUT)
    assert isinstance(excinfo.value, tether.TaskError)
    assert "inner" in str(excinfo.value)


def test_unpicklable_argument_fails_at_submit(cluster):
    """An argument that cannot be pickled raises TypeError at .remote() in the caller."""
    with pytest.raises(TypeError, match="pickle"):
        square.remote(threading.Lock())
    assert_cluster_works()


def test_unpicklable_result_fails_at_get(cluster):
    """A result that cannot be pickled makes get raise a TaskError (a TypeError)."""
    with pytest.raises(TypeError, match="pickle") as excinfo:
        tether.get(return_lock.remote(), timeout=TIMEOUT)
    assert isinstance(excinfo.value, tether.TaskError)
    assert_cluster_works()


def test_resources_no_node_has(cluster):
    """A task asking for a resource no node has fails with ResourceUnavailableError."""
    ref = square.options(resources={"gpu": 1}).remote(2)
    with pytest.raises(tether.ResourceUnavailableError, match="gpu"):
        tether.get(ref, timeout=TIMEOUT)
    with pytest.raises(tether.ResourceUnavailableError):
        tether.get(square.options(num_cpus=3).remote(2), timeout=TIMEOUT)
    assert_cluster_works()


@tether.remote
def listening_sockets_held() -> list:
    """The listening sockets (TCP or Unix) among this worker's open descriptors."""
    listening = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                listening.add(fields[9])
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[3], 16) & 0x10000:  # __SO_ACCEPTCON: a listening Unix socket
            listening.add(fields[6])
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in listening:
            held.append((fd, target))
    return held


def test_workers_do_not_inherit_the_daemons_sockets(cluster):
    """A worker holding the daemon's listening socket would keep its port bound after the daemon died."""
    assert tether.get(listening_sockets_held.remote(), timeout=TIMEOUT) == []


def test_worker_crash_without_retries(cluster):
    """A task whose worker dies, with max_retries=0, fails with WorkerCrashedError."""
    with pytest.raises(tether.WorkerCrashedError):
        tether.get(crash.remote(), timeout=TIMEOUT)
    assert_cluster_works()


def test_worker_crash_is_retried(cluster, tmp_path):
    """A task that crashes its worker on its first attempt only is retried (max_retries=1) and succeeds."""
    marker = tmp_path / "attempted"
    ref = crash_first_time.options(max_retries=1).remote(str(marker))
    assert tether.get(ref, timeout=TIMEOUT) == "second attempt"
    assert marker.exists()
    assert_cluster_works()


def test_worker_crash_retries_are_bounded(cluster, tmp_path):
    """A task that always crashes runs 1 + max_retries times, then fails with WorkerCrashedError."""
    attempts = tmp_path / "attempts"
    with pytest.raises(tether.WorkerCrashedError):
        tether.get(crash_always.options(max_retries=2).remote(str(attempts)), timeout=TIMEOUT)
    assert len(attempts.read_text().split()) == 3
    assert_cluster_works()


def test_cancel_a_queued_task(cluster, gates):
    """Cancelling a task still waiting for a CPU makes its get raise TaskCancelledError; the others run."""
    gate = gates.new()
    busy = [block.remote(gate, value=i) for i in range(2)]  # both CPUs
    queued = square.remote(4)
    tether.cancel(queued)
    with pytest.raises(tether.TaskCancelledError):
        tether.get(queued, timeout=TIMEOUT)
    gates.release(gate)
    assert tether.get(busy, timeout=TIMEOUT) == [0, 1]
    assert_cluster_works()


def test_cancel_a_running_task_with_force(cluster, gates):
    """cancel(force=True) of a running task kills its worker and get raises TaskCancelledError."""
    started = gates.started_marker()
    ref = block.remote(gates.new(), started)
    pid = wait_for_marker(started)
    tether.cancel(ref, force=True)
    with pytest.raises(tether.TaskCancelledError):
        tether.get(ref, timeout=TIMEOUT)
    assert eventually(lambda: not process_alive(pid)), f"worker {pid} still runs"
    assert all(w["pid"] != pid for w in node_status()["workers"])
    assert_cluster_works()


def test_cancel_a_running_task_without_force(cluster, gates):
    """cancel() of a running task lets it finish but replaces its result with TaskCancelledError."""
    started = gates.started_marker()
    gate = gates.new()
    ref = block.remote(gate, started)
    pid = wait_for_marker(started)
    tether.cancel(ref)
    gates.release(gate)
    with pytest.raises(tether.TaskCancelledError):
        tether.get(ref, timeout=TIMEOUT)
    assert process_alive(pid)
    assert_cluster_works()


def test_get_of_unknown_object_is_object_freed_error(cluster):
    """get of an ObjectRef whose id the node never knew raises ObjectFreedError."""
    with pytest.raises(tether.ObjectFreedError):
        tether.get(tether.ObjectRef(bytes(16)), timeout=TIMEOUT)
    assert_cluster_works()


# ---- 5. actors ----


def test_actor_keeps_state(cluster):
    """An actor keeps its state across calls; two actors have separate state."""
    a, b = Counter.remote(), Counter.remote(100)
    assert tether.get([a.incr.remote() for _ in range(3)], timeout=TIMEOUT) == [1, 2, 3]
    assert tether.get(b.incr.remote(5), timeout=TIMEOUT) == 105
    assert tether.get([a.read.remote(), b.read.remote()], timeout=TIMEOUT) == [3, 105]


def test_actor_runs_calls_in_submission_order(cluster):
    """Calls to one actor run in the order they were submitted."""
    log = Log.remote()
    refs = [log.append.remote(i) for i in range(200)]
    assert tether.get(refs, timeout=TIMEOUT) == list(range(1, 201))
    assert tether.get(log.snapshot.remote(), timeout=TIMEOUT) == list(range(200))


def test_actor_call_waits_for_its_argument_and_later_calls_wait_behind(cluster, gates):
    """A call whose ObjectRef argument is not ready holds back later calls: order stays submission order."""
    gate = gates.new()
    log = Log.remote()
    pending = block.remote(gate, value="first")
    log.append.remote(pending)
    log.append.remote("second")
    gates.release(gate)
    assert tether.get(log.snapshot.remote(), timeout=TIMEOUT) == ["first", "second"]


def test_unknown_actor_method(cluster):
    """A handle has the class's public methods only: others are AttributeErrors."""
    counter = Counter.remote()
    with pytest.raises(AttributeError):
        counter.no_such_method  # noqa: B018
    with pytest.raises(AttributeError):
        counter._private_helper  # noqa: B018


def test_named_actor(cluster):
    """A named actor is found with get_actor and shares state with its creator's handle."""
    name = f"counter-{uuid.uuid4().hex}"
    counter = Counter.options(name=name).remote(10)
    found = tether.get_actor(name)
    assert tether.get(found.incr.remote(), timeout=TIMEOUT) == 11
    assert tether.get(counter.read.remote(), timeout=TIMEOUT) == 11


def test_get_actor_unknown_name(cluster):
    """get_actor of a name no actor has raises ValueError naming it."""
    with pytest.raises(ValueError, match="no-such-actor"):
        tether.get_actor("no-such-actor")


def test_actor_name_is_unique(cluster):
    """A second actor with a name in use is refused with ValueError; the first keeps working."""
    name = f"unique-{uuid.uuid4().hex}"
    first = Counter.options(name=name).remote()
    with pytest.raises(ValueError, match=name):
        Counter.options(name=name).remote()
    assert tether.get(first.incr.remote(), timeout=TIMEOUT) == 1
    assert tether.get(tether.get_actor(name).read.remote(), timeout=TIMEOUT) == 1


def test_kill_actor(cluster):
    """After kill, the actor's calls raise ActorDiedError, its process ends and its name is free again."""
    name = f"killed-{uuid.uuid4().hex}"
    counter = Counter.options(name=name).remote()
    pid = tether.get(counter.pid.remote(), timeout=TIMEOUT)
    tether.kill(counter)
    with pytest.raises(tether.ActorDiedError):
        tether.get(counter.incr.remote(), timeout=TIMEOUT)
    assert eventually(lambda: not process_alive(pid)), f"actor process {pid} still runs"
    with pytest.raises(ValueError):
        tether.get_actor(name)
    again = Counter.options(name=name).remote(5)
    assert tether.get(again.read.remote(), timeout=TIMEOUT) == 5
    tether.kill(again)


def test_kill_actor_with_a_call_running(cluster, gates):
    """kill of an actor busy in a call makes that call raise ActorDiedError."""
    counter = Counter.remote()
    started = gates.started_marker()
    running = counter.wait_for.remote(gates.new(), started)
    wait_for_marker(started)
    tether.kill(counter)
    with pytest.raises(tether.ActorDiedError):
        tether.get(running, timeout=TIMEOUT)


def test_actor_restarts_after_its_process_dies(cluster):
    """An actor with max_restarts=1 whose process dies is restarted (constructor re-run, state reset) once."""
    counter = Counter.options(max_restarts=1).remote(10)
    assert tether.get(counter.incr.remote(), timeout=TIMEOUT) == 11
    first_pid = tether.get(counter.pid.remote(), timeout=TIMEOUT)
    with pytest.raises(tether.ActorDiedError):
        tether.get(counter.die.remote(), timeout=TIMEOUT)
    assert tether.get(counter.incr.remote(), timeout=TIMEOUT) == 11  # the constructor ran again
    second_pid = tether.get(counter.pid.remote(), timeout=TIMEOUT)
    assert second_pid != first_pid
    with pytest.raises(tether.ActorDiedError):
        tether.get(counter.die.remote(), timeout=TIMEOUT)
    with pytest.raises(tether.ActorDiedError):  # restarts spent
        tether.get(counter.incr.remote(), timeout=TIMEOUT)


def test_actor_without_restarts_stays_dead(cluster):
    """An actor (max_restarts=0) whose process dies: that call and later ones raise ActorDiedError."""
    counter = Counter.remote()
    with pytest.raises(tether.ActorDiedError):
        tether.get(counter.die.remote(), timeout=TIMEOUT)
    with pytest.raises(tether.ActorDiedError):
        tether.get(counter.incr.remote(), timeout=TIMEOUT)
    assert_cluster_works()


def test_actor_constructor_raises(cluster):
    """An actor whose constructor raises: its method calls raise ActorDiedError naming the cause."""
    broken = Broken.remote()
    with pytest.raises(tether.ActorDiedError, match="this constructor fails"):
        tether.get(broken.ping.remote(), timeout=TIMEOUT)
    with pytest.raises(tether.ActorDiedError):
        tether.get(broken.ping.remote(), timeout=TIMEOUT)


def test_named_actor_constructor_raises_at_creation(cluster):
    """A named actor whose constructor raises: .remote() itself raises ActorDiedError, and the name stays free."""
    name = f"broken-{uuid.uuid4().hex}"
    with pytest.raises(tether.ActorDiedError, match="this constructor fails"):
        Broken.options(name=name).remote()
    with pytest.raises(ValueError):
        tether.get_actor(name)


def test_actor_handle_passed_to_a_task(cluster):
    """A task given an actor handle calls the same actor."""
    counter = Counter.remote()
    assert tether.get(bump.remote(counter, 3), timeout=TIMEOUT) == [1, 2, 3]
    assert tether.get(counter.incr.remote(), timeout=TIMEOUT) == 4


def test_async_actor_methods_run_concurrently(cluster):
    """Async methods of an actor with max_concurrency run at the same time (two calls waiting for each other)."""
    meeting = Rendezvous.options(max_concurrency=4).remote()
    refs = [meeting.meet.remote("a", "b"), meeting.meet.remote("b", "a")]
    assert tether.get(refs, timeout=TIMEOUT) == ["a", "b"]


def test_threaded_actor_methods_run_concurrently(cluster):
    """Plain methods of an actor with max_concurrency=2 run in two threads at the same time."""
    meeting = Rendezvous.options(max_concurrency=2).remote()
    refs = [meeting.meet_in_thread.remote("a", "b"), meeting.meet_in_thread.remote("b", "a")]
    assert tether.get(refs, timeout=TIMEOUT) == ["a", "b"]


# ---- 6. worker output ----


def _captured_until(capfd, needle):
    """Reads capfd's stdout until `needle` appears (output is forwarded by a thread); returns it all."""
    seen = []

    def found():
        seen.append(capfd.readouterr().out)
        return needle in "".join(seen)

    eventually(found, timeout=10)
    return "".join(seen)


def test_task_output_reaches_the_driver(cluster, capfd):
    """A line a task prints appears on the driver's stdout, prefixed with (worker N pid=P)."""
    text = f"hello from a task {uuid.uuid4().hex}"
    pid = tether.get(shout.remote(text), timeout=TIMEOUT)
    out = _captured_until(capfd, text)
    assert re.search(rf"^\(worker \d+ pid={pid}\) {text}$", out, re.MULTILINE), out


def test_actor_output_reaches_the_driver(cluster, capfd):
    """A line an actor prints appears on the driver's stdout, prefixed with (ClassName pid=P)."""
    text = f"hello from an actor {uuid.uuid4().hex}"
    counter = Counter.remote()
    pid = tether.get(counter.say.remote(text), timeout=TIMEOUT)
    out = _captured_until(capfd, text)
    assert re.search(rf"^\(Counter pid={pid}\) {text}$", out, re.MULTILINE), out


# ---- clusters with special options ----


def test_custom_resources(private_cluster, gates):
    """Custom resources are reported, taken by the tasks that ask for them and given back after."""
    private_cluster(num_cpus=2, resources={"gpu": 2})
    assert tether.cluster_resources() == {"CPU": 2, "gpu": 2}
    started = gates.started_marker()
    gate = gates.new()
    ref = block.options(resources={"gpu": 2}).remote(gate, started, value="gpu task")
    wait_for_marker(started)
    assert node_status()["available"]["gpu"] == 0
    gates.release(gate)
    assert tether.get(ref, timeout=TIMEOUT) == "gpu task"
    assert eventually(lambda: node_status()["available"]["gpu"] == 2)
    with pytest.raises(tether.ResourceUnavailableError):
        tether.get(square.options(resources={"gpu": 3}).remote(1), timeout=TIMEOUT)


def test_many_puts_do_not_exhaust_the_store(private_cluster):
    """2,000 puts of 200 KB through a 50 MB store, each ref dropped, succeed; the store empties after."""
    private_cluster(num_cpus=1, object_store_memory=50 * 2**20)
    baseline = node_status()["objects"]
    payload = np.zeros(200 * 1024, dtype=np.uint8)
    for i in range(2000):
        payload[0] = i % 256
        ref = tether.put(payload)
        if i % 100 == 0:
            assert tether.get(ref, timeout=TIMEOUT)[0] == i % 256
    assert node_status()["objects"]["store_used"] > baseline["store_used"]  # the last one is held
    del ref

    def emptied():
        objects = node_status()["objects"]
        return objects["store_used"] <= baseline["store_used"] and objects["count"] <= baseline["count"]

    assert eventually(emptied), node_status()["objects"]


def test_value_larger_than_the_store(private_cluster):
    """A put larger than the whole store raises ObjectStoreFullError; the store still works."""
    private_cluster(num_cpus=1, object_store_memory=10 * 2**20)
    with pytest.raises(tether.ObjectStoreFullError):
        tether.put(np.zeros(12 * 2**20, dtype=np.uint8))
    array = np.ones(2**20, dtype=np.uint8)
    assert np.array_equal(tether.get(tether.put(array), timeout=TIMEOUT), array)


def test_spilled_objects_can_all_be_read_back(private_cluster):
    """Twice the store's size put and held (the excess spills): every value can be read back in turn."""
    private_cluster(num_cpus=1, object_store_memory=10 * 2**20)
    refs = [tether.put(np.full(2**20, i, dtype=np.uint8)) for i in range(20)]
    assert node_status()["objects"]["spilled"] > 0
    for i, ref in enumerate(refs):
        value = tether.get(ref, timeout=TIMEOUT)
        assert value[0] == i
        del value


# ---- 7. shutdown ----


def _worker_processes_of(session: str, worker_pids, daemon_pid: int):
    """Processes running tether._private.worker that belong to this cluster (by pid, parent or environment)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "tether._private.worker" not in cmdline or not process_alive(pid):
                continue
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
            parents = []
            parent = pid
            while parent > 1 and len(parents) < 50:
                stat = Path(f"/proc/{parent}/stat").read_text()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                parents.append(parent)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if pid in worker_pids or daemon_pid in parents or session in environ:
            found.append(pid)
    return found


def test_shutdown_leaves_nothing_behind(private_cluster):
    """After shutdown no daemon, worker (task, actor, detached actor), shared-memory object or session dir remains."""
    info = private_cluster(num_cpus=2)
    session, session_dir = info["session"], info["session_dir"]
    daemon = cluster_state._daemon
    assert tether.get([square.remote(i) for i in range(8)], timeout=TIMEOUT) == [i * i for i in range(8)]
    counter = Counter.remote()
    detached = Counter.options(name=f"detached-{uuid.uuid4().hex}", lifetime="detached").remote()
    actor_pids = tether.get([counter.pid.remote(), detached.pid.remote()], timeout=TIMEOUT)
    large = tether.put(np.ones(1_000_000))
    assert glob.glob(f"/dev/shm/tether-{session}*"), "the large put should be in shared memory"
    assert os.path.isdir(session_dir)
    worker_pids = {w["pid"] for w in node_status()["workers"]} | set(actor_pids)
    assert set(actor_pids) <= worker_pids and len(worker_pids) >= 3
    assert _worker_processes_of(session, worker_pids, daemon.pid)

    tether.shutdown()

    assert not tether.is_initialized()
    assert daemon.poll() == 0  # it stopped by itself, cleanly
    assert not process_alive(daemon.pid)
    assert _worker_processes_of(session, worker_pids, daemon.pid) == []
    assert [pid for pid in worker_pids if process_alive(pid)] == []
    assert glob.glob(f"/dev/shm/tether-{session}*") == []
    assert not os.path.exists(session_dir)
    del large  # an ObjectRef outliving its cluster is dropped quietly
    with pytest.raises(RuntimeError):
        square.remote(1)
