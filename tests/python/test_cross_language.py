"""Python and C++ calling each other in separate processes over TCP: a Python client against the C++
server of tests/cross/cross_server.cpp, and the C++ client of tests/cross/cross_client.cpp against a
Python server. Every row of the type mapping table in docs/cpp.md round-trips Python -> C++ -> Python."""

import asyncio
import glob
import os
import subprocess

import numpy as np
import pytest

import tether

from conftest import CALL_TIMEOUT

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpp_program(name):
    """The built C++ test program: from TETHER_CPP_BUILD_DIR (set by tools/test.sh), else the newest build."""
    build_dir = os.environ.get("TETHER_CPP_BUILD_DIR")
    candidates = [os.path.join(build_dir, name)] if build_dir else glob.glob(os.path.join(REPO, "build", "*", name))
    candidates = [c for c in candidates if os.access(c, os.X_OK)]
    assert candidates, f"{name} is not built: run tools/setup.sh (or build the CMake target {name})"
    return max(candidates, key=os.path.getmtime)


@pytest.fixture
def cpp_uri(spawn):
    child = spawn([], program=cpp_program("tether_cross_server"))
    uri = child.readline(timeout=30)
    assert uri.startswith("tether://127.0.0.1:") and uri.endswith("/calc"), uri
    return uri


@pytest.fixture
def calc(cpp_uri, make_proxy):
    return make_proxy(cpp_uri)


# ---- Python client, C++ server ----


def test_sync_call_and_dynamic_echo(calc):
    assert calc.add(2, 3) == 5
    value = [None, True, -7, 2.5, "text", b"raw", (1, 2), {"a"}, frozenset({1}), {"k": [1, 2]}, 2**100, b"z" * 100_000]
    assert calc.echo(value) == value
    assert calc.kinds(1, 1.0, True, "s", b"b", [], (), {}, set(), frozenset(), None, 2**70) == [
        "int", "float", "bool", "str", "bytes", "list", "tuple", "dict", "set", "frozenset", "None", "int"]


# (C++ method, value sent, value expected back): one per row of docs/cpp.md's mapping table.
MAPPING_ROWS = [
    ("echo_none", None, None),
    ("echo_bool", True, True),
    ("echo_int64", -(2**63), -(2**63)),
    ("echo_uint64", 2**64 - 1, 2**64 - 1),
    ("echo_int8", -128, -128),
    ("echo_big", 2**200 + 1, 2**200 + 1),
    ("echo_big", -(2**90), -(2**90)),
    ("echo_float", 1.0, 1.0),
    ("echo_float", 3, 3.0),
    ("echo_str", "héllo ✓", "héllo ✓"),
    ("echo_bytes", b"\x00\xff" * 50_000, b"\x00\xff" * 50_000),
    ("echo_bytes", bytearray(b"ab"), b"ab"),
    ("echo_list", [1, 2, 3], [1, 2, 3]),
    ("echo_list", (4, 5), [4, 5]),
    ("echo_tuple", (1, "two", 3.0), (1, "two", 3.0)),
    ("echo_dict", {"a": [1.0, 2.0], "b": []}, {"a": [1.0, 2.0], "b": []}),
    ("echo_set", {"x", "y"}, {"x", "y"}),
    ("echo_set", frozenset({"z"}), {"z"}),
    ("echo_optional", None, None),
    ("echo_optional", "here", "here"),
    ("echo_point", {"x": 1.5, "y": -2.0, "label": "p"}, {"x": 1.5, "y": -2.0, "label": "p"}),
]


@pytest.mark.parametrize("method,sent,expected", MAPPING_ROWS, ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(MAPPING_ROWS)])
def test_mapping_table_row_round_trips(calc, method, sent, expected):
    back = getattr(calc, method)(sent)
    assert back == expected
    assert type(back) is type(expected)


def test_numpy_arrays_round_trip_as_arrays(calc):
    for array in (np.arange(12, dtype=np.int32).reshape(3, 4), np.linspace(0, 1, 100_000), np.zeros(0, dtype=np.uint8)):
        back = calc.echo_array(array)
        assert back.dtype == array.dtype and back.shape == array.shape
        assert np.array_equal(back, array)
    doubles = calc.echo_doubles(np.array([1.5, 2.5]))
    assert isinstance(doubles, np.ndarray) and doubles.tolist() == [1.5, 2.5]
    assert calc.echo_doubles([1, 2.5]).tolist() == [1.0, 2.5]


class Money:
    def __init__(self, cents, currency):
        self.cents, self.currency = cents, currency

    def __eq__(self, other):
        return (self.cents, self.currency) == (other.cents, other.currency)


def test_registered_custom_type_through_the_cpp_server(calc):
    tether.register_type(Money, "test.Money", lambda m: [m.cents, m.currency], lambda s: Money(*s))
    assert calc.echo_custom(Money(1250, "EUR")) == Money(1250, "EUR")
    assert calc.echo([Money(1, "USD")]) == [Money(1, "USD")]


def test_futures_and_asyncio(calc):
    futures = [calc.add.future(i, i) for i in range(500)]
    assert [f.result(timeout=CALL_TIMEOUT) for f in futures] == [2 * i for i in range(500)]
    assert calc.double_later(21) == 42

    async def gather():
        return await asyncio.gather(*(calc.double_later.future(i) for i in range(20)))

    assert asyncio.run(gather()) == [2 * i for i in range(20)]


def test_oneway_methods_are_sent_oneway(calc):
    calc.remember("one")
    calc.remember("two")
    assert calc.remembered()[-2:] == ["one", "two"]


def test_streams_from_cpp(calc):
    assert list(calc.count(200)) == list(range(200))
    items = []
    with pytest.raises(tether.RemoteError) as excinfo:
        for item in calc.count_then_fail(3):
            items.append(item)
    assert items == [0, 1, 2]
    assert excinfo.value.remote_type == "std::runtime_error"
    assert "stream broke after 3" in str(excinfo.value)


def test_errors_from_cpp_are_clear_and_the_connection_goes_on(calc):
    with pytest.raises(ZeroDivisionError, match="division by zero"):
        calc.divide(1, 0)
    with pytest.raises(tether.RemoteError) as excinfo:
        calc.fail("bad state")
    assert excinfo.value.remote_type == "std::logic_error"
    with pytest.raises(TypeError, match=r"calc.echo_int64: argument 1 \(int64\): expected an int, got str 'x'"):
        calc.echo_int64("x")
    with pytest.raises(OverflowError, match="out of range for int8"):
        calc.echo_int8(1000)
    with pytest.raises(TypeError, match="calc.add: takes 2 arguments, got 3"):
        calc.add(1, 2, 3)
    with pytest.raises(TypeError, match="Point field 'y'"):
        calc.echo_point({"x": 1.0, "y": "no", "label": ""})
    with pytest.raises(AttributeError, match="no exposed method 'no_such_method'"):  # known from $meta
        calc.no_such_method()
    assert calc.add(1, 1) == 2


def test_callbacks_from_cpp_into_python(calc):
    seen = []

    def record(i):
        seen.append(i)
        return i * i

    assert calc.call_back(record, 4) == [0, 1, 4, 9]
    assert seen == [0, 1, 2, 3]

    @tether.expose
    class Shouter:
        def shout(self, text):
            return text.upper() + "!"

    assert calc.call_method_back(Shouter(), "shout", "hey") == "HEY!"


def test_deadline_on_a_slow_cpp_method(cpp_uri, make_proxy):
    hasty = make_proxy(cpp_uri, timeout=0.1)
    with pytest.raises(tether.CallTimeoutError):
        hasty.sleep_ms(1000)


def test_cpp_server_with_a_secret(spawn, make_proxy):
    child = spawn(["s3cret"], program=cpp_program("tether_cross_server"))
    uri = child.readline(timeout=30)
    with pytest.raises(tether.TetherError):
        make_proxy(uri).add(1, 2)
    assert make_proxy(uri, secret=b"s3cret").add(1, 2) == 3


# ---- C++ client, a named actor of a cluster ----


@tether.remote
class Keeper:
    def __init__(self):
        self.total = 0

    def add(self, x):
        self.total += x
        return self.total

    def echo(self, value):
        return value

    def describe(self, x, scale=1):
        return f"{x}x{scale}"

    def blob(self, n):
        return b"x" * n

    def fail(self, text):
        raise KeyError(text)

    def not_plain(self):
        return Money(1, "EUR")


def test_cpp_calls_a_named_actor_of_a_running_cluster():
    if tether.is_initialized():
        tether.shutdown()
    info = tether.init(num_cpus=2)
    try:
        keeper = Keeper.options(name="keeper").remote()
        assert tether.get(keeper.add.remote(0), timeout=60) == 0
        run = subprocess.run([cpp_program("tether_cross_client"), "--actor", tether.cluster_address(), "keeper"],
                             env={**os.environ, "TETHER_SECRET": info["secret"]}, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
        assert run.stdout.splitlines() == [f"ok {name}" for name in (
            "actor_lookup", "actor_calls_in_order", "actor_plain_values", "actor_large_result", "actor_exception",
            "actor_unreadable_result")]
        assert tether.get(keeper.add.remote(0), timeout=60) == 15  # C++ called the same actor
    finally:
        tether.shutdown()


# ---- C++ client, Python server ----

PYTHON_SERVER = r"""
import asyncio, sys, time
import tether

@tether.expose
class Py:
    def __init__(self):
        self.seen = []
    def add(self, a, b):
        return a + b
    def echo(self, value):
        return value
    def fail(self):
        raise KeyError("missing")
    def count(self, n):
        yield from range(n)
    @tether.oneway
    def remember(self, text):
        self.seen.append(text)
    def seen_items(self):
        return self.seen
    def call_back(self, callback, n):
        return [callback(i) for i in range(n)]
    def slow(self, seconds):
        time.sleep(seconds)
        return seconds
    async def async_double(self, x):
        await asyncio.sleep(0.01)
        return 2 * x

with tether.Server(host="127.0.0.1", port=0) as server:
    print(server.register(Py(), "py"), flush=True)
    sys.stdin.read()
"""

CPP_CLIENT_CHECKS = ["sync", "values", "async", "coroutine", "oneway", "stream", "remote_exception", "python_type_error",
                     "missing_method", "callback", "timeout"]


def test_cpp_client_calls_a_python_server(spawn):
    child = spawn(["-c", PYTHON_SERVER])
    uri = child.readline(timeout=30)
    run = subprocess.run([cpp_program("tether_cross_client"), uri], capture_output=True, text=True, timeout=120)
    lines = run.stdout.splitlines()
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert lines == [f"ok {name}" for name in CPP_CLIENT_CHECKS]


def test_cpp_client_uses_a_python_name_server(spawn, name_server):
    child = spawn(["-c", PYTHON_SERVER])
    uri = child.readline(timeout=30)
    run = subprocess.run([cpp_program("tether_cross_client"), "--ns", name_server.address, uri],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert run.stdout.splitlines() == ["ok ns_register_lookup", "ok ns_uri", "ok ns_remove"]
