"""Tests across two processes over real TCP: a server in a child process, called from this one."""

import os

import numpy as np
import pytest

import tether

SERVER_SCRIPT = r"""
import os, sys
import tether

secret = sys.argv[1].encode() if len(sys.argv) > 1 else None

@tether.expose
class Calc:
    def add(self, a, b):
        return a + b

    def pid(self):
        return os.getpid()

    def run(self, cb, n):
        return [cb(i) for i in range(n)]

    def fail_remotely(self):
        raise ZeroDivisionError("remote division")

    def echo(self, value):
        return value

    def apply(self, fn, x):
        return fn(x)

    def count(self, n):
        yield from range(n)

with tether.Server(host="127.0.0.1", port=0, secret=secret, allow_pickle=secret is not None) as server:
    print(server.register(Calc(), "calc"), flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def remote_uri(spawn):
    child = spawn(["-c", SERVER_SCRIPT])
    uri = child.readline(timeout=30)
    assert uri.startswith("tether://127.0.0.1:") and uri.endswith("/calc"), uri
    return uri


def test_call_runs_in_the_other_process(remote_uri, make_proxy):
    """A call reaches a different process and returns its result."""
    proxy = make_proxy(remote_uri)
    assert proxy.add(2, 3) == 5
    remote_pid = proxy.pid()
    assert isinstance(remote_pid, int)
    assert remote_pid != os.getpid()


def test_callback_runs_in_the_calling_process(remote_uri, make_proxy):
    """The remote server calls our function back over the same connection; it runs here."""
    proxy = make_proxy(remote_uri)
    seen = []

    def cb(i):
        seen.append(i)
        return (os.getpid(), i * 10)

    assert proxy.run(cb, 4) == [(os.getpid(), 0), (os.getpid(), 10), (os.getpid(), 20), (os.getpid(), 30)]
    assert seen == [0, 1, 2, 3]


def test_remote_exception_crosses_processes_with_traceback(remote_uri, make_proxy):
    """Error types and tracebacks survive a real process boundary."""
    with pytest.raises(ZeroDivisionError) as excinfo:
        make_proxy(remote_uri).fail_remotely()
    assert "fail_remotely" in excinfo.value.remote_traceback
    assert "remote division" in str(excinfo.value)


def test_large_values_cross_real_sockets(remote_uri, make_proxy):
    """Segments (big bytes, numpy) survive real TCP, where writes and reads are partial."""
    proxy = make_proxy(remote_uri, timeout=60)
    data = os.urandom(8 * 1024 * 1024)
    assert proxy.echo(data) == data
    array = np.random.default_rng(7).standard_normal((500, 300))
    result = proxy.echo(array)
    assert result.dtype == array.dtype and result.shape == array.shape
    assert np.array_equal(result, array)


def test_stream_crosses_processes(remote_uri, make_proxy):
    """Flow-controlled streams work between processes."""
    assert list(make_proxy(remote_uri, timeout=60).count(5000)) == list(range(5000))


def test_pipelined_calls_over_real_tcp(remote_uri, make_proxy):
    """Pipelined futures from one proxy over real TCP all resolve correctly."""
    proxy = make_proxy(remote_uri, timeout=60)
    futures = [proxy.add.future(i, i) for i in range(1000)]
    assert [f.result(timeout=60) for f in futures] == [2 * i for i in range(1000)]


def test_pickled_lambda_runs_in_the_server_process(spawn, make_proxy):
    """With a shared secret and pickle allowed, a closure is shipped by value to another process."""
    child = spawn(["-c", SERVER_SCRIPT, "shared-secret"])
    uri = child.readline(timeout=30)
    proxy = make_proxy(uri, secret=b"shared-secret", encoding="pickle")
    factor = 3
    value, pid = proxy.apply(lambda x: (x * factor, os.getpid()), 5)
    assert value == 15
    assert pid != os.getpid()


def test_server_process_exits_cleanly_when_told_to_stop(spawn):
    """Closing a server (here via the child's `with` block) lets its process exit with status 0."""
    child = spawn(["-c", SERVER_SCRIPT])
    uri = child.readline(timeout=30)
    with tether.Proxy(uri, timeout=10) as proxy:
        assert proxy.add(1, 1) == 2
    assert child.close_stdin_and_wait(timeout=20) == 0, child.stderr_text()
