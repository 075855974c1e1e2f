"""Commit timings for the benchmark: when each message's event was committed (opt-in, cheap).

Enabled by ``LEDGER_BENCH_TIMINGS=/path/file`` in the consumer's environment. Per committed
batch it appends the commit wall-clock time (ms) and the batch size, and per message its Kafka
timestamp (ms, the producer's create time): two ``array`` appends per message, no allocation per
message beyond that. On stop the arrays are written to the file (``bench`` reads them back to
compute throughput and produce-to-commit latency percentiles).

File layout: 8-byte little-endian count of batches, then the batch pairs (commit_ms, n) as
int64, then every message timestamp as int64, in batch order.
"""

from __future__ import annotations

import os
import struct
import sys
import time
from array import array
from collections.abc import Iterable
from pathlib import Path

ENV_VAR = "LEDGER_BENCH_TIMINGS"


class CommitTimings:
    """Per-batch commit times and per-message Kafka timestamps, kept in flat arrays."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.batches = array("q")
        self.timestamps = array("q")

    @classmethod
    def from_env(cls) -> CommitTimings | None:
        path = os.environ.get(ENV_VAR)
        return cls(path) if path else None

    def record(self, timestamps_ms: Iterable[int]) -> None:
        """A batch was just committed: remember now and its messages' produce timestamps."""
        before = len(self.timestamps)
        self.timestamps.extend(timestamps_ms)
        self.batches.append(time.time_ns() // 1_000_000)
        self.batches.append(len(self.timestamps) - before)

    def write(self) -> None:
        """Write everything recorded so far (atomically: temp file, then rename)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(struct.pack("<q", len(self.batches) // 2))
            _write_le(f, self.batches)
            _write_le(f, self.timestamps)
        os.replace(tmp, self.path)


def _write_le(f: object, values: array) -> None:  # type: ignore[type-arg]
    if sys.byteorder != "little":
        values = array("q", values)
        values.byteswap()
    values.tofile(f)  # type: ignore[arg-type]


def read_timings(path: str | Path) -> tuple[list[tuple[int, int]], array]:  # type: ignore[type-arg]
    """The (commit_ms, n) pairs and the flat message timestamps of a file written by `write`."""
    data = Path(path).read_bytes()
    (nbatches,) = struct.unpack_from("<q", data, 0)
    flat = array("q")
    flat.frombytes(data[8:])
    if sys.byteorder != "little":
        flat.byteswap()
    pairs = flat[: 2 * nbatches]
    batches = [(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)]
    return batches, flat[2 * nbatches :]
