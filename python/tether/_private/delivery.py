"""Handing on what a server sends in numbered oneway calls (watched tuples, topic messages, group
events, workers' output): the calls may run on different threads, so each carries a number and
items are handed on in number order; and a queue that user code iterates over, also with asyncio."""
from __future__ import annotations

import asyncio
import queue
import threading


class Numbered:
    """Calls `hand_on(item)` for items in number order (1, 2, ...), under one lock. With
    `gap_wait`, an item that never comes (its call could not be decoded here) is skipped after
    that many seconds, so the ones behind it go on."""

    def __init__(self, hand_on, gap_wait: float | None = None):
        self._hand_on = hand_on
        self._gap_wait = gap_wait
        self._lock = threading.Lock()
        self._next = 1
        self._early: dict = {}
        self._gap_timer = None

    def arrived(self, number: int, item) -> None:
        with self._lock:
            self._early[number] = item
            self._drain()

    def _drain(self) -> None:
        while self._next in self._early:
            item = self._early.pop(self._next)
            self._next += 1
            self._hand_on(item)
        if self._early and self._gap_wait is not None and self._gap_timer is None:
            self._gap_timer = threading.Timer(self._gap_wait, self._skip_gap, args=(self._next,))
            self._gap_timer.daemon = True
            self._gap_timer.start()

    def _skip_gap(self, missing: int) -> None:
        with self._lock:
            self._gap_timer = None
            if self._next == missing and self._early:
                self._next = min(self._early)
            self._drain()


_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class ItemStream:
    """Items put by tether's threads, taken by user code: get(timeout), iteration and async
    iteration; end() makes them stop once what came before is taken."""

    def __init__(self, what: str):
        self._what = what
        # SimpleQueue (C): a put or get costs a fraction of queue.Queue's, which matters at tens of
        # thousands of group messages a second.
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.ended = False

    def put(self, item) -> None:
        self._queue.put(item)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self._queue.put(_END)

    def fail(self, error: BaseException) -> None:
        """Ends the stream with `error`: the gets after what came before raise it."""
        if not self.ended:
            self.ended = True
            self._queue.put(_Failed(error))

    def get(self, timeout: float | None = None):
        """The next item; TimeoutError if none came in time; StopIteration once ended."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"nothing came from {self._what} within {timeout} s") from None
        if item is _END:
            self._queue.put(_END)  # every later get stops too
            raise StopIteration
        if isinstance(item, _Failed):
            self._queue.put(item)
            raise item.error
        return item

    def __iter__(self):
        return self

    def __next__(self):
        return self.get()

    def __aiter__(self):
        return self

    async def __anext__(self):
        # StopIteration cannot cross a Future: the executor returns a marker instead.
        item = await asyncio.get_running_loop().run_in_executor(None, self._get_or_end)
        if item is _END:
            raise StopAsyncIteration
        return item

    def _get_or_end(self):
        try:
            return self.get()
        except StopIteration:
            return _END
