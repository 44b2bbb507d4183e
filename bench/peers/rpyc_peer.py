"""RPyC peer: service mode, an rpyc.Service subclass with exposed_ methods under a ThreadedServer."""

import threading

from _common import Client, Skip, main

_CONFIG = {"sync_request_timeout": 120}


def _import_rpyc():
    try:
        import rpyc
        from rpyc.utils.server import ThreadedServer
    except Exception as exc:
        raise Skip(f"rpyc not importable: {type(exc).__name__}: {exc}") from exc
    return rpyc, ThreadedServer


def start_server():
    rpyc, ThreadedServer = _import_rpyc()

    class EchoService(rpyc.Service):
        def exposed_echo(self, x):
            return x

    server = ThreadedServer(EchoService, hostname="127.0.0.1", port=0, protocol_config=_CONFIG)
    threading.Thread(target=server.start, daemon=True).start()
    return f"127.0.0.1:{server.port}"


class RpycClient(Client):
    pipelined_label = "rpyc.async_"

    def __init__(self, address):
        rpyc, _ = _import_rpyc()
        host, port = address.rsplit(":", 1)
        self.label = f"RPyC {rpyc.__version__}"
        self._conn = rpyc.connect(host, int(port), config=_CONFIG)
        # Fetch the remote method once: conn.root.echo is itself a round trip.
        self.echo = self._conn.root.echo
        self._async_echo = rpyc.async_(self.echo)

    def pipelined(self, n):
        async_echo = self._async_echo
        pending = [async_echo(i) for i in range(n)]
        last = None
        for result in pending:
            last = result.value
        return last

    def echo_big(self, payload):
        return self.echo(payload)

    def close(self):
        self._conn.close()


def connect(address):
    return RpycClient(address)


if __name__ == "__main__":
    main(start_server, connect, "rpyc")
