"""Tests for the pickle encoding: allowed only on authenticated connections whose server enabled it."""

import datetime
import decimal
import fractions

import pytest

import tether

SECRET = b"pickle-secret"

# Unpickling a Tripwire appends here; the server must never unpickle data it did not allow.
TRIPPED = []


def _trip():
    TRIPPED.append("unpickled")
    return "tripped"


class Tripwire:
    def __reduce__(self):
        return (_trip, ())


class Plain:
    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return type(other) is Plain and other.value == self.value


@tether.expose
class PickleService:
    def apply(self, fn, x):
        return fn(x)

    def echo(self, value):
        return value


@pytest.fixture(autouse=True)
def _reset_tripwire():
    TRIPPED.clear()
    yield
    TRIPPED.clear()


def test_lambda_with_closure_travels_by_value(make_server, make_proxy):
    """With pickle allowed, functions are sent (cloudpickle) and run on the server."""
    srv = make_server(secret=SECRET, allow_pickle=True)
    uri = srv.register(PickleService(), "svc")
    proxy = make_proxy(uri, secret=SECRET, encoding="pickle")
    offset = 1
    assert proxy.apply(lambda x: x + offset, 41) == 42


@pytest.mark.parametrize(
    "value",
    [Plain(5), fractions.Fraction(1, 3), decimal.Decimal("1.10"),
     datetime.datetime(2024, 1, 2, 3, 4, 5), complex(1, -2), {"nested": [Plain("x"), (1, 2)]}],
    ids=["plain_class", "fraction", "decimal", "datetime", "complex", "nested"],
)
def test_arbitrary_objects_round_trip(make_server, make_proxy, value):
    """Pickle carries objects the data-only encoding cannot, in both directions."""
    srv = make_server(secret=SECRET, allow_pickle=True)
    uri = srv.register(PickleService(), "svc")
    proxy = make_proxy(uri, secret=SECRET, encoding="pickle")
    result = proxy.echo(value)
    assert type(result) is type(value)
    assert result == value


def test_pickle_refused_when_the_server_does_not_allow_it(make_server, make_proxy):
    """A server without allow_pickle must refuse pickled requests and never unpickle them."""
    srv = make_server(secret=SECRET, allow_pickle=False)
    uri = srv.register(PickleService(), "svc")
    with pytest.raises(tether.TetherError):
        make_proxy(uri, secret=SECRET, encoding="pickle").echo(Tripwire())
    assert TRIPPED == []


def test_pickle_refused_on_an_unauthenticated_connection(make_server, make_proxy):
    """allow_pickle without a secret must still never unpickle (refusing the setting is also fine)."""
    try:
        srv = make_server(allow_pickle=True)
    except (ValueError, tether.TetherError):
        return
    uri = srv.register(PickleService(), "svc")
    with pytest.raises(tether.TetherError):
        make_proxy(uri, encoding="pickle").echo(Tripwire())
    assert TRIPPED == []


def test_default_encoding_still_works_on_a_pickle_enabled_server(make_server, make_proxy):
    """Enabling pickle is an option for clients that ask, not a change for everyone else."""
    srv = make_server(secret=SECRET, allow_pickle=True)
    uri = srv.register(PickleService(), "svc")
    assert make_proxy(uri, secret=SECRET).echo((1, "a")) == (1, "a")
