"""The `expose` and `oneway` decorators and what a server learns from them."""
from __future__ import annotations

import inspect

_EXPOSED = "_tether_exposed"
_ONEWAY = "_tether_oneway"


def expose(target):
    """Marks a class (all its public methods) or a single method as remotely callable."""
    setattr(target, _EXPOSED, True)
    return target


def oneway(method):
    """Marks a method whose caller does not wait for it (no reply is sent)."""
    setattr(method, _ONEWAY, True)
    return method


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
