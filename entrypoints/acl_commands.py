"""Sub-command `acls apply`: grant the ledger's principals their Kafka ACLs (idempotent)."""

from __future__ import annotations

import argparse

from budget_ledger.entrypoints.errors import EXIT_OK, CliError, one_line
from budget_ledger.ledger.settings import Settings

DEFAULT_LEDGER = "User:ledger"
DEFAULT_UPSTREAMS = ("User:rules-engine", "User:reward-service")
DEFAULT_ALERT_READERS = ("User:alerts-reader",)
DEFAULT_APIS = ("User:ledger-api",)


def _principal(value: str) -> str:
    # A bare SASL user name is the principal User:<name>; anything else must say its type.
    name = value if ":" in value else f"User:{value}"
    kind, _, rest = name.partition(":")
    if not kind or not rest or any(c.isspace() for c in name):
        raise argparse.ArgumentTypeError(f"not a Kafka principal: {value!r}")
    return name


def cmd_acls_apply(args: argparse.Namespace, settings: Settings) -> int:
    """Create the missing ACLs of the ledger service, upstream services and alert readers.

    Run it with the credentials of a principal that may alter ACLs (a super user); grants
    already present are left alone, nothing is removed."""
    from confluent_kafka import KafkaException

    from budget_ledger.consumers.acls import Principals, apply_acls, grants

    principals = Principals(
        ledger=args.ledger,
        upstreams=tuple(args.upstream or DEFAULT_UPSTREAMS),
        alert_readers=tuple(args.alerts_reader or DEFAULT_ALERT_READERS),
        apis=tuple(args.api or DEFAULT_APIS),
    )
    try:
        table = grants(settings, principals)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.dry_run:
        for g in table:
            print(f"{g.principal}\t{g.operation}\t{g.resource}\t{g.pattern}\t{g.name}\t# {g.why}")
        return EXIT_OK
    try:
        result = apply_acls(settings, principals)
    except KafkaException as exc:
        raise CliError(f"could not apply the ACLs: {one_line(exc)}") from None
    for g in result.created:
        print(f"created  {g.principal} {g.operation} {g.resource}:{g.pattern}:{g.name}")
    print(f"{len(result.created)} ACL(s) created, {len(result.present)} already present")
    return EXIT_OK


def add_acls(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `acls apply`."""
    acls = sub.add_parser(
        "acls", help="Kafka ACLs of the ledger's principals", description="Kafka ACLs."
    )
    asub = acls.add_subparsers(dest="acls_command", required=True, metavar="ACTION")
    p = asub.add_parser(
        "apply", help="create the missing ACLs (idempotent)", description=cmd_acls_apply.__doc__
    )
    p.add_argument(
        "--ledger",
        type=_principal,
        default=DEFAULT_LEDGER,
        help=f"the ledger service's principal (default {DEFAULT_LEDGER})",
    )
    p.add_argument(
        "--upstream",
        type=_principal,
        action="append",
        help="an upstream service's principal, repeatable "
        f"(default {', '.join(DEFAULT_UPSTREAMS)})",
    )
    p.add_argument(
        "--alerts-reader",
        type=_principal,
        action="append",
        help=f"an alert subscriber's principal, repeatable (default {DEFAULT_ALERT_READERS[0]})",
    )
    p.add_argument(
        "--api",
        type=_principal,
        action="append",
        help=f"the HTTP API's principal (`serve`), repeatable (default {DEFAULT_APIS[0]})",
    )
    p.add_argument("--dry-run", action="store_true", help="print the grants table, change nothing")
    p.set_defaults(handler=cmd_acls_apply)
