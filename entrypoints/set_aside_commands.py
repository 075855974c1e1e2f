"""`relay set-aside list|retry|skip`: rows Kafka refused, and the budgets held behind them."""

from __future__ import annotations

import argparse
import getpass

from budget_ledger.entrypoints.errors import CliError
from budget_ledger.ledger.settings import Settings


def cmd_set_aside_list(args: argparse.Namespace, settings: Settings) -> int:
    """List held budgets and the rows the relay set aside (pending ones; --all for every row)."""
    from budget_ledger.ledger import store
    from budget_ledger.ledger.db import connect

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
    from budget_ledger.ledger import store
    from budget_ledger.ledger.db import connect

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


def add_set_aside(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `set-aside` and its actions under `relay`."""
    sa = actions.add_parser(
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
