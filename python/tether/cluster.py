"""Cluster computing with Ray's core API: tether.init, @tether.remote, get, put, wait, actors.

A program's calls go to its node daemon (tetherd, C++), which schedules tasks on worker processes
and keeps objects; see docs/cluster.md. tether.init() with no address starts a private local
cluster that ends with the program."""
from __future__ import annotations

import concurrent.futures
import inspect

from ._private import cluster_state
from ._private.serialization import note_contained, serialize

_DEFAULT_TASK_OPTIONS = {"num_cpus": 1, "num_returns": 1, "max_retries": 3, "resources": None}
_DEFAULT_ACTOR_OPTIONS = {"num_cpus": 0, "resources": None, "name": None, "lifetime": None,
                          "max_restarts": 0, "max_concurrency": 1}


# ---- ObjectRef ----

class ObjectRef:
    """A reference to a value in the cluster, present or still being computed. Awaitable;
    `.future()` gives a concurrent.futures.Future. The value lives while some ObjectRef to it does."""

    __slots__ = ("_id", "_client", "__weakref__")

    def __init__(self, object_id: bytes, client=None, known_to_node: bool = False):
        self._id = object_id
        self._client = client or cluster_state.client()
        self._client.add_ref(object_id, known_to_node)

    def __del__(self):
        client = getattr(self, "_client", None)
        if client is not None:
            client.drop_ref(self._id)

    def hex(self) -> str:
        return self._id.hex()

    def binary(self) -> bytes:
        return self._id

    def __repr__(self):
        return f"ObjectRef({self._id.hex()})"

    def __eq__(self, other):
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self):
        return hash(self._id)

    def __reduce__(self):
        note_contained(self)
        return (_ref_from_id, (self._id,))

    def future(self) -> concurrent.futures.Future:
        """A concurrent.futures.Future completed with the value (or the task's error)."""
        from .executor import _complete_when_ready

        result: concurrent.futures.Future = concurrent.futures.Future()
        _complete_when_ready(self, result)
        return result

    def __await__(self):
        import asyncio  # only programs that await need it; workers start faster without

        return asyncio.wrap_future(self.future()).__await__()


def _ref_from_id(object_id: bytes) -> ObjectRef:
    return ObjectRef(object_id)


# ---- init / shutdown ----

def init(address: str | None = None, *, num_cpus: int | None = None, resources: dict | None = None,
         secret: str | bytes | None = None, object_store_memory: int | None = None,
         ignore_reinit_error: bool = False, log_to_driver: bool = True, tls=None) -> dict:
    """Starts a private local cluster (no address) or joins the one at `address` ("host:port").
    With `log_to_driver` (as Ray's), every worker's output lines are printed here, prefixed.
    `tls` (a tether.TLSConfig): joining, how to reach a TLS cluster (TETHER_TLS_* when not given);
    starting one, the certificate and key its TCP links use (other drivers and nodes then join it
    with TLS)."""
    if cluster_state.is_initialized():
        if ignore_reinit_error:
            return cluster_state.info()
        raise RuntimeError("tether.init() was already called; call tether.shutdown() first")
    return cluster_state.start(address, num_cpus=num_cpus, resources=resources, secret=secret,
                               object_store_memory=object_store_memory, log_to_driver=log_to_driver, tls=tls)


def shutdown() -> None:
    """Leaves the cluster; a cluster this process started is stopped, leaving nothing behind."""
    cluster_state.stop()


def is_initialized() -> bool:
    return cluster_state.is_initialized()


def cluster_address() -> str:
    """The "host:port" other processes pass to tether.init(address=...) to join this cluster."""
    address = cluster_state.info().get("address")
    if address is None:
        raise RuntimeError("this process did not start or join a cluster with tether.init()")
    return address


def nodes() -> list[dict]:
    """The cluster's nodes as the head's directory lists them (the connected node's view):
    [{"node_id", "address", "resources", "available"}, ...]."""
    status = cluster_state.client().call("status")
    return [{"node_id": node_id, "address": address, "resources": dict(total), "available": dict(available)}
            for node_id, address, total, available in status["nodes"]]


def cluster_resources() -> dict:
    """The resources of every node together, as Ray's ray.cluster_resources()."""
    total: dict = {}
    for node in nodes():
        for name, amount in node["resources"].items():
            total[name] = total.get(name, 0.0) + amount
    return total


def available_resources() -> dict:
    """The resources free now on every node together (other nodes' as last reported)."""
    total: dict = {}
    for node in nodes():
        for name, amount in node["available"].items():
            total[name] = total.get(name, 0.0) + amount
    return total


# ---- objects ----

def put(value) -> ObjectRef:
    """Stores `value` in the cluster; large values go to shared memory, read back without a copy."""
    if isinstance(value, ObjectRef):
        raise TypeError("put() of an ObjectRef is not allowed; pass the ObjectRef itself")
    client = cluster_state.client()
    return ObjectRef(client.put(value), client, known_to_node=True)


def get(refs, *, timeout: float | None = None):
    """The value of an ObjectRef, or the values of a list of them, waiting up to `timeout` seconds.
    A task's exception is raised as an error that is also an instance of the original type."""
    if isinstance(refs, ObjectRef):
        return get([refs], timeout=timeout)[0]
    if not isinstance(refs, (list, tuple)) or not all(isinstance(r, ObjectRef) for r in refs):
        raise TypeError("get() takes an ObjectRef or a list of ObjectRefs")
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be non-negative or None")
    client = cluster_state.client()
    entries = client.get_entries([r._id for r in refs], timeout)
    return [client.value_of(entry, r._id) for entry, r in zip(entries, refs)]


def wait(refs, *, num_returns: int = 1, timeout: float | None = None, fetch_local: bool = True):
    """Splits `refs` into (ready, not_ready) once `num_returns` are ready or `timeout` passes."""
    refs = list(refs)
    if not all(isinstance(r, ObjectRef) for r in refs):
        raise TypeError("wait() takes a list of ObjectRefs")
    if len(set(refs)) != len(refs):
        raise ValueError("wait() got the same ObjectRef twice")
    if not 0 <= num_returns <= len(refs):
        raise ValueError(f"num_returns must be between 0 and {len(refs)}")
    client = cluster_state.client()
    with client.blocking():
        ready_indices = set(client.call("wait", [r._id for r in refs], num_returns, timeout,
                                        timeout=None if timeout is None else timeout + 30))
    ready = [r for i, r in enumerate(refs) if i in ready_indices][:num_returns]
    chosen = {id(r) for r in ready}
    return ready, [r for r in refs if id(r) not in chosen]


def cancel(ref: ObjectRef, *, force: bool = False) -> None:
    """Cancels the task producing `ref`: get then raises TaskCancelledError. A running task is
    killed with force=True; otherwise it finishes but its result is replaced by the error."""
    client = cluster_state.client()
    task_id = client.task_of(ref._id)
    if task_id is None:
        return
    client.call("cancel", task_id, force)


# ---- remote functions ----

def _resources(options: dict) -> dict:
    resources = dict(options.get("resources") or {})
    for name in resources:
        if name in ("CPU", "num_cpus"):
            raise ValueError("give CPUs with num_cpus=, not in resources=")
    if options.get("num_cpus"):
        resources["CPU"] = float(options["num_cpus"])
    return resources


def _split_args(args: tuple, kwargs: dict):
    """Top-level ObjectRef arguments become dependencies, resolved to values before the task runs."""
    deps: list[bytes] = []
    keep: list[ObjectRef] = []

    def replace(value):
        if isinstance(value, ObjectRef):
            deps.append(value._id)
            keep.append(value)
            return _Dep(len(deps) - 1)
        return value

    new_args = tuple(replace(a) for a in args)
    new_kwargs = {k: replace(v) for k, v in kwargs.items()}
    serialized = serialize((new_args, new_kwargs))
    return serialized, deps, keep


class _Dep:
    """Placeholder for the index-th resolved dependency in a task's pickled arguments."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __reduce__(self):
        return (cluster_state.resolved_dependency, (self.index,))


def _submit(method: str, spec: dict, args: tuple, kwargs: dict, num_returns: int) -> list[ObjectRef]:
    client = cluster_state.client()
    serialized, deps, _keep = _split_args(args, kwargs)
    returns = [client.new_id() for _ in range(num_returns)]
    spec.update(args=serialized.to_bytes(), deps=deps, contained=serialized.contained, returns=returns)
    client.submit(method, spec, returns)
    return [ObjectRef(r, client, known_to_node=True) for r in returns]


class RemoteFunction:
    """A function decorated with @tether.remote: `.remote(*args)` runs it as a task."""

    def __init__(self, function, options: dict):
        self._function = function
        self._options = options
        self._blob = None
        self.__name__ = getattr(function, "__name__", "function")
        self.__doc__ = getattr(function, "__doc__", None)
        self._name = f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', self.__name__)}"

    def __call__(self, *args, **kwargs):
        raise TypeError(f"remote function {self._name} is called with .remote(...), not directly")

    def options(self, **options) -> "RemoteFunction":
        unknown = set(options) - set(_DEFAULT_TASK_OPTIONS)
        if unknown:
            raise ValueError(f"unknown task options {sorted(unknown)}; known: {sorted(_DEFAULT_TASK_OPTIONS)}")
        copy = RemoteFunction(self._function, {**self._options, **options})
        copy._blob = self._blob
        return copy

    def remote(self, *args, **kwargs):
        client = cluster_state.client()
        if self._blob is None:
            self._blob = serialize(self._function).to_bytes()
        function_id = client.register_function(self._blob)
        num_returns = int(self._options["num_returns"])
        if num_returns < 1:
            raise ValueError("num_returns must be at least 1")
        spec = {"id": client.new_id(), "function": function_id, "name": self._name,
                "resources": _resources(self._options), "max_retries": int(self._options["max_retries"])}
        refs = _submit("submit", spec, args, kwargs, num_returns)
        return refs[0] if num_returns == 1 else refs


# ---- actors ----

class ActorClass:
    """A class decorated with @tether.remote: `.remote(*args)` starts an actor and returns its handle."""

    def __init__(self, cls, options: dict):
        self._cls = cls
        self._options = options
        self._blob = None
        self.__name__ = cls.__name__
        self._methods = sorted(name for name, member in inspect.getmembers(cls, callable)
                               if not name.startswith("_"))

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor class {self.__name__} is instantiated with .remote(...), not directly")

    def options(self, **options) -> "ActorClass":
        unknown = set(options) - set(_DEFAULT_ACTOR_OPTIONS)
        if unknown:
            raise ValueError(f"unknown actor options {sorted(unknown)}; known: {sorted(_DEFAULT_ACTOR_OPTIONS)}")
        if options.get("lifetime") not in (None, "detached"):
            raise ValueError("lifetime must be None or 'detached'")
        copy = ActorClass(self._cls, {**self._options, **options})
        copy._blob = self._blob
        return copy

    def remote(self, *args, **kwargs) -> "ActorHandle":
        client = cluster_state.client()
        if self._blob is None:
            self._blob = serialize(self._cls).to_bytes()
        class_id = client.register_function(self._blob)
        serialized, deps, _keep = _split_args(args, kwargs)
        actor_id = client.new_id()
        spec = {"id": actor_id, "function": class_id, "name": self.__name__, "args": serialized.to_bytes(),
                "deps": deps, "contained": serialized.contained, "returns": [],
                "resources": _resources(self._options), "max_restarts": int(self._options["max_restarts"]),
                "max_concurrency": int(self._options["max_concurrency"]), "actor_name": self._options["name"],
                "detached": self._options["lifetime"] == "detached", "methods": self._methods}
        created = client.call_future("create_actor", spec)
        if self._options["name"]:
            created.result()  # a named actor is findable by get_actor once this returns (or raises)
        return ActorHandle(actor_id, self.__name__, self._methods)


class ActorHandle:
    """A handle to an actor: `handle.method.remote(*args)` calls it; handles can be passed around."""

    def __init__(self, actor_id: bytes, class_name: str, methods: list[str]):
        self._actor_id = actor_id
        self._class_name = class_name
        self._methods = list(methods)

    def __getattr__(self, name):
        if name.startswith("_") or name not in self._methods:
            raise AttributeError(f"actor {self._class_name} has no method {name!r}")
        return ActorMethod(self, name)

    def __repr__(self):
        return f"Actor({self._class_name}, {self._actor_id.hex()})"

    def __reduce__(self):
        return (ActorHandle, (self._actor_id, self._class_name, self._methods))


class ActorMethod:
    def __init__(self, handle: ActorHandle, name: str, num_returns: int = 1):
        self._handle = handle
        self._name = name
        self._num_returns = num_returns

    def options(self, num_returns: int = 1) -> "ActorMethod":
        return ActorMethod(self._handle, self._name, num_returns)

    def remote(self, *args, **kwargs):
        client = cluster_state.client()
        spec = {"id": client.new_id(), "actor": self._handle._actor_id, "method": self._name,
                "name": f"{self._handle._class_name}.{self._name}"}
        refs = _submit("actor_call", spec, args, kwargs, self._num_returns)
        return refs[0] if self._num_returns == 1 else refs


def get_actor(name: str) -> ActorHandle:
    """The handle of the actor created with .options(name=name)."""
    info = cluster_state.client().call("get_actor", name)
    return ActorHandle(info["id"], info["class_name"], info["methods"])


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kills the actor's process; its pending and later calls raise ActorDiedError."""
    if not isinstance(actor, ActorHandle):
        raise TypeError("kill() takes an actor handle")
    cluster_state.client().call("kill_actor", actor._actor_id, no_restart)


def remote(*args, **options):
    """@tether.remote on a function (a task) or a class (an actor); also @tether.remote(num_cpus=2)."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("use @tether.remote or @tether.remote(option=value, ...)")
    return lambda target: _make_remote(target, options)


def _make_remote(target, options: dict):
    if inspect.isclass(target):
        unknown = set(options) - set(_DEFAULT_ACTOR_OPTIONS)
        if unknown:
            raise ValueError(f"unknown actor options {sorted(unknown)}")
        return ActorClass(target, {**_DEFAULT_ACTOR_OPTIONS, **options})
    if callable(target):
        unknown = set(options) - set(_DEFAULT_TASK_OPTIONS)
        if unknown:
            raise ValueError(f"unknown task options {sorted(unknown)}")
        return RemoteFunction(target, {**_DEFAULT_TASK_OPTIONS, **options})
    raise TypeError("@tether.remote decorates a function or a class")

