"""Kafka ACLs of the ledger's principals: the grants table and its idempotent application.

Who may do what on the ledger's topics (docs/security.md, "Kafka: transport and ACLs"):
the ledger service reads commands and writes events, alerts and dead letters; upstream services
write commands and read outcomes; the HTTP API (`serve`) writes commands only (it learns outcomes
from Postgres); alert subscribers read alerts. Everything else is refused by
the broker (`allow.everyone.if.no.acl.found=false`), so a grant missing here is an
authorization error, never a silent widening.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from budget_ledger.consumers.kafka_config import admin_config
from budget_ledger.ledger.settings import Settings

# Consumer-group name prefixes of the readers the ledger's own code makes (they assign
# partitions and never commit, but librdkafka still asks the group coordinator):
# LedgerClient.listen (upstreams and `send --wait`) and the reconciler's events-topic reader.
CLIENT_GROUP_PREFIX = "ledger-client-"
RECONCILE_GROUP_PREFIX = "reconcile-"


@dataclass(frozen=True)
class Principals:
    """The Kafka principals the grants are for (`User:<SASL user>`)."""

    ledger: str = "User:ledger"
    upstreams: tuple[str, ...] = ("User:rules-engine", "User:reward-service")
    alert_readers: tuple[str, ...] = ("User:alerts-reader",)
    apis: tuple[str, ...] = ("User:ledger-api",)


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL: principal may do `operation` on a topic or group (literal or prefix)."""

    principal: str
    resource: str  # "topic" | "group"
    name: str
    pattern: str  # "literal" | "prefixed"
    operation: str  # an AclOperation name: "READ", "WRITE", "DESCRIBE_CONFIGS"
    why: str = ""

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """Identity of the ACL on the broker (the reason is ours only)."""
        return (self.principal, self.resource, self.name, self.pattern, self.operation)


def _user(principal: str) -> str:
    """The name part of `User:name`, used as the prefix of that principal's own groups."""
    return principal.split(":", 1)[1] if ":" in principal else principal


def grants(settings: Settings, principals: Principals) -> list[Grant]:
    """The full grants table for the settings' topic and group names."""
    s = settings
    out: list[Grant] = []
    led = principals.ledger

    def add(p: str, res: str, name: str, op: str, why: str, pattern: str = "literal") -> None:
        out.append(Grant(p, res, name, pattern, op, why))

    # The ledger service (consume, relay, sweep, reconcile, positions, send/adjust as operator).
    add(led, "topic", s.topic_commands, "READ", "consume commands")
    add(led, "topic", s.topic_commands, "WRITE", "sweeper's and operators' commands")
    add(led, "topic", s.topic_events, "WRITE", "relay publishes ledger events")
    add(led, "topic", s.topic_events, "READ", "reconcile compares the events topic")
    add(led, "topic", s.topic_alerts, "WRITE", "relay publishes alerts")
    add(led, "topic", s.topic_dlq, "WRITE", "relay publishes dead letters")
    add(led, "topic", s.topic_dlq, "READ", "send --wait learns dead letters")
    for topic in (s.topic_commands, s.topic_events, s.topic_alerts, s.topic_dlq):
        add(led, "topic", topic, "DESCRIBE_CONFIGS", "relay reads max.message.bytes")
    add(led, "group", s.consumer_group, "READ", "the command consumer group")
    add(led, "group", f"{s.consumer_group}.", "READ", "positions probes", "prefixed")
    add(led, "group", RECONCILE_GROUP_PREFIX, "READ", "reconcile's reader", "prefixed")
    add(led, "group", CLIENT_GROUP_PREFIX, "READ", "send --wait listener", "prefixed")
    # A principal's own group prefix must not cover a group the ledger uses: an upstream named
    # `budget` would otherwise be allowed to join `budget-ledger` and take its partitions.
    ledger_groups = (s.consumer_group, RECONCILE_GROUP_PREFIX)
    for other in (*principals.upstreams, *principals.alert_readers):
        if any(group.startswith(_user(other)) for group in ledger_groups):
            raise ValueError(
                f"the group prefix of {other} ({_user(other)!r}) covers a group of the ledger"
            )
    # Upstream services: commands in, outcomes out; nothing else.
    for up in principals.upstreams:
        add(up, "topic", s.topic_commands, "WRITE", "reserve, charge, release")
        add(up, "topic", s.topic_events, "READ", "outcomes of their commands")
        add(up, "topic", s.topic_dlq, "READ", "LedgerClient learns dead letters")
        add(up, "group", CLIENT_GROUP_PREFIX, "READ", "LedgerClient's listener", "prefixed")
        add(up, "group", _user(up), "READ", "their own consumer groups", "prefixed")
    # The HTTP API publishes the writes' commands; `?wait=` and every read go to Postgres, so it
    # reads no topic and joins no group.
    for api in principals.apis:
        add(api, "topic", s.topic_commands, "WRITE", "the API's writes (POST .../topup, ...)")
    # Alert subscribers: the alerts topic only.
    for reader in principals.alert_readers:
        add(reader, "topic", s.topic_alerts, "READ", "alerts")
        add(reader, "group", _user(reader), "READ", "their own consumer groups", "prefixed")
    return sorted(out)


_RESOURCES = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
_PATTERNS = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}


def _binding(grant: Grant) -> AclBinding:
    return AclBinding(
        _RESOURCES[grant.resource],
        grant.name,
        _PATTERNS[grant.pattern],
        grant.principal,
        "*",
        AclOperation[grant.operation],
        AclPermissionType.ALLOW,
    )


def _key_of(binding: Any) -> tuple[str, str, str, str, str]:
    return (
        binding.principal,
        binding.restype.name.lower(),
        binding.name,
        binding.resource_pattern_type.name.lower(),
        binding.operation.name,
    )


def existing_acls(admin: AdminClient, timeout: float = 30.0) -> set[tuple[str, str, str, str, str]]:
    """Keys of the ALLOW ACLs on the broker (for any principal, host `*`)."""
    # None is the filter's wildcard (name, principal, host); the stubs only know str.
    anything: Any = None
    everything = AclBindingFilter(
        ResourceType.ANY,
        anything,
        ResourcePatternType.ANY,
        anything,
        anything,
        AclOperation.ANY,
        AclPermissionType.ALLOW,
    )
    found = admin.describe_acls(everything, request_timeout=timeout).result(timeout=timeout)
    return {_key_of(b) for b in found if b.host == "*"}


@dataclass(frozen=True)
class ApplyResult:
    """What `apply_acls` did: the grants it created and those already present."""

    created: list[Grant]
    present: list[Grant]


def apply_acls(
    settings: Settings, principals: Principals, admin: AdminClient | None = None
) -> ApplyResult:
    """Create the missing grants (idempotent); needs a principal allowed to alter ACLs."""
    admin = admin or AdminClient(admin_config(settings))
    wanted = grants(settings, principals)
    have = existing_acls(admin)
    missing = [g for g in wanted if g.key not in have]
    if missing:
        for future in admin.create_acls([_binding(g) for g in missing]).values():
            future.result(timeout=30)
        _wait_visible(admin, {g.key for g in wanted})
    return ApplyResult(missing, [g for g in wanted if g.key in have])


def _wait_visible(admin: AdminClient, keys: set[tuple[str, str, str, str, str]]) -> None:
    # The broker acknowledges new ACLs before its authorizer has them (they travel through the
    # metadata log); a process started right after `acls apply` must not be refused.
    deadline = time.monotonic() + 30
    while not keys <= existing_acls(admin):
        if time.monotonic() > deadline:
            raise TimeoutError("the broker did not show the new ACLs within 30 s")
        time.sleep(0.2)
