"""`quick_init`: a faster ``__init__`` for hot frozen dataclasses that stay Python classes (a
state's `BudgetConfig`, the writer's `Recorded`), and for the written-out ones below when the
core runs interpreted.

A frozen dataclass's generated ``__init__`` stores every field with
``object.__setattr__(self, "name", value)`` (its own ``__setattr__`` refuses), a global and an
attribute look-up and a call per field: 4.3 us for the 20 fields of a `LedgerEvent` on this
machine. The consumer builds two events and a state per command, and a replay one of each per
event. With ``slots=True`` every field is a slot whose descriptor can store the value directly;
the ``__init__`` written here calls those descriptors (bound once, at class creation) and takes
1.7 us. Same signature, defaults, frozenness, equality and hash: only the stores are cheaper.

`native_init`: the hottest classes (`LedgerEvent`, `BudgetState`, `Reservation`, the domain
commands, the consumer's `Incoming`) write their ``__init__`` out instead, ``self.field =
field`` for each field, because the core is also compiled with mypyc (docs/performance.md, "The
compiled core"), which then stores each field natively (~10x cheaper than either Python
``__init__``) and keeps the class frozen for Python code. Interpreted, those assignments would
meet the frozen ``__setattr__``: `native_init` puts `quick_init`'s ``__init__`` in their place.
tests/unit/test_frozen.py checks that a written-out ``__init__`` takes exactly the fields, in
order, with their defaults.
"""

from __future__ import annotations

import copyreg
import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def quick_init(cls: type[T]) -> type[T]:
    """Give a frozen, slotted dataclass (``@dataclass(frozen=True, slots=True)``, applied
    first) an ``__init__`` that stores its fields through their slot descriptors."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: quick_init needs @dataclass(frozen=True, slots=True)")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: quick_init does not call __post_init__")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    namespace: dict[str, Any] = {}
    signature: list[str] = []
    for i, f in enumerate(fields):
        if not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: quick_init takes plain fields only")
        namespace[f"_set{i}"] = _slot(cls, f.name).__set__
        if f.default is dataclasses.MISSING:
            signature.append(f.name)
        else:
            namespace[f"_default{i}"] = f.default
            signature.append(f"{f.name}=_default{i}")
    body = "".join(f"    _set{i}(self, {f.name})\n" for i, f in enumerate(fields)) or "    pass\n"
    source = f"def __init__(self, {', '.join(signature)}):\n{body}"
    # Built from the dataclass's own field names (identifiers), as dataclasses builds its own.
    exec(source, namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = {**{f.name: f.type for f in fields}, "return": None}
    setattr(cls, "__init__", init)  # noqa: B010 - mypy refuses assigning to a method
    return cls


def native_init(cls: type[T], module_file: str) -> None:
    """Give ``cls`` `quick_init`'s ``__init__`` when its module (``module_file``) runs
    interpreted; compiled, its own written-out ``__init__`` stays."""
    if module_file.endswith(".py"):
        quick_init(cls)


def picklable(*classes: type) -> None:
    """Pickle instances of the frozen dataclasses ``classes`` by their fields, rebuilt through
    ``__init__``: compiled, mypyc's own pickling of a frozen class would assign the fields one by
    one and be refused (results cross processes pickled: the reconciler's workers)."""
    for cls in classes:
        copyreg.pickle(cls, _by_fields)


def _by_fields(obj: Any) -> tuple[type, tuple[Any, ...]]:
    return type(obj), tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))


def _slot(cls: type, name: str) -> Any:
    """The slot descriptor of field ``name`` (a base class's, for an inherited field)."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            descriptor = klass.__dict__[name]
            if type(descriptor).__name__ == "member_descriptor":
                return descriptor
            break
    raise TypeError(f"{cls.__name__}.{name}: quick_init needs a slot for every field")
