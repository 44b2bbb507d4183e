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

import traceback

from ._private import head
from ._private.delivery import ItemStream, Numbered
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


class Subscription(ItemStream):
    """A subscription: iterate (or async iterate) over (subject, value) pairs, or get(timeout);
    close() ends it. With a callback, the messages go to it instead (in order, on a tether thread;
    an exception it raises is printed and the next messages still come)."""

    def __init__(self, pattern: str, callback, address, secret):
        super().__init__(f"topic pattern {pattern!r}")
        self.pattern = pattern
        self._callback = callback
        self._uri, self._secret = head.service_uri("topics", address, secret)
        # A message this process cannot decode never arrives: the ones behind it wait a second.
        self._numbered = Numbered(self._hand_on, gap_wait=1.0)
        channel = head.channels.get(self._uri, self._secret)
        sink_id = channel.export(self, {"message"})
        self._id = channel.call("topics", "subscribe", (pattern, sink_id), None, 60.0, _MSGPACK)

    def message(self, subscription: int, number: int, subject: str, value) -> None:
        """Called by the head (oneway), numbered."""
        self._numbered.arrived(number, (subject, value))

    def _hand_on(self, item) -> None:
        if self.ended:
            return
        if self._callback is None:
            return self.put(item)
        try:
            self._callback(*item)
        except Exception:  # a failing callback must not stop the others
            traceback.print_exc()

    def close(self) -> None:
        if self.ended:
            return
        self.end()
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
