"""Configuration: one validated settings object from `LEDGER_*` environment variables and `.env`."""

from __future__ import annotations

import re
from typing import Literal

import pydantic_settings
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from budget_ledger.ledger.chain_mac import ChainKey, ChainKeyring
from budget_ledger.schemas.money import DEFAULT_CURRENCIES


class SettingsError(Exception):
    """Raised when the environment does not describe a valid configuration."""


# librdkafka properties that LEDGER_KAFKA_EXTRA may not set: the settings own them, or the
# ledger's ordering and exactly-once guarantees depend on them.
KAFKA_RESERVED_PROPERTIES = frozenset(
    {
        "bootstrap.servers",
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "enable.idempotence",
        "acks",
        "partitioner",
        "isolation.level",
        "group.id",
        "group.instance.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "transactional.id",
    }
)


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
    # Transport security of every Kafka client the ledger makes (consumers/kafka_config.py
    # maps these to librdkafka properties; docs/security.md). PEM settings take a file path
    # or the PEM text itself (a value containing "-----BEGIN").
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", "OAUTHBEARER"] = (
        "SCRAM-SHA-512"
    )
    kafka_sasl_username: str = Field(default="", max_length=256)
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_ca_pem: str = ""
    kafka_ssl_cert_pem: str = ""
    kafka_ssl_key_pem: SecretStr = SecretStr("")
    # Other librdkafka properties (e.g. OAUTHBEARER's sasl.oauthbearer.*), as JSON; values are
    # masked like secrets because some are (client secrets).
    kafka_extra: dict[str, SecretStr] = Field(default_factory=dict)
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
    # Budget states one consumer keeps in memory (LRU; 0 = unbounded). Colder ones are evicted
    # after a commit and reloaded by the next batch that needs them (docs/scaling.md).
    state_cache_budgets: int = Field(default=100_000, ge=0, le=100_000_000)
    # ...and at most this many MB of budget state, estimated from each state's open
    # reservations and monitors (0 = no byte bound): what keeps the cache's memory flat when
    # the cached budgets carry more open reservations over time.
    state_cache_mb: int = Field(default=112, ge=0, le=1_000_000)
    # The command consumer's pre-fetch queue, per assigned partition (librdkafka
    # queued.max.messages.kbytes and queued.min.messages): read ahead of the batches and held in
    # memory while the consumer has a backlog (docs/scaling.md, "Consumer memory").
    kafka_fetch_queue_kb: int = Field(default=8_192, ge=1_024, le=2_097_151)
    kafka_fetch_queue_messages: int = Field(default=10_000, ge=1_000, le=10_000_000)
    # How long the broker may hold the consumer's fetch for 64 KB to gather (librdkafka
    # fetch.wait.max.ms): longer means fewer, larger batches at moderate rates, so less CPU a
    # command everywhere, for at most that much latency (docs/performance.md, "Fetch wait").
    kafka_fetch_wait_ms: int = Field(default=15, ge=1, le=500)
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
    # Incremental reconcile: budgets of ledger rows recorded since the last run began, minus this
    # margin (batches that began before and committed after it, consumer clock skew), are the
    # candidates (docs/reconciler.md).
    reconcile_margin_seconds: float = Field(default=3_600.0, ge=0, le=31_536_000)

    # Webhooks (`budget-ledger deliver`, docs/webhooks.md). ALLOW_PRIVATE lets endpoints resolve
    # to loopback/private addresses and use http:// to loopback: development and tests only.
    webhook_allow_private: bool = False
    # Under the consumer group's prefix, which the ledger principal's Kafka ACLs already cover.
    webhook_group: str = Field(default="budget-ledger.webhooks", min_length=1, max_length=249)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # 8 attempts, backoff 30 s doubling up to 30 min with full jitter: at most ~1 h in all.
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    webhook_backoff_base_seconds: float = Field(default=30.0, gt=0, le=3_600)
    webhook_backoff_max_seconds: float = Field(default=1_800.0, gt=0, le=86_400)
    # An endpoint whose attempts all failed for this long is disabled (with an alert).
    webhook_disable_after_seconds: float = Field(default=86_400.0, gt=0, le=31_536_000)

    # Signed privileged commands (schemas/signing.py, docs/security.md): the active HMAC keys,
    # key id -> secret, e.g. LEDGER_SIGNING_KEYS='{"k2026": "..."}'. The consumer accepts a
    # signature under any of them (rotation: add the new key, move signers, remove the old one);
    # a process that signs (CLI, sweeper) uses LEDGER_SIGNING_KEY_ID, as LEDGER_SIGNING_PRINCIPAL
    # (empty: the login name).
    signing_keys: dict[str, SecretStr] = Field(default_factory=dict)
    signing_key_id: str = ""
    signing_principal: str = Field(default="", max_length=128, pattern=r"^\S*$")

    # The keyed chain (ledger/chain_mac.py, docs/security.md): key id -> secret, e.g.
    # LEDGER_CHAIN_KEYS='{"c2026": "..."}', held by the consumers and the reconciler, never by the
    # database. The consumer MACs new rows with LEDGER_CHAIN_KEY_ID; reconcile verifies with all.
    chain_keys: dict[str, SecretStr] = Field(default_factory=dict)
    chain_key_id: str = ""
    # The processes' own login (consume, relay, sweep, reconcile...), e.g.
    # postgresql://ledger_app:...@host/ledger. Empty: LEDGER_DATABASE_URL (the owner) with
    # SET ROLE, which any code path could RESET. The owner's URL is for migrate, rebuild and
    # readers create.
    app_database_url: SecretStr = SecretStr("")
    # The HTTP API (`budget-ledger serve`, docs/api.md) logs in with this URL, ideally a login
    # that is only a member of ledger_reader. Empty: LEDGER_DATABASE_URL. Either way its sessions
    # `SET ROLE` to api_database_role and run with the tenant of the verified key.
    api_database_url: SecretStr = SecretStr("")
    api_database_role: str = "ledger_reader"
    api_pool_size: int = Field(default=8, ge=1, le=200)

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

    @field_validator("kafka_extra")
    @classmethod
    def _kafka_extra(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        # Properties the ledger's guarantees rest on (ordering, exactly-once, positions) or that
        # the settings above own cannot be changed through the pass-through.
        for key in value:
            if key in KAFKA_RESERVED_PROPERTIES:
                raise ValueError(f"{key} cannot be set through LEDGER_KAFKA_EXTRA")
        return value

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        password_based = self.kafka_sasl_mechanism != "OAUTHBEARER"
        has_secret = bool(self.kafka_sasl_password.get_secret_value())
        if sasl and password_based and not (self.kafka_sasl_username and has_secret):
            raise ValueError(
                f"{self.kafka_sasl_mechanism} needs LEDGER_KAFKA_SASL_USERNAME and "
                "LEDGER_KAFKA_SASL_PASSWORD"
            )
        if not sasl and (self.kafka_sasl_username or has_secret):
            raise ValueError(
                "SASL credentials are set but LEDGER_KAFKA_SECURITY_PROTOCOL has no SASL"
            )
        if "SSL" not in self.kafka_security_protocol and (
            self.kafka_ssl_ca_pem
            or self.kafka_ssl_cert_pem
            or self.kafka_ssl_key_pem.get_secret_value()
        ):
            raise ValueError("TLS files are set but LEDGER_KAFKA_SECURITY_PROTOCOL has no SSL")
        if bool(self.kafka_ssl_cert_pem) != bool(self.kafka_ssl_key_pem.get_secret_value()):
            raise ValueError("a TLS client certificate needs its key, and a key its certificate")
        return self

    @field_validator("signing_keys", "chain_keys")
    @classmethod
    def _key_set(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        # Signing and chain keys alike: a readable id (it travels in headers and rows) and a
        # secret long enough for HMAC-SHA256.
        for key_id, secret in value.items():
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", key_id):
                raise ValueError(f"key id {key_id!r}: 1-64 characters of A-Z a-z 0-9 . _ -")
            if len(secret.get_secret_value()) < 32:
                raise ValueError(f"the secret of key {key_id!r} is shorter than 32 characters")
        return value

    @model_validator(mode="after")
    def _key_ids(self) -> Settings:
        if self.signing_key_id and self.signing_key_id not in self.signing_keys:
            raise ValueError("LEDGER_SIGNING_KEY_ID names no key of LEDGER_SIGNING_KEYS")
        if self.chain_key_id and self.chain_key_id not in self.chain_keys:
            raise ValueError("LEDGER_CHAIN_KEY_ID names no key of LEDGER_CHAIN_KEYS")
        return self

    @field_validator("app_database_url", "api_database_url")
    @classmethod
    def _app_url(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("must be a postgresql:// URL")
        return value

    def app_dsn(self) -> str:
        """The DSN the processes log in with: their own role when configured, else the owner's."""
        return self.app_database_url.get_secret_value() or self.database_url

    def api_dsn(self) -> str:
        """The DSN the HTTP API logs in with: its own login when configured, else the owner's."""
        return self.api_database_url.get_secret_value() or self.database_url

    def chain_key(self) -> ChainKey | None:
        """The key new ledger rows are MACed with (None: LEDGER_CHAIN_KEY_ID is not set)."""
        if not self.chain_key_id:
            return None
        secret = self.chain_keys[self.chain_key_id].get_secret_value().encode()
        return ChainKey(self.chain_key_id, secret)

    def chain_keyring(self) -> ChainKeyring | None:
        """Every key reconcile verifies MACs with (None: no LEDGER_CHAIN_KEYS, MACs unchecked)."""
        if not self.chain_keys:
            return None
        return ChainKeyring({k: v.get_secret_value().encode() for k, v in self.chain_keys.items()})

    @field_validator("currencies")
    @classmethod
    def _currencies(cls, value: dict[str, int]) -> dict[str, int]:
        for code, digits in value.items():
            if len(code) != 3 or not code.isalpha() or not code.isupper():
                raise ValueError(f"currency code {code!r} is not an ISO 4217 code")
            if not 0 <= digits <= 4:
                raise ValueError(f"currency {code} has {digits} minor digits (allowed 0-4)")
        return value


# A PEM setting whose value contains this is the PEM text itself; otherwise it is a file path.
PEM_MARKER = "-----BEGIN"


def kafka_security_properties(settings: Settings) -> dict[str, str]:
    """librdkafka properties of the transport security settings and LEDGER_KAFKA_EXTRA.

    The result holds the secrets in clear text (librdkafka needs them): never log it."""
    protocol = settings.kafka_security_protocol
    props = {"security.protocol": protocol.lower()}
    if protocol.startswith("SASL_"):
        props["sasl.mechanism"] = settings.kafka_sasl_mechanism
        if settings.kafka_sasl_username:
            props["sasl.username"] = settings.kafka_sasl_username
            props["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if "SSL" in protocol:
        pems = {
            "ca": settings.kafka_ssl_ca_pem,
            "certificate": settings.kafka_ssl_cert_pem,
            "key": settings.kafka_ssl_key_pem.get_secret_value(),
        }
        for name, value in pems.items():
            # librdkafka takes PEM inline (ssl.<name>.pem) or from a file (ssl.<name>.location).
            if value:
                kind = "pem" if PEM_MARKER in value else "location"
                props[f"ssl.{name}.{kind}"] = value
    for key, secret in settings.kafka_extra.items():
        props[key] = secret.get_secret_value()
    return props


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
    except pydantic_settings.SettingsError as exc:
        # A value that is not JSON (e.g. LEDGER_SIGNING_KEYS): the message names the field,
        # never the value, which may be a secret.
        raise SettingsError(f"invalid configuration: {exc}") from None
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            # A check across several settings (no loc) names its variables in its message.
            if err["loc"]:
                problems.append(f"LEDGER_{str(err['loc'][0]).upper()}: {err['msg']}")
            else:
                problems.append(str(err["msg"]))
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
