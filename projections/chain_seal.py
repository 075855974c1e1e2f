"""The keyed chain's legacy cut-over: seal each budget's rows written before the chain key.

Run once with the owner's credentials when the keys are first configured (and again after any
period in which consumers ran without a key): for every budget, a MAC over its last row without
a MAC (sequence and hash). The plain hash chain links that row to every earlier one, so the seal
vouches for the whole unkeyed prefix; `reconcile` refuses unkeyed rows beyond it. Reconcile
first (without the keys): a seal vouches for whatever the ledger holds when it is made.
"""

from __future__ import annotations

import psycopg

from budget_ledger.ledger.chain_mac import ChainKey, seal_mac
from budget_ledger.projections.store import queries


def seal_legacy(conn: psycopg.Connection, key: ChainKey) -> int:
    """Seal every budget's unkeyed prefix with `key`; return how many budgets were sealed."""
    q = queries()
    with conn.transaction():
        heads = conn.execute(q["unkeyed_chain_heads"]).fetchall()
        seals = [
            {
                "tenant": tenant,
                "budget": budget,
                "sequence": seq,
                "hash": event_hash,
                "mac": seal_mac(key, tenant, budget, seq, event_hash),
                "key_id": key.key_id,
            }
            for tenant, budget, seq, event_hash in heads
        ]
        with conn.cursor() as cur:
            cur.executemany(q["upsert_legacy_seal"], seals)
    return len(seals)
