"""Tests for @tether.expose: which names a proxy may call, and that nothing else ever runs."""

import pytest

import tether


@tether.expose
class WholeClass:
    def __init__(self):
        self.private_ran = False

    def public(self):
        return "public"

    def with_args(self, a, b=2, *, c=3):
        return [a, b, c]

    def _private(self):
        self.private_ran = True
        return "private"


class PartlyExposed:
    def __init__(self):
        self.hidden_ran = False

    @tether.expose
    def shown(self):
        return "shown"

    def hidden(self):
        self.hidden_ran = True
        return "hidden"


@pytest.fixture
def whole(server):
    obj = WholeClass()
    return obj, server.register(obj, "whole")


@pytest.fixture
def partly(server):
    obj = PartlyExposed()
    return obj, server.register(obj, "partly")


def test_exposed_class_makes_public_methods_callable(whole, make_proxy):
    """Decorating the class exposes every public method."""
    _, uri = whole
    assert make_proxy(uri).public() == "public"


def test_positional_keyword_and_default_arguments_arrive_intact(whole, make_proxy):
    """Arguments must bind on the server exactly as they would locally."""
    _, uri = whole
    proxy = make_proxy(uri)
    assert proxy.with_args(1) == [1, 2, 3]
    assert proxy.with_args(1, 5) == [1, 5, 3]
    assert proxy.with_args(a=7, c=9) == [7, 2, 9]


def test_wrong_arguments_raise_type_error(whole, make_proxy):
    """A bad signature is the caller's TypeError, as for a local call, and the proxy keeps working."""
    _, uri = whole
    proxy = make_proxy(uri)
    with pytest.raises(TypeError):
        proxy.with_args()
    assert proxy.public() == "public"


def test_underscore_method_is_never_callable(whole, make_proxy):
    """Names starting with _ are private even on an exposed class, and must not run."""
    obj, uri = whole
    proxy = make_proxy(uri)
    with pytest.raises((AttributeError, tether.TetherError)):
        getattr(proxy, "_private")()
    assert obj.private_ran is False
    assert proxy.public() == "public"


def test_missing_method_raises(whole, make_proxy):
    """Calling a name the object does not have fails clearly and leaves the proxy usable."""
    _, uri = whole
    proxy = make_proxy(uri)
    with pytest.raises((AttributeError, tether.TetherError)):
        proxy.no_such_method()
    assert proxy.public() == "public"


def test_method_level_expose_exposes_only_marked_methods(partly, make_proxy):
    """With @expose on single methods, undecorated methods stay unreachable and never run."""
    obj, uri = partly
    proxy = make_proxy(uri)
    assert proxy.shown() == "shown"
    with pytest.raises((AttributeError, tether.TetherError)):
        proxy.hidden()
    assert obj.hidden_ran is False
    assert proxy.shown() == "shown"


def test_expose_returns_the_decorated_class_and_function_usable_locally():
    """The decorators must not break local use of the class or its methods."""
    assert WholeClass().public() == "public"
    assert PartlyExposed().shown() == "shown"
