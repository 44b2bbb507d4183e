"""Tests for tether.Server: registration, instance modes, addresses, closing, and staying up."""

import re
import shutil
import socket
import tempfile
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

import tether


@tether.expose
class Greeter:
    def hello(self, name):
        return f"hello {name}"


@tether.expose
class Counter:
    def __init__(self):
        self.value = 0

    def incr(self):
        self.value += 1
        return self.value


@tether.expose
class Rendezvous:
    """Each call waits until `parties` calls are inside the method at the same time."""

    def __init__(self, parties):
        self.barrier = threading.Barrier(parties, timeout=10)

    def meet(self, i):
        self.barrier.wait()
        return i


@tether.expose
class Blocker:
    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()

    def block(self):
        self.entered.set()
        try:
            return self.release.wait(30)
        finally:
            self.finished.set()

    def ping(self):
        return "pong"


def port_of(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)


def test_register_returns_tcp_uri_naming_the_bound_port(server):
    """The uri from register() is what clients dial, so it must carry the real port and the name."""
    uri = server.register(Greeter(), "greeter")
    match = re.fullmatch(r"tether://127\.0\.0\.1:(\d+)/greeter", uri)
    assert match, uri
    assert int(match.group(1)) == port_of(server.address)[1]


def test_address_is_host_and_the_port_actually_bound(server):
    """port=0 asks for a free port; server.address must report the one really listening."""
    host, port = port_of(server.address)
    assert host == "127.0.0.1"
    assert port > 0
    with socket.create_connection((host, port), timeout=10):
        pass


def test_registered_object_is_callable_through_a_proxy(server, make_proxy):
    """The basic promise: publish an object, call it through its uri."""
    uri = server.register(Greeter(), "greeter")
    assert make_proxy(uri).hello("ann") == "hello ann"


def test_single_mode_shares_the_given_instance_between_clients(server, make_proxy):
    """mode='single' serves exactly the instance passed in, shared by every connection."""
    counter = Counter()
    uri = server.register(counter, "counter", mode="single")
    first, second = make_proxy(uri), make_proxy(uri)
    assert first.incr() == 1
    assert second.incr() == 2
    assert first.incr() == 3
    assert counter.value == 3


def test_default_mode_is_single(server, make_proxy):
    """Without a mode the given instance itself is served (callers rely on its state)."""
    counter = Counter()
    uri = server.register(counter, "counter")
    assert make_proxy(uri).incr() == 1
    assert counter.value == 1


def test_session_mode_gives_each_connection_its_own_instance(server, make_proxy):
    """mode='session' keeps per-connection state apart while one connection sees its own state."""
    uri = server.register(Counter, "counter", mode="session")
    first, second = make_proxy(uri), make_proxy(uri)
    assert first.incr() == 1
    assert first.incr() == 2
    assert second.incr() == 1
    assert first.incr() == 3
    assert second.incr() == 2


def test_percall_mode_creates_a_new_instance_for_every_call(server, make_proxy):
    """mode='percall' must never carry state from one call to the next."""
    uri = server.register(Counter, "counter", mode="percall")
    proxy = make_proxy(uri)
    assert [proxy.incr() for _ in range(5)] == [1, 1, 1, 1, 1]


def test_several_objects_are_served_side_by_side(server, make_proxy):
    """One server hosts many names; each uri reaches its own object."""
    greeter_uri = server.register(Greeter(), "greeter")
    counter_uri = server.register(Counter(), "counter")
    assert make_proxy(greeter_uri).hello("bo") == "hello bo"
    assert make_proxy(counter_uri).incr() == 1


def test_unregister_makes_the_name_unreachable_and_leaves_others(server, make_proxy):
    """After unregister a name must stop answering while other names keep working."""
    greeter_uri = server.register(Greeter(), "greeter")
    counter_uri = server.register(Counter(), "counter")
    existing = make_proxy(greeter_uri)
    assert existing.hello("a") == "hello a"

    server.unregister("greeter")

    with pytest.raises((AttributeError, tether.TetherError)):
        existing.hello("b")
    with pytest.raises((AttributeError, tether.TetherError)):
        make_proxy(greeter_uri).hello("c")
    assert make_proxy(counter_uri).incr() == 1


def test_close_stops_listening(make_proxy):
    """close() must release the port: new connections are refused and proxies get CommunicationError."""
    srv = tether.Server(host="127.0.0.1", port=0)
    try:
        uri = srv.register(Greeter(), "greeter")
        host, port = port_of(srv.address)
    finally:
        srv.close()

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=10).close()
    with pytest.raises(tether.CommunicationError):
        make_proxy(uri).hello("x")


def test_close_fails_calls_on_already_connected_proxies(make_proxy):
    """A proxy whose server went away must raise CommunicationError, not hang or return garbage."""
    srv = tether.Server(host="127.0.0.1", port=0)
    try:
        uri = srv.register(Greeter(), "greeter")
        proxy = make_proxy(uri)
        assert proxy.hello("x") == "hello x"
    finally:
        srv.close()
    with pytest.raises(tether.CommunicationError):
        proxy.hello("y")


def test_server_is_a_context_manager():
    """`with tether.Server(...)` serves inside the block and releases the port on exit."""
    with tether.Server(host="127.0.0.1", port=0) as srv:
        uri = srv.register(Greeter(), "greeter")
        host, port = port_of(srv.address)
        with tether.Proxy(uri, timeout=10) as proxy:
            assert proxy.hello("cm") == "hello cm"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=10).close()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix domain sockets on this platform")
def test_unix_socket_server_gives_percent_encoded_uri_and_serves():
    """unix_path serves over a Unix socket and the uri carries the percent-encoded path."""
    directory = tempfile.mkdtemp(prefix="tt")
    path = f"{directory}/s.sock"
    try:
        with tether.Server(unix_path=path) as srv:
            uri = srv.register(Greeter(), "greeter")
            assert uri.startswith("tether+unix://")
            assert uri.endswith("/greeter")
            encoded = uri[len("tether+unix://"):-len("/greeter")]
            assert "/" not in encoded
            assert urllib.parse.unquote(encoded) == path
            with tether.Proxy(uri, timeout=10) as proxy:
                assert proxy.hello("unix") == "hello unix"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_sync_calls_run_in_parallel_on_dispatch_threads(server, make_proxy):
    """Blocking methods must not serialize: four calls meet at a barrier only if they run at once."""
    uri = server.register(Rendezvous(4), "rendezvous")
    proxy = make_proxy(uri)
    futures = [proxy.meet.future(i) for i in range(4)]
    assert sorted(f.result(timeout=20) for f in futures) == [0, 1, 2, 3]


def test_calls_from_separate_connections_run_in_parallel(server, make_proxy):
    """Separate clients are served concurrently, not one connection at a time."""
    uri = server.register(Rendezvous(3), "rendezvous")
    proxies = [make_proxy(uri) for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        results = [pool.submit(p.meet, i) for i, p in enumerate(proxies)]
        assert sorted(r.result(timeout=20) for r in results) == [0, 1, 2]


CHILD_CLIENT = """
import sys, tether
proxy = tether.Proxy(sys.argv[1], timeout=60)
print("calling", flush=True)
proxy.block()
"""


def test_server_keeps_serving_after_a_client_is_killed_mid_call(server, make_proxy, spawn):
    """A client dying with a call in flight must not take the server or other clients down."""
    blocker = Blocker()
    uri = server.register(blocker, "blocker")
    bystander = make_proxy(uri)
    assert bystander.ping() == "pong"

    child = spawn(["-c", CHILD_CLIENT, uri])
    assert child.readline() == "calling"
    assert blocker.entered.wait(20), "the child's call never reached the server"
    child.kill()

    try:
        assert bystander.ping() == "pong"
        assert make_proxy(uri).ping() == "pong"
    finally:
        blocker.release.set()
    assert blocker.finished.wait(10)
    # The reply to the dead client has now been written (or dropped); the server must still be fine.
    assert bystander.ping() == "pong"
    assert make_proxy(uri).ping() == "pong"


def test_a_call_over_the_servers_frame_limit_fails_alone(make_server, make_proxy):
    """A request larger than the server's max_frame fails with ProtocolError on the caller's side,
    before it is sent, and the connection keeps working."""
    srv = make_server(max_frame=4096)
    proxy = make_proxy(srv.register(Greeter(), "greeter"))
    assert proxy.hello("a") == "hello a"
    with pytest.raises(tether.ProtocolError):
        proxy.hello("x" * 10_000)
    assert proxy.hello("b") == "hello b"


def test_a_port_in_use_is_a_clear_error_at_once():
    with tether.Server(port=0) as first:
        port = int(first.address.rsplit(":", 1)[1])
        with pytest.raises(tether.CommunicationError, match="Address already in use"):
            tether.Server(port=port)
        assert tether.Proxy(first.register(_Echo(), "e")).echo(1) == 1  # the first one is untouched


@tether.expose
class _Echo:
    def echo(self, value):
        return value
