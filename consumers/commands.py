"""CLI sub-commands of the Kafka side: consume, relay, run (both), sweep."""

from __future__ import annotations

import argparse
import getpass
import threading

import structlog

from ledger.settings import Settings

log = structlog.get_logger("commands")


EXIT_RELAY_DIED = 1
EXIT_POSITION_REFUSED = 3


def cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    """Run one member of the command consumer group until SIGTERM/SIGINT."""
    from consumers.command_consumer import CommandConsumer, ConsumerOptions
    from consumers.positions import PositionRefused
    from consumers.relay import Relay
    from consumers.runner import serve_health, stop_on_signals

    stop = stop_on_signals()
    options = ConsumerOptions(
        batch_max_messages=args.batch_max_messages or settings.batch_max_messages,
        batch_max_ms=args.batch_max_ms or settings.batch_max_ms,
    )
    consumer = CommandConsumer(settings, options, stop=stop)
    serve_health(settings, consumer.ready, stop)
    relay_thread = None
    relay_died = threading.Event()
    if args.with_relay:
        relay = Relay(settings, stop=stop)

        def run_relay() -> None:
            # A dead relay thread must not leave a process that looks healthy: stopping makes
            # /healthz fail at once and the process exit non-zero, so it gets restarted.
            try:
                relay.run()
            except BaseException:
                log.exception("relay_thread_died")
                relay_died.set()
                stop.set()

        relay_thread = threading.Thread(target=run_relay, name="relay", daemon=True)
        relay_thread.start()
    try:
        consumer.run()
    except PositionRefused:
        # The one `position_refused` log line (stderr) says what and which command to run.
        stop.set()
        return EXIT_POSITION_REFUSED
    finally:
        if relay_thread is not None:
            stop.set()
            relay_thread.join(timeout=15)
    return EXIT_RELAY_DIED if relay_died.is_set() else 0


def cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    """Publish committed ledger events and outbox rows to Kafka until SIGTERM/SIGINT."""
    from consumers.relay import Relay
    from consumers.runner import serve_health, stop_on_signals

    stop = stop_on_signals()
    ready = threading.Event()
    ready.set()
    serve_health(settings, ready, stop)
    Relay(settings, batch=args.batch, stop=stop).run()
    return 0


def cmd_sweep(args: argparse.Namespace, settings: Settings) -> int:
    """Publish expire_reservations and close_period commands when due (the ledger's schedulers)."""
    from consumers import sweeper
    from consumers.kafka_config import producer_config
    from consumers.runner import serve_health, stop_on_signals

    if args.once:
        from confluent_kafka import Producer

        print(f"published {sweeper.sweep_once(settings, Producer(producer_config(settings)))}")
        return 0
    stop = stop_on_signals()
    ready = threading.Event()
    ready.set()
    serve_health(settings, ready, stop)
    sweeper.run(settings, args.every, stop)
    return 0


def cmd_positions_show(args: argparse.Namespace, settings: Settings) -> int:
    """Show stored consumer positions next to each partition's log and topic id."""
    from confluent_kafka import KafkaException

    from consumers import positions as pos
    from ledger import store
    from ledger.db import connect

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
    from consumers import positions as pos
    from ledger.cli import CliError
    from ledger.db import connect

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


def cmd_set_aside_list(args: argparse.Namespace, settings: Settings) -> int:
    """List held budgets and the rows the relay set aside (pending ones; --all for every row)."""
    from ledger import store
    from ledger.db import connect

    q = store.queries()
    with connect(settings.database_url, role=settings.database_role, autocommit=True) as conn:
        holds = conn.execute(q["list_holds"]).fetchall()
        rows = conn.execute(q["list_set_aside"], {"all": args.all}).fetchall()
    print(f"held budgets: {len(holds)}")
    for topic, partition, tenant, budget, held_at, error, action, by in holds:
        requested = f" ({action} requested by {by})" if action else ""
        print(f"  {tenant}:{budget} on {topic}[{partition}] since {held_at:%Y-%m-%d %H:%M:%S}"
              f"{requested}: {error}")  # fmt: skip
    print(f"set-aside rows: {len(rows)}")
    for sid, kind, state, topic, part, off, tenant, budget, dest, size, error, at, done, by in rows:
        where = f"{topic}[{part}]@{off}" if kind == "event" else "outbox"
        resolved = f", {done:%Y-%m-%d %H:%M:%S} by {by}" if done else ""
        print(f"  #{sid} {kind} {state} {tenant}:{budget} {where} -> {dest} {size} bytes"
              f" ({at:%Y-%m-%d %H:%M:%S}{resolved}){': ' + error if error else ''}")  # fmt: skip
    return 0


def cmd_set_aside_release(args: argparse.Namespace, settings: Settings) -> int:
    """Release a held budget (the relay publishes its events in order) or one outbox row."""
    from ledger import store
    from ledger.cli import CliError
    from ledger.db import connect

    q = store.queries()
    action = args.set_aside_command
    with connect(settings.database_url, role=settings.database_role, autocommit=True) as conn:
        if args.id is not None:
            name = "requeue_outbox_set_aside" if action == "retry" else "skip_outbox_set_aside"
            done = conn.execute(q[name], {"id": args.id, "by": args.operator}).fetchall()
            if not done:
                raise CliError(f"no held outbox row #{args.id} (see: relay set-aside list)")
            print(
                f"outbox row #{args.id}: "
                + ("back in the outbox" if action == "retry" else "skipped")
            )
            return 0
        if not (args.tenant and args.budget):
            raise CliError("name a held budget (--tenant and --budget) or an outbox row (--id)")
        held = conn.execute(
            q["request_release"],
            {"action": action, "by": args.operator, "tenant_id": args.tenant,
             "budget_id": args.budget},
        ).fetchall()  # fmt: skip
    if not held:
        raise CliError(f"budget {args.tenant}:{args.budget} is not held")
    print(f"{action} requested for {args.tenant}:{args.budget}; the relay carries it out"
          " (see: relay set-aside list)")  # fmt: skip
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run a narrated reserve/charge/release flow against the configured Kafka and Postgres."""
    from consumers.demo import run_demo

    return run_demo(settings)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the Kafka-side sub-commands to the CLI."""
    p = sub.add_parser(
        "consume",
        help="run a command consumer (group member)",
        description=(cmd_consume.__doc__ or "")
        + " Commands are applied in micro-batches: up to --batch-max-messages or"
        " --batch-max-ms, whichever comes first, each batch one Postgres transaction.",
    )
    p.add_argument(
        "--batch-max-messages",
        type=int,
        default=None,
        metavar="N",
        help="largest batch (default LEDGER_BATCH_MAX_MESSAGES=2000)",
    )
    p.add_argument(
        "--batch-max-ms",
        type=int,
        default=None,
        metavar="MS",
        help="longest wait to fill a batch (default LEDGER_BATCH_MAX_MS=20)",
    )
    p.add_argument(
        "--with-relay",
        action="store_true",
        help="also run the outbox relay in this process (a thread)",
    )
    p.set_defaults(handler=cmd_consume)

    p = sub.add_parser(
        "relay",
        help="publish ledger events and alerts to Kafka",
        description=(cmd_relay.__doc__ or "") + " Without ACTION: run the relay.",
    )
    p.add_argument("--batch", type=int, default=5000, help="rows per round (default 5000)")
    p.set_defaults(handler=cmd_relay)
    rsub = p.add_subparsers(dest="relay_command", required=False, metavar="ACTION")
    sa = rsub.add_parser(
        "set-aside",
        help="rows the relay could not publish, and held budgets",
        description="Rows Kafka refused (too large, invalid) are set aside; a refused event"
        " holds its budget's later events until retry or skip. See docs/operations.md.",
    )
    sasub = sa.add_subparsers(dest="set_aside_command", required=True, metavar="ACTION")
    p = sasub.add_parser("list", help="held budgets and set-aside rows",
                         description=cmd_set_aside_list.__doc__)  # fmt: skip
    p.add_argument("--all", action="store_true", help="also rows already resolved")
    p.set_defaults(handler=cmd_set_aside_list)
    for action, what in (
        ("retry", "publish the held event again (after the cause was fixed), then the rest"),
        ("skip", "never publish the held event; publish the budget's later events"),
    ):
        p = sasub.add_parser(action, help=what, description=cmd_set_aside_release.__doc__)
        p.add_argument("--tenant", help="tenant of the held budget")
        p.add_argument("--budget", help="the held budget")
        p.add_argument("--id", type=int, default=None, help="a set-aside outbox row instead")
        p.add_argument("--operator", default=getpass.getuser(), help="who asks (audited)")
        p.set_defaults(handler=cmd_set_aside_release)

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

    p = sub.add_parser(
        "sweep",
        help="publish expiry and period-close commands when due",
        description=cmd_sweep.__doc__,
    )
    p.add_argument(
        "--every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds between sweeps (default 30)",
    )
    p.add_argument("--once", action="store_true", help="sweep once and exit")
    p.set_defaults(handler=cmd_sweep)

    p = sub.add_parser("demo", help="run a narrated flow end to end", description=cmd_demo.__doc__)
    p.set_defaults(handler=cmd_demo)
