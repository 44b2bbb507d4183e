"""Tests for remote exceptions and tether's error hierarchy."""

import builtins

import pytest

import tether


class MyError(Exception):
    pass


class MyKeyError(KeyError):
    pass


@tether.expose
class Failing:
    def raise_builtin(self, type_name, message):
        raise getattr(builtins, type_name)(message)

    def divide(self, a, b):
        return a / b

    def raise_custom(self):
        raise MyError("custom failure 42")

    def raise_custom_subclass_of_builtin(self):
        raise MyKeyError("sub")

    def raise_with_unencodable_args(self):
        raise ValueError(object())

    def ok(self):
        return "ok"


@pytest.fixture
def proxy(server, make_proxy):
    return make_proxy(server.register(Failing(), "failing"))


@pytest.mark.parametrize(
    "type_name",
    ["ValueError", "KeyError", "TypeError", "IndexError", "RuntimeError",
     "NotImplementedError", "LookupError", "ArithmeticError"],
)
def test_builtin_exception_arrives_as_the_same_type(proxy, type_name):
    """Callers catch remote errors with the same except clauses they use locally."""
    with pytest.raises(getattr(builtins, type_name)) as excinfo:
        proxy.raise_builtin(type_name, "remote message")
    assert type(excinfo.value) is getattr(builtins, type_name)
    assert excinfo.value.args == ("remote message",)
    assert isinstance(excinfo.value.remote_traceback, str)
    assert "raise_builtin" in excinfo.value.remote_traceback


def test_zero_division_arrives_as_zero_division_error_with_traceback(proxy):
    """An exception raised by the interpreter itself, not by user code, also keeps its type."""
    with pytest.raises(ZeroDivisionError) as excinfo:
        proxy.divide(1, 0)
    assert "divide" in excinfo.value.remote_traceback


def test_user_defined_exception_arrives_as_remote_error(proxy):
    """Non-builtin types are never imported or rebuilt on the caller; RemoteError names them."""
    with pytest.raises(tether.RemoteError) as excinfo:
        proxy.raise_custom()
    error = excinfo.value
    assert error.remote_type == "MyError" or error.remote_type.endswith(".MyError")
    assert "raise_custom" in error.remote_traceback
    assert "custom failure 42" in str(error)
    assert isinstance(error, tether.TetherError)


def test_subclass_of_a_builtin_is_still_a_remote_error(proxy):
    """Only exact builtin types are rebuilt; a user subclass of KeyError is not a builtin."""
    with pytest.raises(tether.RemoteError) as excinfo:
        proxy.raise_custom_subclass_of_builtin()
    assert excinfo.value.remote_type.endswith("MyKeyError")


def test_builtin_exception_with_unencodable_args_keeps_its_type(proxy):
    """Exception args are sent only when encodable; the type must survive either way."""
    with pytest.raises(ValueError) as excinfo:
        proxy.raise_with_unencodable_args()
    assert "raise_with_unencodable_args" in excinfo.value.remote_traceback


def test_future_carries_the_remote_exception(proxy):
    """Futures fail with the same exception a sync call would raise."""
    error = proxy.divide.future(1, 0).exception(timeout=10)
    assert isinstance(error, ZeroDivisionError)
    assert "divide" in error.remote_traceback


def test_proxy_keeps_working_after_remote_exceptions(proxy):
    """A remote failure is a value for one call, not damage to the connection."""
    for _ in range(3):
        with pytest.raises(ZeroDivisionError):
            proxy.divide(1, 0)
        with pytest.raises(tether.RemoteError):
            proxy.raise_custom()
    assert proxy.ok() == "ok"


def test_error_hierarchy():
    """Programs catch whole families of failures through these base classes."""
    assert issubclass(tether.TetherError, Exception)
    assert issubclass(tether.CommunicationError, tether.TetherError)
    assert issubclass(tether.ConnectionClosedError, tether.CommunicationError)
    assert issubclass(tether.CallTimeoutError, tether.TetherError)
    assert issubclass(tether.CallTimeoutError, TimeoutError)
    assert issubclass(tether.AuthenticationError, tether.TetherError)
    assert issubclass(tether.RemoteError, tether.TetherError)
