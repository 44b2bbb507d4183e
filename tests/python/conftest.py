"""Shared fixtures for tether's Python tests: servers, proxies, name servers and child processes."""

import os
import queue
import subprocess
import sys
import threading

import pytest

import tether

# Every blocking call in the suite waits at most this long, so a hang becomes a failure.
CALL_TIMEOUT = 10


@pytest.fixture(autouse=True)
def _no_ambient_secret(monkeypatch):
    """A TETHER_SECRET in the developer's shell must not change what the tests see."""
    monkeypatch.delenv("TETHER_SECRET", raising=False)


@pytest.fixture
def server():
    """A plain TCP server on a free loopback port, closed after the test."""
    srv = tether.Server(host="127.0.0.1", port=0)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def make_server():
    """Factory for servers with custom options; every server it made is closed after the test."""
    servers = []

    def make(**kwargs):
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 0)
        srv = tether.Server(**kwargs)
        servers.append(srv)
        return srv

    yield make
    for srv in reversed(servers):
        srv.close()


@pytest.fixture
def make_proxy():
    """Factory for proxies (default timeout CALL_TIMEOUT); every proxy it made is closed after the test."""
    proxies = []

    def make(uri, **kwargs):
        kwargs.setdefault("timeout", CALL_TIMEOUT)
        proxy = tether.Proxy(uri, **kwargs)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in reversed(proxies):
        proxy.close()


@pytest.fixture
def name_server():
    """An in-process name server on a free loopback port, closed after the test."""
    ns = tether.NameServer(host="127.0.0.1", port=0)
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def ns_proxy(name_server):
    """A name-server proxy from tether.locate_ns, closed after the test."""
    nsp = tether.locate_ns(name_server.address)
    try:
        yield nsp
    finally:
        nsp.close()


def child_env(**extra):
    """Environment for a child Python that imports the same tether as this process."""
    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(tether.__file__)))
    paths = [package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Child:
    """A child process (Python, unless `program` is given) whose stdout lines are read with a timeout."""

    def __init__(self, argv, env, program=None):
        self.proc = subprocess.Popen(
            [program or sys.executable, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._lines = queue.Queue()
        self._stderr = []
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    def _pump_stdout(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _pump_stderr(self):
        for line in self.proc.stderr:
            self._stderr.append(line)

    def stderr_text(self):
        return "".join(self._stderr)

    def readline(self, timeout=30):
        """The next stdout line without its newline; fails the test on timeout or early exit."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"child printed no line within {timeout}s; stderr:\n{self.stderr_text()}")
        if line is None:
            self.proc.wait(timeout=CALL_TIMEOUT)
            pytest.fail(
                f"child exited (code {self.proc.returncode}) before printing; stderr:\n{self.stderr_text()}"
            )
        return line.rstrip("\n")

    def close_stdin_and_wait(self, timeout=20):
        """Close the child's stdin (its signal to stop) and return its exit code."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        return self.proc.wait(timeout=timeout)

    def end(self, timeout=5):
        """Closes its stdin (its signal to stop) and waits for it; kills it when it does not stop."""
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except OSError:
            pass  # it has gone already
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=CALL_TIMEOUT)


@pytest.fixture
def spawn():
    """Factory that starts `python ARGV...` (or `PROGRAM ARGV...`) children; any child still running
    afterwards is killed."""
    children = []

    def start(argv, program=None, **env_extra):
        child = Child(argv, child_env(**env_extra), program)
        children.append(child)
        return child

    yield start
    for child in children:
        child.end(timeout=5)

