"""Fixtures of the transport adapter tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis


@pytest.fixture
async def redis(redis_url: str, unique: str) -> AsyncIterator[Redis]:
    """A plain client; every key of this test is deleted afterwards."""
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"{unique}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
