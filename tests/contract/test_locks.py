"""Per-key locks on every transport (in memory and real), the store beside it (RabbitMQ:
a SQLite file): one message per key at a time, timeouts retried then dead-lettered, a
message without a key dead at once, and clients excluding handlers."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from msgcore import Client, JobFailed, JobStatus, LockPolicy, RetryPolicy, Router

from .harness import Transport, running, wait_until


def beside(transport: Transport, tmp_path: Path) -> str | None:
    """The default store of each transport (RabbitMQ's in this test's directory)."""
    return f"sqlite:///{tmp_path / 'store.db'}" if transport.name == "rabbit" else None


async def no_locks_left(client: Client, prefix: str) -> bool:
    return await client.locks(prefix) == []


async def status_of(client: Client, job_id: str, status: JobStatus) -> bool:
    return (await client.get_job(job_id)).record.status is status


class Overlaps:
    """Which keys ran at once: per key (must never happen) and across keys (should)."""

    def __init__(self) -> None:
        self.running: Counter[str] = Counter()
        self.same_key: list[str] = []
        self.most_keys_at_once = 0
        self.done: list[Any] = []

    async def run(self, key: str, item: Any, seconds: float) -> None:
        self.running[key] += 1
        if self.running[key] > 1:
            self.same_key.append(key)
        self.most_keys_at_once = max(
            self.most_keys_at_once, sum(1 for v in self.running.values() if v)
        )
        try:
            await asyncio.sleep(seconds)
        finally:
            self.running[key] -= 1
        self.done.append(item)


async def test_one_message_per_key_at_a_time(
    transport: Transport, unique: str, tmp_path: Path
) -> None:
    router = Router(prefix=f"{unique}.")
    seen = Overlaps()
    orders = router.publisher("orders")

    @router.subscriber("orders", max_workers=6, lock="customer")
    async def place(order: dict[str, Any]) -> int:
        await seen.run(order["customer"], order["n"], 0.03)
        return int(order["n"])

    async with running(transport, router, beside(transport, tmp_path)) as client:
        payloads = [{"customer": "abc"[n % 3], "n": n} for n in range(18)]
        jobs = await client.submit_many(f"{unique}.orders", payloads[:12])
        # plain publishes (no job id) take the same locks
        await asyncio.gather(*(orders.publish(p) for p in payloads[12:]))
        waited = await client.wait(jobs, timeout=30)
        assert len(waited.done) == 12
        assert sorted([await j.result() for j in jobs]) == list(range(12))
        await wait_until(lambda: len(seen.done) == 18, within=30, what="18 handled")
        assert seen.same_key == []
        assert sorted(seen.done) == list(range(18))
        if transport.real:
            # different customers did run side by side (six workers, three keys)
            assert seen.most_keys_at_once >= 2
        # the last handler has returned; its release follows right after
        await wait_until(
            lambda: no_locks_left(client, f"{unique}."), within=5, what="every lock released"
        )


@pytest.mark.real_only
async def test_lock_timeout_is_retried_then_dead_lettered(
    transport: Transport, unique: str, tmp_path: Path
) -> None:
    router = Router(prefix=f"{unique}.")
    ran: list[int] = []
    policy = LockPolicy("customer", wait=0.1)

    @router.subscriber(
        "orders", lock=policy, retry=RetryPolicy(max_attempts=3, backoff=0.2, jitter=0)
    )
    async def place(order: dict[str, Any]) -> int:
        ran.append(order["n"])
        return int(order["n"])

    async with running(transport, router, beside(transport, tmp_path)) as client:
        # a client holding the handler's key ("{channel}:{value}") excludes it
        async with client.lock(f"{unique}.orders:x") as held:
            job = await client.submit(f"{unique}.orders", {"customer": "x", "n": 1})
            with pytest.raises(JobFailed) as caught:
                await job.result(timeout=30)
            assert held.key == f"{unique}.orders:x"
            # the same key released before the retries run out: the job completes
            later = await client.submit(f"{unique}.orders", {"customer": "x", "n": 2})
            await wait_until(
                lambda: status_of(client, later.id, JobStatus.RETRYING),
                within=20,
                what="the second job's first attempt to time out",
            )
        assert await later.result(timeout=30) == 2
        assert (await later.status()).value == "completed"
        assert later.record.attempts >= 2
        assert ran == [2]

        error = caught.value
        assert error.error_type == "LockTimeoutError"
        assert error.attempts == 3
        assert f"The lock '{unique}.orders:x' is held by client on " in error.error_message
        dead = await transport.wait_dead_letters(client._broker, f"{unique}.orders", 1)
        assert len(dead) == 1
        assert "LockTimeoutError" in dead[0].reason or "LockTimeoutError" in (dead[0].error or "")


@pytest.mark.real_only
async def test_a_message_without_its_key_is_dead_at_once(
    transport: Transport, unique: str, tmp_path: Path
) -> None:
    router = Router(prefix=f"{unique}.")
    ran: list[Any] = []

    @router.subscriber("orders", lock="customer")
    async def place(order: dict[str, Any]) -> None:
        ran.append(order)

    async with running(transport, router, beside(transport, tmp_path)) as client:
        job = await client.submit(f"{unique}.orders", {"n": 1})
        with pytest.raises(JobFailed) as caught:
            await job.result(timeout=15)
        assert caught.value.error_type == "LockKeyError"
        assert caught.value.attempts == 1
        assert "no 'customer' field" in caught.value.error_message
        assert ran == []
        dead = await transport.wait_dead_letters(client._broker, f"{unique}.orders", 1)
        assert "LockKeyError" in f"{dead[0].reason} {dead[0].error}"
        assert dead[0].reason.startswith("no lock key")  # was "invalid payload: ..."
        assert dead[0].attempts == 1
