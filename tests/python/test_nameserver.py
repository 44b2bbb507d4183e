"""Tests for the name server: register, lookup, list, remove, metadata, tetherns:// uris and the sweep."""

import re
import time

import pytest

import tether


@tether.expose
class Greeter:
    def hello(self, name):
        return f"hello {name}"


@pytest.fixture
def live_uri(server):
    """Entries point at a live server so the periodic sweep never removes them during a test."""
    def uri_for(name):
        return f"tether://{server.address}/{name}"

    server.register(Greeter(), "greeter")
    return uri_for


def test_name_server_address_is_host_and_bound_port(name_server):
    """ns.address is what other processes pass to locate_ns, so it must name the real port."""
    match = re.fullmatch(r"127\.0\.0\.1:(\d+)", name_server.address)
    assert match, name_server.address
    assert int(match.group(1)) > 0


def test_register_then_lookup_returns_the_uri(ns_proxy, live_uri):
    """The core service: a name maps to the uri registered for it."""
    ns_proxy.register("app.greeter", live_uri("greeter"))
    assert ns_proxy.lookup("app.greeter") == live_uri("greeter")


def test_lookup_of_an_unknown_name_raises(ns_proxy):
    """An unknown name is an error, never a None or empty uri."""
    with pytest.raises((KeyError, tether.TetherError)):
        ns_proxy.lookup("no.such.name")


def test_list_returns_registered_entries(ns_proxy, live_uri):
    """list() is a name -> uri dict that includes every registered entry."""
    ns_proxy.register("app.a", live_uri("a"))
    ns_proxy.register("app.b", live_uri("b"))
    listing = ns_proxy.list()
    assert isinstance(listing, dict)
    assert listing["app.a"] == live_uri("a")
    assert listing["app.b"] == live_uri("b")


def test_list_with_prefix_returns_only_matching_names(ns_proxy, live_uri):
    """prefix= narrows the listing to names starting with it, and to all of those."""
    ns_proxy.register("app.a", live_uri("a"))
    ns_proxy.register("app.b", live_uri("b"))
    ns_proxy.register("other.c", live_uri("c"))
    assert ns_proxy.list(prefix="app.") == {"app.a": live_uri("a"), "app.b": live_uri("b")}
    assert ns_proxy.list(prefix="other.") == {"other.c": live_uri("c")}
    assert ns_proxy.list(prefix="nothing.") == {}


def test_remove_deletes_the_entry(ns_proxy, live_uri):
    """After remove() the name is gone from lookup and list, and other names stay."""
    ns_proxy.register("app.gone", live_uri("gone"))
    ns_proxy.register("app.kept", live_uri("kept"))
    ns_proxy.remove("app.gone")
    with pytest.raises((KeyError, tether.TetherError)):
        ns_proxy.lookup("app.gone")
    listing = ns_proxy.list()
    assert "app.gone" not in listing
    assert listing["app.kept"] == live_uri("kept")


def test_lookup_by_metadata_returns_entries_having_all_tags(ns_proxy, live_uri):
    """Metadata tags select services: an entry matches only if it has every requested tag."""
    ns_proxy.register("w.fast_gpu", live_uri("w1"), metadata=["gpu", "fast"])
    ns_proxy.register("w.slow_gpu", live_uri("w2"), metadata={"gpu"})
    ns_proxy.register("w.cpu", live_uri("w3"), metadata=["cpu", "fast"])
    ns_proxy.register("w.untagged", live_uri("w4"))
    assert ns_proxy.lookup_by_metadata(["gpu"]) == {
        "w.fast_gpu": live_uri("w1"),
        "w.slow_gpu": live_uri("w2"),
    }
    assert ns_proxy.lookup_by_metadata(["gpu", "fast"]) == {"w.fast_gpu": live_uri("w1")}
    assert ns_proxy.lookup_by_metadata(["fast"]) == {
        "w.fast_gpu": live_uri("w1"),
        "w.cpu": live_uri("w3"),
    }
    assert ns_proxy.lookup_by_metadata(["tpu"]) == {}


def test_tetherns_uri_resolves_through_the_name_server(name_server, ns_proxy, server, make_proxy):
    """tetherns://HOST:PORT/NAME lets a client reach an object knowing only its name."""
    ns_proxy.register("app.greeter", f"tether://{server.address}/greeter")
    server.register(Greeter(), "greeter")
    proxy = make_proxy(f"tetherns://{name_server.address}/app.greeter")
    assert proxy.hello("via ns") == "hello via ns"


def test_entries_of_a_closed_server_are_swept():
    """The sweep removes names whose server stopped answering and keeps names of live servers."""
    ns = tether.NameServer(host="127.0.0.1", port=0, sweep_interval=0.5)
    live = tether.Server(host="127.0.0.1", port=0)
    try:
        nsp = tether.locate_ns(ns.address)
        try:
            doomed = tether.Server(host="127.0.0.1", port=0)
            try:
                doomed_uri = doomed.register(Greeter(), "doomed")
                nsp.register("app.doomed", doomed_uri)
            finally:
                doomed.close()
            live_uri = live.register(Greeter(), "live")
            nsp.register("app.live", live_uri)

            deadline = time.monotonic() + 20
            while "app.doomed" in nsp.list():
                if time.monotonic() > deadline:
                    pytest.fail("entry of a closed server was still listed after 20 s")
                time.sleep(0.1)
            assert nsp.list().get("app.live") == live_uri
        finally:
            nsp.close()
    finally:
        live.close()
        ns.close()
