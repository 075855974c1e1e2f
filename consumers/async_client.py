"""The asyncio face of :class:`consumers.client.LedgerClient`.

    async with AsyncLedgerClient(settings) as client:
        ref = await client.reserve("acme", "b-1", amount="5.00", currency="USD", ref_id="rw-1")
        outcome = await client.await_outcome(ref, timeout=5)

librdkafka's calls block, so flushing and polling run in a worker thread (`asyncio.to_thread`);
one task polls at a time (an asyncio lock) and every poll answers all waiting tasks, so many
concurrent `await_outcome`s cost one consumer, not one each. Queuing a command (`produce`) does
not block and stays on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Producer

from budget_ledger.consumers.client import (
    CommandRef,
    LedgerClient,
    Outcome,
    OutcomeTimeout,
    wire_command,
)
from budget_ledger.ledger.settings import Settings


class AsyncLedgerClient:
    """Publishes commands and awaits their outcomes without blocking the event loop."""

    def __init__(
        self, settings: Settings, producer: Producer | None = None, max_tracked: int = 100_000
    ) -> None:
        self._client = LedgerClient(settings, producer, max_tracked)
        self._poll_lock: asyncio.Lock | None = None
        self._started = False

    async def start(self) -> None:
        """Start listening for outcomes (metadata look-ups: done in a thread); idempotent."""
        if not self._started:
            await asyncio.to_thread(self._client.listen)
            self._started = True

    async def send(self, command: Mapping[str, Any], track: bool = True) -> CommandRef:
        """Validate and queue one command (unchanged mapping); see `LedgerClient.send`."""
        if track:
            await self.start()
        return self._client.send(command, track)

    async def fund(
        self,
        tenant_id: str,
        budget_id: str,
        amount: str,
        currency: str,
        *,
        track: bool = True,
        **extra: Any,
    ) -> CommandRef:
        """Add funds to a budget."""
        command = wire_command(
            "fund", tenant_id, budget_id, amount=amount, currency=currency, **extra
        )
        return await self.send(command, track)

    async def reserve(
        self,
        tenant_id: str,
        budget_id: str,
        amount: str,
        currency: str,
        ref_id: str,
        *,
        track: bool = True,
        **extra: Any,
    ) -> CommandRef:
        """Hold funds for a reward about to be issued."""
        command = wire_command(
            "reserve",
            tenant_id,
            budget_id,
            amount=amount,
            currency=currency,
            ref_id=ref_id,
            **extra,
        )
        return await self.send(command, track)

    async def charge(
        self, tenant_id: str, budget_id: str, ref_id: str, *, track: bool = True, **extra: Any
    ) -> CommandRef:
        """The reward was redeemed: charge its reservation (optionally a smaller `amount`)."""
        command = wire_command("charge", tenant_id, budget_id, ref_id=ref_id, **extra)
        return await self.send(command, track)

    async def release(
        self, tenant_id: str, budget_id: str, ref_id: str, *, track: bool = True, **extra: Any
    ) -> CommandRef:
        """The reward expired or was cancelled: free its reservation."""
        command = wire_command("release", tenant_id, budget_id, ref_id=ref_id, **extra)
        return await self.send(command, track)

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until Kafka acknowledged every queued command."""
        await asyncio.to_thread(self._client.flush, timeout)

    async def await_outcome(self, ref: CommandRef, timeout: float = 10.0) -> Outcome:
        """Like `LedgerClient.await_outcome`: Accepted/Refused, CommandDeadLettered, or
        OutcomeTimeout."""
        deadline = time.monotonic() + timeout
        await self.start()
        self._client.watch(ref)
        await self.flush(max(timeout, 1.0))
        if self._poll_lock is None:
            self._poll_lock = asyncio.Lock()
        while True:
            answer = self._client.take(ref)
            if answer is not None:
                return answer
            left = deadline - time.monotonic()
            if left <= 0:
                self._client.forget(ref)
                raise OutcomeTimeout(
                    f"no outcome for command {ref.command_id!r} of tenant {ref.tenant_id!r} "
                    f"within {timeout} s"
                )
            async with self._poll_lock:
                # Another task may have polled our answer in while we waited for the lock.
                if self._client.take_ready(ref):
                    continue
                await asyncio.to_thread(self._client.poll, min(left, 0.1))

    async def close(self) -> None:
        """Flush queued commands and stop listening."""
        await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> AsyncLedgerClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
