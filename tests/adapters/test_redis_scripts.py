"""Scripts run as one (``run_atomically``) on a real Redis: what the settlement of a job
relies on when it sends its ack and its store writes as a single command."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from msgcore.adapters.redis import scripts

ECHO = scripts.LuaScript("t_echo", "return {KEYS[1], ARGV[1], #KEYS, #ARGV}")
SET = scripts.LuaScript("t_set", "redis.call('SET', KEYS[1], ARGV[1])\nreturn nil")
INCR = scripts.LuaScript("t_incr", "return redis.call('INCR', KEYS[1])")


async def test_each_script_gets_its_own_keys_and_args_and_reply(redis: Redis, unique: str) -> None:
    replies = await scripts.run_atomically(
        redis,
        [
            (ECHO, [f"{unique}:a"], ["x", 2]),
            (SET, [f"{unique}:b"], ["v"]),
            (ECHO, [f"{unique}:c", f"{unique}:d"], [3]),
        ],
    )
    # a script returning nil keeps its place (None) instead of ending the list
    assert replies == [
        [f"{unique}:a".encode(), b"x", 1, 2],
        None,
        [f"{unique}:c".encode(), b"3", 2, 1],
    ]
    assert await redis.get(f"{unique}:b") == b"v"


async def test_an_error_is_raised_after_the_scripts_around_it_ran(
    redis: Redis, unique: str
) -> None:
    await redis.set(f"{unique}:n", "not a number")
    with pytest.raises(ResponseError, match="not an integer"):
        await scripts.run_atomically(
            redis,
            [
                (SET, [f"{unique}:before"], ["1"]),
                (INCR, [f"{unique}:n"], []),
                (SET, [f"{unique}:after"], ["2"]),
            ],
        )
    # as inside MULTI: the failing script does not stop the others
    assert await redis.mget(f"{unique}:before", f"{unique}:after") == [b"1", b"2"]


async def test_scripts_the_server_has_not_seen_are_loaded(redis: Redis, unique: str) -> None:
    # a body of this test's own: neither the parts nor their composite are loaded yet
    # (SCRIPT FLUSH would do the same, for every other client of the server as well)
    fresh = scripts.LuaScript(
        f"t_incr_{unique}", f"-- {unique}\nreturn redis.call('INCR', KEYS[1])"
    )
    calls = [(fresh, [f"{unique}:count"], []), (fresh, [f"{unique}:count"], [])]
    assert await scripts.run_atomically(redis, calls) == [1, 2]
    assert await scripts.run_atomically(redis, calls) == [3, 4]
