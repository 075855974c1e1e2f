"""The keyed chain without a database: consumer rows with MACs, fed to `BudgetReplay` with the
keys, as `reconcile` does; rows without a MAC verify only under a valid legacy seal."""

from __future__ import annotations

from typing import Any

import pytest

from bench.replay_bench import build_rows, command_stream
from budget_ledger.ledger.chain_mac import ChainKey, ChainKeyring, event_mac, seal_mac
from budget_ledger.ledger.settings import SettingsError, load_settings
from budget_ledger.projections.replay import BudgetReplay, LegacySeal

pytestmark = pytest.mark.unit

KEY = ChainKey("k1", b"k" * 32)
RING = ChainKeyring({"k1": KEY.secret, "k0": b"o" * 32})
Key = tuple[str, str]


def _plain_rows() -> list[tuple[Any, ...]]:
    """(scan columns..., mac, mac_key_id) with no MAC yet, as a ledger written before the key."""
    rows = []
    for out in build_rows(command_stream(400, 3, seed=5)):
        for r in out.ledger_rows:
            rows.append((r[0], r[1], r[2], r[3], r[9], r[10], r[11], r[12], r[16], r[19]))
    return rows


@pytest.fixture(scope="module")
def plain() -> list[tuple[Any, ...]]:
    return _plain_rows()


def _keyed(rows: list[tuple[Any, ...]], key: ChainKey = KEY) -> list[tuple[Any, ...]]:
    return [(*r[:9], event_mac(key, r[9]), key.key_id, None, None) for r in rows]


def _unkeyed(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(*r[:9], None, None, None, None) for r in rows]


def _replay(
    rows: list[tuple[Any, ...]], seals: dict[Key, LegacySeal] | None = None
) -> dict[Key, BudgetReplay]:
    budgets: dict[Key, BudgetReplay] = {}
    for row in rows:
        key = (row[0], row[1])
        if key not in budgets:
            budgets[key] = BudgetReplay(*key, RING, (seals or {}).get(key))
        budgets[key].feed(row)
    for b in budgets.values():
        b.end_of_scan()
    return budgets


def _broken(budgets: dict[Key, BudgetReplay]) -> dict[Key, tuple[int, str]]:
    return {k: (b.broken.sequence, b.broken.problem) for k, b in budgets.items() if b.broken}


def test_keyed_rows_verify(plain: list[tuple[Any, ...]]) -> None:
    assert _broken(_replay(_keyed(plain))) == {}


def test_a_retired_key_still_verifies_its_rows(plain: list[tuple[Any, ...]]) -> None:
    old = ChainKey("k0", RING.keys["k0"])
    half = len(plain) // 2
    assert _broken(_replay(_keyed(plain[:half], old) + _keyed(plain[half:]))) == {}


@pytest.mark.parametrize(
    ("mac", "key_id", "problem"),
    [
        (None, None, "mac missing"),
        ("0" * 64, "k1", "mac mismatch"),
        (event_mac(ChainKey("k9", b"x" * 32), "h"), "k9", "mac key id 'k9' is not among"),
    ],
)
def test_a_row_without_a_valid_mac_is_a_broken_link(
    plain: list[tuple[Any, ...]], mac: str | None, key_id: str | None, problem: str
) -> None:
    rows = _keyed(plain)
    i = next(i for i, r in enumerate(rows) if r[2] == 5)
    rows[i] = (*rows[i][:9], mac, key_id, None, None)
    broken = _broken(_replay(rows))
    assert list(broken) == [(rows[i][0], rows[i][1])]
    seq, text = broken[(rows[i][0], rows[i][1])]
    assert seq == 5 and text.startswith(problem), text


def _seals(rows: list[tuple[Any, ...]], upto: int, key: ChainKey = KEY) -> dict[Key, LegacySeal]:
    heads: dict[Key, tuple[int, str]] = {}
    for r in rows:
        if r[2] <= upto:
            heads[(r[0], r[1])] = (r[2], r[9])
    return {
        k: LegacySeal(seq, h, seal_mac(key, k[0], k[1], seq, h), key.key_id)
        for k, (seq, h) in heads.items()
    }


def test_the_sealed_legacy_prefix_verifies_and_nothing_unkeyed_after_it(
    plain: list[tuple[Any, ...]],
) -> None:
    # Sequences 1-10 of every budget were written before the key, the rest with it.
    rows = [
        (*r[:9], None, None, None, None)
        if r[2] <= 10
        else (*r[:9], event_mac(KEY, r[9]), "k1", None, None)
        for r in plain
    ]
    seals = _seals(plain, 10)
    assert _broken(_replay(rows)) != {}  # without seals the unkeyed prefix does not verify
    assert _broken(_replay(rows, seals)) == {}
    # An unkeyed row after the sealed prefix: broken.
    i = next(i for i, r in enumerate(rows) if r[2] == 11)
    rows[i] = (*rows[i][:9], None, None, None, None)
    assert _broken(_replay(rows, seals))[(rows[i][0], rows[i][1])] == (
        11,
        "mac missing: the row was not written by a holder of the chain key",
    )


def test_a_forged_seal_vouches_for_nothing(plain: list[tuple[Any, ...]]) -> None:
    rows = _unkeyed(plain)
    forged = _seals(plain, 10**9, ChainKey("k1", b"f" * 32))
    broken = _broken(_replay(rows, forged))
    assert len(broken) == 3 and {seq for seq, _ in broken.values()} == {1}


def test_chain_settings_are_validated_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEDGER_CHAIN_KEYS", "LEDGER_CHAIN_KEY_ID", "LEDGER_APP_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    secret = "chain-secret-" + "x" * 32
    app_url = "postgresql://ledger_app:app-pw-123@db/ledger"
    s = load_settings(chain_keys={"c1": secret}, chain_key_id="c1", app_database_url=app_url)
    key = s.chain_key()
    assert key is not None and key.secret == secret.encode()
    assert s.app_dsn() == app_url
    ring = s.chain_keyring()
    assert ring is not None and set(ring.keys) == {"c1"}
    for shown in (repr(s), str(s), repr(key), repr(ring), s.model_dump_json()):
        assert secret not in shown and "app-pw-123" not in shown
    with pytest.raises(SettingsError, match="LEDGER_CHAIN_KEY_ID"):
        load_settings(chain_keys={"c1": secret}, chain_key_id="c2")
    with pytest.raises(SettingsError, match="shorter than 32"):
        load_settings(chain_keys={"c1": "short"})
    assert load_settings().chain_key() is None and load_settings().chain_keyring() is None
    assert load_settings().app_dsn() == load_settings().database_url
