"""API keys: text form, hashing, scopes; page cursors; the `keys` and `serve` commands' help."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from fastapi import HTTPException
from hypothesis import given
from hypothesis import strategies as st

from budget_ledger.entrypoints.api.budgets import decode_cursor, encode_cursor
from budget_ledger.entrypoints.api.keys import (
    key_hash,
    key_id_of,
    key_matches,
    new_key,
    parse_scopes,
)

pytestmark = pytest.mark.unit


def test_a_new_key_carries_its_id_and_256_random_bits() -> None:
    key_id, key = new_key()
    assert key.startswith(f"blk_{key_id}_") and len(key_id) == 16
    assert key_id_of(key) == key_id
    assert len(key) == len("blk_") + 16 + 1 + 43  # token_urlsafe(32): 43 characters
    assert new_key() != new_key()


def test_only_the_sha256_of_the_whole_key_is_compared() -> None:
    _, key = new_key()
    stored = key_hash(key)
    assert stored == hashlib.sha256(key.encode()).digest() and len(stored) == 32
    assert key_matches(key, stored)
    other = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert key_id_of(other) is not None and not key_matches(other, stored)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "blk_",
        "Bearer blk_0123456789abcdef_" + "a" * 43,
        "blk_0123456789ABCDEF_" + "a" * 43,  # upper-case hex: not an id we make
        "blk_0123456789abcde_" + "a" * 43,  # 15 hex digits
        "blk_0123456789abcdef_" + "a" * 42,  # short secret
        "blk_0123456789abcdef_" + "a" * 44,
        "blk_0123456789abcdef_" + "a" * 42 + "=",
        "blk_0123456789abcdef_" + "a" * 42 + "\n",
        "xyz_0123456789abcdef_" + "a" * 43,
    ],
)
def test_malformed_key_text_has_no_id(text: str) -> None:
    assert key_id_of(text) is None


@given(st.text(max_size=80))
def test_any_text_either_parses_or_not_without_raising(text: str) -> None:
    key_id = key_id_of(text)
    assert key_id is None or text.startswith(f"blk_{key_id}_")


def test_scopes_are_checked_and_put_in_order() -> None:
    assert parse_scopes("write, read") == ("read", "write")
    assert parse_scopes("operator,read,read") == ("read", "operator")
    with pytest.raises(ValueError, match="admin"):
        parse_scopes("read,admin")
    with pytest.raises(ValueError, match="at least one"):
        parse_scopes(" , ")


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"], min_codepoint=1), max_size=128))
def test_cursors_round_trip(last_id: str) -> None:
    cursor = encode_cursor(last_id)
    assert cursor is not None and decode_cursor(cursor) == last_id


def test_a_cursor_that_is_not_one_is_400() -> None:
    assert encode_cursor(None) is None and decode_cursor(None) == ""
    for bad in ("%%%", "A", "_w"):  # not base64, or not UTF-8
        with pytest.raises(HTTPException) as info:
            decode_cursor(bad)
        assert info.value.status_code == 400


@pytest.mark.parametrize(
    "args", [["keys", "create"], ["keys", "list"], ["keys", "revoke"], ["serve"]]
)
def test_api_commands_have_help(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "budget_ledger.entrypoints.cli", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: budget-ledger " + " ".join(args))


def test_serve_with_workers_listens_with_tcp_nodelay(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without it every keep-alive response of a multi-worker server waits ~40 ms (Nagle and the
    # client's delayed ACK): uvicorn binds the shared socket with proto 0 (its issue #3149).
    import socket

    import uvicorn.supervisors

    from budget_ledger.entrypoints.api import serve

    seen: list[int] = []

    class Supervisor:
        def __init__(self, config: object, sockets: list[socket.socket]) -> None:
            seen.extend(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)
            for s in sockets:
                s.close()

        def run(self) -> None:
            pass

    monkeypatch.setattr(uvicorn.supervisors, "Multiprocess", Supervisor)
    serve._serve_workers("127.0.0.1", 0, 2, access_log=False)
    assert seen and all(seen)
