"""Pyro5 peer: a Daemon serving one Echo object with the default serializer (serpent)."""

import threading

from _common import Client, Skip, main


def _import_pyro5():
    try:
        import Pyro5
        import Pyro5.api
        import serpent
    except Exception as exc:
        raise Skip(f"Pyro5 not importable: {type(exc).__name__}: {exc}") from exc
    return Pyro5, Pyro5.api, serpent


def start_server():
    _, api, _ = _import_pyro5()

    @api.expose
    class Echo:
        def echo(self, x):
            return x

    daemon = api.Daemon(host="127.0.0.1", port=0)
    uri = daemon.register(Echo(), "echo")
    threading.Thread(target=daemon.requestLoop, daemon=True).start()
    return str(uri)


class PyroClient(Client):
    pipelined_label = "BatchProxy"

    def __init__(self, uri):
        pyro5, api, serpent = _import_pyro5()
        self.label = f"Pyro5 {pyro5.__version__} ({pyro5.config.SERIALIZER})"
        self._api = api
        self._serpent = serpent
        self._proxy = api.Proxy(uri)
        self._proxy._pyroTimeout = 120
        self._proxy._pyroBind()
        self.echo = self._proxy.echo

    def pipelined(self, n):
        # Pyro5 has no futures (its async proxies were removed); a batch is its way to put many
        # calls on the wire without waiting for each: one request message, one reply message.
        batch = self._api.BatchProxy(self._proxy)
        for i in range(n):
            batch.echo(i)
        last = None
        for last in batch():
            pass
        return last

    def echo_big(self, payload):
        # serpent carries bytes as a base64 dict; turning it back into bytes is part of the cost.
        return self._serpent.tobytes(self._proxy.echo(payload))

    def close(self):
        self._proxy._pyroRelease()


def connect(address):
    return PyroClient(address)


if __name__ == "__main__":
    main(start_server, connect, "pyro5")
