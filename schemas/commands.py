"""Command contracts: the envelope, one strict pydantic model per command type, and the parser.

Commands are validated strictly: unknown fields, JSON numbers for money, naive timestamps,
over-long ids and unknown currencies are refused with a one-line readable reason
(:class:`CommandInvalid`). Amounts stay decimal strings here; the domain converts them to
minor units with the budget's currency.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any, Final, Literal

import pydantic
from pydantic import (
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

from schemas.money import (
    DEFAULT_CURRENCIES,
    SIGNED_AMOUNT_PATTERN,
    UNSIGNED_AMOUNT_PATTERN,
    fraction_digits,
)

#: Longest id accepted for command_id, tenant_id, budget_id, ref_id, operator.
MAX_ID_LENGTH: Final = 128
MAX_SAFE_INT: Final = 2**53  # metadata ints beyond this do not survive JSON tooling intact

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
# Tenant and budget form the Kafka key "<tenant_id>:<budget_id>": a ':' inside either would make
# two different budgets share one key spelling, so it is refused (as is whitespace).
KeyPart = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\s:]+$")
]
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
]

#: Names of every field holding money, across all command types.
AMOUNT_FIELDS: Final = frozenset({"amount", "hard_cap", "soft_cap", "period_allowance"})
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

    ``error_class`` is "json" (not UTF-8 JSON) or "schema" (not a valid command) from
    :func:`parse_command`; callers may use their own classes (e.g. "key_mismatch").
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


def _check_json_stable(value: Any, depth: int = 0) -> None:
    # Metadata is copied into the hashed event; only values that survive a JSONB round trip
    # byte-for-byte are allowed (no floats, no huge ints).
    if depth > 16:
        raise ValueError("nested too deeply (max 16 levels)")
    if value is None or isinstance(value, str | bool):
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise ValueError("integers must be within +/-2**53")
        return
    if isinstance(value, list):
        for item in value:
            _check_json_stable(item, depth + 1)
        return
    if isinstance(value, dict):
        for item in value.values():
            _check_json_stable(item, depth + 1)
        return
    raise ValueError(
        "only strings, integers, booleans, null, lists and objects are allowed "
        f"(got {type(value).__name__})"
    )


class _Envelope(BaseModel):
    """Fields common to every command."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    command_id: Id
    tenant_id: KeyPart
    budget_id: KeyPart
    issued_at: AwareDatetime | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_json_stable(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            _check_json_stable(v)
        return v


def _check_amount_digits(name: str, value: str | None, currency: str, digits: int) -> None:
    if value is not None and fraction_digits(value) > digits:
        raise ValueError(
            f"{name} {value!r} has {fraction_digits(value)} decimal places; "
            f"{currency} allows at most {digits}"
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
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "UTC"
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
    expires_at: AwareDatetime | None = None


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
    as_of: AwareDatetime


class ClosePeriod(_Envelope):
    """Scheduler tick: close the current period at ``period_end``."""

    type: Literal["close_period"]
    period_end: AwareDatetime


class Adjust(_Envelope):
    """Audited correction of ``funded`` by a signed, non-zero ``amount``."""

    type: Literal["adjust"]
    amount: SignedAmount
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    operator: Id

    @model_validator(mode="after")
    def _non_zero(self) -> Adjust:
        if self.amount.lstrip("-").strip("0.") == "":
            raise ValueError("adjust amount must be non-zero")
        return self


Command = Annotated[
    OpenBudget
    | ConfigureBudget
    | Fund
    | Reserve
    | Charge
    | Release
    | ExpireReservations
    | ClosePeriod
    | Adjust,
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
}

# Built once at import: building the validator is the expensive part, validating is cheap.
COMMAND_ADAPTER: Final[TypeAdapter[Command]] = TypeAdapter(Command)


def _field_name(loc: tuple[int | str, ...]) -> str:
    # The discriminated union puts the tag first ("reserve", "amount"); readers want "amount".
    parts = [str(p) for p in loc]
    if parts and parts[0] in COMMAND_MODELS:
        parts = parts[1:]
    return ".".join(parts)


def _readable(err: Mapping[str, Any]) -> str:
    """One readable sentence for one pydantic error."""
    kind = err["type"]
    field = _field_name(tuple(err.get("loc", ())))
    ctx = err.get("ctx") or {}
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
    if kind == "string_pattern_mismatch" and leaf in ("tenant_id", "budget_id"):
        return f"{field} must not contain ':' or whitespace"
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


def parse_command(raw: bytes | str, currencies: Mapping[str, int] | None = None) -> Command:
    """Parse and validate one raw JSON command; raise :class:`CommandInvalid` if it is not one."""
    try:
        return COMMAND_ADAPTER.validate_json(
            raw,
            context={"currencies": currencies if currencies is not None else DEFAULT_CURRENCIES},
        )
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
        raise CommandInvalid("schema", reason) from None
