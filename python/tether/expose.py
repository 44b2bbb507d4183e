"""The `expose` and `oneway` decorators and what a server learns from them."""
from __future__ import annotations

import inspect

_EXPOSED = "_tether_exposed"
_ONEWAY = "_tether_oneway"
_ALLOW = "_tether_allow"


def expose(target):
    """Marks a class (all its public methods) or a single method as remotely callable."""
    setattr(target, _EXPOSED, True)
    return target


def oneway(method):
    """Marks a method whose caller does not wait for it (no reply is sent). An exception it raises
    goes to the server process's sys.unraisablehook, which is given the method."""
    setattr(method, _ONEWAY, True)
    return method


def allow(*identities: str):
    """Restricts a method (or, on a class, every method) to callers with one of these identities:
    the names of secrets they proved or the common names of their verified TLS certificates
    (see tether.current_context). Anyone else gets tether.AuthenticationError ("denied")."""
    if not identities or not all(isinstance(name, str) and name for name in identities):
        raise ValueError("tether.allow needs one or more identity names")

    def mark(target):
        setattr(target, _ALLOW, frozenset(identities))
        return target

    return mark


def access_of(cls: type, methods: frozenset, allow=None) -> dict | None:
    """{method or "*": frozenset of identities} from @allow marks and register(..., allow=...);
    None when nothing is restricted. A method's own mark wins over its class's."""
    access = {}
    whole = allow if allow is not None else cls.__dict__.get(_ALLOW)
    if whole is not None:
        access["*"] = frozenset(whole)
    for name in methods:
        member = inspect.getattr_static(cls, name)
        function = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
        marked = getattr(function, _ALLOW, None)
        if marked is not None:
            access[name] = marked
    return access or None


def describe(cls: type) -> tuple[frozenset, frozenset, frozenset]:
    """(methods, oneway methods, streaming methods) that a server exposes for objects of `cls`.

    A class marked with @expose exposes every public method; otherwise only methods marked one by
    one. Names starting with `_` are never exposed."""
    whole_class = bool(cls.__dict__.get(_EXPOSED, False))
    methods, oneway_methods, streams = set(), set(), set()
    for name in dir(cls):
        if name.startswith("_"):
            continue
        member = inspect.getattr_static(cls, name)
        function = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
        if not callable(function):
            continue
        if not (whole_class or getattr(function, _EXPOSED, False)):
            continue
        methods.add(name)
        if getattr(function, _ONEWAY, False):
            oneway_methods.add(name)
        if inspect.isgeneratorfunction(function):
            streams.add(name)
    return frozenset(methods), frozenset(oneway_methods), frozenset(streams)


def is_exposed(obj) -> bool:
    return bool(getattr(type(obj), _EXPOSED, False)) or any(
        getattr(getattr(type(obj), n, None), _EXPOSED, False) for n in dir(type(obj)) if not n.startswith("_"))
