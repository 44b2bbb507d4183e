"""Tests for tether.Future: local use, remote completion (fast and contended), callbacks, wait and
as_completed, cancellation, asyncio, and races between replies and the threads reading them."""

import asyncio
import concurrent.futures
import functools
import random
import sys
import threading
import time
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, CancelledError, InvalidStateError

import pytest

import tether

# Every blocking call in this file waits at most this long, so a hang becomes a failure.
TIMEOUT = 10


class Gate:
    """One held call: `entered` when the server runs it, `release` lets it return, then `finished`."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()


class CustomError(Exception):
    pass


@tether.expose
class Worker:
    """Fast methods, failing ones, and ones held on the server until the test opens their gate."""

    def __init__(self):
        self._lock = threading.Lock()
        self._gates = {}

    def gate(self, key):
        with self._lock:
            return self._gates.setdefault(key, Gate())

    def open_all(self):
        with self._lock:
            gates = list(self._gates.values())
        for gate in gates:
            gate.release.set()

    def echo(self, value):
        return value

    def fail(self, value):
        raise ValueError(value)

    def fail_custom(self, text):
        raise CustomError(text)

    def held(self, key):
        gate = self.gate(key)
        gate.entered.set()
        try:
            if not gate.release.wait(30):
                raise TimeoutError(f"gate {key!r} was never opened")
            return key
        finally:
            gate.finished.set()

    def held_then_fail(self, key):
        self.held(key)
        raise ValueError(key)


@pytest.fixture
def worker(server):
    obj = Worker()
    uri = server.register(obj, "worker")
    try:
        yield obj, uri
    finally:
        obj.open_all()  # no dispatch thread stays held once the test is over


@pytest.fixture
def proxy(worker, make_proxy):
    return make_proxy(worker[1])


@pytest.fixture
def serial(make_server, make_proxy):
    """A Worker and its proxy on a server with one dispatch thread: calls run, and reply, in order.

    So once a call made after a held one has its answer, the held call's reply has been handled."""
    obj = Worker()
    server = make_server(dispatch_threads=1)
    try:
        yield obj, make_proxy(server.register(obj, "worker"), timeout=60)
    finally:
        obj.open_all()


@pytest.fixture
def problems(monkeypatch):
    """Collects unraisable exceptions and exceptions escaping threads during the test."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(f"{u.exc_type.__name__}: {u.exc_value}"))
    monkeypatch.setattr(threading, "excepthook", lambda a: seen.append(f"thread {a.exc_type.__name__}: {a.exc_value}"))
    return seen


def wait_until(predicate, what):
    """Polls `predicate` until it holds; only used to know another thread has reached a wait."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting until {what}")
        time.sleep(0.001)


def condition_waiters(future):
    """How many threads sleep on the future's condition (result(), exception() blocked in wait)."""
    condition = vars(future).get("_condition")
    return 0 if condition is None else len(condition._waiters)


def installed_waiters(future):
    """How many concurrent.futures.wait / as_completed calls are registered on the future."""
    return len(vars(future).get("_waiters", ()))


def held_future(obj, proxy, key, *, fail=False):
    """A remote future whose call is running on the server and cannot reply until the gate opens."""
    future = (proxy.held_then_fail if fail else proxy.held).future(key)
    assert obj.gate(key).entered.wait(TIMEOUT)
    assert not future.done()
    return future


class Background(threading.Thread):
    """A thread that keeps its target's return value or exception for the test to check."""

    def __init__(self, target, *args):
        super().__init__(target=self._run, args=(target, *args), daemon=True)
        self.outcome = None
        self.error = None

    def _run(self, target, *args):
        try:
            self.outcome = target(*args)
        except BaseException as error:  # noqa: BLE001 - the test inspects whatever happened
            self.error = error

    def finish(self):
        self.join(TIMEOUT)
        assert not self.is_alive(), "thread still blocked"
        return self


def unstick(future):
    """Wakes anything still waiting on `future` so a failing test leaves no thread behind."""
    if not future.done():
        try:
            future.set_exception(AssertionError("woken by the test's cleanup"))
        except InvalidStateError:
            pass
    with future._condition:
        future._condition.notify_all()
        for waiter in list(future._waiters):
            waiter.add_result(future)


class CallbackLog:
    """A done-callback that records (future, thread) for each call and signals the first."""

    def __init__(self):
        self.calls = []
        self.called = threading.Event()

    def __call__(self, future):
        self.calls.append((future, threading.current_thread()))
        self.called.set()

    def futures(self):
        return [f for f, _ in self.calls]


# --- a locally made tether.Future behaves like concurrent.futures.Future --------------------------


def test_local_future_starts_pending():
    """A new tether.Future is a pending concurrent.futures.Future: not done, and waits time out."""
    future = tether.Future()
    assert isinstance(future, concurrent.futures.Future)
    assert not future.done() and not future.running() and not future.cancelled()
    assert "state=pending" in repr(future)
    with pytest.raises(concurrent.futures.TimeoutError):
        future.result(timeout=0)
    with pytest.raises(concurrent.futures.TimeoutError):
        future.exception(timeout=0)
    done, not_done = concurrent.futures.wait([future], timeout=0)
    assert (done, not_done) == (set(), {future})


def test_local_future_set_result_then_result():
    """set_result completes it: result() returns the value, callbacks run once, a second set fails."""
    future = tether.Future()
    before = CallbackLog()
    future.add_done_callback(before)
    future.set_result((1, 2))
    assert future.result() == (1, 2)
    assert future.result(timeout=0) == (1, 2)
    assert future.exception() is None
    assert future.done() and not future.cancelled() and not future.running()
    assert before.calls == [(future, threading.current_thread())]
    after = CallbackLog()
    future.add_done_callback(after)
    assert after.calls == [(future, threading.current_thread())]
    assert "state=finished returned tuple" in repr(future)
    assert future.cancel() is False
    with pytest.raises(InvalidStateError):
        future.set_result(3)
    with pytest.raises(InvalidStateError):
        future.set_exception(ValueError("late"))
    assert future.result() == (1, 2)
    assert before.futures() == [future]


def test_local_future_set_exception_then_exception_and_result_raise_it():
    """set_exception completes it: exception() returns the error and result() raises that same object."""
    future = tether.Future()
    log = CallbackLog()
    future.add_done_callback(log)
    error = ValueError("local failure")
    future.set_exception(error)
    assert future.exception() is error
    assert future.exception(timeout=0) is error
    with pytest.raises(ValueError) as excinfo:
        future.result()
    assert excinfo.value is error
    assert future.done() and not future.cancelled()
    assert log.futures() == [future]
    assert "state=finished raised ValueError" in repr(future)
    with pytest.raises(InvalidStateError):
        future.set_result(1)


def test_local_future_cancel():
    """cancel() of a pending local future succeeds once and for all: CancelledError, and no later set."""
    future = tether.Future()
    log = CallbackLog()
    future.add_done_callback(log)
    assert future.cancel() is True
    assert future.cancelled() and future.done() and not future.running()
    assert log.futures() == [future]
    assert "state=cancelled" in repr(future)
    with pytest.raises(CancelledError):
        future.result()
    with pytest.raises(CancelledError):
        future.exception()
    assert future.cancel() is True  # cancelling again still reports a cancelled future
    with pytest.raises(InvalidStateError):
        future.set_result(1)
    with pytest.raises(InvalidStateError):
        future.set_exception(ValueError("late"))
    assert future.cancelled()
    after = CallbackLog()
    future.add_done_callback(after)
    assert after.futures() == [future]
    assert log.futures() == [future]


def test_local_future_wakes_a_thread_blocked_in_result():
    """A thread blocked in result() on a local future gets the value set later by another thread."""
    future = tether.Future()
    waiter = Background(future.result)
    waiter.start()
    try:
        wait_until(lambda: condition_waiters(future) == 1, "the thread waits in result()")
        future.set_result("late value")
        waiter.finish()
    finally:
        unstick(future)
    assert waiter.error is None and waiter.outcome == "late value"


def test_local_futures_work_with_wait_and_as_completed():
    """concurrent.futures.wait and as_completed see local futures complete in the order they are set."""
    first, second = tether.Future(), tether.Future()
    waiter = Background(concurrent.futures.wait, [first, second], TIMEOUT, FIRST_COMPLETED)
    waiter.start()
    try:
        wait_until(lambda: installed_waiters(second) == 1, "wait() is installed")
        second.set_result(2)
        waiter.finish()
        assert waiter.outcome == ({second}, {first})
        ordered = concurrent.futures.as_completed([first, second], timeout=TIMEOUT)
        assert next(ordered) is second
        first.set_result(1)
        assert next(ordered) is first
        with pytest.raises(StopIteration):
            next(ordered)
    finally:
        unstick(first)
        unstick(second)


def test_local_future_is_awaitable():
    """`await` of a local tether.Future gives the value set from the event loop."""

    async def main():
        future = tether.Future()
        asyncio.get_running_loop().call_soon(future.set_result, "from the loop")
        return await asyncio.wait_for(future, TIMEOUT)

    assert asyncio.run(main()) == "from the loop"


# --- remote futures completed while nobody looks (the engine's fast path) --------------------------


def test_uncontended_remote_future_behaves_like_any_finished_future(proxy):
    """A reply stored while nothing watched the future still serves every concurrent.futures method."""
    future = proxy.echo.future({"a": [1, 2]})
    wait_until(future.done, "the reply arrived")  # done() does not make the engine take the locked path
    assert "_condition" not in vars(future), "precondition: the engine completed it without set_result"
    assert future.result() == {"a": [1, 2]}
    assert future.result(timeout=0) == {"a": [1, 2]}
    assert future.exception() is None
    assert not future.cancelled() and not future.running()
    assert future.cancel() is False
    assert "state=finished returned dict" in repr(future)
    log = CallbackLog()
    future.add_done_callback(log)
    assert log.calls == [(future, threading.current_thread())]
    assert concurrent.futures.wait([future], timeout=0) == ({future}, set())
    assert list(concurrent.futures.as_completed([future], timeout=0)) == [future]

    async def main():
        return await future

    assert asyncio.run(main()) == {"a": [1, 2]}


def test_uncontended_remote_failure_behaves_like_any_failed_future(proxy):
    """A remote exception stored while nothing watched the future is returned by exception() and raised by result()."""
    future = proxy.fail.future("quiet")
    wait_until(future.done, "the reply arrived")
    assert "_condition" not in vars(future), "precondition: the engine completed it without set_exception"
    error = future.exception()
    assert type(error) is ValueError and error.args == ("quiet",)
    with pytest.raises(ValueError) as excinfo:
        future.result()
    assert excinfo.value is error
    assert future.cancel() is False
    assert "state=finished raised ValueError" in repr(future)
    assert concurrent.futures.wait([future], timeout=0) == ({future}, set())


# --- remote futures with threads waiting before the reply (the contended path) ---------------------


def test_thread_blocked_in_result_before_the_reply_gets_the_value(worker, proxy):
    """A thread already asleep in result() (no timeout) when the reply arrives is woken with the value."""
    obj, _ = worker
    future = held_future(obj, proxy, "wake me")
    waiter = Background(future.result)
    waiter.start()
    try:
        wait_until(lambda: condition_waiters(future) == 1, "the thread waits in result()")
        assert not future.done()
        obj.gate("wake me").release.set()
        waiter.finish()
    finally:
        unstick(future)
    assert waiter.error is None
    assert waiter.outcome == "wake me"
    assert future.result() == "wake me"


@pytest.mark.parametrize("fails", [False, True], ids=["value", "exception"])
def test_every_kind_of_waiter_started_before_the_reply_is_woken(worker, proxy, fails):
    """result(), exception(), wait(), as_completed() and a callback, all started before the reply, see the outcome."""
    obj, _ = worker
    future = held_future(obj, proxy, "many", fail=fails)
    log = CallbackLog()
    future.add_done_callback(log)
    waiters = [Background(future.result) for _ in range(3)]
    waiters.append(Background(future.exception))
    waiters.append(Background(concurrent.futures.wait, [future]))
    waiters.append(Background(lambda: list(concurrent.futures.as_completed([future]))))
    for thread in waiters:
        thread.start()
    try:
        wait_until(lambda: condition_waiters(future) == 4 and installed_waiters(future) == 2, "every thread waits")
        assert log.calls == []
        obj.gate("many").release.set()
        for thread in waiters:
            thread.finish()
    finally:
        unstick(future)
    assert log.called.wait(TIMEOUT)
    result_waiters, exception_waiter, wait_waiter, as_completed_waiter = waiters[:3], waiters[3], waiters[4], waiters[5]
    if fails:
        error = future.exception()
        assert type(error) is ValueError and error.args == ("many",)
        assert all(t.error is error for t in result_waiters)
        assert exception_waiter.outcome is error
    else:
        assert all(t.error is None and t.outcome == "many" for t in result_waiters)
        assert exception_waiter.error is None and exception_waiter.outcome is None
    assert wait_waiter.outcome == ({future}, set())
    assert as_completed_waiter.outcome == [future]
    assert log.futures() == [future]


# --- done callbacks -------------------------------------------------------------------------------


def test_callback_added_before_the_reply_runs_exactly_once(worker, proxy):
    """A callback registered on a pending remote future runs once, with the future, after the reply."""
    obj, _ = worker
    future = held_future(obj, proxy, "callback")
    log = CallbackLog()
    future.add_done_callback(log)
    assert log.calls == []
    obj.gate("callback").release.set()
    assert future.result(timeout=TIMEOUT) == "callback"
    assert log.called.wait(TIMEOUT)
    assert proxy.echo.future("later").result(timeout=TIMEOUT) == "later"  # later replies do not call it again
    assert log.futures() == [future]
    assert future.result() == "callback"


def test_callback_added_after_completion_runs_at_once_in_the_caller(proxy):
    """add_done_callback on a finished remote future calls the callback before returning, in the calling thread."""
    future = proxy.echo.future(5)
    assert future.result(timeout=TIMEOUT) == 5
    log = CallbackLog()
    future.add_done_callback(log)
    assert log.calls == [(future, threading.current_thread())]


def test_callbacks_run_in_order_and_a_failing_one_does_not_stop_the_rest(worker, proxy, caplog):
    """Callbacks run in registration order; one that raises is logged and the next still runs."""
    obj, _ = worker
    future = held_future(obj, proxy, "order")
    order = []
    done = threading.Event()

    def broken(f):
        order.append("broken")
        raise RuntimeError("callback bug")

    future.add_done_callback(lambda f: order.append("first"))
    future.add_done_callback(broken)
    future.add_done_callback(lambda f: (order.append("last"), done.set()))
    obj.gate("order").release.set()
    assert done.wait(TIMEOUT)
    assert order == ["first", "broken", "last"]
    assert future.result() == "order"
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


def test_callbacks_added_while_replies_arrive_each_run_once(proxy):
    """Callbacks added right after each call, racing its reply, all run exactly once with the right outcome."""
    count = 500
    lock = threading.Lock()
    seen = {}
    all_called = threading.Event()

    def record(index, future):
        with lock:
            seen.setdefault(index, []).append(future)
            if sum(map(len, seen.values())) == count:
                all_called.set()

    futures = []
    for i in range(count):
        future = proxy.echo.future(i)
        future.add_done_callback(functools.partial(record, i))
        futures.append(future)
    assert all_called.wait(TIMEOUT)
    assert proxy.echo.future("later").result(timeout=TIMEOUT) == "later"
    assert {i: fs for i, fs in seen.items()} == {i: [futures[i]] for i in range(count)}
    assert [f.result() for f in futures] == list(range(count))


# --- concurrent.futures.wait and as_completed on remote futures ------------------------------------


def test_wait_first_completed_returns_the_fast_call_while_another_is_held(worker, proxy):
    """wait(FIRST_COMPLETED) returns the answered call and leaves the held one pending; ALL_COMPLETED waits for both."""
    obj, _ = worker
    held = held_future(obj, proxy, "slow")
    fast = proxy.echo.future("fast")
    done, not_done = concurrent.futures.wait([held, fast], timeout=TIMEOUT, return_when=FIRST_COMPLETED)
    assert (done, not_done) == ({fast}, {held})
    assert fast.result() == "fast"
    obj.gate("slow").release.set()
    done, not_done = concurrent.futures.wait([held, fast], timeout=TIMEOUT, return_when=ALL_COMPLETED)
    assert (done, not_done) == ({held, fast}, set())
    assert held.result() == "slow"


def test_waits_installed_before_any_reply_return_as_calls_finish(worker, proxy):
    """wait(FIRST_COMPLETED) and wait(ALL_COMPLETED), waiting before any reply, return the futures as they finish."""
    obj, _ = worker
    first, second = held_future(obj, proxy, "a"), held_future(obj, proxy, "b")
    any_waiter = Background(concurrent.futures.wait, [first, second], TIMEOUT, FIRST_COMPLETED)
    all_waiter = Background(concurrent.futures.wait, [first, second], TIMEOUT, ALL_COMPLETED)
    any_waiter.start()
    all_waiter.start()
    try:
        wait_until(lambda: installed_waiters(first) == 2 and installed_waiters(second) == 2, "both waits are installed")
        obj.gate("b").release.set()
        any_waiter.finish()
        assert any_waiter.outcome == ({second}, {first})
        obj.gate("a").release.set()
        all_waiter.finish()
        assert all_waiter.outcome == ({first, second}, set())
    finally:
        unstick(first)
        unstick(second)
    assert (first.result(), second.result()) == ("a", "b")
    assert installed_waiters(first) == installed_waiters(second) == 0


def test_as_completed_yields_held_calls_in_the_order_they_are_released(worker, proxy):
    """as_completed over pending remote futures yields each one as its call is let go, in that order."""
    obj, _ = worker
    keys = [f"k{i}" for i in range(5)]
    futures = {key: held_future(obj, proxy, key) for key in keys}
    release_order = keys[:]
    random.Random(7).shuffle(release_order)
    ordered = concurrent.futures.as_completed(list(futures.values()), timeout=TIMEOUT)
    for key in release_order:
        obj.gate(key).release.set()
        future = next(ordered)
        assert future is futures[key]
        assert future.result() == key
    with pytest.raises(StopIteration):
        next(ordered)


# --- remote exceptions ----------------------------------------------------------------------------


def test_remote_exception_is_the_futures_exception(worker, proxy):
    """A remote call that raises fails its future with that exception: exception() returns it, result() raises it."""
    obj, _ = worker
    future = held_future(obj, proxy, "broken", fail=True)
    waiter = Background(future.result)
    waiter.start()
    try:
        wait_until(lambda: condition_waiters(future) == 1, "the thread waits in result()")
        obj.gate("broken").release.set()
        waiter.finish()
    finally:
        unstick(future)
    error = future.exception(timeout=TIMEOUT)
    assert type(error) is ValueError and error.args == ("broken",)
    assert "held_then_fail" in error.remote_traceback
    assert waiter.error is error
    with pytest.raises(ValueError) as excinfo:
        future.result(timeout=TIMEOUT)
    assert excinfo.value is error
    assert not future.cancelled()


def test_remote_exception_of_a_user_type_is_a_remote_error(proxy):
    """A remote exception of a non-builtin type reaches the future as tether.RemoteError naming that type."""
    future = proxy.fail_custom.future("custom text")
    error = future.exception(timeout=TIMEOUT)
    assert isinstance(error, tether.RemoteError)
    assert error.remote_type.endswith("CustomError")
    assert "custom text" in str(error)
    with pytest.raises(tether.RemoteError):
        future.result()


# --- cancel ---------------------------------------------------------------------------------------


def test_cancel_of_a_held_remote_call_sticks_when_the_late_reply_arrives(serial, problems):
    """cancel() of a running remote call returns True; the reply that comes later changes nothing and raises nowhere."""
    obj, proxy = serial
    future = held_future(obj, proxy, "cancel me")
    log = CallbackLog()
    future.add_done_callback(log)
    assert future.cancel() is True
    assert future.cancelled() and future.done() and not future.running()
    assert log.calls == [(future, threading.current_thread())]
    with pytest.raises(CancelledError):
        future.result(timeout=0)
    obj.gate("cancel me").release.set()
    assert obj.gate("cancel me").finished.wait(TIMEOUT)
    assert proxy.echo.future("after").result(timeout=TIMEOUT) == "after"  # the late reply came first
    assert future.cancelled()
    with pytest.raises(CancelledError):
        future.result()
    with pytest.raises(CancelledError):
        future.exception()
    assert "state=cancelled" in repr(future)
    assert log.futures() == [future]
    assert problems == []


def test_cancel_wakes_a_thread_blocked_in_result(worker, proxy):
    """A thread waiting in result() on a remote future that gets cancelled raises CancelledError."""
    obj, _ = worker
    future = held_future(obj, proxy, "abandon")
    waiter = Background(future.result)
    waiter.start()
    try:
        wait_until(lambda: condition_waiters(future) == 1, "the thread waits in result()")
        assert future.cancel() is True
        waiter.finish()
    finally:
        unstick(future)
    assert isinstance(waiter.error, CancelledError)
    obj.gate("abandon").release.set()
    assert proxy.echo("still fine") == "still fine"


def test_cancel_after_the_reply_returns_false_and_keeps_the_result(proxy):
    """cancel() of an answered remote future fails and leaves its result in place."""
    future = proxy.echo.future("kept")
    assert future.result(timeout=TIMEOUT) == "kept"
    assert future.cancel() is False
    assert not future.cancelled()
    assert future.result() == "kept"


def test_cancel_racing_replies_leaves_every_future_consistent(proxy):
    """Futures cancelled as their replies arrive stay cancelled or hold their right value; callbacks run once."""
    count = 1000
    lock = threading.Lock()
    callbacks = {}

    def on_done(index, future):
        with lock:
            callbacks[index] = callbacks.get(index, 0) + 1

    futures = [proxy.echo.future(i) for i in range(count)]
    for i, future in enumerate(futures):
        future.add_done_callback(functools.partial(on_done, i))

    def cancel_backwards():
        return [f.cancel() for f in reversed(futures)][::-1]

    canceller = Background(cancel_backwards)
    canceller.start()
    canceller.finish()
    assert canceller.error is None
    won = canceller.outcome
    answered = [f for f, cancelled in zip(futures, won) if not cancelled]
    assert not concurrent.futures.wait(answered, timeout=TIMEOUT).not_done
    assert proxy.echo.future("later").result(timeout=TIMEOUT) == "later"
    for i, (future, cancelled) in enumerate(zip(futures, won)):
        assert future.cancelled() is cancelled
        if cancelled:
            with pytest.raises(CancelledError):
                future.result(timeout=0)
        else:
            assert future.result(timeout=0) == i
    assert callbacks == {i: 1 for i in range(count)}


def test_cancel_landing_inside_the_engines_completion_is_not_reported(worker, proxy, problems, monkeypatch):
    """A reply that loses the race with cancel() is dropped quietly, even when cancel() lands mid-completion."""
    obj, _ = worker
    future = held_future(obj, proxy, "race")
    future.add_done_callback(lambda f: None)  # watched: the engine completes it through _settle
    original_settle = tether.Future._settle
    cancelled_first = []

    def settle(self, outcome, failed):
        if self is future and not cancelled_first:
            # The engine is about to complete the future: another thread cancels it right now.
            canceller = Background(future.cancel)
            canceller.start()
            canceller.finish()
            cancelled_first.append(canceller.outcome)
        return original_settle(self, outcome, failed)

    monkeypatch.setattr(tether.Future, "_settle", settle)
    obj.gate("race").release.set()
    deadline = time.monotonic() + TIMEOUT
    while not cancelled_first and time.monotonic() < deadline:  # until the engine has the reply
        time.sleep(0.01)
    assert cancelled_first == [True]
    assert future.cancelled()
    assert problems == []


def test_a_cancelled_remote_future_counts_as_finished_for_wait_and_as_completed(worker, proxy):
    """wait() and as_completed() return a cancelled remote future instead of waiting for ever."""
    obj, _ = worker
    future = held_future(obj, proxy, "cancel-then-wait")
    assert future.cancel()
    done, not_done = concurrent.futures.wait([future], timeout=TIMEOUT)
    assert done == {future} and not not_done
    assert list(concurrent.futures.as_completed([future], timeout=TIMEOUT)) == [future]
    obj.gate("cancel-then-wait").release.set()


# --- asyncio --------------------------------------------------------------------------------------


def test_await_of_remote_futures_in_asyncio(worker, proxy):
    """`await` of remote futures in asyncio.run gives values and raises errors; their callbacks fire once."""
    obj, _ = worker
    held = held_future(obj, proxy, "awaited")
    log = CallbackLog()
    held.add_done_callback(log)

    async def main():
        asyncio.get_running_loop().call_soon(obj.gate("awaited").release.set)
        value = await held  # pending when the await starts
        many = await asyncio.wait_for(asyncio.gather(*(proxy.echo.future(i) for i in range(100))), TIMEOUT)
        with pytest.raises(ValueError) as excinfo:
            await proxy.fail.future("async failure")
        finished = proxy.echo.future("twice")
        first, second = await finished, await finished
        return value, many, excinfo.value, first, second

    value, many, error, first, second = asyncio.run(main())
    assert value == "awaited"
    assert many == list(range(100))
    assert error.args == ("async failure",)
    assert first == second == "twice"
    assert log.futures() == [held]  # ran before the loop heard of the result, and only once


def test_cancelling_the_awaiting_task_cancels_the_remote_future(serial, problems):
    """Cancelling an asyncio task that awaits a remote future cancels that future; its late reply changes nothing."""
    obj, proxy = serial
    held = held_future(obj, proxy, "task")

    async def main():
        async def wait_for_it():
            return await held

        task = asyncio.ensure_future(wait_for_it())
        await asyncio.sleep(0)  # one loop turn: the task is now awaiting the future
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert held.cancelled()
    obj.gate("task").release.set()
    assert obj.gate("task").finished.wait(TIMEOUT)
    assert proxy.echo.future("after").result(timeout=TIMEOUT) == "after"  # the late reply came first
    assert held.cancelled()
    assert problems == []


# --- stress ---------------------------------------------------------------------------------------


def expected_outcome(index):
    """Call `index` of the stress test fails (ValueError(index)) when index % 10 == 7, else echoes index."""
    return ("error", index) if index % 10 == 7 else ("value", index)


def outcome_of(future):
    error = future.exception(timeout=TIMEOUT)
    if error is not None:
        return ("error", error.args[0]) if type(error) is ValueError else ("unexpected", repr(error))
    return ("value", future.result(timeout=0))


def test_stress_pipelined_futures_read_by_many_threads_while_replies_arrive(serial):
    """2,000 pipelined calls, read at random by threads while their replies arrive, all come out right."""
    # One dispatch thread and a held call at the head of each wave of 100: the readers start on a
    # wave whose replies cannot have come yet, and the replies pour in once its gate opens.
    obj, proxy = serial
    waves, per_wave, readers, operations_per_wave = 20, 100, 6, 15
    futures = []  # grows wave by wave
    barrier = threading.Barrier(readers + 1, timeout=60)
    lock = threading.Lock()
    registered = {}  # index -> callbacks added
    called = {}  # index -> callbacks run
    mistakes = []
    all_called = threading.Condition(lock)

    def on_done(index, future):
        outcome = outcome_of(future)
        with lock:
            called[index] = called.get(index, 0) + 1
            if future is not futures[index] or outcome != expected_outcome(index):
                mistakes.append(("callback", index, outcome))
            all_called.notify_all()

    def check(index, future):
        outcome = outcome_of(future)
        if outcome != expected_outcome(index):
            mistakes.append(("read", index, outcome))

    def operate(rng, wave):
        available = len(futures)
        newest = range(wave * per_wave, available)
        index = rng.choice(newest) if rng.random() < 0.8 else rng.randrange(available)
        future = futures[index]
        kind = rng.choice(["result", "exception", "done", "callback", "wait_all", "wait_first", "as_completed"])
        if kind in ("result", "exception"):
            check(index, future)
        elif kind == "done":
            if future.done():
                check(index, future)
        elif kind == "callback":
            with lock:
                registered[index] = registered.get(index, 0) + 1
            future.add_done_callback(functools.partial(on_done, index))
        else:
            indexes = rng.sample(newest, rng.randint(1, 20))
            subset = [futures[i] for i in indexes]
            if kind == "as_completed":
                seen = list(concurrent.futures.as_completed(subset, timeout=TIMEOUT))
                if sorted(map(id, seen)) != sorted(map(id, subset)):
                    mistakes.append(("as_completed", indexes))
            else:
                when = ALL_COMPLETED if kind == "wait_all" else FIRST_COMPLETED
                done, not_done = concurrent.futures.wait(subset, timeout=TIMEOUT, return_when=when)
                if not done or (when == ALL_COMPLETED and not_done):
                    mistakes.append((kind, indexes))
                for i in indexes:
                    if futures[i] in done:
                        check(i, futures[i])

    def touch_pending(rng, wave):
        index = rng.randrange(wave * per_wave, len(futures))
        if rng.random() < 0.5:
            with lock:
                registered[index] = registered.get(index, 0) + 1
            futures[index].add_done_callback(functools.partial(on_done, index))
        elif concurrent.futures.wait([futures[index]], timeout=0).done:
            mistakes.append(("done before its gate opened", index))

    def reader(seed):
        rng = random.Random(seed)
        for wave in range(waves):
            barrier.wait()  # the wave is sent, its replies held
            for _ in range(3):
                touch_pending(rng, wave)
            barrier.wait()  # the gate opens: replies race the operations below
            for _ in range(operations_per_wave):
                operate(rng, wave)
            barrier.wait()  # every reader is done with the wave

    threads = [Background(reader, seed) for seed in range(readers)]
    for thread in threads:
        thread.start()
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # more thread switches, so more interleavings with the replies
    try:
        for wave in range(waves):
            head = proxy.held.future(f"wave {wave}")
            for i in range(wave * per_wave, (wave + 1) * per_wave):
                kind, value = expected_outcome(i)
                futures.append((proxy.fail if kind == "error" else proxy.echo).future(value))
            barrier.wait()
            barrier.wait()
            obj.gate(f"wave {wave}").release.set()
            barrier.wait()
            assert head.result(timeout=TIMEOUT) == f"wave {wave}"
    except BaseException:
        barrier.abort()  # the readers stop at their next barrier instead of waiting for a wave
        raise
    finally:
        sys.setswitchinterval(old_interval)
        obj.open_all()
        for thread in threads:
            thread.join(TIMEOUT)
    assert [t.is_alive() for t in threads] == [False] * readers
    assert [t.error for t in threads] == [None] * readers
    done, not_done = concurrent.futures.wait(futures, timeout=60)
    assert not not_done
    assert [outcome_of(f) for f in futures] == [expected_outcome(i) for i in range(waves * per_wave)]
    expected_calls = sum(registered.values())
    with all_called:
        assert all_called.wait_for(lambda: sum(called.values()) >= expected_calls, TIMEOUT)
    assert proxy.echo.future("later").result(timeout=TIMEOUT) == "later"
    assert called == registered
    assert mistakes == []
