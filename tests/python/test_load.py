"""Load on one server: 200 client connections at once, each making 1,000 calls, against a server in
a child process with its default limits (docs/protocol.md section 9: 4,096 connections, 256 in their
handshake). Every call succeeds with its own result and runs once."""
import threading

import tether
from conftest import CALL_TIMEOUT

CLIENTS = 200
CALLS = 1000

SERVER_SCRIPT = r"""
import sys, threading
import tether

@tether.expose
class Counter:
    def __init__(self, server):
        self._server = server
        self._lock = threading.Lock()
        self.calls = 0

    def add(self, a, b):
        with self._lock:
            self.calls += 1
        return a + b

    def count(self):
        return self.calls

    def connections(self):
        return self._server.connection_count

with tether.Server(host="127.0.0.1", port=0) as server:
    print(server.register(Counter(server), "counter"), flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


def test_200_clients_each_making_1000_calls_all_get_their_own_results(spawn):
    """200 proxies, each on its own thread and connection, are all connected at once (the server
    counts them), then make 1,000 calls each: all 200,000 return the right sum, and the server ran
    exactly 200,000."""
    server = spawn(["-c", SERVER_SCRIPT])
    uri = server.readline(timeout=30)
    all_connected = threading.Barrier(CLIENTS + 1, timeout=120)
    wrong, errors = [], []

    def client(n):
        try:
            with tether.Proxy(uri, timeout=60) as proxy:
                first = proxy.add(n, 0)
                all_connected.wait()
                results = [first] + [proxy.add(n, i) for i in range(1, CALLS)]
                if results != [n + i for i in range(CALLS)]:
                    wrong.append(n)
        except Exception as exc:  # the test fails below, naming it
            errors.append((n, exc))
            all_connected.abort()

    threads = [threading.Thread(target=client, args=(n,), name=f"client-{n}") for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    with tether.Proxy(uri, timeout=CALL_TIMEOUT) as observer:
        try:
            all_connected.wait()
            assert observer.connections() == CLIENTS + 1
        finally:
            for thread in threads:
                thread.join(300)
        assert not any(t.is_alive() for t in threads), "a client's calls never ended"
        assert not errors, errors[:3]
        assert not wrong, f"clients {wrong[:5]} got results that were not theirs"
        assert observer.count() == CLIENTS * CALLS
    assert server.close_stdin_and_wait(timeout=30) == 0, server.stderr_text()
