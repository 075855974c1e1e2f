"""Sub-commands that run the long-lived processes: `consume`, `relay` and `sweep`."""

from __future__ import annotations

import argparse
import threading

import structlog

from budget_ledger.entrypoints import set_aside_commands
from budget_ledger.entrypoints.errors import EXIT_OK, EXIT_POSITION_REFUSED, EXIT_RELAY_DIED
from budget_ledger.ledger.settings import Settings

log = structlog.get_logger("commands")


def cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    """Run one member of the command consumer group until SIGTERM/SIGINT."""
    from budget_ledger.consumers.command_consumer import CommandConsumer, ConsumerOptions
    from budget_ledger.consumers.positions import PositionRefused
    from budget_ledger.consumers.relay import Relay
    from budget_ledger.entrypoints.runner import serve_health, stop_on_signals

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
    return EXIT_RELAY_DIED if relay_died.is_set() else EXIT_OK


def cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    """Publish committed ledger events and outbox rows to Kafka until SIGTERM/SIGINT."""
    from budget_ledger.consumers.relay import Relay
    from budget_ledger.entrypoints.runner import serve_health, stop_on_signals

    stop = stop_on_signals()
    ready = threading.Event()
    ready.set()
    serve_health(settings, ready, stop)
    Relay(settings, batch=args.batch, stop=stop).run()
    return 0


def cmd_sweep(args: argparse.Namespace, settings: Settings) -> int:
    """Publish expire_reservations and close_period commands when due (the ledger's schedulers)."""
    from budget_ledger.consumers import sweeper
    from budget_ledger.consumers.kafka_config import producer_config
    from budget_ledger.entrypoints.runner import serve_health, stop_on_signals

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


def add_consume(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `consume`."""
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


def add_relay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `relay` and its `set-aside` actions."""
    p = sub.add_parser(
        "relay",
        help="publish ledger events and alerts to Kafka",
        description=(cmd_relay.__doc__ or "") + " Without ACTION: run the relay.",
    )
    p.add_argument("--batch", type=int, default=5000, help="rows per round (default 5000)")
    p.set_defaults(handler=cmd_relay)
    rsub = p.add_subparsers(dest="relay_command", required=False, metavar="ACTION")
    set_aside_commands.add_set_aside(rsub)


def add_sweep(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `sweep`."""
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
