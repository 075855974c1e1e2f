"""The bisection that finds the message a refused batch is to blame for, and what counts as data."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from budget_ledger.consumers.health import decide_live
from budget_ledger.consumers.poison import (
    copy_line,
    first_failing,
    is_data_error,
    is_position_conflict,
    is_race,
)

pytestmark = pytest.mark.unit


@given(n=st.integers(1, 5000), data=st.data())
def test_bisection_finds_the_one_bad_message_in_logarithmic_probes(
    n: int, data: st.DataObject
) -> None:
    bad = data.draw(st.integers(0, n - 1))
    probes: list[int] = []

    def fails(k: int) -> bool:
        probes.append(k)
        return k > bad  # the prefix holds the bad message

    assert first_failing(n, fails) == bad
    assert len(probes) <= n.bit_length() + 1


@given(flags=st.lists(st.booleans(), min_size=1, max_size=300))
def test_without_monotonicity_the_answer_still_turns_a_passing_prefix_into_a_failing_one(
    flags: list[bool],
) -> None:
    # Arbitrary verdicts per prefix (a later message may undo an overflow, say): the message
    # found is one whose addition makes the batch fail.
    def fails(k: int) -> bool:
        return k > 0 and flags[k - 1]

    index = first_failing(len(flags), fails)
    if not flags[-1]:
        assert index is None
    else:
        assert index is not None and fails(index + 1) and not fails(index)


def test_a_failure_that_does_not_reproduce_blames_nobody() -> None:
    assert first_failing(10, lambda k: False) is None
    assert first_failing(0, lambda k: True) is None


def _unique_violation(constraint: str) -> psycopg.errors.UniqueViolation:
    class Diag:
        constraint_name = constraint

    class Reported(psycopg.errors.UniqueViolation):
        diag = Diag()  # type: ignore[assignment]  # what the server would report

    return Reported("duplicate key")


def test_data_errors_are_isolated_and_infrastructure_errors_are_not() -> None:
    assert is_data_error(psycopg.errors.UntranslatableCharacter("\\u0000"))
    assert is_data_error(psycopg.errors.NumericValueOutOfRange("bigint"))
    assert is_data_error(psycopg.errors.CheckViolation("no_poison"))
    assert is_data_error(psycopg.DataError("PostgreSQL text fields cannot contain NUL"))
    assert is_data_error(UnicodeEncodeError("utf-8", "x", 0, 1, "surrogate"))
    assert not is_data_error(psycopg.OperationalError("server closed the connection"))
    assert not is_data_error(psycopg.errors.InsufficientPrivilege("permission denied"))
    assert not is_data_error(ZeroDivisionError())


def test_unique_violations_are_races_positions_or_data_by_constraint() -> None:
    race = _unique_violation("ledger_tenant_id_command_id_key")
    assert is_race(race) and not is_position_conflict(race)
    position = _unique_violation("ledger_pkey")
    assert is_position_conflict(position) and not is_data_error(position)
    other = _unique_violation("reservations_pkey")
    assert is_data_error(other) and not is_race(other)


@pytest.mark.parametrize(
    ("since", "backlog", "live"),
    [(0.0, 0, True), (500.0, 0, True), (5.0, 10, True), (61.0, 10, False), (61.0, 1, False)],
)
def test_liveness_fails_only_when_work_waits_and_nothing_moved(
    since: float, backlog: int, live: bool
) -> None:
    assert decide_live(since, backlog, stall_seconds=60) is live


@given(n=st.integers(1, 3000), data=st.data())
def test_a_hint_is_taken_after_two_probes_confirm_it_and_ignored_when_wrong(
    n: int, data: st.DataObject
) -> None:
    bad = data.draw(st.integers(0, n - 1))
    hint = data.draw(st.integers(-1, n))
    probes: list[int] = []

    def fails(k: int) -> bool:
        probes.append(k)
        return k > bad

    assert first_failing(n, fails, hint) == bad
    if hint == bad:
        assert probes == [bad + 1, bad]
    else:
        assert len(probes) <= n.bit_length() + 3


def test_the_copy_row_postgres_names_is_read_from_the_error_context() -> None:
    class Diag:
        context = 'COPY ledger, line 93, column funded: "9299999999999999907"'

    class Reported(psycopg.errors.NumericValueOutOfRange):
        diag = Diag()  # type: ignore[assignment]

    assert copy_line(Reported("out of range")) == ("ledger", 93)
    assert copy_line(psycopg.DataError("PostgreSQL text fields cannot contain NUL")) is None
    assert copy_line(ValueError("x")) is None
