"""A stored event that verifies but cannot be folded: the failure a replay must survive.

The compiled core binds `evolve` at build time, so a test cannot inject an evolver bug by
monkeypatching: the failure has to come from the data.
"""

from __future__ import annotations

import orjson

from budget_ledger.schemas.hashing import seal_body

#: The reservation the re-sealed event charges (never made, so `evolve` raises KeyError on it).
GHOST_REF = "ghost"
UNFOLDABLE_TYPE = "reservation_charged"


def unfoldable(event_text: str) -> tuple[str, str]:
    """``event_text`` re-sealed onto its chain as a charge of a reservation never made, as a
    writer would seal it (its link verifies, so only the fold fails); returns (hash, text)."""
    wire = orjson.loads(event_text)
    del wire["hash"]
    wire.update(type=UNFOLDABLE_TYPE, ref_id=GHOST_REF)
    return seal_body(wire["prev_hash"], wire)
