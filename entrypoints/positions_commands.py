"""`positions show|realign`: stored consumer positions against the log."""

from __future__ import annotations

import argparse
import getpass

from budget_ledger.entrypoints.errors import CliError
from budget_ledger.ledger.settings import Settings


def cmd_positions_show(args: argparse.Namespace, settings: Settings) -> int:
    """Show stored consumer positions next to each partition's log and topic id."""
    from confluent_kafka import KafkaException

    from budget_ledger.consumers import positions as pos
    from budget_ledger.ledger import store
    from budget_ledger.ledger.db import connect

    with connect(settings.database_url, role=settings.database_role, autocommit=True) as conn:
        rows = conn.execute(
            store.queries()["list_positions"], {"group": args.group, "topic": args.topic}
        ).fetchall()
    if not rows:
        print("no stored positions")
        return 0
    probe = pos.probe_consumer(settings)
    ids: dict[str, str | None] = {}
    print("group\ttopic\tpartition\tposition\tlog_start\tlog_end\tstored_topic_id"
          "\tactual_topic_id\tledger_topic\tstatus")  # fmt: skip
    try:
        for group, topic, partition, offset, tid, label, _updated in rows:
            if topic not in ids:
                ids[topic] = pos.topic_id(settings, topic)
            try:
                actual = pos.log_state(probe, topic, partition, ids[topic])
            except KafkaException as exc:
                print(f"{group}\t{topic}\t{partition}\t{offset}\t?\t?\t{tid}\t?\t{label}"
                      f"\tunknown: {' '.join(str(exc).split())}")  # fmt: skip
                continue
            problem = pos.mismatch(store.StoredPosition(partition, offset, tid, label), actual)
            print(f"{group}\t{topic}\t{partition}\t{offset}\t{actual.log_start}\t"
                  f"{actual.log_end}\t{tid}\t{actual.topic_id}\t{label}"
                  f"\t{problem or 'ok'}")  # fmt: skip
    finally:
        probe.close()
    return 0


def cmd_positions_realign(args: argparse.Namespace, settings: Settings) -> int:
    """Move stored positions deliberately (audited); stop the consumers first."""
    from budget_ledger.consumers import positions as pos
    from budget_ledger.ledger.db import connect

    target = "start" if args.to_start else "end" if args.to_end else "offset"
    try:
        partitions = args.partition or pos.partitions_of(settings, args.topic)
        with connect(settings.database_url, role=settings.database_role) as conn:
            plans = pos.realign(
                conn, settings, args.topic, partitions, target, args.to_offset,
                args.accept_topic_id, args.yes, args.operator, args.reason,
            )  # fmt: skip
    except pos.RealignError as exc:
        raise CliError(str(exc)) from None
    for plan in plans:
        print(("realigned " if args.yes else "would realign ") + plan.describe(args.topic))
    if not args.yes:
        print("nothing changed: re-run with --yes to apply")
    return 0


def add_positions(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `positions show` and `positions realign`."""
    positions = sub.add_parser(
        "positions",
        help="stored consumer positions: show, realign",
        description="The consumer stops rather than skip commands when a stored position does"
        " not fit its partition (topic re-created, offsets reset, log truncated). See"
        " docs/operations.md.",
    )
    psub = positions.add_subparsers(dest="positions_command", required=True, metavar="ACTION")
    p = psub.add_parser("show", help="positions vs the log", description=cmd_positions_show.__doc__)
    p.add_argument("--topic", default=None, help="only this command topic")
    p.add_argument("--group", default=None, help="only this consumer group")
    p.set_defaults(handler=cmd_positions_show)
    p = psub.add_parser(
        "realign", help="move stored positions (audited)", description=cmd_positions_realign.__doc__
    )
    p.add_argument("--topic", required=True, help="the command topic")
    p.add_argument("--partition", type=int, action="append", default=None,
                   help="a partition (repeat; default every partition of the topic)")  # fmt: skip
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--to-offset", type=int, default=None, metavar="N", help="this offset")
    where.add_argument("--to-start", action="store_true", help="the log start (replay all)")
    where.add_argument("--to-end", action="store_true", help="the log end (skip what is there)")
    p.add_argument("--accept-topic-id", action="store_true",
                   help="adopt the topic's new id (the topic was re-created)")  # fmt: skip
    p.add_argument("--yes", action="store_true", help="apply (without it: show the plan only)")
    p.add_argument("--operator", default=getpass.getuser(), help="who realigns (audited)")
    p.add_argument("--reason", default="operator realignment", help="why (audited)")
    p.set_defaults(handler=cmd_positions_realign)
