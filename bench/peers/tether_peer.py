"""tether peer: a tether.Server serving one Echo object; the client uses tether.Proxy."""

from _common import Client, Skip, main

_servers = []  # the server lives as long as the process, not as long as start_server()


def _import_tether():
    try:
        import tether
        tether.Server, tether.Proxy, tether.expose  # a half-built package must skip, not crash later
    except Exception as exc:
        raise Skip(f"tether not importable: {type(exc).__name__}: {exc}") from exc
    return tether


def start_server():
    tether = _import_tether()

    @tether.expose
    class Echo:
        def echo(self, x):
            return x

    try:
        server = tether.Server(host="127.0.0.1", port=0)
        _servers.append(server)
        return server.register(Echo(), "echo")
    except Exception as exc:
        raise Skip(f"tether.Server failed: {type(exc).__name__}: {exc}") from exc


class TetherClient(Client):
    pipelined_label = "echo.future"

    def __init__(self, uri):
        tether = _import_tether()
        self.label = f"tether {getattr(tether, '__version__', '?')}"
        try:
            self._proxy = tether.Proxy(uri, timeout=30)
        except Exception as exc:
            raise Skip(f"tether.Proxy failed: {type(exc).__name__}: {exc}") from exc
        self.echo = self._proxy.echo

    def pipelined(self, n):
        p = self._proxy
        futures = [p.echo.future(i) for i in range(n)]
        last = None
        for f in futures:
            last = f.result()
        return last

    def echo_big(self, payload):
        return self.echo(payload)

    def close(self):
        self._proxy.close()


def connect(address):
    return TetherClient(address)


if __name__ == "__main__":
    main(start_server, connect, "tether")
