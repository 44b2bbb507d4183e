"""Tests for `async def` methods on the server: awaited results, concurrency and cancellation."""

import asyncio
import threading

import pytest

import tether


@tether.expose
class AsyncService:
    def __init__(self):
        self.entered = threading.Event()
        self.cancelled = threading.Event()

    async def double(self, x):
        await asyncio.sleep(0)
        return 2 * x

    async def slow_double(self, x):
        await asyncio.sleep(0.2)
        return 2 * x

    async def fail_async(self):
        await asyncio.sleep(0)
        raise KeyError("async missing")

    async def wait_until_cancelled(self):
        self.entered.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "not cancelled"

    def sync_method(self):
        return "sync"


@pytest.fixture
def service(server):
    obj = AsyncService()
    return obj, server.register(obj, "async")


def test_sync_call_of_async_method_gets_the_awaited_result(service, make_proxy):
    """The caller gets the coroutine's result, never a coroutine object."""
    _, uri = service
    assert make_proxy(uri).double(21) == 42


def test_sync_and_async_methods_coexist_on_one_object(service, make_proxy):
    """An object may mix plain and async methods."""
    _, uri = service
    proxy = make_proxy(uri)
    assert proxy.sync_method() == "sync"
    assert proxy.double(2) == 4


def test_many_concurrent_async_calls_all_complete_correctly(service, make_proxy):
    """Fifty sleeping coroutines in flight at once must each return their own result."""
    _, uri = service
    proxy = make_proxy(uri, timeout=30)
    futures = [proxy.slow_double.future(i) for i in range(50)]
    assert [f.result(timeout=30) for f in futures] == [2 * i for i in range(50)]


def test_async_methods_awaited_from_client_event_loop(service, make_proxy):
    """Client-side asyncio and server-side coroutines compose: gather many awaited futures."""
    _, uri = service
    proxy = make_proxy(uri, timeout=30)

    async def main():
        return await asyncio.wait_for(
            asyncio.gather(*(proxy.slow_double.future(i) for i in range(20))), 30
        )

    assert asyncio.run(main()) == [2 * i for i in range(20)]


def test_exception_in_async_method_arrives_as_builtin_type(service, make_proxy):
    """Errors from coroutines cross the wire like errors from plain methods."""
    _, uri = service
    with pytest.raises(KeyError) as excinfo:
        make_proxy(uri).fail_async()
    assert excinfo.value.args == ("async missing",)
    assert "fail_async" in excinfo.value.remote_traceback


def test_timed_out_call_cancels_the_remote_coroutine(service, make_proxy):
    """When the caller gives up, the server cancels the coroutine instead of letting it run on."""
    obj, uri = service
    with pytest.raises(tether.CallTimeoutError):
        make_proxy(uri, timeout=0.3).wait_until_cancelled()
    assert obj.cancelled.wait(10), "remote coroutine was not cancelled"


def test_cancelling_the_future_cancels_the_remote_coroutine(service, make_proxy):
    """future.cancel() sends CANCEL, so the server stops the coroutine."""
    obj, uri = service
    proxy = make_proxy(uri, timeout=30)
    future = proxy.wait_until_cancelled.future()
    assert obj.entered.wait(10)
    assert future.cancel()
    assert future.cancelled()
    assert obj.cancelled.wait(10), "remote coroutine was not cancelled"
    assert proxy.double(1) == 2


def test_an_async_call_finishing_after_its_server_closed_is_harmless(make_proxy):
    """A coroutine still running when its server closes must be harmless to cancel and to finish.
    Regression: the caller's CANCEL (its timeout) ran the future's cancel() while the connection
    closed underneath and cleared the table it came from, a crash about 1 run in 40 (found with
    AddressSanitizer). Run in a child process, so a crash is a failure, not a lost test run."""
    import gc
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import asyncio, gc, threading, tether
        gate = threading.Event()
        started = threading.Event()

        @tether.expose
        class Slow:
            async def wait(self):
                started.set()
                while not gate.is_set():
                    await asyncio.sleep(0.01)
                return "late"

        server = tether.Server(host="127.0.0.1", port=0)
        uri = server.register(Slow(), "slow")
        proxy = tether.Proxy(uri, timeout=0.2)
        try:
            proxy.wait()
        except tether.CallTimeoutError:
            pass
        assert started.wait(10)
        proxy.close()
        server.close()
        gate.set()                 # the coroutine now answers on a connection of a closed server
        for _ in range(50):
            gc.collect()
            threading.Event().wait(0.01)
        print("survived", flush=True)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "survived" in result.stdout
