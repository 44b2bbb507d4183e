"""ZeroC Ice peer (Python mapping, Debian python3-zeroc-ice): an Ice object adapter serving Bench::Echo
(bench/ice/Bench.ice); the client calls echoLong / echoLongAsync / echoBytes. Run with the Python
that has Ice (bench/ice_bench.py uses /usr/bin/python3)."""

import os

from _common import Client, Skip, main

SLICE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ice", "Bench.ice")
_keep = []


def _ice():
    try:
        import Ice
        Ice.loadSlice(SLICE)
        import Bench
    except Exception as exc:
        raise Skip(f"Ice not importable: {type(exc).__name__}: {exc}") from exc
    return Ice, Bench


def _communicator(Ice):
    data = Ice.InitializationData()
    data.properties = Ice.createProperties()
    data.properties.setProperty("Ice.MessageSizeMax", "0")  # Ice refuses messages over 1 MiB by default
    return Ice.initialize(data)


def start_server():
    Ice, Bench = _ice()

    class EchoI(Bench.Echo):
        def echoLong(self, x, current=None):
            return x

        def echoBytes(self, data, current=None):
            return data

    communicator = _communicator(Ice)
    adapter = communicator.createObjectAdapterWithEndpoints("Bench", "tcp -h 127.0.0.1 -p 0")
    proxy = adapter.add(EchoI(), Ice.stringToIdentity("echo"))
    adapter.activate()
    _keep.extend([communicator, adapter])
    return proxy.ice_toString()


class IceClient(Client):
    pipelined_label = "echoLongAsync"

    def __init__(self, address):
        Ice, Bench = _ice()
        self.label = f"Ice {Ice.stringVersion()}"
        self._communicator = _communicator(Ice)
        self._proxy = Bench.EchoPrx.checkedCast(self._communicator.stringToProxy(address))
        self.echo = self._proxy.echoLong

    def pipelined(self, n):
        futures = [self._proxy.echoLongAsync(i) for i in range(n)]
        last = None
        for f in futures:
            last = f.result()
        return last

    def echo_big(self, payload):
        return self._proxy.echoBytes(payload)

    def close(self):
        self._communicator.destroy()


def connect(address):
    return IceClient(address)


if __name__ == "__main__":
    main(start_server, connect, "ice")
