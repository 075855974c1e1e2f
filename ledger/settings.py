"""Configuration: one validated settings object from `LEDGER_*` environment variables and `.env`."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from budget_ledger.schemas.money import DEFAULT_CURRENCIES


class SettingsError(Exception):
    """Raised when the environment does not describe a valid configuration."""


class Settings(BaseSettings):
    """Everything the ledger's processes read from their environment."""

    # Frozen: one process reads one configuration; a variant is made with model_copy(update=...).
    model_config = SettingsConfigDict(
        env_prefix="LEDGER_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = "postgresql://ledger_owner:ledger@127.0.0.1:5432/ledger"
    # The consumer and relay `SET ROLE` to this role so that they hold INSERT/SELECT only.
    database_role: str = "ledger_app"

    topic_commands: str = "budget.commands"
    topic_events: str = "budget.events"
    topic_alerts: str = "budget.alerts"
    topic_dlq: str = "budget.commands.dlq"
    topic_partitions: int = Field(default=12, ge=1, le=10_000)
    topic_replication: int = Field(default=1, ge=1, le=16)
    # max.message.bytes of the topics `topics create` makes; the relay also never produces a
    # record larger than a topic accepts (it sets such a row aside). Above the largest event.
    topic_max_message_bytes: int = Field(default=1_048_576, ge=1_024, le=100_000_000)
    consumer_group: str = "budget-ledger"

    batch_max_messages: int = Field(default=2000, ge=1, le=100_000)
    batch_max_ms: int = Field(default=20, ge=1, le=60_000)
    # How soon the group notices a dead consumer and hands its partitions to the others.
    session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    # Static group membership (Kafka group.instance.id), empty = off: a member restarted with
    # the same id within the session timeout gets its partitions back without a rebalance.
    # Must be unique per process (e.g. the pod name of a StatefulSet).
    group_instance_id: str = Field(default="", max_length=249)

    # ISO 4217 code -> minor digits (default schemas.money.DEFAULT_CURRENCIES), e.g.
    # LEDGER_CURRENCIES='{"USD": 2, "ZWG": 2}'. Governs new budgets and incoming amounts only:
    # history is always read with the digits each budget recorded when it was opened.
    currencies: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_CURRENCIES))

    log_format: Literal["json", "console"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    http_port: int = Field(default=0, ge=0, le=65535)
    # /healthz fails when messages wait and the consumer committed nothing for this long.
    liveness_stall_seconds: float = Field(default=60.0, gt=0, le=3_600)

    # Signed privileged commands (schemas/signing.py, docs/security.md): the active HMAC keys,
    # key id -> secret, e.g. LEDGER_SIGNING_KEYS='{"k2026": "..."}'. The consumer accepts a
    # signature under any of them (rotation: add the new key, move signers, remove the old one);
    # a process that signs (CLI, sweeper) uses LEDGER_SIGNING_KEY_ID, as LEDGER_SIGNING_PRINCIPAL
    # (empty: the login name).
    signing_keys: dict[str, SecretStr] = Field(default_factory=dict)
    signing_key_id: str = ""
    signing_principal: str = Field(default="", max_length=128, pattern=r"^\S*$")

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @field_validator("signing_keys")
    @classmethod
    def _signing_keys(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key_id, secret in value.items():
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", key_id):
                raise ValueError(f"key id {key_id!r}: 1-64 characters of A-Z a-z 0-9 . _ -")
            if len(secret.get_secret_value()) < 32:
                raise ValueError(f"the secret of key {key_id!r} is shorter than 32 characters")
        return value

    @model_validator(mode="after")
    def _signing_key_id(self) -> Settings:
        if self.signing_key_id and self.signing_key_id not in self.signing_keys:
            raise ValueError("LEDGER_SIGNING_KEY_ID names no key of LEDGER_SIGNING_KEYS")
        return self

    @field_validator("currencies")
    @classmethod
    def _currencies(cls, value: dict[str, int]) -> dict[str, int]:
        for code, digits in value.items():
            if len(code) != 3 or not code.isalpha() or not code.isupper():
                raise ValueError(f"currency code {code!r} is not an ISO 4217 code")
            if not 0 <= digits <= 4:
                raise ValueError(f"currency {code} has {digits} minor digits (allowed 0-4)")
        return value


def prefixed_names(prefix: str) -> dict[str, str]:
    """Topic and group names under `prefix`, for runs side by side on one broker (tests, bench)."""
    return {
        "topic_commands": f"{prefix}.budget.commands",
        "topic_events": f"{prefix}.budget.events",
        "topic_alerts": f"{prefix}.budget.alerts",
        "topic_dlq": f"{prefix}.budget.commands.dlq",
        "consumer_group": f"{prefix}.ledger",
    }


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; raise SettingsError naming the offending variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"LEDGER_{field.upper()}: {err['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
