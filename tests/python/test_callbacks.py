"""Tests for callbacks: functions and exposed objects passed as arguments are called back over the wire."""

import inspect

import pytest

import tether


@tether.expose
class Runner:
    def __init__(self):
        self.received = None

    def run(self, cb, n):
        self.received = cb
        return [cb(i) for i in range(n)]

    def feed(self, sink, n):
        for i in range(n):
            sink.add(i)
        return sink.total()

    def keep(self, cb):
        self.received = cb
        return True

    def fire(self, value):
        return self.received(value)

    def add(self, a, b):
        return a + b


@tether.expose
class Sink:
    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)

    def total(self):
        return sum(self.items)


@pytest.fixture
def runner(server):
    obj = Runner()
    return obj, server.register(obj, "runner")


def test_function_argument_is_called_back_in_the_caller(runner, make_proxy):
    """The server calls a passed function and each call runs here, in the caller's process."""
    obj, uri = runner
    calls = []

    def square(i):
        calls.append(i)
        return i * i

    assert make_proxy(uri).run(square, 5) == [0, 1, 4, 9, 16]
    assert calls == [0, 1, 2, 3, 4]
    assert obj.received is not square
    assert not inspect.isfunction(obj.received), "the server must get a proxy, not the function"


def test_exposed_object_argument_is_called_back(runner, make_proxy):
    """An @expose'd object passed as an argument becomes a remote reference to the caller's object."""
    _, uri = runner
    sink = Sink()
    assert make_proxy(uri).feed(sink, 10) == 45
    assert sink.items == list(range(10))


def test_exception_in_a_callback_propagates_through_the_server(runner, make_proxy):
    """A callback's failure reaches the server as an exception and, unhandled, comes back to the caller."""
    _, uri = runner

    def bad(i):
        raise ValueError(f"callback refused {i}")

    with pytest.raises(ValueError, match="callback refused 0"):
        make_proxy(uri).run(bad, 3)


def test_callback_can_call_the_server_again(runner, make_proxy):
    """Re-entrant calls (server -> callback -> server) on one connection must not deadlock."""
    _, uri = runner
    proxy = make_proxy(uri, timeout=30)
    assert proxy.run(lambda i: proxy.add(i, 100), 5) == [100, 101, 102, 103, 104]


def test_callback_kept_by_the_server_works_after_the_call_returned(runner, make_proxy):
    """Subscriptions: the server may store a callback and call it during a later request."""
    _, uri = runner
    proxy = make_proxy(uri)
    received = []

    def listener(value):
        received.append(value)
        return value * 2

    assert proxy.keep(listener) is True
    assert proxy.fire(21) == 42
    assert proxy.fire(5) == 10
    assert received == [21, 5]


def test_concurrent_calls_route_each_callback_to_its_own_function(runner, make_proxy):
    """Several outstanding calls that each call back must not mix up their callbacks."""
    _, uri = runner
    proxy = make_proxy(uri, timeout=30)
    futures = [proxy.run.future(lambda i, k=k: (k, i), 20) for k in range(8)]
    for k, future in enumerate(futures):
        assert future.result(timeout=30) == [(k, i) for i in range(20)]


class _PartlyExposed:
    @tether.expose
    def shown(self):
        return "shown"

    def hidden(self):
        return "hidden"


def test_a_callback_object_exposes_only_its_exposed_methods(server, make_proxy):
    """An object passed as a callback is reachable only through the methods it exposes."""

    @tether.expose
    class Caller:
        def call(self, callback, name):
            return getattr(callback, name)()

    proxy = make_proxy(server.register(Caller(), "caller"))
    assert proxy.call(_PartlyExposed(), "shown") == "shown"
    with pytest.raises(tether.TetherError):
        proxy.call(_PartlyExposed(), "hidden")
