"""The process's client runtime (io threads shared by all proxies), created on first use."""
from __future__ import annotations

import atexit
import os
import threading

from .. import _core

_lock = threading.Lock()
_runtime = None


def client_runtime():
    global _runtime
    with _lock:
        if _runtime is None:
            # A cluster worker mainly serves its node: its tasks run on the io thread that read them.
            serving = os.environ.get("TETHER_WORKER_ID") is not None
            _runtime = _core.ClientRuntime(int(os.environ.get("TETHER_CALLBACK_THREADS", "2")), serving)
        return _runtime


def secret_bytes(secret):
    """The shared secret from the argument or the TETHER_SECRET environment variable, as bytes."""
    if secret is None:
        secret = os.environ.get("TETHER_SECRET")
    if secret is None or secret == b"" or secret == "":
        return None
    return secret.encode() if isinstance(secret, str) else bytes(secret)


@atexit.register
def _shutdown():
    global _runtime
    _runtime = None
