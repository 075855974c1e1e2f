"""`ledger.frozen`: the faster __init__ (quick_init's, or written out for the compiled core)
behaves as the one dataclasses writes, and pickling goes through it."""

from __future__ import annotations

import ast
import copyreg
import dataclasses
import importlib
import inspect
import pickle
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from immutables import Map

from budget_ledger.consumers.processor import Incoming
from budget_ledger.ledger import commands, events, record, state
from budget_ledger.ledger.frozen import quick_init

# Written-out __init__ (native_init): quick_init's when interpreted, mypyc's stores compiled.
COMMANDS = [
    c
    for c in vars(commands).values()
    if isinstance(c, type) and c.__module__ == commands.__name__ and dataclasses.is_dataclass(c)
]
NATIVE = [events.LedgerEvent, state.BudgetState, state.Reservation, *COMMANDS, Incoming]
QUICK = [*NATIVE, state.BudgetConfig, record.Recorded]


def _reference(cls: type) -> type:
    """The same fields as a plain frozen, slotted dataclass: dataclasses' own __init__."""
    fields = [
        (f.name, f.type, dataclasses.field(default=f.default))
        if f.default is not dataclasses.MISSING
        else (f.name, f.type)
        for f in dataclasses.fields(cls)
    ]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True, slots=True)


_SAMPLES: dict[type, list[object]] = {
    # Compiled, the fields are typed: the values must have the fields' types.
    events.LedgerEvent: [
        *("funds_reserved", "t", "b", 7, "c", "reserve", "r", "USD", 150, None, Map(k="v")),
        *(1000, 150, 0, 850, 1500, datetime(2026, 1, 2, tzinfo=UTC), None, "p" * 64, "h" * 64),
    ],
    state.BudgetState: [
        getattr(state.initial_state("t", "b"), f.name)
        for f in dataclasses.fields(state.BudgetState)
    ],
    state.Reservation: ["r", 150, state.ReservationStatus.RESERVED, 0, None, "c", 7, 7],
}


# A hashable value of its type for each non-text field of the domain commands and `Incoming`
# (compiled, the fields are typed; a field's runtime type there is a class, or `type` for a
# union).
_AMOUNT = commands.Amount(150, "1.50")
_AT = datetime(2026, 1, 2, tzinfo=UTC)
_BY_NAME: dict[str, object] = {
    "minor": 150, "digits": 2, "soft_threshold_pct": 80, "hard_threshold_pct": 95,
    "reservation_ttl_seconds": 60, "rollover": True, "metadata": Map(k="v"), "changes": Map(k="v"),
    "issued_at": _AT, "expires_at": _AT, "as_of": _AT, "period_end": _AT, "amount": _AMOUNT,
    "hard_cap": _AMOUNT, "soft_cap": _AMOUNT, "period_allowance": _AMOUNT, "threshold": _AMOUNT,
    # Incoming
    "partition": 3, "offset": 7, "key": b"t:b", "value": b"{}", "timestamp_ms": 1,
    "original_size": 0, "headers": (("h", b"v"),),
}  # fmt: skip


def _values(cls: type) -> list[object]:
    return _SAMPLES.get(cls) or [
        _BY_NAME.get(f.name, f"{f.name}-value") for f in dataclasses.fields(cls)
    ]


def _interpreted(cls: type) -> bool:
    return str(sys.modules[cls.__module__].__file__).endswith(".py")


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
def test_the_domain_classes_use_it(cls: type) -> None:
    if cls in NATIVE and not _interpreted(cls):
        assert type(cls.__init__).__name__ == "wrapper_descriptor"  # mypyc's native __init__
        return
    # dataclasses' own __init__ names object.__setattr__; this one the bound slot setters.
    assert "_set0" in cls.__init__.__code__.co_names
    assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"


@pytest.mark.parametrize("cls", NATIVE, ids=lambda c: c.__name__)
def test_a_written_out_init_takes_exactly_the_fields(cls: type) -> None:
    """Its parameters are the fields in order with the same defaults, and it stores each one
    under its own name: nothing else (the source is read: compiled, there is no signature)."""
    package, name = cls.__module__.rsplit(".", 1)
    source = Path(importlib.import_module(package).__path__[0], f"{name}.py")
    classes = {
        n.name: n for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.ClassDef)
    }

    def declared_in(node: ast.ClassDef) -> list[tuple[str, str | None]]:
        # A base class of the same module declares the first fields (a dataclass's order).
        bases = [classes[b.id] for b in node.bases if isinstance(b, ast.Name) and b.id in classes]
        return [*(d for b in bases for d in declared_in(b)),
                *((n.target.id, n.value and ast.unparse(n.value)) for n in node.body
                  if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name))]  # fmt: skip

    declared = declared_in(classes[cls.__name__])
    body = classes[cls.__name__].body
    init = next(n for n in body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    params = [a.arg for a in init.args.args[1:]]
    defaults = [None] * (len(params) - len(init.args.defaults)) + [
        ast.unparse(d) for d in init.args.defaults
    ]
    assert list(zip(params, defaults, strict=True)) == declared
    assert [ast.unparse(n) for n in init.body] == [f"self.{p} = {p}" for p in params]
    assert [f.name for f in dataclasses.fields(cls)] == params


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
def test_pickled_and_copied_through_the_fields(cls: type) -> None:
    obj = cls(*_values(cls))
    assert pickle.loads(pickle.dumps(obj)) == obj


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
def test_same_signature_and_values_as_the_dataclass_init(cls: type) -> None:
    ref = _reference(cls)
    if _interpreted(cls):
        assert inspect.signature(cls) == inspect.signature(ref)
    values = _values(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    by_position, by_name = cls(*values), cls(**dict(zip(names, values, strict=True)))
    expected = ref(*values)
    for name in names:
        assert getattr(by_position, name) == getattr(expected, name)
        assert getattr(by_name, name) == getattr(expected, name)
    assert by_position == by_name and hash(by_position) == hash(by_name)


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
def test_still_frozen_and_strict_about_arguments(cls: type) -> None:
    values = _values(cls)
    obj = cls(*values)
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, first, "changed")
    with pytest.raises(TypeError):
        cls(*values, "one too many")
    with pytest.raises(TypeError):
        cls(*values, no_such_field=1)
    required = [f for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
    if required:
        with pytest.raises(TypeError):
            cls(*values[: len(required) - 1])


def test_defaults_are_the_declared_ones() -> None:
    s = state.BudgetState(
        "t",
        "b",
        False,
        None,
        None,
        0,
        0,
        0,
        0,
        events.GENESIS_HASH,
        None,
        state.initial_state("t", "b").reservations,
    )
    assert s == state.initial_state("t", "b")
    assert s.digits == 0 and s.above_soft is False and len(s.monitors) == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: dataclasses.dataclass(slots=True)(
            type("NotFrozen", (), {"__annotations__": {"a": int}})
        ),
        lambda: dataclasses.dataclass(frozen=True)(
            type("NoSlots", (), {"__annotations__": {"a": int}})
        ),
        lambda: dataclasses.dataclass(frozen=True, slots=True)(
            type(
                "Factory",
                (),
                {"__annotations__": {"a": list}, "a": dataclasses.field(default_factory=list)},
            )
        ),
    ],
    ids=["not frozen", "no slots", "default_factory"],
)
def test_refuses_what_it_cannot_copy_exactly(make: Any) -> None:
    with pytest.raises(TypeError, match="quick_init"):
        quick_init(make())


def _compiled_modules() -> list[str]:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    return list(tomllib.loads(pyproject.read_text())["tool"]["budget_ledger"]["compiled"])


def test_every_frozen_class_of_the_compiled_core_pickles_by_its_fields() -> None:
    """Compiled, a frozen dataclass cannot be unpickled field by field: each must be registered
    with `picklable` (quick_init's classes stay Python classes, which pickle as before)."""
    missing = []
    for name in _compiled_modules():
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if not (
                isinstance(cls, type)
                and cls.__module__ == name
                and dataclasses.is_dataclass(cls)
                and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
            ):
                continue
            quick = "_set0" in getattr(getattr(cls.__init__, "__code__", None), "co_names", ())
            if not quick and cls not in copyreg.dispatch_table:
                missing.append(f"{name}.{cls.__name__}")
    assert missing == []
