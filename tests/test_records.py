"""`bridge.records.record` against the real `@dataclass(frozen=True, slots=True)`.

Each shape is declared twice, once with each decorator, and every instance pair built from the
same values must compare, hash, show, refuse assignment, pickle and `replace` alike.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import pickle
import types
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.records import record


def twins(body: dict[str, Any], bases: tuple[Any, ...] = ()) -> tuple[type, type]:
    """The same class body as a dataclass and as a record (each its own class)."""

    def fill(namespace: dict[str, Any]) -> None:
        namespace.update(body)
        namespace["__annotations__"] = dict(body["__annotations__"])

    # new_class, not type(): a base such as Generic[T] is resolved to its class first
    made = [
        decorate(types.new_class("Shape", bases, {}, fill))
        for decorate in (dataclass(frozen=True, slots=True), record)
    ]
    return made[0], made[1]


T = TypeVar("T")


def _rebuild(*values: Any) -> tuple[Any, ...]:
    return values


def _total(self: Any) -> Any:
    return (self.a, self.b)


def _of(cls: type, a: Any) -> Any:
    return cls(a, "", None)


SHAPES = {
    "plain": {"__annotations__": {"a": "int", "b": "str", "c": "Any"}},
    "defaults": {
        "__annotations__": {"a": "int", "b": "str", "c": "Any"},
        "b": "x",
        "c": field(default_factory=tuple),
    },
    "flags": {
        "__annotations__": {"a": "int", "b": "str", "c": "Any"},
        "b": field(default="", repr=False),
        "c": field(default=None, compare=False),
    },
    "hash_flags": {
        "__annotations__": {"a": "int", "b": "str", "c": "Any"},
        "a": field(hash=False),
        "c": field(default=None, compare=False, hash=True),
    },
    "one": {"__annotations__": {"a": "Any"}},
    "none": {"__annotations__": {}},
    # Generic[T] as a base (bridge.store.sql.Done)
    "generic": {"__annotations__": {"a": "T", "b": "str", "c": "Any"}},
    # methods, a property, a classmethod and an own __reduce__ (outbox's BodyJob, poller's
    # CanaryKey and LeaseOptions): none of them may change eq, hash or repr
    "methods": {
        "__annotations__": {"a": "int", "b": "str", "c": "Any"},
        "total": _total,
        "pair": property(_total),
        "of": classmethod(_of),
        "__reduce__": lambda self: (_rebuild, (self.a, self.b, self.c)),
    },
}
BASES: dict[str, tuple[Any, ...]] = {"generic": (Generic[T],)}

values = st.one_of(
    st.integers(),
    st.text(max_size=5),
    st.none(),
    st.floats(allow_nan=True),
    st.tuples(st.integers(), st.text(max_size=3)),
)


def build(cls: type, a: Any, b: Any, c: Any) -> Any:
    names = [f.name for f in dataclasses.fields(cls)]
    return cls(**dict(zip(names, (a, b, c), strict=False)))


def same_outcome(f: Any, g: Any) -> None:
    try:
        expected: Any = f()
    except Exception as exc:
        with pytest.raises(type(exc)) as got:
            g()
        assert str(got.value) == str(exc)
        return
    actual = g()
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(actual)
    else:
        assert actual == expected


@pytest.mark.parametrize("shape", SHAPES)
@given(x=st.tuples(values, values, values), y=st.tuples(values, values, values))
def test_record_behaves_as_the_frozen_slotted_dataclass(
    shape: str, x: tuple[Any, ...], y: tuple[Any, ...]
) -> None:
    real, rec = twins(SHAPES[shape], BASES.get(shape, ()))
    rx, ry, cx, cy = build(real, *x), build(real, *y), build(rec, *x), build(rec, *y)
    assert (cx == cy) is (rx == ry)
    assert (cx != cy) is (rx != ry)
    assert (cx == cx) is (rx == rx)  # a NaN field: equal to itself (the tuple's identity check)
    assert cx.__eq__(rx) is NotImplemented and rx.__eq__(cx) is NotImplemented
    same_outcome(lambda: hash(rx), lambda: hash(cx))
    assert repr(cx) == repr(rx)
    if shape != "none":
        name = dataclasses.fields(real)[0].name
        same_outcome(lambda: setattr(rx, name, 1), lambda: setattr(cx, name, 1))
        same_outcome(lambda: delattr(rx, name), lambda: delattr(cx, name))
        same_outcome(lambda: setattr(rx, "other", 1), lambda: setattr(cx, "other", 1))
    assert repr(dataclasses.replace(cx)) == repr(dataclasses.replace(rx))
    if shape == "methods":
        assert repr(cx.total()) == repr(rx.total()) and repr(cx.pair) == repr(rx.pair)
        assert repr(type(cx).of(x[0])) == repr(type(rx).of(x[0]))
        assert repr(pickle.loads(pickle.dumps(cx))) == repr(pickle.loads(pickle.dumps(rx)))


@pytest.mark.parametrize("shape", SHAPES)
def test_record_has_the_dataclass_structure(shape: str) -> None:
    real, rec = twins(SHAPES[shape], BASES.get(shape, ()))
    assert [f.name for f in dataclasses.fields(rec)] == [f.name for f in dataclasses.fields(real)]
    assert rec.__match_args__ == real.__match_args__
    assert rec.__slots__ == real.__slots__
    assert str(inspect.signature(rec)) == str(inspect.signature(real))
    assert dataclasses.is_dataclass(rec) and rec.__dataclass_params__.frozen
    assert not hasattr(build(rec, 1, "b", None), "__dict__")
    assert getattr(rec, "__parameters__", ()) == getattr(real, "__parameters__", ())
    if shape == "generic":  # an alias's call sets __orig_class__: 3.11's frozen class refuses
        both: Any = (real, rec)
        same_outcome(
            lambda: repr(both[0][int](1, "b", None)), lambda: repr(both[1][int](1, "b", None))
        )


def test_a_record_subclass_compares_and_shows_its_own_fields() -> None:
    real_base, rec_base = twins(SHAPES["plain"])
    sub = {"__annotations__": {"d": "int"}, "d": 0}
    real = dataclass(frozen=True, slots=True)(
        type("Sub", (real_base,), {**sub, "__annotations__": {"d": "int"}})
    )
    rec = record(type("Sub", (rec_base,), {**sub, "__annotations__": {"d": "int"}}))
    r, c = real(1, "b", None, 4), rec(1, "b", None, 4)
    assert repr(r) == repr(c) and hash(r) == hash(c)
    assert c == rec(1, "b", None, 4) and c != rec(1, "b", None, 5)
    assert c != rec_base(1, "b", None)  # another class, as for dataclasses


@record
class Pickled:
    a: int
    b: Any = None
    c: tuple[int, ...] = field(default=(), compare=False)


@given(a=st.integers(), b=values, c=st.lists(st.integers(), max_size=3).map(tuple))
def test_a_record_pickles_as_a_frozen_dataclass_does(a: int, b: Any, c: tuple[int, ...]) -> None:
    """The parse pool sends records to its workers by pickle."""
    original = Pickled(a, b, c)
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is Pickled and repr(copy) == repr(original) and copy.c == c
    if not (isinstance(b, float) and math.isnan(b)):
        assert copy == original and hash(copy) == hash(original)


def test_a_recursive_reference_shows_as_dots_as_in_a_dataclass() -> None:
    real, rec = twins(SHAPES["one"])
    r, c = real([]), rec([])
    r.a.append(r)
    c.a.append(c)
    assert repr(c) == repr(r) == "Shape(a=[...])"


def test_a_class_with_its_own_eq_or_hash_is_refused() -> None:
    for name in ("__eq__", "__hash__"):
        with pytest.raises(TypeError, match=name):
            record(type("Own", (), {"__annotations__": {"a": "int"}, name: lambda self: 0}))


def test_a_class_keeps_its_own_repr_as_a_dataclass_does() -> None:
    body = {"__annotations__": {"a": "int"}, "__repr__": lambda self: "mine"}
    real, rec = twins(body)
    assert repr(rec(1)) == repr(real(1)) == "mine"
    assert rec(1) == rec(1) and hash(rec(1)) == hash(real(1))


def test_the_frozen_methods_are_not_compiled_and_dataclasses_is_left_alone() -> None:
    """On 3.11/3.12 `record` makes `__setattr__`/`__delattr__` without compiling them (the
    module docstring); a dataclass made afterwards gets dataclasses' own, compiled ones."""
    import bridge.records as records

    made = dataclasses._frozen_get_del_attr  # type: ignore[attr-defined]
    real, rec = twins(SHAPES["plain"])
    assert dataclasses._frozen_get_del_attr is made  # type: ignore[attr-defined]
    assert real.__setattr__.__code__.co_filename == "<string>"
    expected = records.__file__ if records._FROZEN_METHODS else "<string>"
    for name in ("__setattr__", "__delattr__"):
        assert getattr(rec, name).__code__.co_filename == expected
        assert getattr(rec, name).__qualname__ == getattr(real, name).__qualname__
