"""Process groups, as Spread's: members join a named group, receive views (who is in it, who joined,
who left and why) and messages in one order that every member sees, with Spread's service levels.
The Python face of the C++ service "groups" that the cluster's head serves (docs/groups.md).

    with tether.Group("chat") as group:
        group.send("hello", order="agreed")
        for item in group:             # tether.View or tether.Message, in the group's order
            ...
"""
from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any

from . import errors
from ._private import head
from ._private.delivery import ItemStream, Numbered
from ._private.head import MSGPACK as _MSGPACK

ORDERS = ("unreliable", "reliable", "fifo", "causal", "agreed", "safe")


@dataclasses.dataclass(frozen=True)
class View:
    """A membership view: the same members in the same order at every member."""

    id: int
    members: tuple
    joined: tuple
    left: tuple  # (name, reason) pairs; reason is "leave" or "disconnect"


@dataclasses.dataclass(frozen=True)
class Message:
    sender: str  # the sender's private name
    data: Any
    order: str


class Group(ItemStream):
    """A membership of the group `name` (joined on creation). A member that stays silent longer
    than `failure_timeout` seconds (its process stopped, or its machine cut off) is removed with
    reason "disconnect"; tether sends heartbeats for a live one."""

    def __init__(self, name: str, *, failure_timeout: float = 5.0, address: str | None = None, secret=None):
        if not isinstance(failure_timeout, (int, float)) or not 0 < failure_timeout <= 3600:
            raise ValueError("failure_timeout must be between 0 and 3600 seconds")
        super().__init__(f"group {name!r}")
        self.name = name
        self._uri, self._secret = head.service_uri("groups", address, secret)
        self._channel = head.channels.get(self._uri, self._secret)
        self._state = threading.Condition()
        self._view: View | None = None
        self._flushing = False
        self._sending = 0            # sends being made now
        self._pending = collections.deque()  # futures of sends made with wait=False, oldest first
        self._left = False
        self._held: list = []        # events behind a safe message not yet released
        self._released: set = set()  # safe messages released before they came up
        self._numbered = Numbered(self._on_events)
        self._joined = threading.Event()  # events may come before join's answer is read
        sink = self._channel.export(self, {"events"})
        info = self._channel.call("groups", "join", (name, sink, float(failure_timeout)), None, 60.0, _MSGPACK)
        self.member_id, self.private_name = info["member"], info["name"]
        self._joined.set()
        self._heartbeat = threading.Thread(target=self._beat, args=(failure_timeout / 4,), daemon=True,
                                           name=f"tether-group-{name}")
        self._heartbeat.start()
        with self._state:
            if not self._state.wait_for(lambda: self._view is not None, timeout=60):
                raise TimeoutError(f"joining group {name!r}: no view came within 60 s")

    # ---- sending ----

    def send(self, data, order: str = "agreed", *, to: str | None = None, self_discard: bool = False,
             wait: bool = True):
        """Sends `data` to every member (or to the member whose private name is `to`). With
        wait=False it returns at once a future that completes once the head has sequenced it
        (sends pipeline; their order is kept)."""
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}: one of {', '.join(ORDERS)}")
        state = self._state
        with state:
            if self._flushing:
                state.wait_for(lambda: not self._flushing or self._left)
            if self._left:
                raise ValueError(f"send after leave: this member left group {self.name!r}")
            self._sending += 1
        args = (self.name, self.member_id, data, order, to, bool(self_discard))
        if not wait:
            try:
                future = self._channel.call_future("groups", "send", args, None, None, _MSGPACK)
            except BaseException:
                self._sent()
                raise
            self._sent(future)
            return future
        try:
            self._channel.call("groups", "send", args, None, 60.0, _MSGPACK)
        finally:
            self._sent()

    def _sent(self, future=None) -> None:
        # A flush waits for the futures of sends made with wait=False (no callback per send: that
        # made each future build its condition and complete through the slow path).
        with self._state:
            self._sending -= 1
            if future is not None:
                pending = self._pending
                while pending and pending[0].done():
                    pending.popleft()
                pending.append(future)
            if self._flushing:
                self._state.notify_all()

    # ---- receiving ----

    def receive(self, timeout: float | None = None):
        """The next View or Message; TimeoutError if none came in time; StopIteration after leave."""
        return self.get(timeout)

    def events(self, number: int, batch: list) -> None:
        """Called by the head (oneway): a numbered batch of [kind, ...] events."""
        self._joined.wait(60)  # acks and flushes name this member
        self._numbered.arrived(number, batch)

    def _on_events(self, batch: list) -> None:
        for event in batch:
            # The common case first: a message that is not safe, with nothing held before it.
            if event[0] == "message" and not event[5] and not self._held:
                self.put(Message(event[2], event[3], event[4]))
            else:
                self._on_event(event[0], event[1:])

    @property
    def members(self) -> tuple:
        """The members of the latest view this member installed."""
        return self._view.members if self._view else ()

    @property
    def view(self) -> View | None:
        return self._view

    # ---- leaving ----

    def leave(self) -> None:
        with self._state:
            if self._left:
                return
            self._left = True
            self._state.notify_all()
        try:
            self._channel.call("groups", "leave", (self.name, self.member_id), None, 60.0, _MSGPACK)
        finally:
            self.end()

    close = leave

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.leave()

    # ---- events from the head (in order, on one of tether's threads) ----

    def _on_event(self, kind: str, body) -> None:
        if kind == "flush":
            with self._state:
                self._flushing = True
            threading.Thread(target=self._flush, daemon=True).start()
        elif kind == "view":
            view_id, members, joined, left = body
            view = View(view_id, tuple(members), tuple(joined), tuple((n, r) for n, r in left))
            with self._state:
                self._view = view
                self._flushing = False
                self._state.notify_all()
            self._deliver(view)
        elif kind == "message":
            seq, sender, data, order, safe = body
            if safe:
                self._channel.call_oneway("groups", "ack", (self.name, self.member_id, seq), None, _MSGPACK)
            self._deliver(Message(sender, data, order), seq if safe else None)
        elif kind == "safe":
            self._released.add(body[0])
            self._deliver_held()
        elif kind == "removed":
            # Failure detection took this member out (it was silent too long): what came before
            # is delivered, then receive raises.
            with self._state:
                self._left = True
                self._state.notify_all()
            self.fail(errors.ConnectionClosedError(
                f"this member was removed from group {self.name!r}: no sign of life within its failure_timeout"))

    def _flush(self) -> None:
        # Everything this member sent in the old view has been answered (so it reached the head)
        # before it says flushed; new sends wait for the new view.
        with self._state:
            self._state.wait_for(lambda: self._sending == 0)
            pending = list(self._pending)
        for future in pending:
            try:
                future.result()
            except BaseException:
                pass  # a send that failed reached the head or never will: either way it is done
        self._channel.call_oneway("groups", "flushed", (self.name, self.member_id), None, _MSGPACK)

    def _deliver(self, item, safe_seq=None) -> None:
        self._held.append((item, safe_seq))
        self._deliver_held()

    def _deliver_held(self) -> None:
        # A safe message waits until every member has it, and whatever came after it waits too.
        while self._held:
            item, safe_seq = self._held[0]
            if safe_seq is not None and safe_seq not in self._released:
                return
            self._released.discard(safe_seq)
            self._held.pop(0)
            self.put(item)

    def _beat(self, interval: float) -> None:
        while True:
            with self._state:
                if self._state.wait_for(lambda: self._left, timeout=interval):
                    return
            try:
                if not self._channel.is_open:
                    raise errors.ConnectionClosedError("the connection to the group's head closed")
                self._channel.call_oneway("groups", "alive", (self.name, self.member_id), None, _MSGPACK)
            except errors.TetherError as exc:
                # The head is gone, and the group with it: receive raises instead of waiting.
                with self._state:
                    self._left = True
                    self._state.notify_all()
                self.fail(errors.ConnectionClosedError(f"group {self.name!r} is gone: {exc}"))
                return

    def __repr__(self):
        return f"Group({self.name!r}, as {self.private_name!r})"
