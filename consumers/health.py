"""Liveness and readiness of the command consumer, from what its loop last saw.

Liveness asks "is the loop getting anywhere?": it fails when work is waiting (lag, or a batch
in hand) and nothing has been committed for `stall_seconds` — a hung call, a livelock of
retries. Waiting for an unreachable Postgres or Kafka counts as alive (a restart would not
help); readiness reports those instead.
"""

from __future__ import annotations

import threading
import time


def decide_live(seconds_since_progress: float, backlog: int, stall_seconds: float) -> bool:
    """Alive unless work is waiting and the loop has made no progress for `stall_seconds`."""
    return backlog <= 0 or seconds_since_progress <= stall_seconds


class ConsumerHealth(threading.Event):
    """Set once the consumer first got its partitions; also tracks progress and dependencies.

    An Event so that existing callers can keep waiting on `ready.wait()`. Written by the loop's
    thread, read by the HTTP thread: plain attribute reads and writes, no lock needed.
    """

    def __init__(self, stall_seconds: float) -> None:
        super().__init__()
        self.stall_seconds = stall_seconds
        self.last_progress = time.monotonic()
        self.lag = 0
        self.holding_batch = False
        self.database_ok = True
        self.kafka_ok = True

    def progressed(self) -> None:
        """The loop committed a batch, found nothing to do, or is waiting on a dependency."""
        self.last_progress = time.monotonic()

    def live(self) -> bool:
        """The liveness verdict (see `decide_live`)."""
        backlog = self.lag + (1 if self.holding_batch else 0)
        return decide_live(time.monotonic() - self.last_progress, backlog, self.stall_seconds)

    def ready(self) -> bool:
        """Partitions assigned once, and Postgres and Kafka reachable as last seen."""
        return self.is_set() and self.database_ok and self.kafka_ok
