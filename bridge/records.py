"""`record`: `@dataclass(frozen=True, slots=True)`, built with three compiled methods, not six.

A dataclass gets each of its methods by compiling generated source: on Python 3.11 a frozen,
slotted class compiles `__init__`, `__repr__`, `__eq__`, `__hash__`, `__setattr__` and
`__delattr__`, about 5.5 M instructions for ten fields. Start-up builds every class its modules
define: the bridge's dataclasses were 224 M of the 1,525 M instructions `pop3bridge once`
runs to its first POST (15 %; `python bench/startup.py --instructions 2`, 3 Dec 2026).

`record` lets `dataclasses` build the class as `dataclass(frozen=True, slots=True, eq=False,
repr=False)` does (fields, `__init__`, the frozen `__setattr__`/`__delattr__`, slots, pickling,
`__match_args__`, `fields()`/`replace()`/`asdict()`), then gives it `__eq__`, `__hash__` and
`__repr__` that are the same for every record and read the class's fields through
`operator.attrgetter`. What `dataclasses` cannot do is exactly that: build those three without
compiling them per class. They behave as the generated ones do, field flags included
(`compare`, `hash`, `repr`): equal only to an instance of the very same class, by the tuple of
compared fields; hashed as that tuple; shown as ``Name(a=1, b='x')`` with ``...`` for a
recursive reference (tests/test_records.py checks each against a real dataclass).
`dataclasses.fields(cls)` is the same; only `__dataclass_params__` says ``eq=False,
repr=False``, which nothing here reads.

The price is per call: for four fields `==` takes ~250 ns against the generated ~150,
`hash()` ~200 against ~150, `repr()` twice as long (`__init__` is the dataclass's own, as
fast). The classes that use it are built per line or message but seldom compared, hashed
or shown; one that is, in a hot loop, should stay a `@dataclass`.

A class may write its own `__repr__`, which it keeps (as a dataclass does); one that writes its
own `__eq__` or `__hash__` is refused (a dataclass's rules for those are subtler): use
`@dataclass`.
"""

from __future__ import annotations

import dataclasses
import operator
import reprlib
from collections.abc import Callable
from typing import Any, TypeVar

from typing_extensions import dataclass_transform

__all__ = ["record"]

T = TypeVar("T")

_REFUSED = ("__eq__", "__hash__")


def _values(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """The tuple of `names`' values, as the generated methods build it."""
    if len(names) > 1:
        return operator.attrgetter(*names)
    if names:
        get = operator.attrgetter(names[0])
        return lambda obj: (get(obj),)
    return lambda obj: ()


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def record(cls: type[T]) -> type[T]:
    """`cls` as a frozen, slotted dataclass (see the module docstring)."""
    if defined := [name for name in _REFUSED if name in cls.__dict__]:
        raise TypeError(f"{cls.__qualname__} defines {', '.join(defined)}: use @dataclass")
    built: Any = dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)(cls)
    fields = dataclasses.fields(built)
    compared = _values(tuple(f.name for f in fields if f.compare))
    hashed = _values(tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash)))
    shown = tuple(f.name for f in fields if f.repr)

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return compared(self) == compared(other)
        return NotImplemented

    def __hash__(self: Any) -> int:
        return hash(hashed(self))

    @reprlib.recursive_repr()
    def __repr__(self: Any) -> str:
        parts = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{self.__class__.__qualname__}({parts})"

    own_repr = "__repr__" in cls.__dict__
    for method in (__eq__, __hash__) if own_repr else (__eq__, __hash__, __repr__):
        method.__qualname__ = f"{built.__qualname__}.{method.__name__}"
        setattr(built, method.__name__, method)
    return built  # type: ignore[no-any-return]
