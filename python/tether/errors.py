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


# ---- the cluster's errors (tether.init, @tether.remote) ----


class TaskError(TetherError):
    """A task or actor method raised. What `get` raises is also an instance of the original
    exception's type (see `as_instance_of_cause`), so `except ValueError` still works."""

    def __init__(self, message: str = "", cause: BaseException | None = None, remote_traceback: str = "",
                 task_name: str = ""):
        super().__init__(message)
        self.cause = cause
        self.remote_traceback = remote_traceback
        self.task_name = task_name

    def __str__(self) -> str:
        cause = self.cause
        what = f"{type(cause).__name__}: {cause}" if cause is not None else (self.args[0] if self.args else "")
        return f"task {self.task_name} raised {what}\n\nremote traceback:\n{self.remote_traceback}"


def as_instance_of_cause(cause: BaseException, remote_traceback: str, task_name: str) -> BaseException:
    """A TaskError that is also an instance of type(cause), carrying its args and attributes."""
    cause_type = type(cause)
    try:
        combined = type(f"TaskError({cause_type.__name__})", (TaskError, cause_type),
                        {"__init__": lambda self, *a, **k: None, "__str__": TaskError.__str__,
                         "__module__": "tether.errors"})
        error = combined.__new__(combined)
        error.args = cause.args
        error.__dict__.update(getattr(cause, "__dict__", {}))
    except TypeError:  # a type that cannot be combined (for example a final builtin)
        error = TaskError()
    error.cause = cause
    error.remote_traceback = remote_traceback
    error.task_name = task_name
    return error


class WorkerCrashedError(TetherError):
    """The worker process running a task died, and its retries (max_retries) are spent."""


class ActorDiedError(TetherError):
    """The actor's process died (and max_restarts are spent), it was killed, or its constructor raised."""


class TaskCancelledError(TetherError):
    """The task was cancelled with tether.cancel."""


class GetTimeoutError(TetherError, TimeoutError):
    """tether.get(..., timeout=) ran out of time before the values were ready."""

    kind = "timeout"


class ObjectStoreFullError(TetherError):
    """The node's shared-memory store has no room, even after evicting and spilling what it could."""

    kind = "overloaded"


class ObjectFreedError(TetherError):
    """The object was freed (no reference to it remained) or never existed."""


class ObjectLostError(TetherError):
    """The object's value could not be read back (for example its spill file is gone)."""


class ResourceUnavailableError(TetherError):
    """The task or actor asks for resources that no node of the cluster has."""


class WorkerError(TetherError):
    """A worker could not run a task (not the task's own exception: that is a TaskError)."""


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
    if type_name.startswith("tether."):
        cls = globals().get(type_name[len("tether."):])
        if isinstance(cls, type) and issubclass(cls, TetherError):
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
