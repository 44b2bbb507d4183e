"""Tests for shared-secret authentication between proxies and servers."""

import pytest

import tether

SECRET = b"s3cret"


@tether.expose
class Greeter:
    def hello(self, name):
        return f"hello {name}"


@pytest.fixture
def secured_uri(make_server):
    srv = make_server(secret=SECRET)
    return srv.register(Greeter(), "greeter")


def test_right_secret_is_accepted(secured_uri, make_proxy):
    """A proxy with the server's secret calls normally."""
    assert make_proxy(secured_uri, secret=SECRET).hello("a") == "hello a"


def test_wrong_secret_raises_authentication_error(secured_uri):
    """A wrong secret is refused with AuthenticationError, not a generic failure."""
    with pytest.raises(tether.AuthenticationError):
        with tether.Proxy(secured_uri, timeout=10, secret=b"wrong") as proxy:
            proxy.hello("a")


def test_missing_secret_raises_authentication_error(secured_uri):
    """A server with a secret never serves an unauthenticated client."""
    with pytest.raises(tether.AuthenticationError):
        with tether.Proxy(secured_uri, timeout=10) as proxy:
            proxy.hello("a")


def test_server_keeps_serving_after_failed_authentications(secured_uri, make_proxy):
    """Rejected clients must not disturb the server for legitimate ones."""
    for bad in (b"wrong", None, b"also-wrong"):
        with pytest.raises(tether.AuthenticationError):
            with tether.Proxy(secured_uri, timeout=10, secret=bad) as proxy:
                proxy.hello("x")
    assert make_proxy(secured_uri, secret=SECRET).hello("ok") == "hello ok"


def test_proxy_reads_tether_secret_from_the_environment(secured_uri, make_proxy, monkeypatch):
    """TETHER_SECRET supplies the secret when secret= is not given."""
    monkeypatch.setenv("TETHER_SECRET", SECRET.decode())
    assert make_proxy(secured_uri).hello("env") == "hello env"


def test_wrong_tether_secret_in_the_environment_is_refused(secured_uri, monkeypatch):
    """The environment secret is checked like any other."""
    monkeypatch.setenv("TETHER_SECRET", "not-the-secret")
    with pytest.raises(tether.AuthenticationError):
        with tether.Proxy(secured_uri, timeout=10) as proxy:
            proxy.hello("a")


def test_server_reads_tether_secret_from_the_environment(make_server, make_proxy, monkeypatch):
    """A server created without secret= but with TETHER_SECRET set requires that secret."""
    monkeypatch.setenv("TETHER_SECRET", "from-env")
    srv = make_server()
    uri = srv.register(Greeter(), "greeter")
    monkeypatch.delenv("TETHER_SECRET")
    with pytest.raises(tether.AuthenticationError):
        with tether.Proxy(uri, timeout=10) as proxy:
            proxy.hello("a")
    assert make_proxy(uri, secret=b"from-env").hello("b") == "hello b"
