"""The upstream Python clients (sync and asyncio) against the real consumer, relay and broker."""

from __future__ import annotations

import asyncio
import copy
import time
from decimal import Decimal

import pytest
from confluent_kafka import Producer

from budget_ledger.consumers.async_client import AsyncLedgerClient
from budget_ledger.consumers.client import (
    Accepted,
    Balances,
    CommandDeadLettered,
    CommandRef,
    LedgerClient,
    OutcomeTimeout,
    Refused,
)
from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.consumers.topics import create_topics
from budget_ledger.ledger.settings import Settings
from tests.integration.support import cli, produce, read_topic, running_consumer

pytestmark = pytest.mark.integration


def _open_and_fund(client: LedgerClient, tenant: str, budget: str, amount: str) -> None:
    opened = client.send({"type": "open_budget", "tenant_id": tenant, "budget_id": budget,
                          "currency": "USD", "period": "rolling"})  # fmt: skip
    funded = client.fund(tenant, budget, amount, "USD")
    assert client.await_outcome(opened, 30).accepted
    assert client.await_outcome(funded, 30).accepted


def test_two_tenants_with_the_same_command_id_each_get_their_own_outcome(
    settings: Settings,
) -> None:
    with running_consumer(settings), LedgerClient(settings) as client:
        _open_and_fund(client, "t5", "b1", "100.00")
        _open_and_fund(client, "t6", "b1", "10.00")
        rich = client.reserve("t5", "b1", "50.00", "USD", "rw-1", command_id="same-id")
        poor = client.reserve("t6", "b1", "50.00", "USD", "rw-1", command_id="same-id")
        # Awaited in the opposite order of sending: each answer is kept for its own tenant.
        refused = client.await_outcome(poor, 30)
        accepted = client.await_outcome(rich, 30)

    assert isinstance(accepted, Accepted)
    assert (accepted.tenant_id, accepted.command_id) == ("t5", "same-id")
    assert accepted.event_type == "funds_reserved"
    assert accepted.balances == Balances(Decimal("100.00"), Decimal("50.00"), Decimal("0.00"),
                                         Decimal("50.00"), Decimal("50.00"))  # fmt: skip
    assert isinstance(refused, Refused)
    assert (refused.tenant_id, refused.command_id) == ("t6", "same-id")
    assert refused.event_type == "reservation_rejected"
    assert refused.reason == "insufficient_funds"
    assert refused.balances.available == Decimal("10.00")


def test_a_dead_lettered_command_fails_fast_with_the_reason(settings: Settings) -> None:
    # The client's currency table knows EUR, the ledger's does not: the client's own validation
    # passes, the consumer dead-letters the command.
    lenient = settings.model_copy(update={"currencies": {**settings.currencies, "EUR": 2}})
    with running_consumer(settings), LedgerClient(lenient) as client:
        _open_and_fund(client, "acme", "b1", "100.00")
        ref = client.reserve("acme", "b1", "5.00", "EUR", "rw-1")
        started = time.monotonic()
        with pytest.raises(CommandDeadLettered) as caught:
            client.await_outcome(ref, timeout=60)
        assert time.monotonic() - started < 15
        assert caught.value.error_class == "schema"
        assert "EUR" in caught.value.reason
        assert caught.value.ref == ("acme", ref.command_id)

        # A command another producer sent with the wrong key: matched by its tenant/command id.
        other = CommandRef("acme", "b1", "foreign-1")
        client.watch(other)
        produce(settings, [(b"acme:b2", b'{"command_id": "foreign-1", "type": "release", '
                                        b'"tenant_id": "acme", "budget_id": "b1", '
                                        b'"ref_id": "rw-9"}')])  # fmt: skip
        with pytest.raises(CommandDeadLettered) as caught:
            client.await_outcome(other, timeout=60)
        assert caught.value.error_class == "key_mismatch"

        # A command nobody answers times out as such (the consumer never sees this topic).
        with pytest.raises(OutcomeTimeout):
            client.await_outcome(CommandRef("acme", "b1", "never-sent"), timeout=0.5)


def test_sends_are_batched_inputs_unchanged_and_results_typed(settings: Settings) -> None:
    # A long linger makes the batching visible: nothing leaves before the flush.
    producer = Producer(producer_config(settings, **{"linger.ms": 10_000}))
    with running_consumer(settings), LedgerClient(settings, producer) as client:
        _open_and_fund(client, "acme", "b1", "30.00")
        commands = [
            {"type": "reserve", "tenant_id": "acme", "budget_id": "b1", "amount": "10.00",
             "currency": "USD", "ref_id": f"rw-{i}", "metadata": {"rule": ["r", i]}}
            for i in range(5)
        ]  # fmt: skip
        before = copy.deepcopy(commands)
        refs = [client.send(c) for c in commands]
        assert commands == before  # no command_id (or anything else) added to the caller's dicts
        assert len(producer) == 5  # queued, not flushed per command
        client.flush()
        assert len(producer) == 0
        outcomes = [client.await_outcome(r, 30) for r in refs]

    assert [type(o) for o in outcomes] == [Accepted] * 3 + [Refused] * 2
    assert [o.sequence for o in outcomes] == [3, 4, 5, 6, 7]
    assert outcomes[2].balances.available == Decimal("0.00")
    assert outcomes[2].amount == Decimal("10.00") and outcomes[2].ref_id == "rw-2"
    assert all(isinstance(o.reason, str) and o.reason == "insufficient_funds"
               for o in outcomes[3:] if isinstance(o, Refused))  # fmt: skip
    for o in outcomes:
        for value in (o.balances.funded, o.balances.reserved, o.balances.available):
            assert isinstance(value, Decimal)


def test_a_retried_command_gets_the_original_outcome_again(settings: Settings) -> None:
    with running_consumer(settings), LedgerClient(settings) as client:
        _open_and_fund(client, "acme", "b1", "30.00")
        command = {"type": "reserve", "tenant_id": "acme", "budget_id": "b1", "amount": "10.00",
                   "currency": "USD", "ref_id": "rw-1", "command_id": "retry-me"}  # fmt: skip
        first = client.await_outcome(client.send(command), 30)
        again = client.await_outcome(client.send(command), 30)
    assert not first.redelivered and again.redelivered
    assert (again.sequence, again.event_type) == (first.sequence, "funds_reserved")


def test_the_async_client_end_to_end(settings: Settings) -> None:
    async def flow() -> list[object]:
        async with AsyncLedgerClient(settings) as client:
            opened = await client.send({"type": "open_budget", "tenant_id": "acme",
                                        "budget_id": "b1", "currency": "USD",
                                        "period": "rolling"})  # fmt: skip
            funded = await client.fund("acme", "b1", "25.00", "USD")
            assert (await client.await_outcome(opened, 30)).accepted
            assert (await client.await_outcome(funded, 30)).accepted
            refs = [await client.reserve("acme", "b1", "10.00", "USD", f"rw-{i}") for i in range(3)]
            # Three tasks wait at once; one poller answers them all.
            results = await asyncio.gather(*(client.await_outcome(r, 30) for r in refs))
            charged = await client.await_outcome(await client.charge("acme", "b1", "rw-0"), 30)
            released = await client.await_outcome(await client.release("acme", "b1", "rw-1"), 30)
            return [*results, charged, released]

    with running_consumer(settings):
        outcomes = asyncio.run(flow())
    assert [type(o).__name__ for o in outcomes] == ["Accepted"] * 2 + ["Refused"] + ["Accepted"] * 2
    last = outcomes[-1]
    assert isinstance(last, Accepted) and last.event_type == "reservation_released"
    assert last.balances == Balances(Decimal("25.00"), Decimal("0.00"), Decimal("10.00"),
                                     Decimal("15.00"), Decimal("40.00"))  # fmt: skip


def _java_murmur2(data: bytes) -> int:
    # Written from org.apache.kafka.common.utils.Utils.murmur2, independently of ledger/.
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = data[i * 4] | data[i * 4 + 1] << 8 | data[i * 4 + 2] << 16 | data[i * 4 + 3] << 24
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest, base = length % 4, length & ~3
    if rest == 3:
        h ^= data[base + 2] << 16
    if rest >= 2:
        h ^= data[base + 1] << 8
    if rest >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h  # unsigned here; Java's toPositive keeps the low 31 bits either way


def test_commands_land_where_a_java_producer_would_put_them(settings: Settings) -> None:
    from budget_ledger.ledger.partitioning import partition_for

    wide = settings.model_copy(update={"topic_partitions": 12})
    create_topics(wide)
    keys = [(f"tenant-{i % 7}", f"budget-{i}") for i in range(60)] + [("zw", "ñ-ü"), ("a", "b")]
    with LedgerClient(wide) as client:
        for tenant, budget in keys:
            client.release(tenant, budget, "rw-1")
        client.flush()
    landed = {m.key(): m.partition() for m in read_topic(wide, wide.topic_commands, len(keys))}
    for tenant, budget in keys:
        key = f"{tenant}:{budget}".encode()
        expected = (_java_murmur2(key) & 0x7FFFFFFF) % 12
        assert landed[key] == expected, key
        assert partition_for(key, 12) == expected
    assert len(set(landed.values())) > 6  # the keys really spread over the partitions


def test_commands_sent_but_never_awaited_do_not_pile_up(settings: Settings) -> None:
    with running_consumer(settings), LedgerClient(settings, max_tracked=2) as client:
        _open_and_fund(client, "acme", "b1", "30.00")
        refs = [client.reserve("acme", "b1", "1.00", "USD", f"rw-{i}") for i in range(3)]
        # Only the two newest are tracked; the oldest was dropped when the third was sent.
        assert [client.await_outcome(r, 30).sequence for r in refs[1:]] == [4, 5]
        with pytest.raises(OutcomeTimeout):
            client.await_outcome(refs[0], timeout=1)
        untracked = client.release("acme", "b1", "rw-1", track=False)
        client.flush()
        assert not client.take_ready(untracked)


def test_cli_send_wait_prints_the_answer_and_exits_1_on_a_refusal(settings: Settings) -> None:
    with running_consumer(settings), LedgerClient(settings) as client:
        _open_and_fund(client, "acme", "b1", "10.00")
        ok = cli(settings, "send", "--wait", '{"command_id": "c1", "type": "reserve", '
                 '"tenant_id": "acme", "budget_id": "b1", "amount": "4.00", "currency": "USD", '
                 '"ref_id": "rw-1"}')  # fmt: skip
        no = cli(settings, "send", "--wait", '{"command_id": "c2", "type": "reserve", '
                 '"tenant_id": "acme", "budget_id": "b1", "amount": "7.00", "currency": "USD", '
                 '"ref_id": "rw-2"}')  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "funds_reserved (sequence 3)" in ok.stdout and "available=6.00" in ok.stdout
    assert no.returncode == 1, no.stdout + no.stderr
    assert "c2 (acme:b1) refused: insufficient_funds" in no.stderr
