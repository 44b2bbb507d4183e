"""TLS, identities and access control: real TLS over loopback TCP with certificates made by
tether.make_certificates, named secrets, allow-lists, pickle trust and tether.current_context()."""
import asyncio
import os
import stat
import subprocess
import sys

import pytest

import tether
from polling import eventually
from tether._private import launcher


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("certs")
    tether.make_certificates(directory, names=("server", "alice", "bob", "node1", "node2"))
    other = directory / "other"
    tether.make_certificates(other, names=("server",))  # a CA nobody here trusts
    return directory


def tls(certs, name=None, **options):
    return tether.TLSConfig.from_directory(str(certs), name, **options)


@tether.expose
class Service:
    def __init__(self):
        self.calls = 0

    def echo(self, value):
        self.calls += 1
        return value

    def whoami(self):
        context = tether.current_context()
        return [context.peer, sorted(context.names), context.certificate, context.authenticated]

    async def whoami_async(self):
        await asyncio.sleep(0)
        return tether.current_context().peer

    def count(self, n):
        yield from range(n)

    def call_back(self, function, value):
        return function(value)

    @tether.allow("alice")
    def for_alice(self):
        return "granted"


@pytest.fixture
def tls_server(certs):
    with tether.Server(tls=tls(certs, "server")) as server:
        uri = server.register(Service(), "svc")
        yield server, uri


def test_calls_of_every_kind_run_over_tls(certs, tls_server):
    _server, uri = tls_server
    assert uri.startswith("tethers://127.0.0.1:")
    with tether.Proxy(uri, tls=tls(certs), timeout=30) as proxy:
        assert proxy.echo("x") == "x"
        assert proxy.echo.future(b"y" * (8 << 20)).result(timeout=30) == b"y" * (8 << 20)
        assert list(proxy.count(5)) == [0, 1, 2, 3, 4]
        assert proxy.call_back(lambda v: v * 2, 21) == 42  # the server calls back over the same TLS link
        assert asyncio.run(_awaited(proxy)) == "z"


async def _awaited(proxy):
    return await proxy.echo.future("z")


def test_server_signed_by_an_untrusted_ca_is_refused(certs):
    with tether.Server(tls=tls(certs / "other", "server")) as server:
        uri = server.register(Service(), "svc")
        with pytest.raises(tether.AuthenticationError, match="certificate verify failed"):
            tether.Proxy(uri, tls=tls(certs)).echo(1)


def test_plain_client_to_tls_server_gets_a_hint_and_the_server_goes_on(certs, tls_server):
    _server, uri = tls_server
    plain = uri.replace("tethers://", "tether://")
    with pytest.raises(tether.CommunicationError, match="tethers://"):
        tether.Proxy(plain, tls=False).echo(1)
    with tether.Proxy(uri, tls=tls(certs)) as proxy:
        assert proxy.echo(2) == 2


def test_tls_client_to_plain_server_fails_cleanly(certs):
    with tether.Server() as server:
        uri = server.register(Service(), "svc")
        with pytest.raises(tether.TetherError):
            tether.Proxy(uri, tls=tls(certs), connect_timeout=5).echo(1)
        with tether.Proxy(uri, tls=False) as proxy:
            assert proxy.echo(3) == 3


def test_verification_can_be_turned_off_only_explicitly(certs):
    with tether.Server(tls=tls(certs / "other", "server")) as server:
        uri = server.register(Service(), "svc")
        with tether.Proxy(uri, tls=tether.TLSConfig(verify=False)) as proxy:
            assert proxy.echo("unverified") == "unverified"
            # the client knows nothing of the server, so it is not "authenticated"
            assert proxy.whoami() == [None, [], None, False]


def test_mutual_tls_names_the_caller_by_its_certificate(certs):
    with tether.Server(tls=tls(certs, "server", mutual=True)) as server:
        uri = server.register(Service(), "svc")
        with tether.Proxy(uri, tls=tls(certs, "alice")) as alice:
            assert alice.whoami() == ["alice", ["alice"], "CN=alice,O=tether", True]
            assert alice.whoami_async() == "alice"  # async methods see their caller too
            assert alice.for_alice() == "granted"
        with pytest.raises(tether.AuthenticationError, match="certificate required"):
            tether.Proxy(uri, tls=tls(certs)).echo(1)
        with tether.Proxy(uri, tls=tls(certs, "bob")) as bob:
            with pytest.raises(tether.AuthenticationError, match="caller bob may not call 'svc.for_alice'"):
                bob.for_alice()
            assert bob.echo("still served") == "still served"  # a refusal costs nothing else


def test_named_secrets_identify_callers():
    identities = {"alice": b"alice-key", "bob": b"bob-key"}
    with tether.Server(secret=b"shared", identities=identities) as server:
        uri = server.register(Service(), "svc")
        with tether.Proxy(uri, secret=b"alice-key", identity="alice") as alice:
            assert alice.whoami() == ["alice", ["alice"], None, True]
        with tether.Proxy(uri, secret=b"shared") as anyone:
            assert anyone.whoami()[0] == "default"
        with pytest.raises(tether.AuthenticationError):
            tether.Proxy(uri, secret=b"bob-key", identity="alice").echo(1)
        with pytest.raises(tether.AuthenticationError) as unknown:
            tether.Proxy(uri, secret=b"x", identity="mallory").echo(1)
        with pytest.raises(tether.AuthenticationError) as wrong:
            tether.Proxy(uri, secret=b"x", identity="alice").echo(1)
        assert str(unknown.value) == str(wrong.value)  # names cannot be probed
        with pytest.raises(tether.AuthenticationError):
            tether.Proxy(uri).echo(1)  # no secret at all: nothing can be called


def test_identity_comes_from_the_environment(monkeypatch):
    with tether.Server(identities={"carol": b"carol-key"}) as server:
        uri = server.register(Service(), "svc")
        monkeypatch.setenv("TETHER_SECRET", "carol-key")
        monkeypatch.setenv("TETHER_IDENTITY", "carol")
        with tether.Proxy(uri) as proxy:
            assert proxy.whoami()[0] == "carol"


def test_allow_list_on_a_whole_object():
    with tether.Server(identities={"alice": b"a" * 16, "bob": b"b" * 16}) as server:
        service = Service()
        uri = server.register(service, "svc", allow={"bob"})
        with tether.Proxy(uri, secret=b"a" * 16, identity="alice") as alice:
            with pytest.raises(tether.AuthenticationError, match="caller alice may not call 'svc.echo'"):
                alice.echo(1)
            assert alice.for_alice() == "granted"  # the method's own list wins over the object's
        with tether.Proxy(uri, secret=b"b" * 16, identity="bob") as bob:
            assert bob.echo(1) == 1
        assert service.calls == 1  # the refused call never ran


def test_allow_needs_names():
    with pytest.raises(ValueError):
        tether.allow()
    with tether.Server() as server:
        with pytest.raises(ValueError):
            server.register(Service(), "svc", allow=[])


def test_anonymous_callers_are_refused_by_allow_lists():
    with tether.Server() as server:
        uri = server.register(Service(), "svc")
        with tether.Proxy(uri) as proxy:
            with pytest.raises(tether.AuthenticationError, match="anonymous caller may not call"):
                proxy.for_alice()
            assert proxy.whoami() == [None, [], None, False]


def test_current_context_is_none_outside_a_call():
    assert tether.current_context() is None


def test_pickle_only_from_identities_trusted_with_it():
    identities = {"alice": b"alice-key", "bob": b"bob-key"}
    with tether.Server(identities=identities, allow_pickle=True, pickle_from={"alice"}) as server:
        uri = server.register(Service(), "svc")
        value = complex(1, 2)  # not in the data-only encoding
        with tether.Proxy(uri, secret=b"alice-key", identity="alice", encoding="pickle") as alice:
            assert alice.echo(value) == value
        with tether.Proxy(uri, secret=b"bob-key", identity="bob", encoding="pickle") as bob:
            with pytest.raises(tether.TetherError, match="pickle"):
                bob.echo(value)


def test_pickle_trust_by_certificate(certs):
    with tether.Server(tls=tls(certs, "server", mutual=True), allow_pickle=True, pickle_from={"alice"}) as server:
        uri = server.register(Service(), "svc")
        with tether.Proxy(uri, tls=tls(certs, "alice"), encoding="pickle") as alice:
            assert alice.echo(complex(0, 1)) == complex(0, 1)
        with tether.Proxy(uri, tls=tls(certs, "bob"), encoding="pickle") as bob:
            with pytest.raises(tether.TetherError, match="pickle"):
                bob.echo(complex(0, 1))


def test_tls_from_the_environment(certs, tls_server, monkeypatch):
    _server, uri = tls_server
    monkeypatch.setenv("TETHER_TLS_CA", str(certs / "ca.pem"))
    with tether.Proxy(uri) as proxy:
        assert proxy.echo("env") == "env"


def test_bad_tls_files_fail_at_once(certs, tmp_path):
    with pytest.raises(tether.TetherError, match="cannot load the TLS certificate"):
        tether.Server(tls=tether.TLSConfig(cert=str(tmp_path / "missing.pem"), key=str(certs / "server.key")))
    with pytest.raises(tether.TetherError, match="does not match"):
        tether.Server(tls=tether.TLSConfig(cert=str(certs / "server.pem"), key=str(certs / "alice.key")))
    with pytest.raises(tether.TetherError, match="certificate and its key"):
        tether.Server(tls=tether.TLSConfig(ca=str(certs / "ca.pem")))
    with pytest.raises(TypeError):
        tether.Proxy("tethers://127.0.0.1:1/x", tls="yes")


def test_name_server_over_tls(certs):
    with tether.NameServer(tls=tls(certs, "server")) as ns, tether.Server(tls=tls(certs, "server")) as server:
        uri = server.register(Service(), "svc")
        with tether.locate_ns(ns.address, tls=tls(certs)) as names:
            names.register("svc", uri)
            assert names.lookup("svc") == uri
        with tether.Proxy(f"tethernss://{ns.address}/svc", tls=tls(certs)) as proxy:
            assert proxy.echo("via names") == "via names"


def test_certs_command_writes_a_ca_and_private_keys(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tether", "certs", str(tmp_path), "--name", "n1", "--host", "10.1.2.3"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in ("ca.pem", "ca.key", "n1.pem", "n1.key"):
        assert (tmp_path / name).stat().st_size > 0
    for key in ("ca.key", "n1.key"):
        assert stat.S_IMODE(os.stat(tmp_path / key).st_mode) == 0o600
    ca_before = (tmp_path / "ca.pem").read_bytes()
    tether.make_certificates(tmp_path, names=("n2",))
    assert (tmp_path / "ca.pem").read_bytes() == ca_before  # the CA is reused


def test_cluster_over_tls_with_a_second_node(certs):
    """Driver -> head and node -> node links are TLS; a driver without a certificate is refused."""
    if tether.is_initialized():
        tether.shutdown()
    node_tls = tls(certs, "node1", mutual=True)
    tether.init(num_cpus=1, tls=node_tls)
    node = None
    try:
        head = tether._private.cluster_state.info()
        node, info = launcher.start_embedded(1, {"special": 1}, None, join=head["address"], secret=head["secret"],
                                             forward_output=False, tls=tls(certs, "node2", mutual=True))
        assert eventually(lambda: len(tether.nodes()) == 2), "node 2 never joined over TLS"

        @tether.remote(resources={"special": 1})
        def on_node_two(x):
            return x * 3

        assert tether.get(on_node_two.remote(14), timeout=60) == 42  # forwarded to node 2 over TLS
        code = ("import tether, sys\n"
                f"tether.init(address={head['address']!r}, secret={head['secret']!r}, "
                f"tls=tether.TLSConfig(ca={str(certs / 'ca.pem')!r}))\n")
        refused = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "certificate required" in refused.stderr
    finally:
        if node is not None:
            node.stdin.close()
            node.wait(timeout=30)
            launcher.remove_leftovers(info)
        tether.shutdown()
