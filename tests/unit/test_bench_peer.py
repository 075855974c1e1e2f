"""The peer baseline's workload translation (bench/peer.py): the benchmark's command dicts as
the old design's function calls, amounts in exact integer minor units, each budget's calls on
one client in the stream's order. The functions themselves: tests/integration/test_bench_peer.py.
"""

from __future__ import annotations

from itertools import chain

import pytest

from bench import peer, workload
from budget_ledger.schemas.money import to_decimal_str

pytestmark = pytest.mark.unit

HEAD = {"command_id": "c-1", "tenant_id": "t", "budget_id": "b"}


def test_each_command_type_becomes_its_function_call() -> None:
    assert peer.translate({**HEAD, "type": "open_budget", "currency": "USD"}, 2) == (
        "open_budget",
        ("c-1", "t", "b", "USD", None),
    )
    assert peer.translate(
        {**HEAD, "type": "open_budget", "currency": "USD", "hard_cap": "250.5"}, 2
    ) == ("open_budget", ("c-1", "t", "b", "USD", 25050))
    assert peer.translate({**HEAD, "type": "fund", "amount": "300.00", "currency": "USD"}, 2) == (
        "fund",
        ("c-1", "t", "b", 30000, "USD"),
    )
    reserve = {**HEAD, "type": "reserve", "amount": "12.34", "currency": "USD", "ref_id": "r"}
    assert peer.translate(reserve, 2) == ("reserve", ("c-1", "t", "b", "r", 1234, "USD"))
    assert peer.translate({**HEAD, "type": "charge", "ref_id": "r"}, 2) == (
        "charge",
        ("c-1", "t", "b", "r", None),  # the whole reservation
    )
    assert peer.translate({**HEAD, "type": "charge", "ref_id": "r", "amount": "0.07"}, 2) == (
        "charge",
        ("c-1", "t", "b", "r", 7),
    )
    assert peer.translate({**HEAD, "type": "release", "ref_id": "r"}, 2) == (
        "release",
        ("c-1", "t", "b", "r"),
    )


@pytest.mark.parametrize("text", ["1.234", "1e3", "1.", " 1.00", "0x10", "1,00"])
def test_an_amount_that_is_not_exact_minor_units_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        peer.translate({**HEAD, "type": "fund", "amount": text, "currency": "USD"}, 2)


def test_a_command_type_the_peer_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="no function"):
        peer.translate({**HEAD, "type": "adjust", "amount": "1.00"}, 2)


def test_the_whole_workload_translates_exactly_to_integers() -> None:
    commands = list(chain(workload.prepare(30, "p-"), workload.mix(5_000, 30, "p-", seed=6)))
    calls = list(peer.translate_all(commands))
    assert len(calls) == len(commands)
    for cmd, (kind, args) in zip(commands, calls, strict=True):
        assert kind == cmd["type"]
        assert args[:3] == (cmd["command_id"], cmd["tenant_id"], cmd["budget_id"])
        amounts = [a for a in args if not isinstance(a, str) and a is not None]
        assert all(type(a) is int for a in amounts)  # never a float, never a Decimal
        if "amount" in cmd:
            (minor,) = amounts
            assert to_decimal_str(minor, 2) == cmd["amount"]  # exact both ways
        else:
            assert amounts == []


def test_each_budget_goes_to_one_client_in_the_stream_order() -> None:
    calls = list(peer.translate_all(workload.mix(3_000, 50, "p-", seed=6)))
    parts = peer.split(calls, 4)
    assert sum(map(len, parts)) == len(calls)
    assert all(parts), "every client gets work at 50 budgets"
    owner: dict[tuple[str, str], int] = {}
    for i, part in enumerate(parts):
        for _, args in part:
            assert owner.setdefault((args[1], args[2]), i) == i
        # Within a client, the stream's order (command ids are c-<index>).
        order = [int(args[0].rsplit("-", 1)[1]) for _, args in part]
        assert order == sorted(order)
