"""Limits that hold under abuse (docs/protocol.md section 9): connections per server, connections in
their handshake, async calls in flight per connection. A hostile client is refused with `overloaded`
and the clients already in go on."""

import asyncio
import socket
import threading

import pytest

import tether

from conftest import CALL_TIMEOUT


@tether.expose
class Service:
    def __init__(self):
        self.loop = None
        self.gate = None

    def echo(self, value):
        return value

    async def wait_at_gate(self, i):
        if self.gate is None:
            self.loop, self.gate = asyncio.get_running_loop(), asyncio.Event()
        await self.gate.wait()
        return i

    def open_gate(self):
        self.loop.call_soon_threadsafe(self.gate.set)


def host_port(server):
    host, port = server.address.rsplit(":", 1)
    return host, int(port)


def test_connections_over_the_limit_are_refused_and_the_others_go_on(make_server, make_proxy):
    server = make_server(max_connections=3)
    uri = server.register(Service(), "svc")
    inside = [make_proxy(uri) for _ in range(3)]
    for i, proxy in enumerate(inside):
        assert proxy.echo(i) == i  # three connections in
    with pytest.raises(tether.CommunicationError, match="maximum of 3 connections"):
        tether.Proxy(uri, timeout=CALL_TIMEOUT).echo("refused")
    assert [p.echo("still") for p in inside] == ["still"] * 3
    inside.pop().close()
    for _ in range(100):  # the server notices the closed connection within moments
        try:
            with tether.Proxy(uri, timeout=CALL_TIMEOUT) as late:
                assert late.echo("in") == "in"
            break
        except tether.CommunicationError:
            threading.Event().wait(0.05)
    else:
        pytest.fail("a slot freed by a closed connection was never given out again")


def test_silent_connections_hold_handshake_slots_only_until_they_are_gone(make_server, make_proxy):
    server = make_server(max_handshaking=2)
    uri = server.register(Service(), "svc")
    member = make_proxy(uri)
    assert member.echo(1) == 1  # through its handshake: it does not count
    silent = [socket.create_connection(host_port(server)) for _ in range(2)]  # connect, say nothing
    try:
        for _ in range(100):  # both are accepted (the accept loop runs on the server's thread)
            try:
                tether.Proxy(uri, timeout=CALL_TIMEOUT).echo("probe")
            except tether.CommunicationError as exc:
                assert "in their handshake" in str(exc)
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("two silent connections never filled the two handshake slots")
        assert member.echo(2) == 2  # the connection already in is untouched
    finally:
        for sock in silent:
            sock.close()
    for _ in range(100):
        try:
            with tether.Proxy(uri, timeout=CALL_TIMEOUT) as late:
                assert late.echo("in") == "in"
            return
        except tether.CommunicationError:
            threading.Event().wait(0.05)
    pytest.fail("the handshake slots of closed silent connections were never given out again")


def test_async_calls_in_flight_are_bounded_per_connection(make_server, make_proxy):
    service = Service()
    server = make_server()
    proxy = make_proxy(server.register(service, "svc"), timeout=60)
    futures = [proxy.wait_at_gate.future(i) for i in range(1100)]
    # Requests run on several dispatch threads, so which 76 are refused is not fixed; how many is.
    for _ in range(1200):
        if sum(f.done() for f in futures) >= 76:
            break
        threading.Event().wait(0.05)
    refused = [f for f in futures if f.done()]
    assert len(refused) == 76
    for f in refused:
        with pytest.raises(tether.CommunicationError, match="too many async calls in flight"):
            f.result()
    with make_proxy(server.uri("svc")) as other:
        other.open_gate()
    waited = [(i, f) for i, f in enumerate(futures) if f not in refused]
    assert [f.result(timeout=60) for _, f in waited] == [i for i, _ in waited]
    assert proxy.echo("after") == "after"  # the connection goes on
