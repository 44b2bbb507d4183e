"""tether over TLS: the tether peer with a TLS server (a certificate from a private CA that this
script makes) and a client that verifies it; the cost of TLS, beside the plain tether column."""

import os
import tempfile

import tether_peer
from _common import Skip, main

# Made by the server process, read by the client process that the harness starts after it.
CERT_DIR = os.path.join(tempfile.gettempdir(), f"tether-bench-tls-{os.getuid()}")


def start_server():
    tether = tether_peer._import_tether()
    tether.make_certificates(CERT_DIR, names=("server",))
    tls = tether.TLSConfig.from_directory(CERT_DIR, "server")

    @tether.expose
    class Echo:
        def echo(self, x):
            return x

    try:
        server = tether.Server(host="127.0.0.1", port=0, tls=tls)
        tether_peer._servers.append(server)
        return server.register(Echo(), "echo")
    except Exception as exc:
        raise Skip(f"tether.Server with TLS failed: {type(exc).__name__}: {exc}") from exc


class TetherTlsClient(tether_peer.TetherClient):
    def __init__(self, uri):
        tether = tether_peer._import_tether()
        self.label = f"tether {getattr(tether, '__version__', '?')} over TLS"
        try:
            self._proxy = tether.Proxy(uri, timeout=30, tls=tether.TLSConfig.from_directory(CERT_DIR))
        except Exception as exc:
            raise Skip(f"tether.Proxy with TLS failed: {type(exc).__name__}: {exc}") from exc
        self.echo = self._proxy.echo


def connect(address):
    return TetherTlsClient(address)


if __name__ == "__main__":
    main(start_server, connect, "tether_tls")
