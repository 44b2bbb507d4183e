"""TLS configuration, certificates for test clusters, and who is calling (current_context)."""
from __future__ import annotations

import contextvars
import os
from dataclasses import dataclass, field

from . import _core

# Set by the engine to (names, certificate subject, address, authenticated) while a remote call runs;
# `async def` methods see it too (their task copies the context of the thread that started them).
_call_context: contextvars.ContextVar = contextvars.ContextVar("tether_call_context", default=None)
_core.set_call_context(_call_context)


@dataclass(frozen=True)
class CallContext:
    """Who is calling the method that is running now.

    `peer`: the caller's identity: the common name of its verified TLS certificate, else the name
    of the secret it proved ("default" for a server's `secret=`), else None (anonymous).
    `names`: every identity the caller proved (both of the above when it proved both).
    `certificate`: the subject of its verified certificate ("CN=alice,O=tether") or None.
    `address`: where the call came from. `authenticated`: it proved a secret or a certificate."""

    peer: str | None
    names: frozenset = field(default_factory=frozenset)
    certificate: str | None = None
    address: str = ""
    authenticated: bool = False


def current_context() -> CallContext | None:
    """The caller of the remote call running in this thread or task; None outside a remote call."""
    raw = _call_context.get()
    if raw is None:
        return None
    names, subject, address, authenticated = raw
    common_name = next((part[3:] for part in subject.split(",") if part.startswith("CN=")), None) if subject else None
    others = sorted(names - {common_name})
    peer = common_name if common_name in names else (others[0] if others else None)
    return CallContext(peer, names, subject or None, address, authenticated)


@dataclass(frozen=True)
class TLSConfig:
    """TLS for a server, a proxy or a cluster (PEM files).

    A server needs `cert` and `key`; with `ca` it also asks clients for a certificate signed by that
    CA, and with `mutual=True` refuses clients without one. A client verifies the server against
    `ca` (the system's trusted roots when None) and that the certificate names the host it
    connects to; with `cert`/`key` it presents its own certificate (mutual TLS).
    `verify=False` (client only) turns verification off: encryption without knowing who answers,
    for tests only."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    mutual: bool = False
    verify: bool = True
    check_hostname: bool = True

    @classmethod
    def from_directory(cls, directory: str, name: str | None = None, **options) -> "TLSConfig":
        """The files `tether certs` writes: DIRECTORY/ca.pem, and NAME.pem / NAME.key when a name is given."""
        def path(stem):
            return os.path.join(directory, stem)
        if name is None:
            return cls(ca=path("ca.pem"), **options)
        return cls(cert=path(name + ".pem"), key=path(name + ".key"), ca=path("ca.pem"), **options)

    @classmethod
    def from_environment(cls) -> "TLSConfig | None":
        """From TETHER_TLS_CERT, TETHER_TLS_KEY and TETHER_TLS_CA; None when none is set."""
        cert, key, ca = (os.environ.get(n) or None for n in ("TETHER_TLS_CERT", "TETHER_TLS_KEY", "TETHER_TLS_CA"))
        if not (cert or key or ca):
            return None
        return cls(cert=cert, key=key, ca=ca)

    def _context(self):
        """The engine's TLS context (files loaded and checked once per configuration)."""
        cached = _contexts.get(self)
        if cached is None:
            cached = _core.TlsContext.create(self.cert or "", self.key or "", self.ca or "", self.mutual, self.verify,
                                             self.check_hostname)
            _contexts[self] = cached
        return cached


_contexts: dict = {}


def tls_context(tls) -> object | None:
    """The engine context for a `tls=` argument: a TLSConfig, True (from the environment), or None."""
    if tls is None or tls is False:
        return None
    if tls is True:
        tls = TLSConfig.from_environment() or TLSConfig()
    if not isinstance(tls, TLSConfig):
        raise TypeError(f"tls must be a tether.TLSConfig, True or None, not {type(tls).__name__}")
    return tls._context()


def client_tls(tls) -> object | None:
    """The engine context a client connects with: `tls` as tls_context() takes it, and when None,
    the process's TLS configuration from TETHER_TLS_* if any (a process that has one speaks TLS on
    every TCP connection it makes, so addresses and tether:// URIs of a TLS cluster just work)."""
    if tls is None:
        configured = TLSConfig.from_environment()
        return configured._context() if configured else None
    return tls_context(tls)


def make_certificates(directory: str, names=("server", "client"), hosts=("localhost", "127.0.0.1", "::1"),
                      days: int = 365) -> None:
    """Writes a private CA (DIRECTORY/ca.pem, ca.key; reused when present) and, for each name,
    NAME.pem and NAME.key signed by it, valid for `hosts` and usable by servers and clients alike.
    For test clusters and development; keys are readable by their owner only."""
    _core.write_certificates(os.fspath(directory), [(name, list(hosts)) for name in names], days)


def identities_bytes(identities) -> dict:
    """{name: secret} with secrets as bytes; names must be non-empty strings."""
    result = {}
    for name, secret in (identities or {}).items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"identity names must be non-empty strings, not {name!r}")
        if not secret:
            raise ValueError(f"identity {name!r} has an empty secret")
        result[name] = secret.encode() if isinstance(secret, str) else bytes(secret)
    return result
