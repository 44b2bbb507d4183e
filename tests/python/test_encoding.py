"""Tests for the default (msgpack, data-only) encoding: every supported value round-trips exactly."""

import math

import numpy as np
import pytest

import tether


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)

    def __repr__(self):
        return f"Point({self.x!r}, {self.y!r})"


tether.register_type(Point, "tests.encoding.Point", lambda p: [p.x, p.y], lambda state: Point(*state))


class Unregistered:
    pass


@tether.expose
class Echo:
    def echo(self, value):
        return value

    def type_name(self, value):
        return type(value).__name__

    def make_unencodable(self):
        return object()

    def point_norm2(self, point):
        return point.x ** 2 + point.y ** 2

    def make_point(self, x, y):
        return Point(x, y)

    def array_sum(self, array):
        return float(array.sum())


@pytest.fixture
def proxy(server, make_proxy):
    return make_proxy(server.register(Echo(), "echo"), timeout=60)


def assert_identical(got, want):
    """Equal value and exactly the same types all the way down (tuple stays tuple, bool stays bool)."""
    assert type(got) is type(want), f"{got!r} is {type(got).__name__}, wanted {type(want).__name__}"
    if isinstance(want, float):
        if math.isnan(want):
            assert math.isnan(got)
        else:
            assert got == want
            assert math.copysign(1.0, got) == math.copysign(1.0, want)
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_identical(g, w)
    elif isinstance(want, dict):
        assert list(got) == list(want), "dict keys or their order changed"
        for (gk, gv), (wk, wv) in zip(got.items(), want.items()):
            assert_identical(gk, wk)
            assert_identical(gv, wv)
    else:
        assert got == want


VALUES = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "minus_one": -1,
    "int64_max": 2**63 - 1,
    "int64_min": -(2**63),
    "uint64_max": 2**64 - 1,
    "just_over_uint64": 2**64,
    "big_positive": 2**100,
    "big_negative": -(2**100),
    "float": 1.5,
    "negative_zero": -0.0,
    "huge_float": 1e308,
    "inf": float("inf"),
    "minus_inf": float("-inf"),
    "nan": float("nan"),
    "empty_str": "",
    "ascii": "hello",
    "unicode": "héllo wörld ✓ 日本語 🎉",
    "long_str": "x" * 100_000,
    "empty_bytes": b"",
    "binary": bytes(range(256)),
    "bytes_just_under_segment": b"s" * 65_535,
    "bytes_at_segment_size": b"t" * 65_536,
    "several_segments": [b"a" * 70_000, b"b" * 70_001, b"small"],
    "empty_list": [],
    "list": [1, "a", None, 2.5],
    "empty_tuple": (),
    "tuple": (1, 2, 3),
    "tuple_in_list": [(1, 2), [3, (4,)]],
    "empty_dict": {},
    "dict": {"b": 1, "a": 2},
    "int_keys": {1: "one", -2: "minus two", 2**70: "big"},
    "tuple_keys": {(1, 2): "pair", ("a", (3,)): [1]},
    "frozenset_key": {frozenset({1, 2}): "f"},
    "empty_set": set(),
    "set": {1, 2, 3},
    "mixed_set": {"x", (1, 2), 3},
    "empty_frozenset": frozenset(),
    "frozenset": frozenset({"a", "b"}),
    "nested": {"nested": [{"a": (1, {2: frozenset({3})})}, {4, 5}], "n": None},
    "many_items": list(range(10_000)),
    "many_keys": {i: str(i) for i in range(1000)},
}


@pytest.mark.parametrize("value", list(VALUES.values()), ids=list(VALUES))
def test_value_round_trips_exactly(proxy, value):
    """Every value of the tether profile comes back equal and of the same type."""
    assert_identical(proxy.echo(value), value)


@pytest.mark.parametrize(
    "value, type_name",
    [((1, 2), "tuple"), ([1, 2], "list"), ({1}, "set"), (frozenset({1}), "frozenset"),
     (True, "bool"), (2**100, "int"), (b"x", "bytes"), ("x", "str"), (None, "NoneType"),
     ({"k": 1}, "dict"), (1.0, "float")],
)
def test_server_receives_the_same_types(proxy, value, type_name):
    """Server code sees the types the caller sent, not just values that compare equal."""
    assert proxy.type_name(value) == type_name


def test_bytearray_arrives_as_bytes(proxy):
    """bytearray is sent as binary data and decodes to bytes on both sides."""
    assert proxy.type_name(bytearray(b"abc")) == "bytes"
    result = proxy.echo(bytearray(b"abc"))
    assert type(result) is bytes and result == b"abc"
    big = bytearray(range(256)) * 1024
    result = proxy.echo(big)
    assert type(result) is bytes and result == bytes(big)


def test_64_mib_bytes_round_trip(proxy):
    """Large payloads travel as segments and must arrive byte-for-byte."""
    data = bytes(range(256)) * (256 * 1024)
    assert len(data) == 64 * 1024 * 1024
    result = proxy.echo(data)
    assert type(result) is bytes
    assert len(result) == len(data)
    assert result == data


ARRAYS = {
    "float64_2d": np.arange(12, dtype=np.float64).reshape(3, 4) / 7,
    "int32_1d": np.arange(-50, 50, dtype=np.int32),
    "uint8_large": (np.arange(1_000_000, dtype=np.uint32) % 251).astype(np.uint8).reshape(1000, 1000),
    "float32_3d": np.linspace(0, 1, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4),
    "bool": np.array([True, False, True]),
    "complex128": np.array([1 + 2j, -3.5j]),
    "int64_big": np.arange(200_000, dtype=np.int64) * 3,
    "non_contiguous": np.arange(100, dtype=np.int16).reshape(10, 10)[::2, 1::3],
    "fortran_order": np.asfortranarray(np.arange(20, dtype=np.float64).reshape(4, 5)),
    "zero_size": np.zeros((0, 3), dtype=np.float64),
    "zero_dim": np.array(3.5),
}


@pytest.mark.parametrize("array", list(ARRAYS.values()), ids=list(ARRAYS))
def test_numpy_array_round_trips_with_dtype_and_shape(proxy, array):
    """numpy arrays keep dtype, shape and values through the wire."""
    result = proxy.echo(array)
    assert isinstance(result, np.ndarray)
    assert result.dtype == array.dtype
    assert result.shape == array.shape
    assert np.array_equal(result, array)


def test_server_receives_a_real_numpy_array(proxy):
    """Server code gets an ndarray it can compute with, not a bytes blob."""
    array = np.arange(10, dtype=np.float64)
    assert proxy.type_name(array) == "ndarray"
    assert proxy.array_sum(array) == 45.0


def test_registered_custom_type_round_trips(proxy):
    """register_type makes a user class travel by its state, in both directions."""
    assert proxy.echo(Point(1, 2)) == Point(1, 2)
    assert proxy.point_norm2(Point(3, 4)) == 25
    assert proxy.make_point(5, 6) == Point(5, 6)
    nested = [Point(1, 1), {"p": Point(2, 2)}, (Point(3, 3),)]
    assert proxy.echo(nested) == nested


def test_unsupported_argument_raises_a_clear_error_and_proxy_survives(proxy):
    """A value the data-only encoding cannot carry fails on the caller, naming its type."""
    with pytest.raises((TypeError, tether.TetherError)) as excinfo:
        proxy.echo(object())
    assert "object" in str(excinfo.value)
    with pytest.raises((TypeError, tether.TetherError)) as excinfo:
        proxy.echo([1, {"deep": Unregistered()}])
    assert "Unregistered" in str(excinfo.value)
    assert proxy.echo(1) == 1


def test_unsupported_return_value_raises_and_proxy_survives(proxy):
    """A result the server cannot encode becomes an error for that call only."""
    with pytest.raises((TypeError, tether.TetherError)):
        proxy.make_unencodable()
    assert proxy.echo("still fine") == "still fine"
