"""CPU and memory of the benchmark's processes, read from /proc (Linux; no psutil).

`CpuSampler` samples, every half second, the CPU time of named process groups — the consumers,
the producer, the Kafka broker and the PostgreSQL cluster (found by their listening TCP port,
with all their child processes) — and of the whole machine, and reports each as a percentage of
one core over the sampled window.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def vm_hwm_kb(pid: int) -> int:
    """Peak resident set size (VmHWM) of a live process, in kB; 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _stat(pid: int) -> tuple[str, list[str]] | None:
    """A process's name and the fields of /proc/<pid>/stat after it (None: gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, _, tail = stat.rpartition(")")
    return head.partition("(")[2], tail.split()


def _cpu(fields: list[str]) -> int:
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def cpu_ticks(pid: int) -> int | None:
    """User + system CPU of ``pid`` in clock ticks (`TICK` a second); None once it is gone."""
    stat = _stat(pid)
    return None if stat is None else _cpu(stat[1])


def _ppid(pid: int) -> int | None:
    stat = _stat(pid)
    try:
        return None if stat is None else int(stat[1][1])
    except (ValueError, IndexError):
        return None


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def process_ticks() -> dict[int, tuple[str, int]]:
    """Every process's name and CPU time (user + system, in clock ticks)."""
    out: dict[int, tuple[str, int]] = {}
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is not None:  # else gone meanwhile
            out[pid] = (stat[0], _cpu(stat[1]))
    return out


def listening_pid(port: int) -> int | None:
    """The process that listens on TCP `port` (via /proc/net/tcp* socket inodes)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for pid in _all_pids():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    return pid
        except OSError:
            continue
    return None


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        parent = _ppid(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _machine_ticks() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuSampler:
    """CPU % (of one core) per process group over a window, sampled in a background thread."""

    def __init__(self, consumers: list[int], kafka_port: int, pg_port: int) -> None:
        self.groups: dict[str, list[int]] = {"consumer": list(consumers)}
        self.roots: dict[str, int | None] = {
            "kafka": listening_pid(kafka_port),
            "postgres": listening_pid(pg_port),
        }
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.owner: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.seconds = 0.0

    def add(self, name: str, pids: list[int]) -> None:
        self.groups.setdefault(name, []).extend(pids)

    def _sample(self) -> None:
        groups = {k: list(v) for k, v in self.groups.items()}
        for name, root in self.roots.items():
            if root is not None:
                groups[name] = descendants(root)
        for name, pids in groups.items():
            for pid in pids:
                t = cpu_ticks(pid)
                if t is None:
                    continue
                self.first.setdefault(pid, t)
                self.last[pid] = t
                self.owner[pid] = name

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._m0 = _machine_ticks()
        self._sample()
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        seconds = self.seconds = max(1e-6, time.monotonic() - self._t0)
        busy1, total1 = _machine_ticks()
        out: dict[str, float] = {}
        for pid, name in self.owner.items():
            out[name] = out.get(name, 0.0) + (self.last[pid] - self.first[pid]) / TICK
        result = {k: round(100 * v / seconds, 1) for k, v in sorted(out.items())}
        busy = (busy1 - self._m0[0]) / max(1, total1 - self._m0[1])  # fraction of all cores
        cores = os.cpu_count() or 1
        result["machine_busy"] = round(100 * busy * cores, 1)
        result["other"] = round(
            result["machine_busy"] - sum(v for k, v in result.items() if k != "machine_busy"), 1
        )
        return result
