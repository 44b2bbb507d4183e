"""Network faults between a client and a server (docs/reliability.md): latency, a stall, a black
hole, a cut in the middle of a frame, a reset, an unreachable server, made by a FaultProxy
(faultproxy.py) on real TCP. Every call ends (with its result or a CommunicationError), no call
runs twice, the same Proxy reconnects for its next call, the server lets go of lost connections,
and a client connected to the server directly (the bystander) is served all along. At the end, a
driver cut off from its cluster.

The server runs in this process, so the test reads how many times each call ran (calls carry a
unique id); it is closed before those counts are read, so no request is still running then."""
import collections
import concurrent.futures
import itertools
import random
import threading
import time

import pytest

import tether
from conftest import CALL_TIMEOUT
from faultproxy import FaultProxy
from polling import eventually

# What a call that must end (fail or succeed) may take at most: its own timeout, plus this margin.
MARGIN = 10
PAYLOAD = 256 * 1024  # a request or reply of several chunks, so a cut can land inside it


@tether.expose
class Service:
    def __init__(self):
        self._lock = threading.Lock()
        self.runs = collections.Counter()
        self.gate = threading.Event()
        self.closed_streams = set()

    def _ran(self, call_id):
        with self._lock:
            self.runs[call_id] += 1

    def echo(self, value):
        return value

    def run(self, call_id, payload=b"", reply_size=0):
        """One counted run: the call's id, the size of what it was sent, `reply_size` bytes back."""
        self._ran(call_id)
        return call_id, len(payload), b"r" * reply_size

    def run_at_gate(self, call_id):
        self._ran(call_id)
        self.gate.wait(60)
        return call_id

    def run_until_disconnected(self, call_id, caller):
        """Runs until calling `caller` back fails, which tells that the connection closed."""
        self._ran(call_id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                caller()
            except tether.CommunicationError:
                break
            time.sleep(0.01)
        # The io thread that saw the close waits for the GIL to run Dispatcher::on_closed: it gets
        # it here, before the request queued behind this one starts.
        time.sleep(0.2)
        return call_id

    @tether.oneway
    def run_oneway(self, call_id):
        self._ran(call_id)

    def items(self, call_id, n):
        self._ran(call_id)
        try:
            yield from range(n)
        finally:
            self.closed_streams.add(call_id)


class Bystander:
    """A client connected to the server directly, calling it every few milliseconds on a thread of
    its own. `finish()` checks that it was served before, during and after the faults."""

    def __init__(self, uri):
        self._proxy = tether.Proxy(uri, timeout=CALL_TIMEOUT)
        self._stop = threading.Event()
        self.calls = 0
        self.errors = []
        assert self._proxy.echo("first") == "first"
        self._thread = threading.Thread(target=self._call_all_along, name="bystander")
        self._thread.start()

    def _call_all_along(self):
        for i in itertools.count():
            if self._stop.wait(0.01):
                return
            try:
                if self._proxy.echo(i) != i:
                    self.errors.append(f"call {i} returned another call's result")
                self.calls += 1
            except Exception as exc:
                self.errors.append(exc)

    def stop(self):
        self._stop.set()
        self._thread.join(CALL_TIMEOUT * 2)
        self._proxy.close()

    def finish(self):
        calls = self.calls
        served_after = eventually(lambda: self.calls > calls, timeout=CALL_TIMEOUT * 3)
        self.stop()
        assert not self._thread.is_alive(), "the bystander's call never ended"
        assert not self.errors, f"a client not behind the proxy saw errors: {self.errors[:3]}"
        assert served_after, "the server stopped serving a client not behind the proxy"


class Rig:
    """A server with one Service, a FaultProxy in front of it, and a Bystander."""

    def __init__(self, **server_options):
        self.service = Service()
        self.server = tether.Server(host="127.0.0.1", port=0, **server_options)
        self.server.register(self.service, "svc")
        self.faults = FaultProxy(self.server.address)
        self.uri = f"tether://{self.faults.address}/svc"
        self._proxies = []
        self._bystander = Bystander(self.server.uri("svc"))

    def proxy(self, **options):
        """A proxy through the FaultProxy, already connected (so faults hit its open connection)."""
        options.setdefault("timeout", CALL_TIMEOUT)
        proxy = tether.Proxy(self.uri, **options)
        self._proxies.append(proxy)
        assert proxy.echo("connected") == "connected"
        return proxy

    def finish(self, connections_let_go=True):
        """Checks that the server let go of every connection that went through the proxy (unless
        told not to) and that the bystander was served, then closes everything; returns how often
        each call id ran."""
        self.service.gate.set()
        for proxy in self._proxies:
            proxy.close()
        self.faults.close()
        if connections_let_go:
            assert eventually(lambda: self.server.connection_count == 1, timeout=CALL_TIMEOUT), \
                f"the server still holds {self.server.connection_count - 1} connections of faulty clients"
        self._bystander.finish()
        self.close()
        return self.service.runs

    def close(self):
        self.service.gate.set()
        self._bystander.stop()
        for proxy in self._proxies:
            proxy.close()
        self.faults.close()
        self.server.close()  # joins its dispatch threads: no request is running after this


@pytest.fixture
def make_rig():
    rigs = []

    def make(**server_options):
        rigs.append(Rig(**server_options))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


@pytest.fixture
def rig(make_rig):
    return make_rig()


def outcome(function, *args, limit=CALL_TIMEOUT + MARGIN):
    """Calls function(*args) on a thread: ("ok", value) or ("error", exception). Fails the test if
    it has not ended within `limit` seconds (the thread is then left behind: the failure is a hang)."""
    result = []

    def call():
        try:
            result.append(("ok", function(*args)))
        except BaseException as exc:
            result.append(("error", exc))

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(limit)
    assert result, f"{getattr(function, '__name__', function)} did not end within {limit} s"
    return result[0]


def call_after_loss(method, *args):
    """A call made right after the connection was lost. The client may not have read the end of the
    connection yet, so this one call may fail with ConnectionClosedError; then the next one, which
    sees the connection closed, reconnects."""
    try:
        return method(*args)
    except tether.ConnectionClosedError:
        return method(*args)


# ---- latency ----


def test_calls_under_latency_return_their_own_results(rig):
    """Latency changes when answers come, never which: sync calls, a pipelined burst of futures,
    a stream, large arguments and replies and oneway calls all arrive intact, each run once."""
    proxy = rig.proxy()
    rig.faults.delay(0.02)
    assert [proxy.run(f"sync-{i}")[0] for i in range(10)] == [f"sync-{i}" for i in range(10)]
    futures = [proxy.run.future(f"future-{i}") for i in range(200)]
    assert [f.result(CALL_TIMEOUT)[0] for f in futures] == [f"future-{i}" for i in range(200)]
    assert list(proxy.items("stream", 500)) == list(range(500))
    assert proxy.run("large", b"a" * PAYLOAD, PAYLOAD) == ("large", PAYLOAD, b"r" * PAYLOAD)
    for i in range(10):
        proxy.run_oneway(f"oneway-{i}")
    assert proxy.echo("after the oneways") == "after the oneways"  # served after them, in order
    assert eventually(lambda: all(rig.service.runs[f"oneway-{i}"] for i in range(10)))
    runs = rig.finish()
    assert set(runs.values()) == {1}
    assert len(runs) == 10 + 200 + 1 + 1 + 10


# ---- a stall (a partition that heals) and a black hole ----


def test_calls_into_a_stall_end_at_their_deadline_and_run_at_most_once(rig):
    """A sync call and futures sent into a stall end with CallTimeoutError at their deadline. When
    the stall heals, their requests reach the server late (which may run them, once) and their late
    replies are dropped: the proxy's next call gets its own result."""
    proxy = rig.proxy(timeout=1)
    rig.faults.stall()
    started = time.monotonic()
    with pytest.raises(tether.CallTimeoutError):
        proxy.run("stalled-sync")
    futures = [proxy.run.future(f"stalled-future-{i}") for i in range(20)]
    done, _ = concurrent.futures.wait(futures, timeout=1 + MARGIN)
    assert len(done) == 20, "a future sent into a stall outlived its deadline"
    assert all(isinstance(f.exception(), tether.CallTimeoutError) for f in futures)
    assert time.monotonic() - started < 2 + MARGIN
    assert rig.service.runs["stalled-sync"] == 0  # held by the proxy: the server never saw it
    rig.faults.resume()
    assert proxy.run("after") == ("after", 0, b"")
    assert rig.faults.accepted == 1, "the stall healed: the proxy needed no new connection"
    runs = rig.finish()
    assert runs["after"] == 1
    stalled = ["stalled-sync"] + [f"stalled-future-{i}" for i in range(20)]
    assert all(runs[call_id] <= 1 for call_id in stalled)


def test_a_call_into_a_black_hole_times_out_never_runs_and_the_proxy_reconnects_after_a_cut(rig):
    """Bytes lost in a black hole never reach the server, so the timed-out call never ran; once the
    dead connection is cut, the same proxy reconnects."""
    proxy = rig.proxy(timeout=1)
    rig.faults.stall(discard=True)
    with pytest.raises(tether.CallTimeoutError):
        proxy.run("lost")
    rig.faults.cut()
    rig.faults.resume()
    assert call_after_loss(proxy.run, "after") == ("after", 0, b"")
    assert rig.faults.accepted == 2
    runs = rig.finish()
    assert runs["lost"] == 0 and runs["after"] == 1


def test_a_connection_silent_past_the_idle_timeout_is_dropped_by_the_server(make_rig):
    """A stall that lasts longer than the server's idle timeout: the server closes the connection
    (its slot is free again), and when the stall heals the proxy reconnects."""
    rig = make_rig(heartbeat=0.2, idle_timeout=1.0)
    proxy = rig.proxy()
    assert rig.server.connection_count == 2  # the proxy's and the bystander's
    rig.faults.stall()
    assert eventually(lambda: rig.server.connection_count == 1, timeout=1 + MARGIN)
    rig.faults.resume()
    assert call_after_loss(proxy.run, "after") == ("after", 0, b"")
    assert rig.faults.accepted == 2
    assert rig.finish()["after"] == 1


# ---- cuts in the middle of a frame ----


@pytest.mark.parametrize("offset", [0, 16, 40, 4096])  # before the frame, in its header, its meta, its body
def test_a_request_cut_mid_frame_fails_with_connection_closed_and_never_runs(rig, offset):
    """The server never runs a request it did not receive whole; the caller learns that the
    connection closed, and the same proxy reconnects for its next call."""
    proxy = rig.proxy()
    rig.faults.cut_after(offset, "up")
    kind, error = outcome(proxy.run, "cut", b"a" * PAYLOAD)
    assert kind == "error" and isinstance(error, tether.ConnectionClosedError), error
    assert proxy.run("after") == ("after", 0, b"")
    assert rig.faults.accepted == 2
    runs = rig.finish()
    assert runs["cut"] == 0 and runs["after"] == 1


@pytest.mark.parametrize("offset", [0, 16, 40, 4096])
def test_a_reply_cut_mid_frame_fails_with_connection_closed_and_the_call_ran_once(rig, offset):
    """The request arrived whole, so the call ran, once; its reply was cut, so the caller gets
    ConnectionClosedError (the call may or may not have run: here it did), never a truncated result."""
    proxy = rig.proxy()
    rig.faults.cut_after(offset, "down")
    kind, error = outcome(proxy.run, "cut", b"", PAYLOAD)
    assert kind == "error" and isinstance(error, tether.ConnectionClosedError), error
    assert proxy.run("after") == ("after", 0, b"")
    runs = rig.finish()
    assert runs["cut"] == 1 and runs["after"] == 1


# ---- cuts, resets and an unreachable server: the same proxy reconnects ----


@pytest.mark.parametrize("fault", ["cut", "reset"])
def test_after_a_cut_or_a_reset_the_same_proxy_reconnects_for_its_next_calls(rig, fault):
    """An idle connection lost by a FIN or by a TCP reset: the proxy's next calls (sync, future,
    stream, oneway) go over a new connection."""
    proxy = rig.proxy()
    getattr(rig.faults, fault)()
    assert call_after_loss(proxy.run, "sync") == ("sync", 0, b"")
    assert proxy.run.future("future").result(CALL_TIMEOUT) == ("future", 0, b"")
    assert list(proxy.items("stream", 100)) == list(range(100))
    proxy.run_oneway("oneway")
    assert eventually(lambda: rig.service.runs["oneway"] == 1)
    assert rig.faults.accepted == 2 and rig.faults.open_connections() == 1
    runs = rig.finish()
    assert [runs[i] for i in ("sync", "future", "stream", "oneway")] == [1, 1, 1, 1]


def test_while_the_server_is_unreachable_calls_fail_at_once_and_the_proxy_reconnects_later(rig):
    """Connections are refused: each call fails with CommunicationError (it does not wait for its
    timeout) and runs nowhere. Once the server is reachable, the same proxy's next call works."""
    proxy = rig.proxy(timeout=30)
    rig.faults.refuse()
    rig.faults.cut()
    for i in range(3):
        kind, error = outcome(proxy.run, f"refused-{i}", limit=MARGIN)
        assert kind == "error" and isinstance(error, tether.CommunicationError), error
    rig.faults.resume()
    assert proxy.run("after") == ("after", 0, b"")
    runs = rig.finish()
    assert [runs[f"refused-{i}"] for i in range(3)] == [0, 0, 0] and runs["after"] == 1


def test_a_reconnect_into_a_stall_ends_at_its_connect_timeout(rig):
    """The connection is lost and the new one stalls in its handshake: the call ends with a
    CommunicationError by the proxy's connect_timeout, and the proxy connects once the stall heals."""
    proxy = rig.proxy(timeout=30, connect_timeout=1)
    rig.faults.stall()
    rig.faults.cut()
    kind, error = outcome(call_after_loss, proxy.run, "stalled", limit=1 + MARGIN)
    assert kind == "error" and isinstance(error, tether.CommunicationError), error
    rig.faults.resume()
    assert proxy.run("after") == ("after", 0, b"")
    runs = rig.finish()
    assert runs["stalled"] == 0 and runs["after"] == 1


# ---- what is in flight during a cut ----


def test_futures_in_flight_during_a_cut_all_end_and_none_runs_twice(rig):
    """Futures waiting on the server and futures still on the wire when the connection is cut:
    each ends, with its own result or ConnectionClosedError; none is left pending."""
    proxy = rig.proxy()
    gated = [proxy.run_at_gate.future(f"gated-{i}") for i in range(4)]  # fewer than dispatch threads
    assert eventually(lambda: sum(rig.service.runs.values()) == 4)
    burst = [proxy.run.future(f"burst-{i}", b"b" * 1024) for i in range(300)]
    rig.faults.cut()
    done, pending = concurrent.futures.wait(gated + burst, timeout=CALL_TIMEOUT + MARGIN)
    assert not pending, f"{len(pending)} futures never ended after the cut"
    for i, future in enumerate(burst):
        error = future.exception()
        assert error is None and future.result()[0] == f"burst-{i}" or isinstance(error, tether.ConnectionClosedError)
    assert all(isinstance(f.exception(), tether.ConnectionClosedError) for f in gated)
    rig.service.gate.set()
    assert call_after_loss(proxy.run, "after") == ("after", 0, b"")
    runs = rig.finish()
    assert all(runs[f"gated-{i}"] == 1 for i in range(4))
    assert all(runs[f"burst-{i}"] == 1 for i, f in enumerate(burst) if f.exception() is None)
    assert max(runs.values()) == 1


def test_a_request_that_starts_after_its_connection_closed_does_not_keep_the_connection(make_rig):
    """A request still queued on the server when its connection is cut starts after the close (one
    dispatch thread, busy with the request before it); the server must still let the connection go."""
    rig = make_rig(dispatch_threads=1)
    proxy = rig.proxy()
    held = proxy.run_until_disconnected.future("held", lambda: None)
    queued = proxy.run.future("queued")  # behind "held": the server has one dispatch thread
    assert eventually(lambda: rig.service.runs["held"] == 1)
    rig.faults.cut()
    for future in (held, queued):
        assert isinstance(future.exception(CALL_TIMEOUT + MARGIN), tether.ConnectionClosedError)
    runs = rig.finish()
    assert runs["held"] == 1 and runs["queued"] <= 1


def test_oneway_calls_around_a_cut_return_or_fail_cleanly_and_run_at_most_once(rig):
    """A oneway call sent as the connection is lost may be lost (it has no reply to tell), or fail
    with CommunicationError; it never blocks or runs twice, and those sent after the reconnect arrive."""
    proxy = rig.proxy()
    errors = []
    for i in range(400):
        if i == 200:
            rig.faults.cut()
        try:
            assert proxy.run_oneway(f"oneway-{i}") is None
        except tether.CommunicationError as exc:
            errors.append(exc)
    assert call_after_loss(proxy.run, "sync") == ("sync", 0, b"")  # reconnected
    proxy.run_oneway("after")
    assert eventually(lambda: rig.service.runs["after"] == 1)
    runs = rig.finish()
    assert max(runs.values()) == 1


def test_a_stream_cut_midway_ends_with_connection_closed_and_its_generator_is_closed(rig):
    """A stream whose connection is cut raises ConnectionClosedError instead of ending as if
    complete or waiting forever; the server closes its generator. The proxy's next stream works."""
    proxy = rig.proxy()
    stream = proxy.items("cut", 10**9)
    assert [next(stream) for _ in range(100)] == list(range(100))
    rig.faults.cut()
    kind, error = outcome(lambda: sum(1 for _ in stream))
    assert kind == "error" and isinstance(error, tether.ConnectionClosedError), error
    assert eventually(lambda: "cut" in rig.service.closed_streams, timeout=CALL_TIMEOUT), \
        "the server's generator was never closed"
    assert list(call_after_loss(proxy.items, "after", 1000)) == list(range(1000))
    runs = rig.finish()
    assert runs["cut"] == 1 and runs["after"] == 1


# ---- many clients, many faults ----


def test_cuts_and_resets_under_concurrent_calls_lose_no_answer_and_run_nothing_twice(rig):
    """Four clients call (sync and futures) while the connections are cut and reset again and
    again. Every call ends with its own result or a CommunicationError, every call that succeeded
    ran exactly once, no call ran twice, and every client works again afterwards."""
    clients = [rig.proxy(timeout=5) for _ in range(4)]
    stop = threading.Event()
    outcomes = [[] for _ in clients]  # (call id, result or exception)

    def call_again_and_again(n, proxy):
        for i in itertools.count():
            if stop.is_set():
                return
            call_id = f"{n}-{i}"
            try:
                if i % 2:
                    outcomes[n].append((call_id, proxy.run(call_id)))
                else:
                    outcomes[n].append((call_id, proxy.run.future(call_id).result(CALL_TIMEOUT + MARGIN)))
            except tether.CommunicationError as exc:
                outcomes[n].append((call_id, exc))

    threads = [threading.Thread(target=call_again_and_again, args=(n, p)) for n, p in enumerate(clients)]
    for thread in threads:
        thread.start()
    schedule = random.Random(7)
    for _ in range(10):
        time.sleep(schedule.uniform(0.05, 0.2))  # only spaces the faults; no outcome depends on it
        getattr(rig.faults, schedule.choice(["cut", "reset"]))()
    stop.set()
    for thread in threads:
        thread.join(CALL_TIMEOUT + 2 * MARGIN)
    assert not any(t.is_alive() for t in threads), "a client's call never ended"
    for n, proxy in enumerate(clients):
        assert call_after_loss(proxy.run, f"after-{n}") == (f"after-{n}", 0, b"")
    runs = rig.finish()
    succeeded = [call_id for calls in outcomes for call_id, result in calls if not isinstance(result, Exception)]
    for calls in outcomes:
        for call_id, result in calls:
            assert isinstance(result, Exception) or result == (call_id, 0, b""), (call_id, result)
    assert all(runs[call_id] == 1 for call_id in succeeded)
    assert max(runs.values()) == 1
    assert succeeded


# ---- between a driver and its cluster ----

DRIVER_SCRIPT = r"""
import os, sys, time
import tether

tether.init(address=sys.argv[1], secret=sys.argv[2], log_to_driver=False)

@tether.remote
def square(x):
    return x * x

@tether.remote
def wait_for(path):
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "opened"

print("READY", flush=True)
ref = None
for line in sys.stdin:  # one command a line; one answer a line
    command, *args = line.split()
    try:
        if command == "square":
            answer = tether.get(square.remote(int(args[0])), timeout=float(args[1]))
        elif command == "submit":
            ref, answer = wait_for.remote(args[0]), "submitted"
        elif command == "get":
            answer = tether.get(ref, timeout=float(args[0]))
        print("OK", answer, flush=True)
    except Exception as exc:
        print("ERROR", type(exc).__name__, exc, flush=True)
tether.shutdown()
print("BYE", flush=True)
"""


@pytest.fixture
def cluster_head():
    """A tetherd head of its own (not this process's cluster), ended after the test."""
    from tether._private import launcher
    daemon, info = launcher.start_embedded(1, None, None, forward_output=False)
    try:
        yield info
    finally:
        daemon.stdin.close()  # its signal to stop (--watch-stdin)
        try:
            daemon.wait(timeout=30)
        except Exception:
            daemon.kill()
            daemon.wait()
        launcher.remove_leftovers(info)


def test_a_driver_cut_off_from_its_cluster_gets_clear_errors_and_the_cluster_serves_others(cluster_head, spawn,
                                                                                              tmp_path):
    """A driver joined through the FaultProxy: a stall makes its get end at its own timeout
    (GetTimeoutError) and, once healed, the driver goes on; a cut makes its get and every later call
    fail with ConnectionClosedError (a driver does not rejoin by itself), none hangs, and it shuts
    down. A driver joined directly is served before and after."""
    with FaultProxy(cluster_head["address"]) as faults:
        driver = spawn(["-c", DRIVER_SCRIPT, faults.address, cluster_head["secret"]])
        other = spawn(["-c", DRIVER_SCRIPT, cluster_head["address"], cluster_head["secret"]])

        def ask(child, command, limit=CALL_TIMEOUT + MARGIN):
            child.proc.stdin.write(command + "\n")
            child.proc.stdin.flush()
            return child.readline(timeout=limit)

        assert driver.readline(timeout=60) == "READY" and other.readline(timeout=60) == "READY"
        assert ask(driver, "square 3 30", 30 + MARGIN) == "OK 9"
        assert ask(other, "square 4 30", 30 + MARGIN) == "OK 16"
        assert ask(driver, f"submit {tmp_path / 'first'}") == "OK submitted"
        faults.stall()
        assert ask(driver, "get 1").startswith("ERROR GetTimeoutError")
        faults.resume()
        (tmp_path / "first").touch()
        assert ask(driver, "get 30", 30 + MARGIN) == "OK opened"
        assert ask(driver, f"submit {tmp_path / 'second'}") == "OK submitted"
        faults.cut()
        assert ask(driver, "get 30", 30 + MARGIN).startswith("ERROR ConnectionClosedError")
        assert ask(driver, "square 5 30", 30 + MARGIN).startswith("ERROR ConnectionClosedError")
        (tmp_path / "second").touch()
        assert ask(other, "square 6 30", 30 + MARGIN) == "OK 36"
        for child in (driver, other):
            child.proc.stdin.close()
            assert child.readline(timeout=30) == "BYE"
            assert child.proc.wait(timeout=30) == 0, child.stderr_text()
