"""Dead letters through ``msgcore.ops`` on the real transports: list, show, replay, purge."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from msgcore import Client, ConfigurationError, JobStatus, RetryPolicy, Router
from msgcore.constants import DEFAULT_GROUP
from msgcore.ops import (
    DeadLetter,
    channel_stats,
    get_dead_letter,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
)
from tests.contract.harness import Sink, wait_until

from .conftest import Ops

ORDERS = 3
EMAILS = 2


def _unknown_id(ops: Ops, channel: str) -> str:
    """An id in this transport's form that names no dead letter."""
    if ops.name == "sqlite":
        return "1700000000000-999999"
    if ops.name == "redis":
        return f"1-0@{channel}"
    return f"0123456789abcdef@{channel}.billing.dead"


async def test_list_show_replay_and_purge(ops: Ops) -> None:
    orders, emails = ops.channel("orders"), ops.channel("emails")
    settings = ops.settings()
    billed = Sink()
    failing = True
    router = Router()

    @router.subscriber(orders, group="billing", retry=RetryPolicy(max_attempts=1))
    async def bill(order: dict[str, Any]) -> None:
        if failing:
            raise RuntimeError(f"card declined for order {order['id']}")
        billed.add(order)

    @router.subscriber(emails, retry=RetryPolicy(max_attempts=1))
    async def send(email: dict[str, Any]) -> None:
        raise ValueError("smtp is down")

    to_orders, to_emails = router.publisher(orders), router.publisher(emails)

    async with ops.run(ops.broker(router)):
        for n in range(ORDERS):
            await to_orders.publish({"id": n}, headers={"x-tenant": "acme"})
        for n in range(EMAILS):
            await to_emails.publish({"to": n})

        async def all_dead() -> list[DeadLetter] | None:
            found = await list_dead_letters(settings)
            return found if len(found) >= ORDERS + EMAILS else None

        everything: list[DeadLetter] = await wait_until(
            all_dead, within=20, interval=0.1, what="dead letters"
        )

        # list: oldest first, filtered, limited
        assert len(everything) == ORDERS + EMAILS
        assert len({d.id for d in everything}) == len(everything)
        assert [d.failed_at for d in everything] == sorted(d.failed_at for d in everything)
        dead_orders = await list_dead_letters(settings, channel=orders)
        assert sorted(json.loads(d.body)["id"] for d in dead_orders) == list(range(ORDERS))
        for d in dead_orders:
            assert (d.channel, d.group, d.attempts) == (orders, "billing", 1)
            assert d.reason == "failed 1 of 1 attempts"
            assert d.error is not None
            assert "card declined" in d.error
            # the publisher's headers only (Redis showed its envelope's entries too);
            # msgcore's own x-msgcore-* headers may ride along
            shown = {k: v for k, v in d.headers.items() if not k.startswith("x-msgcore-")}
            assert shown == {"x-tenant": "acme"}
            assert d.correlation_id
        dead_emails = await list_dead_letters(settings, group=DEFAULT_GROUP)
        assert [(d.channel, d.group) for d in dead_emails] == [(emails, DEFAULT_GROUP)] * EMAILS
        assert await list_dead_letters(settings, channel=emails, group="billing") == []
        assert len(await list_dead_letters(settings, limit=2)) == 2
        assert await list_dead_letters(settings, limit=0) == []

        # show
        first = dead_orders[0]
        assert await get_dead_letter(settings, first.id) == first
        assert await get_dead_letter(settings, "not an id") is None
        assert await get_dead_letter(settings, _unknown_id(ops, orders)) is None

        # replay: back to its group as a first attempt, handled again; unknown ids skipped
        failing = False
        assert await replay_dead_letters(settings, [first.id, _unknown_id(ops, orders)]) == 1
        assert await billed.wait(1) == [json.loads(first.body)]
        assert await get_dead_letter(settings, first.id) is None
        assert await replay_dead_letters(settings, [first.id]) == 0
        assert await replay_dead_letters(settings, []) == 0
        assert len(await list_dead_letters(settings, channel=orders)) == ORDERS - 1
        assert await replay_dead_letters(settings, channel=orders) == ORDERS - 1
        await billed.wait(ORDERS)
        assert sorted(o["id"] for o in billed.items) == list(range(ORDERS))
        assert await list_dead_letters(settings, channel=orders) == []

    # purge: by age, by id, by channel and group
    assert await purge_dead_letters(settings, older_than=3600) == 0
    assert await purge_dead_letters(settings, [dead_emails[0].id]) == 1
    assert await purge_dead_letters(settings, [dead_emails[0].id]) == 0
    assert await list_dead_letters(settings) == [dead_emails[1]]
    assert await purge_dead_letters(settings, channel=emails, group=DEFAULT_GROUP) == 1
    assert await list_dead_letters(settings) == []
    stats = {(s.channel, s.group): s for s in await channel_stats(settings)}
    assert stats[(orders, "billing")].dead == 0
    assert stats[(emails, DEFAULT_GROUP)].dead == 0


async def test_purge_everything_and_by_age(ops: Ops) -> None:
    tasks = ops.channel("tasks")
    settings = ops.settings()
    router = Router()

    @router.subscriber(tasks, retry=RetryPolicy(max_attempts=1))
    async def run(task: dict[str, Any]) -> None:
        raise RuntimeError("broken")

    to_tasks = router.publisher(tasks)
    async with ops.run(ops.broker(router)):
        for n in range(3):
            await to_tasks.publish({"n": n})

        async def three() -> bool:
            return len(await list_dead_letters(settings)) == 3

        await wait_until(three, within=20, interval=0.1, what="3 dead letters")

    assert await purge_dead_letters(settings, older_than=3600) == 0
    # NaN purged every dead letter on SQLite (a NULL bound matched all) and none elsewhere
    bad_calls: list[Any] = [
        purge_dead_letters(settings, older_than=math.nan),
        purge_dead_letters(settings, older_than="3600"),
        purge_dead_letters(settings, ids=[123]),
        list_dead_letters(settings, limit=1.5),
        list_dead_letters(settings, limit=2**63),
        list_dead_letters(settings, channel="a*b"),  # a bare ValueError on RabbitMQ
        list_dead_letters("sqlite:///x.db"),
        get_dead_letter(settings, None),
        replay_dead_letters(settings, ids=123),
    ]
    for call in bad_calls:
        with pytest.raises(ConfigurationError):
            await call
    assert len(await list_dead_letters(settings)) == 3
    assert await purge_dead_letters(settings, older_than=0) == 3
    assert await list_dead_letters(settings) == []
    assert await purge_dead_letters(settings) == 0


async def test_replay_runs_a_dead_job_again(ops: Ops) -> None:
    """A job submitted with ``Client`` is recorded ``dead``; replayed, it runs again
    (instead of being acknowledged as finished) and completes."""
    renders = ops.channel("renders")
    settings = ops.settings()
    failing = True
    router = Router()

    @router.subscriber(renders, retry=RetryPolicy(max_attempts=1))
    async def render(page: dict[str, Any]) -> str:
        if failing:
            raise RuntimeError("renderer crashed")
        return f"page {page['n']}"

    async with Client(settings=settings) as client:

        async def status() -> JobStatus:
            return await (await client.get_job(job.id)).status()

        async with ops.run(ops.broker(router)):
            job = await client.submit(renders, {"n": 7})
            await wait_until(
                lambda: _is(status(), JobStatus.DEAD), within=20, interval=0.1, what="a dead job"
            )
            await job.refresh()  # this handle has seen it dead
        failing = False
        assert await replay_dead_letters(settings, channel=renders) == 1
        # no worker runs: the replayed job reads as queued again, not as unknown
        record = (await client.get_job(job.id)).record
        assert (record.status, record.channel, record.error_type) == (
            JobStatus.PENDING,
            renders,
            None,
        )
        async with ops.run(ops.broker(router)):
            assert await (await client.get_job(job.id)).result(timeout=20) == "page 7"
            # and the handle that saw it dead reads it again instead of raising JobFailed
            assert await job.result(timeout=20) == "page 7"


async def _is(status: Any, expected: JobStatus) -> bool:
    try:
        return bool(await status == expected)
    except Exception:  # not recorded yet
        return False
