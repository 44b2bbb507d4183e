"""Tuple spaces served by the cluster's head: matching, blocking takes and reads, leases, notify,
eval, many processes racing for the same tuples, a taker that dies, and bad input."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

import tether
from clusters import own_cluster
from polling import eventually
from tether._private import cluster_state

TIMEOUT = 60


@pytest.fixture(scope="module")
def cluster():
    yield from own_cluster(num_cpus=2)


@pytest.fixture
def space(cluster):
    """A fresh space for each test."""
    return tether.TupleSpace(f"test-{uuid.uuid4().hex[:8]}")




# ---- matching ----


def test_out_then_in_takes_it_and_rd_leaves_it(space):
    space.out(("job", 1, "resize"))
    assert space.rd(("job", 1, "resize")) == ("job", 1, "resize")
    assert space.count() == 1
    assert space.in_(("job", 1, "resize")) == ("job", 1, "resize")
    assert space.count() == 0
    assert space.inp(("job", 1, "resize")) is None
    assert space.rdp(("job", 1, "resize")) is None


def test_a_value_matches_on_type_and_value(space):
    """1 matches neither 1.0 nor True, and each only itself."""
    for value in (1, 1.0, True):
        space.out(("n", value))
    assert space.rdp(("n", 1)) == ("n", 1) and type(space.rdp(("n", 1))[1]) is int
    assert type(space.rdp(("n", 1.0))[1]) is float
    assert space.rdp(("n", True))[1] is True
    assert space.rdp(("n", 2)) is None
    assert space.rdp(("n", "1")) is None


def test_a_type_matches_values_of_that_type_only(space):
    space.out(("v", 1))
    space.out(("v", 2.5))
    space.out(("v", True))
    space.out(("v", "text"))
    space.out(("v", b"raw"))
    space.out(("v", None))
    space.out(("v", (1, 2)))
    assert space.inp(("v", int)) == ("v", 1)
    assert space.inp(("v", int)) is None  # True is a bool, not an int
    assert space.inp(("v", float)) == ("v", 2.5)
    assert space.inp(("v", bool)) == ("v", True)
    assert space.inp(("v", str)) == ("v", "text")
    assert space.inp(("v", bytes)) == ("v", b"raw")
    assert space.inp(("v", type(None))) == ("v", None)
    assert space.inp(("v", tuple)) == ("v", (1, 2))
    assert space.count() == 0


def test_any_matches_anything_and_length_must_agree(space):
    space.out(("a", 1, 2))
    assert space.rdp(("a", tether.ANY)) is None
    assert space.rdp(("a", tether.ANY, tether.ANY)) == ("a", 1, 2)
    assert space.rdp((tether.ANY, tether.ANY, 2)) == ("a", 1, 2)
    space.out(())
    assert space.inp(()) == ()


def test_oldest_matching_tuple_is_taken_first(space):
    for i in range(5):
        space.out(("q", i))
    assert [space.in_(("q", int))[1] for _ in range(5)] == [0, 1, 2, 3, 4]


def test_nested_values_round_trip(space):
    value = ("nested", (1, (2.5, b"\x00\xff", None), "x"), -(1 << 63), (1 << 64) - 1)
    space.out(value)
    assert space.in_(("nested", tuple, int, int)) == value


def test_in_waits_for_a_tuple_written_later(space):
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import tether
        tether.init(address={cluster_state.info()['address']!r}, secret={cluster_state.info()['secret']!r})
        space = tether.TupleSpace({space.name!r})
        space.in_(("go",), timeout=60)
        space.out(("answer", 42))
        tether.shutdown()
    """)])
    try:
        space.out(("go",))
        assert space.in_(("answer", int), timeout=TIMEOUT) == ("answer", 42)
    finally:
        assert writer.wait(timeout=TIMEOUT) == 0


def test_timeouts(space):
    with pytest.raises(TimeoutError):
        space.in_(("never",), timeout=0.05)
    with pytest.raises(TimeoutError):
        space.rd(("never",), timeout=0)


def test_many_unrelated_tuples_do_not_hide_the_match(space):
    """Matching is indexed by the first field: the right tuple is found among many others."""
    for i in range(20_000):
        space.out(("noise", i))
    space.out(("needle", 7))
    assert space.in_(("needle", int), timeout=TIMEOUT) == ("needle", 7)
    assert space.rdp(("noise", 19_999)) == ("noise", 19_999)


# ---- leases and notify ----


def test_a_leased_tuple_expires(space):
    space.out(("lease", 1), lease=0.1)
    space.out(("kept", 1))
    assert eventually(lambda: space.rdp(("lease", int)) is None), "the leased tuple outlived its lease"
    assert space.rdp(("kept", int)) == ("kept", 1)


def test_notify_sees_matching_tuples_in_order(space):
    with space.notify(("temp", float)) as seen:
        space.out(("temp", 1.5))
        space.out(("temp", "warm"))
        space.out(("pressure", 2.0))
        space.out(("temp", 2.5))
        assert [seen.get(timeout=TIMEOUT) for _ in range(2)] == [("temp", 1.5), ("temp", 2.5)]
    # A notified tuple is still there for takers.
    assert space.inp(("temp", 1.5)) == ("temp", 1.5)


def test_notify_as_an_async_iterator(space):
    import asyncio

    async def first_two():
        watch = space.notify(("event", int))
        space.out(("event", 1))
        space.out(("event", 2))
        got = []
        async for item in watch:
            got.append(item)
            if len(got) == 2:
                break
        watch.close()
        return got

    assert asyncio.run(first_two()) == [("event", 1), ("event", 2)]


def test_eval_runs_a_task_that_writes_its_result(space):
    ref = space.eval(("square", 12), lambda x: x * x, 12)
    assert space.in_(("square", 12, int), timeout=TIMEOUT) == ("square", 12, 144)
    assert tether.get(ref, timeout=TIMEOUT) == 144


# ---- races and failures ----


TAKER = textwrap.dedent("""
    import sys, tether
    address, secret, name = sys.argv[1:4]
    tether.init(address=address, secret=secret)
    space = tether.TupleSpace(name)
    taken = []
    while True:
        item = space.in_(("job", tether.ANY), timeout=60)
        if item[1] == "stop":
            break
        taken.append(item[1])
    space.out(("taken", tuple(taken)))
    tether.shutdown()
""")


def test_many_takers_racing_take_each_tuple_exactly_once(space):
    """Five processes take jobs as fast as they come: every job is taken by exactly one."""
    info = cluster_state.info()
    takers = [subprocess.Popen([sys.executable, "-c", TAKER, info["address"], info["secret"], space.name])
              for _ in range(5)]
    try:
        for i in range(300):
            space.out(("job", i))
        for _ in takers:
            space.out(("job", "stop"))
        reports = [space.in_(("taken", tuple), timeout=TIMEOUT)[1] for _ in takers]
    finally:
        for taker in takers:
            assert taker.wait(timeout=TIMEOUT) == 0
    everything = [job for report in reports for job in report]
    assert sorted(everything) == list(range(300))
    assert space.count() == 0


def test_a_taker_that_dies_takes_nothing(space):
    """A process blocked in in_ is killed: the next tuple goes to a live taker."""
    info = cluster_state.info()
    doomed = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import tether
        tether.init(address={info['address']!r}, secret={info['secret']!r})
        space = tether.TupleSpace({space.name!r})
        space.out(("waiting",))
        space.in_(("prize",))
    """)])
    try:
        assert space.in_(("waiting",), timeout=TIMEOUT) == ("waiting",)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=TIMEOUT)
        space.out(("prize",))
        assert space.in_(("prize",), timeout=TIMEOUT) == ("prize",)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()


# ---- bad input ----


def test_bad_input_is_refused_and_the_space_goes_on(space):
    with pytest.raises(TypeError, match="unsupported value of type dict"):
        space.out(("x", {"a": 1}))
    with pytest.raises(TypeError, match="a tuple space holds tuples"):
        space.out(["x"])
    with pytest.raises(TypeError, match="not list"):
        space.rdp(("x", list))
    with pytest.raises(ValueError, match="64 bits"):
        space.out(("x", 1 << 64))
    with pytest.raises(ValueError, match="lease"):
        space.out(("x",), lease=-1)
    with pytest.raises(ValueError, match="timeout"):
        space.in_(("x",), timeout=-1)
    with pytest.raises(ValueError, match="larger than the limit"):
        space.out(("x", b"y" * (2 << 20)))
    with pytest.raises(ValueError, match="non-empty name"):
        tether.TupleSpace("")
    space.out(("fine", 1))
    assert space.in_(("fine", int)) == ("fine", 1)


def test_the_server_checks_what_the_python_face_would_not_send(space):
    """A client that bypasses the Python checks gets the service's own clear errors."""
    channel = tether.tuplespace._channels.get(space._uri, space._secret)
    with pytest.raises(ValueError, match="dict"):
        channel.call("tuplespace", "out", (space.name, ["x", {"a": 1}], None), None, 10.0, 1)
    with pytest.raises(ValueError, match="names the type 'list'"):
        channel.call("tuplespace", "read", (space.name, [{"type": "list"}], 0), None, 10.0, 1)
    with pytest.raises(ValueError, match="must not be negative"):
        channel.call("tuplespace", "out", (space.name, ["x"], -1.0), None, 10.0, 1)
    assert space.count() == 0


def test_async_notify_ends_when_closed(space):
    import asyncio

    async def collect():
        watch = space.notify(("n", int))
        space.out(("n", 1))
        got = []
        async for item in watch:
            got.append(item)
            watch.close()
        return got

    assert asyncio.run(asyncio.wait_for(collect(), TIMEOUT)) == [("n", 1)]


def test_a_standalone_services_server_serves_tuple_spaces_and_topics(tmp_path):
    """`tether services` runs the coordination services without a cluster; clients reach them by
    address and secret."""
    import socket

    with socket.socket() as probe:  # a free port for the server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, TETHER_SECRET="standalone-secret")
    server = subprocess.Popen([sys.executable, "-m", "tether", "services", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert "listening on 127.0.0.1:" in server.stdout.readline()
        address = f"127.0.0.1:{port}"
        space = tether.TupleSpace("standalone", address=address, secret="standalone-secret")
        space.out(("hello", 1))
        assert space.in_(("hello", int), timeout=TIMEOUT) == ("hello", 1)
        with tether.subscribe("news.#", address=address, secret="standalone-secret") as news:
            tether.publish("news.today", "sunny", address=address, secret="standalone-secret")
            assert news.get(timeout=TIMEOUT) == ("news.today", "sunny")
        with pytest.raises(tether.AuthenticationError):
            tether.TupleSpace("standalone", address=address, secret="wrong").count()
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=TIMEOUT) in (0, -signal.SIGTERM)


def test_a_python_server_with_coordination_serves_them_beside_its_objects():
    """tether.Server(coordination=True) serves tuple spaces, topics and groups next to its own
    Python objects, on the same port: clients reach them with address=."""

    @tether.expose
    class Hello:
        def hi(self):
            return "hi"

    with tether.Server(host="127.0.0.1", port=0, coordination=True) as server:
        uri = server.register(Hello(), "hello")
        address = server.address
        space = tether.TupleSpace("beside", address=address)
        space.out(("job", 1))
        assert space.rd(("job", int), timeout=TIMEOUT) == ("job", 1)
        with tether.Proxy(uri, timeout=TIMEOUT) as hello:
            assert hello.hi() == "hi"  # the Python object on the same listener
        assert space.in_(("job", tether.ANY), timeout=TIMEOUT) == ("job", 1)
        assert space.inp(("job", tether.ANY)) is None
        with tether.subscribe("beside.*", address=address) as feed:
            tether.publish("beside.news", 42, address=address)
            assert feed.get(timeout=TIMEOUT) == ("beside.news", 42)
        with tether.Group("beside", address=address) as member:
            assert member.receive(timeout=TIMEOUT).members == (member.private_name,)
            member.send("ping")
            assert member.receive(timeout=TIMEOUT).data == "ping"


def test_tether_ns_serves_tuple_spaces_too():
    """`tether ns` is a name server that also serves the coordination services."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ns = subprocess.Popen([sys.executable, "-m", "tether", "ns", "--port", str(port)], stdout=subprocess.PIPE, text=True,
                          env={k: v for k, v in os.environ.items() if k != "TETHER_SECRET"})
    try:
        assert "listening on 127.0.0.1:" in ns.stdout.readline()
        space = tether.TupleSpace("ns-space", address=f"127.0.0.1:{port}")
        space.out(("x", b"bytes"))
        assert space.in_(("x", bytes), timeout=TIMEOUT) == ("x", b"bytes")
        with tether.locate_ns(f"127.0.0.1:{port}") as names:
            assert names.list() == {}
    finally:
        ns.send_signal(signal.SIGTERM)
        assert ns.wait(timeout=TIMEOUT) in (0, -signal.SIGTERM)
