"""Connects the C++ engine to the Python layer: the functions the engine calls back into."""
from __future__ import annotations

import inspect
import threading
import traceback

from .. import _core, codec, errors
from ..expose import describe, is_exposed
from ..future import Future


def _export_object(channel, value):
    from ..proxy import Proxy

    if isinstance(value, Proxy) and value._uri:
        return (1, value._uri)
    if channel is None:
        return None
    if inspect.isfunction(value) or inspect.ismethod(value) or inspect.isbuiltin(value):
        return (0, channel.export(value, None))
    if is_exposed(value):
        return (0, channel.export(value, describe(type(value))[0]))
    return None


def _make_ref(channel, kind, value):
    from ..proxy import Proxy, _CallbackProxy

    if kind == 0 and isinstance(value, int):
        return _CallbackProxy(channel, f"#{value}")
    if kind == 1 and isinstance(value, str):
        return Proxy(value)
    raise ValueError(f"unknown object reference kind {kind!r}")


def _format_exception(exc):
    cls = type(exc)
    name = f"{cls.__module__}.{cls.__qualname__}"
    text = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    return name, list(exc.args), text


class _Loop:
    """One background event loop per process for servers' `async def` methods."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loop = None

    def get(self):
        with self._lock:
            if self._loop is None:
                import asyncio  # loaded with the first async method, not at import

                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="tether-async", daemon=True).start()
            return self._loop


_loop = _Loop()


def _run_async(coroutine, responder):
    async def runner():
        try:
            result = await coroutine
        except BaseException as exc:  # the caller gets it as its error
            responder.fail(exc)
        else:
            responder.reply(result)

    loop = _loop.get()
    import asyncio

    return asyncio.run_coroutine_threadsafe(runner(), loop)


def install():
    codec._register_numpy()
    _core.set_hooks(
        encoders=codec._encoders,
        decoders=codec._decoders,
        export_object=_export_object,
        make_ref=_make_ref,
        make_error=errors._make_error,
        pickle_dumps=codec._pickle_dumps,
        pickle_loads=codec._pickle_loads,
        format_exception=_format_exception,
        run_async=_run_async,
        future_type=Future,
    )
