"""``channel_stats`` on the real transports: every state a group's messages can be in."""

from __future__ import annotations

from typing import Any

from msgcore import RetryPolicy, Router
from msgcore.ops import GroupStats, channel_stats
from tests.contract.harness import Sink, wait_until

from .conftest import Ops

PUBLISHED = 3
DELAYED = 2


async def test_stats_count_waiting_delayed_retrying_and_dead(ops: Ops) -> None:
    work = ops.channel("work")
    audited = Sink()

    async def bill(payload: dict[str, Any]) -> None:
        raise RuntimeError("billing is down")

    async def audit(payload: dict[str, Any]) -> None:
        audited.add(payload)

    async def remind(payload: dict[str, Any]) -> None:
        raise RuntimeError("not yet")

    def declare(router: Router, *, with_audit: bool) -> Router:
        router.subscriber(work, group="billing", retry=RetryPolicy(max_attempts=1))(bill)
        # the first retry waits a minute: it is still waiting when the numbers are read
        router.subscriber(work, group="reminders", retry=RetryPolicy(max_attempts=3, backoff=60))(
            remind
        )
        if with_audit:
            router.subscriber(work, group="audit")(audit)
        return router

    # every group exists (and is registered) before anything is published, as in
    # production; then the audit group's workers are down while messages arrive
    async with ops.run(ops.broker(declare(Router(), with_audit=True))):
        pass
    publishing = Router()
    to_work = publishing.publisher(work)
    async with ops.broker(publishing):
        for n in range(PUBLISHED):
            await to_work.publish({"n": n})
        for n in range(DELAYED):
            await to_work.publish({"n": f"later {n}"}, delay=3600)

    settings = ops.settings()

    async def by_group() -> dict[str, GroupStats]:
        return {s.group: s for s in await channel_stats(settings, channel=work)}

    async with ops.run(ops.broker(declare(Router(), with_audit=False))):

        async def settled() -> bool:
            stats = await by_group()
            return stats["billing"].dead == PUBLISHED and stats["reminders"].retrying == PUBLISHED

        await wait_until(settled, within=20, interval=0.1, what="dead letters and retries")
    stats = await by_group()
    everything = await channel_stats(settings)

    assert sorted(stats) == ["audit", "billing", "reminders"]
    assert sorted((s.channel, s.group) for s in everything) == [
        (work, "audit"),
        (work, "billing"),
        (work, "reminders"),
    ]
    audit_stats, billing, reminders = stats["audit"], stats["billing"], stats["reminders"]
    assert not audited.items

    # the group whose workers were down has everything waiting
    assert audit_stats.waiting == PUBLISHED
    assert audit_stats.delayed == DELAYED
    assert (audit_stats.retrying, audit_stats.dead) == (0, 0)
    # the failing groups: dead letters, or retries waiting out their backoff
    assert (billing.waiting, billing.retrying, billing.dead) == (0, 0, PUBLISHED)
    assert (reminders.waiting, reminders.retrying, reminders.dead) == (0, PUBLISHED, 0)
    assert billing.delayed == reminders.delayed == DELAYED

    for s in stats.values():
        # every worker stopped: nothing is being handled
        assert s.running == (None if ops.name == "rabbit" else 0)
        assert s.consumers == (None if ops.name == "sqlite" else 0)

    if ops.name == "rabbit":
        assert audit_stats.oldest_age is None
    else:
        assert audit_stats.oldest_age is not None
        assert 0 <= audit_stats.oldest_age < 60
    assert billing.oldest_age is None

    if ops.name == "redis":
        assert audit_stats.delivered == 0
        assert billing.delivered == PUBLISHED
        assert reminders.delivered == PUBLISHED
    else:
        assert all(s.delivered is None for s in stats.values())


async def test_stats_of_a_channel_nobody_declared(ops: Ops) -> None:
    router = Router()

    @router.subscriber(ops.channel("something"))
    async def handle(payload: dict[str, Any]) -> None: ...

    async with ops.run(ops.broker(router)):
        pass
    assert await channel_stats(ops.settings(), channel=ops.channel("nothing")) == []
