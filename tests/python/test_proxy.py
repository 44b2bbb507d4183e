"""Tests for tether.Proxy: sync calls, futures, asyncio, sharing, pipelining, timeouts and oneway."""

import asyncio
import concurrent.futures
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import tether


@tether.expose
class Service:
    def __init__(self):
        self.release = threading.Event()
        self.slow_finished = threading.Event()
        self.notes = []
        self.noted = threading.Event()
        self.oneway_entered = threading.Event()
        self.oneway_finished = threading.Event()

    def hello(self, name):
        return f"hello {name}"

    def add(self, a, b):
        return a + b

    def echo(self, value):
        return value

    def wait_for_release(self):
        try:
            return self.release.wait(30)
        finally:
            self.slow_finished.set()

    @tether.oneway
    def note(self, text):
        self.notes.append(text)
        self.noted.set()

    @tether.oneway
    def blocking_note(self):
        self.oneway_entered.set()
        try:
            self.release.wait(30)
        finally:
            self.oneway_finished.set()

    @tether.oneway
    def failing_note(self):
        raise ValueError("nobody hears this")


@pytest.fixture
def service(server):
    obj = Service()
    uri = server.register(obj, "service")
    try:
        yield obj, uri
    finally:
        obj.release.set()


def test_sync_call_returns_the_result(service, make_proxy):
    """A plain call blocks and returns the remote return value."""
    _, uri = service
    assert make_proxy(uri).hello("ann") == "hello ann"


def test_keyword_arguments_are_passed(service, make_proxy):
    """Keyword arguments travel by name."""
    _, uri = service
    assert make_proxy(uri).add(b=2, a=40) == 42


def test_future_is_a_concurrent_future_that_resolves(service, make_proxy):
    """.future() returns a tether.Future usable wherever a concurrent.futures.Future is."""
    _, uri = service
    future = make_proxy(uri).hello.future("ann")
    assert isinstance(future, tether.Future)
    assert isinstance(future, concurrent.futures.Future)
    assert future.result(timeout=10) == "hello ann"
    assert future.done()


def test_future_works_with_concurrent_futures_helpers(service, make_proxy):
    """wait(), as_completed() and done callbacks rely on the Future protocol being honoured."""
    _, uri = service
    proxy = make_proxy(uri)
    called = threading.Event()
    seen = []
    first = proxy.add.future(1, 2)
    first.add_done_callback(lambda f: (seen.append(f.result()), called.set()))
    second = proxy.add.future(3, 4)
    done, not_done = concurrent.futures.wait([first, second], timeout=10)
    assert not not_done
    assert {f.result() for f in done} == {3, 7}
    assert sorted(f.result() for f in concurrent.futures.as_completed([first, second], timeout=10)) == [3, 7]
    assert called.wait(10)
    assert seen == [3]


def test_future_is_awaitable_in_asyncio(service, make_proxy):
    """`await proxy.method.future(...)` works inside an event loop, alone and gathered."""
    _, uri = service
    proxy = make_proxy(uri)

    async def main():
        single = await asyncio.wait_for(proxy.hello.future("x"), 10)
        many = await asyncio.wait_for(
            asyncio.gather(*(proxy.add.future(i, 1) for i in range(50))), 10
        )
        return single, many

    single, many = asyncio.run(main())
    assert single == "hello x"
    assert many == [i + 1 for i in range(50)]


def test_many_threads_share_one_proxy(service, make_proxy):
    """8 threads x 200 calls through one proxy must each get their own correct answer."""
    _, uri = service
    proxy = make_proxy(uri)

    def worker(thread_index):
        wrong = []
        for i in range(200):
            result = proxy.add(thread_index * 1000, i)
            if result != thread_index * 1000 + i:
                wrong.append((thread_index, i, result))
        return wrong

    with ThreadPoolExecutor(8) as pool:
        outcomes = [pool.submit(worker, t) for t in range(8)]
        wrong = [w for o in outcomes for w in o.result(timeout=60)]
    assert wrong == []


def test_many_threads_mixing_futures_and_sync_calls(service, make_proxy):
    """Futures and sync calls from several threads on one proxy must not cross replies."""
    _, uri = service
    proxy = make_proxy(uri)

    def worker(t):
        futures = [proxy.echo.future((t, i)) for i in range(100)]
        syncs = [proxy.echo((t, -i)) for i in range(20)]
        return [f.result(timeout=30) for f in futures], syncs

    with ThreadPoolExecutor(4) as pool:
        outcomes = [pool.submit(worker, t) for t in range(4)]
        for t, outcome in enumerate(outcomes):
            futures, syncs = outcome.result(timeout=60)
            assert futures == [(t, i) for i in range(100)]
            assert syncs == [(t, -i) for i in range(20)]


def test_pipelined_futures_all_resolve_to_the_right_values(service, make_proxy):
    """2000 outstanding requests from one thread are matched to their replies by id."""
    _, uri = service
    proxy = make_proxy(uri, timeout=60)
    futures = [proxy.echo.future(i) for i in range(2000)]
    assert [f.result(timeout=60) for f in futures] == list(range(2000))


def test_call_exceeding_the_timeout_raises_call_timeout_error(service, make_proxy):
    """A call that outlives the proxy timeout fails with CallTimeoutError instead of hanging."""
    _, uri = service
    proxy = make_proxy(uri, timeout=0.3)
    with pytest.raises(tether.CallTimeoutError) as excinfo:
        proxy.wait_for_release()
    assert isinstance(excinfo.value, TimeoutError)
    assert isinstance(excinfo.value, tether.TetherError)


def test_future_of_a_timed_out_call_fails_with_call_timeout_error(service, make_proxy):
    """The future form obeys the proxy timeout too."""
    _, uri = service
    future = make_proxy(uri, timeout=0.3).wait_for_release.future()
    assert isinstance(future.exception(timeout=10), tether.CallTimeoutError)


def test_late_reply_after_a_timeout_is_dropped(service, make_proxy):
    """The reply to a timed-out call must not be delivered as the answer to a later call."""
    obj, uri = service
    proxy = make_proxy(uri, timeout=1.0)
    with pytest.raises(tether.CallTimeoutError):
        proxy.wait_for_release()
    obj.release.set()
    assert obj.slow_finished.wait(10)
    assert [proxy.echo(i) for i in range(20)] == list(range(20))


def test_oneway_call_returns_none_without_waiting(service, make_proxy):
    """A oneway call returns while the method is still running (the server holds it until we release)."""
    obj, uri = service
    proxy = make_proxy(uri, timeout=10)
    assert proxy.blocking_note() is None
    assert obj.oneway_entered.wait(10)
    assert not obj.oneway_finished.is_set()
    obj.release.set()
    assert obj.oneway_finished.wait(10)


def test_oneway_method_runs_on_the_server(service, make_proxy):
    """A oneway call still delivers its arguments and runs the method."""
    obj, uri = service
    proxy = make_proxy(uri)
    assert proxy.note("remember me") is None
    assert obj.noted.wait(10)
    assert obj.notes == ["remember me"]


def test_oneway_errors_reach_the_servers_unraisablehook_not_the_caller(service, make_proxy):
    """A oneway call has no reply, so the caller never sees its exception; the server reports it
    to its sys.unraisablehook, naming the method."""
    _, uri = service
    reported = []
    seen = threading.Event()

    def hook(report):
        reported.append((report.exc_type, str(report.exc_value), report.object))
        seen.set()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "unraisablehook", hook)
        proxy = make_proxy(uri)
        assert proxy.failing_note() is None
        assert proxy.hello("after") == "hello after"
        assert seen.wait(30), "the server did not report the oneway call's exception"
    [(exc_type, message, where)] = reported
    assert exc_type is ValueError and message == "nobody hears this"
    assert where.__name__ == "failing_note"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connecting_to_a_closed_port_raises_communication_error():
    """Nobody listening must surface as CommunicationError, not a raw OSError or a hang."""
    uri = f"tether://127.0.0.1:{free_port()}/nothing"
    with pytest.raises(tether.CommunicationError):
        with tether.Proxy(uri, timeout=5) as proxy:
            proxy.hello("x")


def test_proxy_is_a_context_manager(service):
    """`with tether.Proxy(...)` yields a working proxy and releases it on exit."""
    _, uri = service
    with tether.Proxy(uri, timeout=10) as proxy:
        assert proxy.hello("cm") == "hello cm"


def test_closed_proxy_releases_its_connection_for_the_server(service, make_proxy):
    """Opening and closing many proxies must not exhaust the server."""
    _, uri = service
    for i in range(50):
        proxy = tether.Proxy(uri, timeout=10)
        try:
            assert proxy.add(i, 0) == i
        finally:
            proxy.close()
    assert make_proxy(uri).hello("still") == "hello still"


def test_future_result_that_is_a_tuple_stays_one_tuple(service, make_proxy):
    """A future's result is passed to set_result as one value: a tuple must not be unpacked."""
    _, uri = service
    proxy = make_proxy(uri)
    assert proxy.echo.future((1, 2, 3)).result(timeout=10) == (1, 2, 3)
    assert proxy.echo.future(()).result(timeout=10) == ()


def test_proxy_to_a_missing_object_raises_no_such_object(server, make_proxy):
    """A name the server does not have fails with NoSuchObjectError, a TetherError and a LookupError."""
    proxy = make_proxy(server.uri("nobody-here"))
    with pytest.raises(tether.NoSuchObjectError) as excinfo:
        proxy.anything()
    assert isinstance(excinfo.value, LookupError)
    assert "nobody-here" in str(excinfo.value)
