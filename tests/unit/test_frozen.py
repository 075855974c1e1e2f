"""`ledger.frozen.quick_init`: the faster __init__ behaves as the one dataclasses writes."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from budget_ledger.consumers.processor import Incoming
from budget_ledger.ledger import commands, events, record, state
from budget_ledger.ledger.frozen import quick_init

QUICK = [
    events.LedgerEvent,
    state.BudgetState,
    state.Reservation,
    state.BudgetConfig,
    Incoming,
    record.Recorded,
    *(
        c
        for c in vars(commands).values()
        if isinstance(c, type) and c.__module__ == commands.__name__ and dataclasses.is_dataclass(c)
    ),
]


def _reference(cls: type) -> type:
    """The same fields as a plain frozen, slotted dataclass: dataclasses' own __init__."""
    fields = [
        (f.name, f.type, dataclasses.field(default=f.default))
        if f.default is not dataclasses.MISSING
        else (f.name, f.type)
        for f in dataclasses.fields(cls)
    ]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True, slots=True)


def _values(cls: type) -> list[object]:
    return [f"{f.name}-value" for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
def test_the_domain_classes_use_it(cls: type) -> None:
    # dataclasses' own __init__ names object.__setattr__; this one the bound slot setters.
    assert "_set0" in cls.__init__.__code__.co_names
    assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
def test_same_signature_and_values_as_the_dataclass_init(cls: type) -> None:
    ref = _reference(cls)
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
