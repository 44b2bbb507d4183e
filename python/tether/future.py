"""tether.Future: a concurrent.futures.Future that is awaitable and cheap to make by the thousand."""
from __future__ import annotations

import concurrent.futures
import threading
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING

_DONE = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))


class _MadeOnFirstUse:
    """An instance attribute of the base class, created the first time anything reads it.

    concurrent.futures.Future builds a threading.Condition and two lists for every future. Most
    futures of a pipelined burst are completed once and read once, and never need them. Reading one
    marks the future `_contended`; the engine completes a contended future through set_result
    (locked, notifying waiters and running callbacks) and any other by storing the outcome."""

    def __init__(self, factory):
        self._factory = factory
        self._name = None

    def __set_name__(self, owner, name):
        self._name = name

    def __get__(self, future, owner=None):
        if future is None:
            return self
        future._contended = True  # before the value exists: the engine must not take the fast path
        return future.__dict__.setdefault(self._name, self._factory())


class Future(concurrent.futures.Future):
    """The outcome of a remote call started with `proxy.method.future(...)`.

    A concurrent.futures.Future (result, exception, add_done_callback, wait, as_completed all work)
    that can also be awaited; cancel() tells the server to stop the call too."""

    _condition = _MadeOnFirstUse(threading.Condition)
    _waiters = _MadeOnFirstUse(list)
    _done_callbacks = _MadeOnFirstUse(list)
    _state = PENDING
    _result = None
    _exception = None
    _contended = False
    _channel = None
    _request_id = None

    def __init__(self):  # the base's __init__ would build what _MadeOnFirstUse defers
        pass

    def __await__(self):
        import asyncio  # only programs that await need it; workers start faster without

        return asyncio.wrap_future(self).__await__()

    def done(self):
        return self._state in _DONE

    def result(self, timeout=None):
        if self._state == FINISHED and self._exception is None:
            return self._result
        return super().result(timeout)

    def cancel(self):
        with self._condition:
            if self._state == FINISHED:
                return False
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
            # Straight to "notified": no executor will do it, and without it wait() and
            # as_completed() would never count a cancelled future as finished.
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()
        if self._channel is not None:
            self._channel.cancel(self._request_id)
        return True

    def _settle(self, outcome, failed):
        """The engine's completion of a contended future: a reply racing cancel() loses quietly."""
        with self._condition:
            if self._state in _DONE:
                return
            if failed:
                self.set_exception(outcome)
            else:
                self.set_result(outcome)
