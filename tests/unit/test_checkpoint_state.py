"""The state stored at a reconcile checkpoint (projections/checkpoint_state.py) and the replay that
starts from it (projections/replay.py), without a database: encode/decode round-trips, and the
replay of the first k events, stored and decoded, plus the remaining events equals a whole replay.

Histories are random command streams run through the consumer's own batch logic (the benchmark's
`build_rows`), so the rows are exactly those a ledger holds."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import Any

import immutables
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.replay_bench import build_rows, command_stream
from budget_ledger.ledger.state import (
    MAX_MINOR,
    BudgetConfig,
    BudgetState,
    Monitor,
    Reservation,
    ReservationStatus,
    compact,
)
from budget_ledger.projections.checkpoint_state import StateUnreadable, decode_state, encode_state
from budget_ledger.projections.replay import BudgetReplay

pytestmark = pytest.mark.unit

Key = tuple[str, str]
Row = tuple[Any, ...]

money = st.integers(0, MAX_MINOR)
times = st.datetimes(datetime(2000, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC))
ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
configs = st.builds(
    BudgetConfig,
    period=st.sampled_from(["rolling", "monthly", "quarterly", "yearly"]),
    hard_cap=st.none() | money,
    soft_cap=st.none() | money,
    soft_threshold_pct=st.integers(1, 100),
    hard_threshold_pct=st.integers(1, 100),
    period_allowance=st.none() | money,
    rollover=st.booleans(),
    timezone=st.sampled_from(["UTC", "Africa/Harare", "America/New_York"]),
    reservation_ttl_seconds=st.none() | st.integers(1, 10**9),
)


@st.composite
def states(draw: st.DrawFn) -> BudgetState:
    """Any budget state with open reservations only (what a checkpoint stores)."""
    seq = draw(st.integers(1, 10**12))
    refs = draw(st.lists(ids, max_size=6, unique=True))
    reservations = {
        ref: Reservation(ref, draw(money), ReservationStatus.RESERVED, draw(money),
                         draw(st.none() | times), draw(ids), draw(st.integers(1, seq)),
                         draw(st.integers(1, seq)))
        for ref in refs
    }  # fmt: skip
    expiring = {r.ref_id: r.expires_at for r in reservations.values() if r.expires_at is not None}
    return BudgetState(
        tenant_id=draw(ids),
        budget_id=draw(ids),
        opened=draw(st.booleans()),
        currency=draw(st.none() | st.sampled_from(["USD", "ZWG", "CLF"])),
        config=draw(st.none() | configs),
        funded_in_period=draw(money),
        reserved_total=draw(money),
        charged_in_period=draw(money),
        sequence=seq,
        last_hash=draw(st.text("0123456789abcdef", min_size=64, max_size=64)),
        period_start=draw(st.none() | times),
        reservations=immutables.Map(reservations),
        cap_reached_alerted=draw(st.booleans()),
        digits=draw(st.integers(0, 4)),
        expiring=immutables.Map(expiring),
        above_soft=draw(st.booleans()),
        above_hard=draw(st.booleans()),
    )


@given(states())
def test_encode_decode_round_trips(state: BudgetState) -> None:
    text = encode_state(state)
    assert decode_state(text) == state
    assert decode_state(text.encode()) == state
    assert encode_state(decode_state(text)) == text


@given(states())
def test_money_is_never_a_float(state: BudgetState) -> None:
    doc = orjson.loads(encode_state(state))
    assert isinstance(doc[6], int)  # funded_in_period
    doc[6] = float(doc[6])
    with pytest.raises(StateUnreadable, match="expected an integer"):
        decode_state(orjson.dumps(doc))


def test_anything_else_is_unreadable() -> None:
    for text in ("", "[]", "[2]", "[1]", "[3]", '{"v": 1}', '{"v": 2}', "not json", "2"):
        with pytest.raises(StateUnreadable):
            decode_state(text)
    fields = orjson.loads(encode_state(funded_state()))
    for doc in ([*fields, [], []], fields[:-1], [3, *fields[1:]]):
        with pytest.raises(StateUnreadable):
            decode_state(orjson.dumps(doc))


def _encode_v1(state: BudgetState) -> bytes:
    """A state as version 1 wrote it (every key spelled out), for the states stored before."""
    c = state.config
    doc: dict[str, Any] = {
        "v": 1, "tenant_id": state.tenant_id, "budget_id": state.budget_id,
        "opened": state.opened, "currency": state.currency,
        "config": None if c is None else {f: getattr(c, f) for f in c.__dataclass_fields__},
        "funded_in_period": state.funded_in_period, "reserved_total": state.reserved_total,
        "charged_in_period": state.charged_in_period, "sequence": state.sequence,
        "last_hash": state.last_hash, "period_start": _rfc(state.period_start),
        "reservations": [[r.ref_id, r.reserved_amount, r.charged_amount, _rfc(r.expires_at),
                          r.command_id, r.created_seq, r.updated_seq]
                         for r in state.reservations.values()],
        "cap_reached_alerted": state.cap_reached_alerted, "digits": state.digits,
        "expiring": [[ref, _rfc(at)] for ref, at in state.expiring.items()],
        "above_soft": state.above_soft, "above_hard": state.above_hard,
    }  # fmt: skip
    return orjson.dumps(doc)


def _rfc(dt: datetime | None) -> str | None:
    return None if dt is None else dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(states())
def test_a_version_1_state_still_decodes(state: BudgetState) -> None:
    # Checkpoints keep the state of the run that wrote them until their budget moves again.
    assert decode_state(_encode_v1(state)) == state
    assert encode_state(decode_state(_encode_v1(state))) == encode_state(state)


def test_budgets_with_one_config_share_one_config_object() -> None:
    a, b = funded_state("a"), funded_state("b")
    da, db = decode_state(encode_state(a)), decode_state(encode_state(b))
    assert da.config == a.config and da.config is db.config
    # 1 == True: a config spelled with 1 for rollover is refused, not taken for the cached one.
    doc = orjson.loads(encode_state(a))
    doc[5][6] = int(doc[5][6])
    with pytest.raises(StateUnreadable, match="expected true or false"):
        decode_state(orjson.dumps(doc))


def funded_state(budget_id: str = "b") -> BudgetState:
    """A plain opened budget with a monthly config and one open reservation."""
    at = datetime(2026, 11, 1, tzinfo=UTC)
    return BudgetState(
        tenant_id="t", budget_id=budget_id, opened=True, currency="USD",
        config=BudgetConfig(period="monthly", hard_cap=10_000), funded_in_period=5_000,
        reserved_total=100, charged_in_period=0, sequence=3, last_hash="a" * 64,
        period_start=at,
        reservations=immutables.Map(
            {"r": Reservation("r", 100, ReservationStatus.RESERVED, 0, None, "c", 3, 3)}
        ),
        digits=2,
    )  # fmt: skip


def _histories(n: int, budgets: int, seed: int) -> dict[Key, list[Row]]:
    """Each budget's ledger rows (layout of `reconcile_ledger_scan`), in sequence order."""
    rows: dict[Key, list[Row]] = defaultdict(list)
    for out in build_rows(command_stream(n, budgets, seed=seed), batch=97):
        for r in out.ledger_rows:
            rows[(r[0], r[1])].append(
                (r[0], r[1], r[2], r[3], r[9], r[10], r[11], r[12], r[16], None, None, r[20], r[21])
            )
    return rows


def _replay(key: Key, rows: list[Row], start: BudgetState | None = None) -> BudgetReplay:
    replay = BudgetReplay(*key)
    if start is not None:
        replay.start_at_checkpoint(start)
    for row in rows:
        replay.feed(row)
    replay.lost_base()
    replay.end_of_scan()
    return replay


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), budgets=st.integers(1, 4), cut=st.floats(0, 1))
def test_a_replay_from_the_stored_state_at_k_equals_a_whole_replay(
    seed: int, budgets: int, cut: float
) -> None:
    for key, rows in _histories(300, budgets, seed).items():
        whole = _replay(key, rows)
        assert whole.broken is None
        k = max(1, int(len(rows) * cut))
        prefix = _replay(key, rows[:k])
        stored = encode_state(compact(prefix.state))
        start = decode_state(stored)
        assert start == compact(prefix.state)
        # Fed the checkpointed row k and the rows after it, as reconcile_events_of reads them.
        resumed = _replay(key, rows[k - 1 :], start)
        assert resumed.broken is None and not resumed.reread
        assert resumed.events == len(rows) - k  # only the new events are replayed
        assert compact(resumed.state) == compact(whole.state)
        # The full state less the reservations settled at or before the checkpoint.
        assert dict(resumed.state.reservations) == {
            ref: r
            for ref, r in whole.state.reservations.items()
            if r.status is ReservationStatus.RESERVED or r.updated_seq > k
        }


@pytest.fixture(scope="module")
def history() -> tuple[Key, list[Row]]:
    key, rows = max(_histories(400, 3, seed=11).items(), key=lambda kv: len(kv[1]))
    assert len(rows) > 20
    return key, rows


def test_a_changed_checkpointed_row_falls_back_to_a_whole_replay(
    history: tuple[Key, list[Row]],
) -> None:
    key, rows = history
    k = 10
    start = decode_state(encode_state(compact(_replay(key, rows[:k]).state)))
    changed = list(rows[k - 1 :])
    body = orjson.loads(changed[0][8])
    body["hash"] = "0" * 64
    changed[0] = (*changed[0][:8], orjson.dumps(body).decode(), *changed[0][9:])
    resumed = _replay(key, changed, start)
    assert resumed.reread  # the shard re-reads the budget in order from its first event


def test_a_missing_checkpointed_row_falls_back_to_a_whole_replay(
    history: tuple[Key, list[Row]],
) -> None:
    key, rows = history
    k = 10
    start = decode_state(encode_state(compact(_replay(key, rows[:k]).state)))
    replay = BudgetReplay(*key)
    replay.start_at_checkpoint(start)
    for row in rows[k:]:  # the checkpointed row itself is gone
        replay.feed(row)
    assert replay.lost_base() and replay.reread
    replay.restart()
    assert replay.base == 0 and replay.state.sequence == 0


def test_a_tampered_row_after_the_checkpoint_is_the_broken_link(
    history: tuple[Key, list[Row]],
) -> None:
    key, rows = history
    k = 10
    start = decode_state(encode_state(compact(_replay(key, rows[:k]).state)))
    tampered = list(rows[k - 1 :])
    body = orjson.loads(tampered[2][8])
    body["command_id"] = "forged"
    tampered[2] = (*tampered[2][:8], orjson.dumps(body).decode(), *tampered[2][9:])
    resumed = _replay(key, tampered, start)
    assert resumed.broken is not None and resumed.broken.sequence == k + 2
    assert "hash mismatch" in resumed.broken.problem


def test_every_field_is_stored() -> None:
    # Version 2 is positional: a field added to BudgetState (or BudgetConfig) must be added to
    # encode_state and decode_state, or it would silently decode to its default.
    monitored = replace(
        funded_state(), monitors=immutables.Map({"m": Monitor("available", "<", 5, True)})
    )
    stored = orjson.loads(encode_state(monitored))
    assert len(stored) == 1 + len(fields(BudgetState))
    assert stored[5] == [getattr(monitored.config, f.name) for f in fields(BudgetConfig)]
    assert decode_state(encode_state(monitored)) == monitored
