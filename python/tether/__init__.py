"""tether: one system for distributed programming in Python, with a C++20 engine.

This module is the front door: everything a program needs is importable from here."""
from __future__ import annotations

from . import _core
from ._private import hooks as _hooks
from .cluster import (ActorClass, ActorHandle, ObjectRef, RemoteFunction, available_resources, cancel, cluster_address,
                      cluster_resources, get, get_actor, init, is_initialized, kill, nodes, put, remote, shutdown, wait)
from .codec import register_type
from .errors import (ActorDiedError, AuthenticationError, CallTimeoutError, CommunicationError, ConnectionClosedError,
                     GetTimeoutError, NoSuchObjectError, ObjectFreedError, ObjectLostError, ObjectStoreFullError,
                     ProtocolError, RemoteError, ResourceUnavailableError, TaskCancelledError, TaskError, TetherError,
                     WorkerCrashedError, WorkerError)
from .executor import Executor, call, map
from .expose import allow, expose, oneway
from .future import Future
from .naming import NameServer, locate_ns
from .proxy import Proxy
from .security import CallContext, TLSConfig, current_context, make_certificates
from .server import Server
from .groups import Group, Message, View
from .topics import announce, publish, retained, subscribe
from .tuplespace import ANY, TupleSpace

_hooks.install()

__version__ = "0.1.0"
__all__ = [
    "ActorClass", "ActorDiedError", "Executor", "call", "map", "ActorHandle", "GetTimeoutError", "ObjectFreedError", "ObjectLostError", "ObjectRef",
    "ObjectStoreFullError", "RemoteFunction", "ResourceUnavailableError", "TaskCancelledError", "TaskError",
    "WorkerCrashedError", "WorkerError", "cancel", "cluster_address", "cluster_resources", "get", "get_actor", "init",
    "is_initialized", "kill", "put", "remote", "shutdown", "wait", "nodes", "available_resources",
    "AuthenticationError", "CallTimeoutError", "CommunicationError", "ConnectionClosedError", "Future",
    "NameServer", "NoSuchObjectError", "ProtocolError", "Proxy", "RemoteError", "Server", "TetherError", "expose", "locate_ns",
    "oneway", "register_type", "ANY", "TupleSpace", "announce", "publish", "retained", "subscribe",
    "Group", "Message", "View", "allow", "CallContext", "TLSConfig", "current_context", "make_certificates",
]
