"""Command contracts: the envelope, one strict pydantic model per command type, and the parser.

Commands are validated strictly: unknown fields, JSON numbers for money, naive timestamps,
over-long ids and unknown currencies are refused with a one-line readable reason
(:class:`CommandInvalid`), and so is everything docs/input-limits.md lists (ids that are not
visible NFKC text, control characters, timestamps outside 2000-2200, amounts above the ledger's
maximum, oversized messages or metadata, repeated JSON keys). Amounts stay decimal strings
here; the domain converts them to minor units with the budget's currency.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Final, Literal, Self

import pydantic
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from budget_ledger.ledger.state import MAX_MINOR
from budget_ledger.schemas.limits import (
    MAX_ID_LENGTH,
    MAX_MESSAGE_BYTES,
    MAX_TEXT_LENGTH,
    MetadataInvalid,
    check_metadata,
    duplicate_key,
    id_problem,
    text_problem,
    timestamp_problem,
)
from budget_ledger.schemas.money import (
    DEFAULT_CURRENCIES,
    SIGNED_AMOUNT_PATTERN,
    UNSIGNED_AMOUNT_PATTERN,
    fraction_digits,
    to_decimal_str,
    to_minor,
)


def _invalid(error_class: str, detail: str) -> PydanticCustomError:
    # The error type becomes the CommandInvalid error_class (see _ERROR_CLASSES).
    return PydanticCustomError(error_class, "{detail}", {"detail": detail})


def _valid_text(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise _invalid("invalid_text", problem)
    return value


def _valid_timestamp(value: datetime) -> datetime:
    problem = timestamp_problem(value)
    if problem is not None:
        raise _invalid("out_of_range", problem)
    return value


# Ids: no whitespace here (checked in Rust, cheap); the rest of the id rule (visible NFKC text)
# is _Envelope._ids_are_visible, skipped for a message that is plain ASCII without escapes.
Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^\S+$")]
# Tenant and budget form the Kafka key "<tenant_id>:<budget_id>": a ':' inside either would make
# two different budgets share one key spelling, so it is refused (as is whitespace).
KeyPart = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\s:]+$")
]
#: Every id field of any command (the envelope's and the type's own).
ID_FIELDS: Final = ("command_id", "tenant_id", "budget_id", "ref_id", "operator", "monitor_id")
FreeText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TEXT_LENGTH),
    AfterValidator(_valid_text),
]
#: Every timestamp of a command: with a UTC offset, and within 2000-2200 once in UTC.
Timestamp = Annotated[AwareDatetime, AfterValidator(_valid_timestamp)]
Amount = Annotated[str, StringConstraints(pattern=UNSIGNED_AMOUNT_PATTERN)]
SignedAmount = Annotated[str, StringConstraints(pattern=SIGNED_AMOUNT_PATTERN)]
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Percent = Annotated[int, Field(ge=1, le=100)]
TtlSeconds = Annotated[int, Field(ge=1, le=10 * 366 * 86400)]
Period = Literal["rolling", "monthly", "quarterly", "yearly"]

CommandType = Literal[
    "open_budget",
    "configure_budget",
    "fund",
    "reserve",
    "charge",
    "release",
    "expire_reservations",
    "close_period",
    "adjust",
    "set_monitor",
    "remove_monitor",
]

#: Names of every field holding money, across all command types.
AMOUNT_FIELDS: Final = frozenset(
    {"amount", "hard_cap", "soft_cap", "period_allowance", "threshold"}
)
#: Fields of configure_budget (the optional fields of open_budget).
CONFIG_FIELDS: Final = (
    "hard_cap",
    "soft_cap",
    "soft_threshold_pct",
    "hard_threshold_pct",
    "period_allowance",
    "rollover",
    "timezone",
    "reservation_ttl_seconds",
)


class CommandInvalid(ValueError):
    """A raw message that is not a valid command.

    ``error_class`` from :func:`parse_command` is one of "json" (not UTF-8 JSON), "schema" (not
    a valid command), "too_large", "duplicate_key", "invalid_id", "invalid_text" or
    "out_of_range" (docs/input-limits.md); callers may use their own (e.g. "key_mismatch").
    """

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(reason)
        self.error_class = error_class
        self.reason = reason


def _currencies(info: ValidationInfo) -> Mapping[str, int]:
    ctx = info.context
    # `type(...) is dict` first: the ABC isinstance check costs more than the whole look-up.
    if type(ctx) is dict or isinstance(ctx, Mapping):
        table = ctx.get("currencies")
        if table is not None:
            return table  # type: ignore[no-any-return]
    return DEFAULT_CURRENCIES


class _Envelope(BaseModel):
    """Fields common to every command."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    command_id: Id
    tenant_id: KeyPart
    budget_id: KeyPart
    issued_at: Timestamp | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _ids_are_visible(self, info: ValidationInfo) -> Self:
        ctx = info.context
        # A plain message (ASCII, no escape, no DEL) can only put printable ASCII in an id, and
        # the patterns above already refused whitespace: nothing left to check.
        if type(ctx) is dict and ctx.get("plain"):
            return self
        for name in ID_FIELDS:
            value = getattr(self, name, None)
            if value is not None:
                problem = id_problem(value)
                if problem is not None:
                    raise _invalid("invalid_id", f"{name} {problem}")
        return self

    @field_validator("metadata")
    @classmethod
    def _metadata_bounded(
        cls, v: dict[str, Any] | None, info: ValidationInfo
    ) -> dict[str, Any] | None:
        # Metadata is copied into the hashed event: only values that survive a JSONB round trip
        # byte for byte, bounded in size and depth, without control characters.
        if v is not None:
            try:
                keys = check_metadata(v)
            except MetadataInvalid as exc:
                raise _invalid(exc.error_class, exc.where()) from None
            if type(info.context) is dict:
                info.context["metadata_keys"] = keys  # for parse_command's duplicate-key check
        return v


def _check_amount_digits(name: str, value: str | None, currency: str, digits: int) -> None:
    if value is None:
        return
    if fraction_digits(value) > digits:
        raise ValueError(
            f"{name} {value!r} has {fraction_digits(value)} decimal places; "
            f"{currency} allows at most {digits}"
        )
    # 15 integer digits always fit for up to 3 minor digits; more digits need the real check.
    if digits > 3 and to_minor(value, digits) > MAX_MINOR:
        raise _invalid(
            "out_of_range",
            f"{name} {value} is above the largest amount the ledger stores, "
            f"{to_decimal_str(MAX_MINOR, digits)} {currency} (10**18 minor units)",
        )


def _check_positive(name: str, value: str) -> None:
    if value.strip("0.") == "":
        raise ValueError(f"{name} must be greater than zero")


@lru_cache(maxsize=1024)
def _known_timezone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


class _ConfigFields(_Envelope):
    """Optional limit fields shared by open_budget and configure_budget."""

    hard_cap: Amount | None = None
    soft_cap: Amount | None = None
    soft_threshold_pct: Percent = 80
    hard_threshold_pct: Percent = 95
    period_allowance: Amount | None = None
    rollover: bool = False
    timezone: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+\-/]+$")
    ] = "UTC"
    reservation_ttl_seconds: TtlSeconds | None = None

    @field_validator("timezone")
    @classmethod
    def _timezone_known(cls, v: str) -> str:
        if not _known_timezone(v):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name like 'Africa/Harare')")
        return v


class OpenBudget(_ConfigFields):
    """Create a budget in ``currency`` with a ``period`` and optional limits."""

    type: Literal["open_budget"]
    currency: CurrencyCode
    period: Period

    @model_validator(mode="after")
    def _currency_and_digits(self, info: ValidationInfo) -> OpenBudget:
        table = _currencies(info)
        digits = table.get(self.currency)
        if digits is None:
            raise ValueError(f"unknown currency {self.currency!r} (known: {', '.join(table)})")
        for name in ("hard_cap", "soft_cap", "period_allowance"):
            _check_amount_digits(name, getattr(self, name), self.currency, digits)
        return self


class ConfigureBudget(_ConfigFields):
    """Change limits from now on. Only fields present in the message change; ``null`` clears
    ``hard_cap``/``soft_cap``/``period_allowance``/``reservation_ttl_seconds``."""

    type: Literal["configure_budget"]

    @model_validator(mode="after")
    def _something_to_change(self) -> ConfigureBudget:
        if not self.model_fields_set.intersection(CONFIG_FIELDS):
            raise ValueError("configure_budget needs at least one of: " + ", ".join(CONFIG_FIELDS))
        return self

    def changes(self) -> dict[str, Any]:
        """The config fields present in the message, with their (string/int/bool/None) values."""
        return {k: getattr(self, k) for k in CONFIG_FIELDS if k in self.model_fields_set}


class _MoneyIn(_Envelope):
    amount: Amount
    currency: CurrencyCode

    @model_validator(mode="after")
    def _currency_and_digits(self, info: ValidationInfo) -> _MoneyIn:
        _check_positive("amount", self.amount)
        table = _currencies(info)
        digits = table.get(self.currency)
        if digits is None:
            raise ValueError(f"unknown currency {self.currency!r} (known: {', '.join(table)})")
        _check_amount_digits("amount", self.amount, self.currency, digits)
        return self


class Fund(_MoneyIn):
    """Top up the budget by ``amount``."""

    type: Literal["fund"]


class Reserve(_MoneyIn):
    """Hold ``amount`` for the reward ``ref_id`` until charged, released or expired."""

    type: Literal["reserve"]
    ref_id: Id
    expires_at: Timestamp | None = None


class Charge(_Envelope):
    """The reward ``ref_id`` was redeemed: charge ``amount`` (default all); release the rest."""

    type: Literal["charge"]
    ref_id: Id
    amount: Amount | None = None

    @model_validator(mode="after")
    def _positive(self) -> Charge:
        if self.amount is not None:
            _check_positive("amount", self.amount)
        return self


class Release(_Envelope):
    """The reward ``ref_id`` expired or was cancelled: free its reservation."""

    type: Literal["release"]
    ref_id: Id


class ExpireReservations(_Envelope):
    """Sweeper tick: expire every reservation whose ``expires_at`` <= ``as_of``."""

    type: Literal["expire_reservations"]
    as_of: Timestamp


class ClosePeriod(_Envelope):
    """Scheduler tick: close the current period at ``period_end``."""

    type: Literal["close_period"]
    period_end: Timestamp


class Adjust(_Envelope):
    """Audited correction of ``funded`` by a signed, non-zero ``amount``."""

    type: Literal["adjust"]
    amount: SignedAmount
    reason: FreeText
    operator: Id

    @model_validator(mode="after")
    def _non_zero(self) -> Adjust:
        if self.amount.lstrip("-").strip("0.") == "":
            raise ValueError("adjust amount must be non-zero")
        return self


# A monitor's percent threshold: utilization is unbounded above 100 % (a lowered limit), so up to
# 1,000,000 %, with at most 2 decimals (basis points).
_PERCENT_THRESHOLD: Final = r"^(0|[1-9][0-9]{0,6})(\.[0-9]{1,2})?$"


class SetMonitor(_Envelope):
    """Add (or replace) the balance monitor ``monitor_id``: an alert ``balance_monitor`` fires
    when ``metric operator threshold`` starts to hold, once per crossing. ``threshold`` is a
    decimal amount in the budget's currency, or a percent (``"50"``, ``"87.5"``) for
    ``utilization_pct``."""

    type: Literal["set_monitor"]
    monitor_id: Id
    metric: Literal["available", "utilization_pct", "reserved", "charged", "funded"]
    operator: Literal["<", "<=", ">", ">="]
    threshold: Amount

    @model_validator(mode="after")
    def _threshold_fits_metric(self) -> SetMonitor:
        if (
            self.metric == "utilization_pct"
            and re.fullmatch(_PERCENT_THRESHOLD, self.threshold) is None
        ):
            raise ValueError(
                f'threshold {self.threshold!r} is not a percent like "50" or "87.5" '
                "(at most 2 decimals, at most 1000000)"
            )
        return self


class RemoveMonitor(_Envelope):
    """Remove the balance monitor ``monitor_id``."""

    type: Literal["remove_monitor"]
    monitor_id: Id


Command = Annotated[
    OpenBudget
    | ConfigureBudget
    | Fund
    | Reserve
    | Charge
    | Release
    | ExpireReservations
    | ClosePeriod
    | Adjust
    | SetMonitor
    | RemoveMonitor,
    Field(discriminator="type"),
]

COMMAND_MODELS: Final[dict[str, type[BaseModel]]] = {
    "open_budget": OpenBudget,
    "configure_budget": ConfigureBudget,
    "fund": Fund,
    "reserve": Reserve,
    "charge": Charge,
    "release": Release,
    "expire_reservations": ExpireReservations,
    "close_period": ClosePeriod,
    "adjust": Adjust,
    "set_monitor": SetMonitor,
    "remove_monitor": RemoveMonitor,
}

# Built once at import: building the validator is the expensive part, validating is cheap.
COMMAND_ADAPTER: Final[TypeAdapter[Command]] = TypeAdapter(Command)


def _field_name(loc: tuple[int | str, ...]) -> str:
    # The discriminated union puts the tag first ("reserve", "amount"); readers want "amount".
    parts = [str(p) for p in loc]
    if parts and parts[0] in COMMAND_MODELS:
        parts = parts[1:]
    return ".".join(parts)


#: Error types raised by our own validators, which are also the CommandInvalid error classes.
_ERROR_CLASSES: Final = frozenset({"invalid_id", "invalid_text", "out_of_range", "too_large"})


def _error_class(errors: list[Any]) -> str:
    # The class of the first error that has a specific one; plain shape errors are "schema".
    for err in errors:
        kind = err["type"]
        if kind in _ERROR_CLASSES:
            return str(kind)
        if kind == "string_pattern_mismatch" and err.get("loc") and err["loc"][-1] in ID_FIELDS:
            return "invalid_id"
    return "schema"


def _readable(err: Mapping[str, Any]) -> str:
    """One readable sentence for one pydantic error."""
    kind = err["type"]
    field = _field_name(tuple(err.get("loc", ())))
    ctx = err.get("ctx") or {}
    if kind in _ERROR_CLASSES or kind == "schema":
        return f"{field} {err['msg']}" if field else str(err["msg"])
    if kind == "extra_forbidden":
        return f"unknown field {field!r}"
    if kind == "missing":
        return f"missing field {field!r}"
    if kind == "union_tag_not_found":
        return "missing field 'type'"
    if kind == "union_tag_invalid":
        return (
            f"unknown command type {ctx.get('tag')!r} "
            f"(expected one of: {', '.join(COMMAND_MODELS)})"
        )
    leaf = field.rsplit(".", 1)[-1]
    if leaf in AMOUNT_FIELDS and kind == "string_type":
        return f'{field} must be a JSON string like "12.50", not {_json_kind(err.get("input"))}'
    if leaf in AMOUNT_FIELDS and kind == "string_pattern_mismatch":
        return f'{field} {err.get("input")!r} is not a decimal amount like "12.50"'
    if kind == "timezone_aware":
        return f"{field} must carry a UTC offset (e.g. 'Z' or '+02:00')"
    if kind == "string_too_short":
        return f"{field} must not be empty"
    if kind == "string_too_long":
        return f"{field} is longer than {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch" and leaf in ID_FIELDS:
        value = err.get("input")
        problem = id_problem(value) if isinstance(value, str) else None
        if problem is not None:
            return f"{field} {problem}"
        return f"{field} must not contain ':' (the Kafka key is tenant_id:budget_id)"
    if kind == "string_pattern_mismatch" and leaf == "timezone":
        return f"timezone {err.get('input')!r} is not an IANA time zone name like 'Africa/Harare'"
    if kind == "string_pattern_mismatch" and leaf == "currency":
        return f"currency {err.get('input')!r} is not an ISO 4217 code"
    if kind == "value_error":
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        return f"{field}: {msg}" if field else msg
    if not field and kind in ("dict_type", "model_attributes_type", "model_type"):
        return f"a command must be a JSON object, not {_json_kind(err.get('input'))}"
    msg = str(err.get("msg", kind))
    return f"{field}: {msg}" if field else msg


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def message_too_large(size: int) -> CommandInvalid:
    """The refusal of a raw message of `size` bytes, over MAX_MESSAGE_BYTES."""
    return CommandInvalid(
        "too_large", f"the message is {size} bytes; at most {MAX_MESSAGE_BYTES} are allowed"
    )


def parse_command(raw: bytes | str, currencies: Mapping[str, int] | None = None) -> Command:
    """Parse and validate one raw JSON command; raise :class:`CommandInvalid` if it is not one."""
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError:
            raise CommandInvalid("json", "invalid JSON: not valid UTF-8 text") from None
    # Before any parsing, so a huge message never becomes a huge object.
    if len(raw) > MAX_MESSAGE_BYTES:
        raise message_too_large(len(raw))
    context: dict[str, Any] = {
        "currencies": currencies if currencies is not None else DEFAULT_CURRENCIES,
        # Int membership is a memchr; 92 is the backslash (JSON escapes), 127 is DEL.
        "plain": raw.isascii() and 92 not in raw and 127 not in raw,
    }
    try:
        command = COMMAND_ADAPTER.validate_json(raw, context=context)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            detail = next(e for e in errors if e["type"] == "json_invalid")
            ctx = detail.get("ctx") or {}
            raise CommandInvalid(
                "json", f"invalid JSON: {ctx.get('error', 'unparseable')}"
            ) from None
        reason = "; ".join(_readable(e) for e in errors[:5])
        if len(errors) > 5:
            reason += f"; and {len(errors) - 5} more"
        raise CommandInvalid(_error_class(errors), reason) from None
    # The parser kept the last of repeated keys; a repeated tenant_id could route a command
    # to one budget and apply it to another, so a repeat anywhere refuses the message.
    keys = len(command.model_fields_set) + context.get("metadata_keys", 0)
    repeated = duplicate_key(raw, keys)
    if repeated is not None:
        raise CommandInvalid(
            "duplicate_key", f"key {repeated!r} appears more than once in one JSON object"
        )
    return command
