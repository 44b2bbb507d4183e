"""Quickstart: a name server, a server process and a client; sync, future/await, oneway, streaming
and callback calls."""
import asyncio
import subprocess
import sys
import textwrap
import time

import tether

SERVER = textwrap.dedent("""
    import sys, tether

    @tether.expose
    class Greeter:
        def __init__(self):
            self.notes = []
        def hello(self, name):
            return f"hello {name}"
        @tether.oneway
        def note(self, text):
            self.notes.append(text)
        def notes_so_far(self):
            return list(self.notes)
        def count(self, n):
            yield from range(n)
        def each(self, items, callback):
            return [callback(item) for item in items]

    server = tether.Server(host="127.0.0.1", port=0)
    uri = server.register(Greeter(), "greeter")
    tether.locate_ns(sys.argv[1]).register("example.greeter", uri, metadata={"example"})
    print(uri, flush=True)
    sys.stdin.read()          # serve until the parent closes our stdin
    server.close()
""")


def main():
    with tether.NameServer(host="127.0.0.1", port=0) as ns:
        print(f"name server at {ns.address}")
        server = subprocess.Popen([sys.executable, "-c", SERVER, ns.address], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            print(f"server process {server.pid} serves {server.stdout.readline().strip()}")
            greeter = tether.Proxy(f"tetherns://{ns.address}/example.greeter", timeout=10)
            print("sync:     ", greeter.hello("ann"))
            print("future:   ", greeter.hello.future("bob").result())
            print("await:    ", asyncio.run(await_hello(greeter)))
            greeter.note("sent oneway")
            time.sleep(0.1)
            print("oneway:   ", greeter.notes_so_far())
            print("stream:   ", list(greeter.count(5)))
            print("callback: ", greeter.each([1, 2, 3], lambda x: x * 10), "(each computed in this process)")
            greeter.close()
        finally:
            server.stdin.close()
            server.wait(timeout=30)
    print("done")


async def await_hello(greeter):
    return await greeter.hello.future("cy")


if __name__ == "__main__":
    main()
