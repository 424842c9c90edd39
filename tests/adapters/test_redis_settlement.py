"""A Redis settlement sent again after a connection drop, on a real server.

The first try can reach Redis and settle the entry before the connection drops, the
reply lost with it. The second try then finds the entry no longer pending. That is the
first try's doing, not a lost lease: it must not be logged as one (a warning that tells
the operator to raise ``lease_seconds``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from faststream.redis.parser import BinaryMessageFormatV1
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from msgcore.adapters.redis.keys import ChannelKeys
from msgcore.adapters.redis.settlement import Delivery, Settlement
from msgcore.retry import RetryPolicy
from tests.contract.harness import delete_redis_keys

GROUP = "g"


class _ReplyLost:
    """A client whose first script call runs on the server, then raises as if the
    connection dropped before the reply arrived."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.calls = 0

    async def evalsha(self, *args: Any) -> Any:
        self.calls += 1
        result = await self.client.evalsha(*args)
        if self.calls == 1:
            raise RedisConnectionError("Connection closed by server.")
        return result

    async def eval(self, *args: Any) -> Any:
        return await self.client.eval(*args)


@dataclass
class _Held:
    """One entry read by consumer ``c`` of group ``g`` and held by a ``Settlement``."""

    client: Redis
    keys: ChannelKeys
    settlement: Settlement
    delivery: Delivery
    lines: list[tuple[int, str]]


@asynccontextmanager
async def _held_entry(
    redis_url: str, unique: str, wrap: Callable[[Redis], Any] = lambda client: client
) -> AsyncIterator[_Held]:
    """An entry held by a Settlement whose Redis client is ``wrap(client)``."""
    client = Redis.from_url(redis_url)
    keys = ChannelKeys(f"{unique}.ch", f"{unique}:")
    lines: list[tuple[int, str]] = []
    try:
        await client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
        await client.xadd(keys.stream, {"data": b"x"})
        wrapped = wrap(client)
        settlement = Settlement(
            client=lambda: wrapped,
            keys=keys,
            group=GROUP,
            consumer="c",
            retry=RetryPolicy(max_attempts=3),
            lease_seconds=3.0,
            message_format=BinaryMessageFormatV1,
            log=lambda text, level, extra: lines.append((level, text)),
        )
        [(stream, entries)] = await client.xreadgroup(GROUP, "c", {keys.stream: ">"}, count=1)
        settlement.hold(stream.decode(), entries)
        [delivery] = settlement.held
        yield _Held(client, keys, settlement, delivery, lines)
    finally:
        await delete_redis_keys(redis_url, f"*{unique}*")
        await client.aclose()


async def test_an_ack_sent_again_whose_first_try_landed_is_not_a_lost_lease(
    redis_url: str, unique: str
) -> None:
    async with _held_entry(redis_url, unique, _ReplyLost) as held:
        await held.settlement.ack(held.delivery)

        lost = held.settlement._client()
        assert isinstance(lost, _ReplyLost) and lost.calls == 2, "the ack was not sent again"
        assert (await held.client.xpending(held.keys.stream, GROUP))["pending"] == 0
        assert not [t for level, t in held.lines if level >= logging.WARNING], held.lines
        assert any("sent again" in t for _, t in held.lines), held.lines


async def test_a_refused_ack_without_a_drop_is_still_reported_as_a_lost_lease(
    redis_url: str, unique: str
) -> None:
    async with _held_entry(redis_url, unique) as held:
        # another worker reclaimed and settled it meanwhile
        await held.client.xack(held.keys.stream, GROUP, held.delivery.entry_id)

        await held.settlement.ack(held.delivery)

        assert [level for level, _ in held.lines] == [logging.WARNING], held.lines
        assert "no longer pending" in held.lines[0][1], held.lines
