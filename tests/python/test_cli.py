"""Tests for the command line: `python -m tether ns` starts a usable name server."""

import re
import subprocess

import pytest

import tether

ADDRESS = re.compile(r"127\.0\.0\.1:(\d+)")


def test_ns_command_prints_its_address_and_serves(spawn):
    """Scripts start `tether ns` and read the address it prints; that address must work with locate_ns."""
    child = spawn(["-m", "tether", "ns", "--host", "127.0.0.1", "--port", "0"])
    address = None
    for _ in range(20):
        match = ADDRESS.search(child.readline(timeout=30))
        if match and int(match.group(1)) > 0:
            address = match.group(0)
            break
    assert address, "the ns command never printed host:port"

    nsp = tether.locate_ns(address)
    try:
        uri = f"tether://{address}/some.object"
        nsp.register("cli.entry", uri)
        assert nsp.lookup("cli.entry") == uri
        assert nsp.list(prefix="cli.") == {"cli.entry": uri}
    finally:
        nsp.close()

    assert child.proc.poll() is None, "the ns command exited while it should be serving"
    child.proc.terminate()
    try:
        child.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("the ns command did not stop on SIGTERM")
