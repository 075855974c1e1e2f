"""The closed set of machine-readable refusal reasons (see docs/domain.md for the full table)."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a command was refused. Values are stable wire strings; never rename one.

    Ledger refusals (a ``reservation_rejected`` / ``command_rejected`` event is written):

    - ``insufficient_funds``: the reserve exceeds ``available`` and funding is what binds.
    - ``hard_cap_exceeded``: the reserve exceeds ``available`` and the hard cap is what binds
      (adding funds would not help).
    - ``currency_mismatch``: a ``fund``/``reserve`` names a currency other than the budget's.
    - ``unknown_currency``: ``open_budget`` names a currency missing from the currency table.
    - ``unknown_budget``: any command but ``open_budget`` for a budget that was never opened.
    - ``budget_exists``: ``open_budget`` for a budget that is already open.
    - ``tenant_mismatch``: the command's tenant/budget differ from the budget it was routed to.
    - ``reservation_not_found``: ``charge``/``release`` of a ``ref_id`` never reserved here.
    - ``reservation_not_active``: ``charge``/``release`` of a reservation that is no longer
      ``reserved`` (already charged, released or expired).
    - ``amount_exceeds_reservation``: a ``charge`` for more than was reserved.
    - ``duplicate_ref``: a second ``reserve`` for a ``ref_id`` this budget has already seen.
    - ``invalid_amount``: an amount with more decimals than the budget's currency allows
      (for commands without a currency, only the budget knows the digits).
    - ``invalid_config``: the resulting configuration is inconsistent (soft cap above hard cap,
      soft threshold above hard threshold).
    - ``negative_funds``: an ``adjust`` that would make ``funded`` negative.
    - ``expires_in_past``: a ``reserve`` whose expiry (explicit or from the TTL) is not after now.
    - ``period_not_closable``: ``close_period`` on a ``rolling`` budget.
    - ``period_already_closed``: ``close_period`` whose ``period_end`` is not after the current
      period's start (a late or repeated scheduler tick).
    - ``period_not_ended``: ``close_period`` whose ``period_end`` lies in the future.
    - ``as_of_in_future``: ``expire_reservations`` whose ``as_of`` lies in the future.
    - ``amount_out_of_range``: an amount, or a balance it would produce (funded, committed,
      a cap or allowance), above ``ledger.state.MAX_MINOR`` (10**18 minor units): what the
      ledger's bigint columns are guaranteed to hold.
    - ``too_many_monitors``: a ``set_monitor`` for a new monitor id on a budget that already has
      ``ledger.state.MAX_MONITORS`` monitors.
    - ``monitor_not_found``: a ``remove_monitor`` of a monitor id the budget does not have.

    Dead-letter reasons (no ledger row; the message goes to the DLQ with this in its headers):

    - ``idempotency_conflict``: a known ``command_id`` arrived with a different payload.
    - ``malformed_json``: the message is not valid UTF-8 JSON.
    - ``schema_violation``: valid JSON that is not a valid command.
    - ``key_mismatch``: the Kafka key is not ``<tenant_id>:<budget_id>`` of the command.
    - ``too_large``, ``duplicate_key``, ``invalid_id``, ``invalid_text``, ``out_of_range``:
      the input limits of docs/input-limits.md (the DLQ ``error_class`` of such a message).
    """

    INSUFFICIENT_FUNDS = "insufficient_funds"
    HARD_CAP_EXCEEDED = "hard_cap_exceeded"
    CURRENCY_MISMATCH = "currency_mismatch"
    UNKNOWN_CURRENCY = "unknown_currency"
    UNKNOWN_BUDGET = "unknown_budget"
    BUDGET_EXISTS = "budget_exists"
    TENANT_MISMATCH = "tenant_mismatch"
    RESERVATION_NOT_FOUND = "reservation_not_found"
    RESERVATION_NOT_ACTIVE = "reservation_not_active"
    AMOUNT_EXCEEDS_RESERVATION = "amount_exceeds_reservation"
    DUPLICATE_REF = "duplicate_ref"
    INVALID_AMOUNT = "invalid_amount"
    INVALID_CONFIG = "invalid_config"
    NEGATIVE_FUNDS = "negative_funds"
    EXPIRES_IN_PAST = "expires_in_past"
    PERIOD_NOT_CLOSABLE = "period_not_closable"
    PERIOD_ALREADY_CLOSED = "period_already_closed"
    PERIOD_NOT_ENDED = "period_not_ended"
    AS_OF_IN_FUTURE = "as_of_in_future"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    TOO_MANY_MONITORS = "too_many_monitors"
    MONITOR_NOT_FOUND = "monitor_not_found"
    # Dead-letter only.
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    MALFORMED_JSON = "malformed_json"
    SCHEMA_VIOLATION = "schema_violation"
    KEY_MISMATCH = "key_mismatch"
    TOO_LARGE = "too_large"
    DUPLICATE_KEY = "duplicate_key"
    INVALID_ID = "invalid_id"
    INVALID_TEXT = "invalid_text"
    OUT_OF_RANGE = "out_of_range"
