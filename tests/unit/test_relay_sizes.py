"""The relay's record size bound and the truncation of oversized dead letters (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from budget_ledger.consumers.relay import record_size, truncate_for

headers_st = st.lists(
    st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=200)), max_size=5
)


@given(
    value=st.binary(max_size=50_000),
    key=st.one_of(st.none(), st.binary(max_size=300)),
    headers=headers_st,
    limit=st.integers(min_value=2_000, max_value=1_048_576),
)
def test_a_truncated_dead_letter_fits_its_topic_and_says_so(
    value: bytes, key: bytes | None, headers: list[tuple[str, bytes]], limit: int
) -> None:
    cut, marked = truncate_for(value, key, headers, limit)
    assert record_size(key, cut, marked) <= limit
    assert value.startswith(cut)
    assert marked[: len(headers)] == headers
    assert marked[len(headers) :] == [
        ("truncated", b"true"),
        ("original_size", str(len(value)).encode()),
    ]


@given(value=st.binary(max_size=5_000), key=st.binary(max_size=100), headers=headers_st)
def test_the_size_bound_covers_every_byte_of_the_record(
    value: bytes, key: bytes, headers: list[tuple[str, bytes]]
) -> None:
    raw = len(key) + len(value) + sum(len(k.encode()) + len(v) for k, v in headers)
    assert record_size(key, value, headers) > raw
