"""`record`: `@dataclass(frozen=True, slots=True)`, built with one compiled method, not six.

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

The frozen `__setattr__` and `__delattr__` are not compiled per class either: compiling those
two was ~1.5 M instructions per class, more than `__init__` (which stays compiled: it is the
per-message cost). `dataclasses` makes them in one private function, `_frozen_get_del_attr(cls,
fields, globals)` (Python 3.11 and 3.12); while `record` builds a class it stands in for that
function with `_frozen_methods`, the same two functions as closures over the same `cls` and
field names (so the same errors, including 3.11's `super(cls, self)` over the class before
slots were added). On another Python, or if that function is not there with that signature,
the class is built as before. Another thread making a frozen dataclass in that window gets
the same closures; `_LOCK` keeps two records from swapping the function at once.
"""

from __future__ import annotations

import dataclasses
import inspect
import operator
import reprlib
import sys
import threading
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


def _frozen_methods(
    cls: type, fields: list[dataclasses.Field[Any]], globals: dict[str, Any]
) -> tuple[Callable[..., None], Callable[..., None]]:
    """What `dataclasses._frozen_get_del_attr` returns on 3.11/3.12, without compiling."""
    names = tuple(f.name for f in fields)
    frozen_error = dataclasses.FrozenInstanceError
    owner: Any = cls  # on 3.11 the class before slots were added, as dataclasses has it

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is owner or name in names:
            raise frozen_error(f"cannot assign to field {name!r}")
        super(owner, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is owner or name in names:
            raise frozen_error(f"cannot delete field {name!r}")
        super(owner, self).__delattr__(name)

    return __setattr__, __delattr__


def _replaceable() -> bool:
    """Whether this Python's dataclasses make the frozen methods as `_frozen_methods` does."""
    made = getattr(dataclasses, "_frozen_get_del_attr", None)
    if made is None or sys.version_info[:2] not in ((3, 11), (3, 12)):
        return False
    return list(inspect.signature(made).parameters) == ["cls", "fields", "globals"]


_LOCK = threading.Lock()
_FROZEN_METHODS = _replaceable()


def _dataclass(cls: type) -> Any:
    """`cls` through `dataclass(frozen=True, slots=True, eq=False, repr=False)`."""
    make = dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
    if not _FROZEN_METHODS:
        return make(cls)
    with _LOCK:
        compiled = dataclasses._frozen_get_del_attr  # type: ignore[attr-defined]
        dataclasses._frozen_get_del_attr = _frozen_methods  # type: ignore[attr-defined]
        try:
            return make(cls)
        finally:
            dataclasses._frozen_get_del_attr = compiled  # type: ignore[attr-defined]


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def record(cls: type[T]) -> type[T]:
    """`cls` as a frozen, slotted dataclass (see the module docstring)."""
    if defined := [name for name in _REFUSED if name in cls.__dict__]:
        raise TypeError(f"{cls.__qualname__} defines {', '.join(defined)}: use @dataclass")
    built: Any = _dataclass(cls)
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
