"""tether's exceptions: a shallow hierarchy shared with the wire's error kinds (docs/protocol.md)."""
from __future__ import annotations

import builtins


class TetherError(Exception):
    """Base of every tether error. `kind` is the wire error kind; `retry_may_help` says if a retry may."""

    kind = "failed"
    retry_may_help = False


class CommunicationError(TetherError):
    """The connection could not be made or was lost."""

    kind = "disconnected"
    retry_may_help = True


class ConnectionClosedError(CommunicationError):
    """The connection closed before the reply arrived (the call may or may not have run)."""


class CallTimeoutError(CommunicationError, TimeoutError):
    """The call's deadline passed."""

    kind = "timeout"


class AuthenticationError(TetherError):
    """The handshake failed: wrong or missing secret, or an encoding the server does not allow."""

    kind = "denied"


class RemoteError(TetherError):
    """A remote exception whose type is not a builtin: `remote_type` names it."""

    def __init__(self, message: str = "", remote_type: str = "", remote_traceback: str = ""):
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.args[0]}" if self.remote_type else str(self.args[0])


class NoSuchObjectError(TetherError, LookupError):
    """The server has no object by that name, or the object exposes no method by that name."""

    kind = "unimplemented"


class ProtocolError(TetherError):
    """The peer sent something this side does not understand (bad_request or unimplemented)."""

    kind = "bad_request"


_KIND_TO_CLASS = {
    "disconnected": ConnectionClosedError,
    "timeout": CallTimeoutError,
    "denied": AuthenticationError,
    "bad_request": ProtocolError,
    "unimplemented": NoSuchObjectError,
    "overloaded": CommunicationError,
    "cancelled": TetherError,
}


def _make_error(kind, message, type_name, args, traceback):
    """Builds the local exception for an ERROR received from a peer or raised by the core."""
    kind = kind if kind in _KIND_TO_CLASS or kind == "failed" else "failed"  # unknown kinds: failed
    message = message or ""
    type_name = type_name or ""
    traceback = traceback or ""
    if kind == "failed" and type_name.startswith("builtins."):
        cls = getattr(builtins, type_name[len("builtins."):], None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            try:
                exc = cls(*args) if isinstance(args, (list, tuple)) else cls(message)
            except Exception:
                exc = cls(message)
            exc.remote_traceback = traceback
            return exc
    if kind == "failed":
        return RemoteError(message, type_name, traceback)
    cls = _KIND_TO_CLASS.get(kind, TetherError)
    if kind == "disconnected" and message.startswith("cannot connect"):
        exc = CommunicationError(message)
    else:
        exc = cls(message)
    exc.remote_traceback = traceback
    return exc
