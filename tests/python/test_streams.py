"""Tests for generator methods: results stream item by item, with flow control and cancellation."""

import threading
import time

import pytest

import tether


@tether.expose
class Streams:
    def __init__(self):
        self.release = threading.Event()
        self.stopped = threading.Event()

    def count(self, n):
        yield from range(n)

    def chunks(self, size, n):
        for i in range(n):
            yield bytes([i % 256]) * size

    def gated(self):
        yield "first"
        # True only if the caller saw "first" before this generator finished.
        yield self.release.wait(20)

    def forever(self):
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            self.stopped.set()

    def fails_after(self, n):
        yield from range(n)
        raise ValueError("stream broke")

    def echo(self, value):
        return value

    def counted(self, n):
        for i in range(n):
            self.produced = i + 1
            yield i

    produced = 0


@pytest.fixture
def streams(server):
    obj = Streams()
    uri = server.register(obj, "streams")
    try:
        yield obj, uri
    finally:
        obj.release.set()


def test_generator_method_returns_an_iterator_of_all_items(streams, make_proxy):
    """10_000 items exceed the initial credit, so this also exercises stream flow control."""
    _, uri = streams
    result = make_proxy(uri, timeout=60).count(10_000)
    assert iter(result) is result
    assert list(result) == list(range(10_000))


def test_empty_generator_yields_nothing(streams, make_proxy):
    """A stream that ends at once is an empty iterator, not an error or a None."""
    _, uri = streams
    assert list(make_proxy(uri).count(0)) == []


def test_items_arrive_before_the_generator_finishes(streams, make_proxy):
    """Streaming means the caller sees early items while the generator is still running."""
    obj, uri = streams
    items = make_proxy(uri, timeout=30).gated()
    assert next(items) == "first"
    obj.release.set()
    assert list(items) == [True]


def test_large_bytes_items_stream_intact(streams, make_proxy):
    """Items above the out-of-band segment threshold arrive whole and in order."""
    _, uri = streams
    received = list(make_proxy(uri, timeout=60).chunks(100_000, 40))
    assert len(received) == 40
    for i, chunk in enumerate(received):
        assert chunk == bytes([i]) * 100_000


def test_breaking_early_and_closing_stops_the_remote_generator(streams, make_proxy):
    """Abandoning an endless stream must cancel it on the server, not leave it producing."""
    obj, uri = streams
    proxy = make_proxy(uri)
    items = proxy.forever()
    taken = []
    for item in items:
        taken.append(item)
        if len(taken) == 100:
            break
    items.close()
    assert taken == list(range(100))
    assert obj.stopped.wait(10), "server generator was not closed after the caller gave up"
    assert proxy.echo("after") == "after"


def test_closing_the_proxy_stops_an_open_stream(streams):
    """A connection that goes away must release the generators it was consuming."""
    obj, uri = streams
    proxy = tether.Proxy(uri, timeout=10)
    try:
        items = proxy.forever()
        assert next(items) == 0
    finally:
        proxy.close()
    assert obj.stopped.wait(10)


def test_error_inside_a_generator_arrives_after_the_items_before_it(streams, make_proxy):
    """Items yielded before a failure are delivered, then the remote exception is raised."""
    _, uri = streams
    proxy = make_proxy(uri)
    items = proxy.fails_after(3)
    received = []
    with pytest.raises(ValueError, match="stream broke") as excinfo:
        for item in items:
            received.append(item)
    assert received == [0, 1, 2]
    assert "fails_after" in excinfo.value.remote_traceback
    assert proxy.echo(1) == 1


def test_two_streams_interleave_on_one_proxy(streams, make_proxy):
    """Several open streams on one connection are kept apart by request id."""
    _, uri = streams
    proxy = make_proxy(uri, timeout=30)
    first, second = proxy.count(1000), proxy.count(500)
    pairs = list(zip(first, second))
    assert pairs == [(i, i) for i in range(500)]
    assert list(first) == list(range(501, 1000))
    assert list(second) == []


def test_plain_calls_work_while_a_stream_is_open(streams, make_proxy):
    """An unfinished stream must not block other calls on the same proxy."""
    _, uri = streams
    proxy = make_proxy(uri, timeout=30)
    items = proxy.count(300)
    assert [next(items) for _ in range(10)] == list(range(10))
    assert proxy.echo("between") == "between"
    assert list(items) == list(range(10, 300))


def test_a_slow_consumer_holds_the_producer_back(streams, make_proxy):
    """Credit flow control: while the caller holds off, the generator runs at most the initial
    credit (64 items) ahead, instead of filling memory; reading on lets it finish."""
    obj, uri = streams
    proxy = make_proxy(uri)
    items = proxy.counted(10_000)
    assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # time for a producer without flow control to run away
        time.sleep(0.05)
    assert obj.produced <= 64 + 1, f"producer ran {obj.produced} items ahead"
    assert list(items) == list(range(5, 10_000))
    assert obj.produced == 10_000


def test_calls_beside_a_stream_waiting_for_credit_never_deadlock(streams, make_proxy):
    """Regression: a stream waiting for credit held a lock while taking the GIL back, and a call
    arriving then could deadlock the server. Fifty rounds make the race likely to show."""
    _, uri = streams
    for _ in range(50):
        with make_proxy(uri, timeout=10) as proxy:
            items = proxy.count(300)
            assert [next(items) for _ in range(10)] == list(range(10))
            assert proxy.echo("between") == "between"
            assert list(items) == list(range(10, 300))
