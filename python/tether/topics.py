"""Topics, as OSE's reports, IceStorm and YAMI's value publisher: publish/subscribe on dotted
subjects with wildcards and a last-value cache, and presence. The Python face of the C++ service
"topics" that the cluster's head serves (docs/topics.md).

    tether.publish("sensors.kitchen.temp", 21.5)               # retained: later subscribers get it
    sub = tether.subscribe("sensors.*.temp", lambda subject, value: print(subject, value))
    for subject, value in tether.subscribe("sensors.#"): ...     # the iterator form

Patterns: `*` matches one segment, `#` any number of segments (even none). A service that calls
tether.announce(name) is present on "$presence.<name>" ({"present": True}) until it withdraws or
its process goes ({"present": False})."""
from __future__ import annotations

import asyncio
import queue
import threading

from ._private import head
from ._private.head import MSGPACK as _MSGPACK


def _call(method: str, *args, address=None, secret=None, timeout=60.0):
    uri, secret_value = head.service_uri("topics", address, secret)
    return head.channels.get(uri, secret_value).call("topics", method, args, None, timeout, _MSGPACK)


def publish(subject: str, value, retain: bool = True, *, address: str | None = None, secret=None) -> None:
    """Sends `value` to every subscriber of a matching pattern; with `retain`, a subscriber that
    comes later gets it too (the subject's last value)."""
    _call("publish", subject, value, bool(retain), address=address, secret=secret)


def retained(pattern: str, *, address: str | None = None, secret=None) -> dict:
    """The last retained value of every subject that matches `pattern`, now."""
    return _call("retained", pattern, address=address, secret=secret)


def subscribe(pattern: str, callback=None, *, address: str | None = None, secret=None) -> "Subscription":
    """Subscribes to the subjects matching `pattern`: the retained values come first, then each
    published message, in order. With `callback(subject, value)`, it runs for each (on a thread of
    tether's); without, iterate over the Subscription for (subject, value) pairs."""
    return Subscription(pattern, callback, address, secret)


def announce(name: str, *, address: str | None = None, secret=None) -> "Announcement":
    """Makes this process present as `name` on "$presence.<name>" until withdraw() or its exit."""
    return Announcement(name, address, secret)


class _Sink:
    """The object the service sends messages to: numbered, so they are handed on in order."""

    def __init__(self, callback):
        self._callback = callback
        self.queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._next = 1
        self._early: dict = {}
        self._gap_timer = None
        self.closed = False

    def message(self, subscription: int, number: int, subject: str, value) -> None:
        with self._lock:
            self._early[number] = (subject, value)
            self._hand_on()

    def _hand_on(self) -> None:
        while self._next in self._early:
            item = self._early.pop(self._next)
            self._next += 1
            if self.closed:
                continue
            if self._callback is None:
                self.queue.put(item)
            else:
                try:
                    self._callback(*item)
                except Exception:  # a failing callback must not stop the others
                    import traceback
                    traceback.print_exc()
        if self._early and self._gap_timer is None:
            # A message this process could not decode (a registered type it does not know) never
            # arrives: after a second, the ones behind it go on without it.
            self._gap_timer = threading.Timer(_GAP_WAIT, self._skip_gap, args=(self._next,))
            self._gap_timer.daemon = True
            self._gap_timer.start()

    def _skip_gap(self, missing: int) -> None:
        with self._lock:
            self._gap_timer = None
            if self._next == missing and self._early:
                self._next = min(self._early)
            self._hand_on()


_CLOSED = object()
_GAP_WAIT = 1.0  # seconds a missing message is waited for


class Subscription:
    """A subscription: iterate (or async iterate) over (subject, value) pairs; close() ends it."""

    def __init__(self, pattern: str, callback, address, secret):
        self.pattern = pattern
        self._uri, self._secret = head.service_uri("topics", address, secret)
        self._sink = _Sink(callback)
        channel = head.channels.get(self._uri, self._secret)
        sink_id = channel.export(self._sink, {"message"})
        self._id = channel.call("topics", "subscribe", (pattern, sink_id), None, 60.0, _MSGPACK)

    def __iter__(self):
        return self

    def __next__(self):
        return self.get()

    def get(self, timeout: float | None = None):
        """The next (subject, value); TimeoutError if none came in time; StopIteration once closed."""
        if self._sink.closed and self._sink.queue.empty():
            raise StopIteration
        try:
            item = self._sink.queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no message on {self.pattern!r} within {timeout} s") from None
        if item is _CLOSED:
            raise StopIteration
        return item

    def __aiter__(self):
        return self

    async def __anext__(self):
        # StopIteration cannot cross a Future: the executor returns a marker instead.
        item = await asyncio.get_running_loop().run_in_executor(None, self._get_or_end)
        if item is _CLOSED:
            raise StopAsyncIteration
        return item

    def _get_or_end(self):
        try:
            return self.get()
        except StopIteration:
            return _CLOSED

    def close(self) -> None:
        if self._sink.closed:
            return
        self._sink.closed = True
        self._sink.queue.put(_CLOSED)
        try:
            head.channels.get(self._uri, self._secret).call_oneway("topics", "unsubscribe", (self._id,), None, _MSGPACK)
        except Exception:
            pass  # the head is gone: so is the subscription

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Announcement:
    """This process's presence as a service; withdraw() (or leaving the with block) ends it."""

    def __init__(self, name: str, address, secret):
        self.name = name
        self._uri, self._secret = head.service_uri("topics", address, secret)
        self._id = head.channels.get(self._uri, self._secret).call("topics", "announce", (name,), None, 60.0, _MSGPACK)
        self._withdrawn = False

    def withdraw(self) -> None:
        if not self._withdrawn:
            self._withdrawn = True
            head.channels.get(self._uri, self._secret).call_oneway("topics", "withdraw", (self._id,), None, _MSGPACK)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.withdraw()
