"""The Lua scripts behind msgcore's Redis guarantees.

Each script runs atomically on the server, so two processes never both move, retry or
dead-letter the same entry: every settlement starts with ``XACK`` and does its writes
only when that acknowledged the entry (a worker whose entry was reclaimed meanwhile
gets 0 and changes nothing). Times come from the server's ``TIME``, so relative delays
do not depend on the clocks of the processes.

Delayed and retry copies wait in sorted sets scored by their due time (ms). A member
is ``cmsgpack.pack({uid, fields, origin, attempt})``: the entry's fields without
msgcore's own, the id of the original entry (or ``false``) and the delivery number
the copy will have (0: a fresh message).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from msgcore.adapters.redis.keys import ATTEMPT_FIELD, ORIGIN_FIELD

__all__ = [
    "ACK",
    "DEAD_LETTER",
    "DROP_CONSUMER",
    "ENSURE_GROUPS",
    "MOVE_DUE",
    "RECLAIM",
    "REQUEUE",
    "SCHEDULE",
    "LuaScript",
]

ScriptArg = str | bytes | int | float

_PRELUDE = f"""
local ATTEMPT = '{ATTEMPT_FIELD}'
local ORIGIN = '{ORIGIN_FIELD}'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function append(dst, src, from)
  for i = from or 1, #src do dst[#dst + 1] = src[i] end
  return dst
end

-- XADD a copy: fields, then the origin id and the delivery number when given
local function xadd_copy(stream, fields, origin, attempt, maxlen)
  local args = {{stream}}
  if maxlen and maxlen > 0 then append(args, {{'MAXLEN', '~', maxlen}}) end
  args[#args + 1] = '*'
  append(args, fields)
  if origin then append(args, {{ORIGIN, origin}}) end
  if attempt and attempt > 0 then append(args, {{ATTEMPT, attempt}}) end
  return redis.call('XADD', unpack(args))
end

-- acknowledge an entry for a group; 0 when it is no longer pending (fencing)
local function settle(stream, group, id, delete)
  local acked = redis.call('XACK', stream, group, id)
  if acked == 1 and delete == '1' then redis.call('XDEL', stream, id) end
  return acked
end
"""


class LuaScript:
    """One script: ``EVALSHA``, loading it with ``EVAL`` the first time a server lacks it."""

    def __init__(self, name: str, body: str) -> None:
        self.name = name
        self.body = body
        self.source = _PRELUDE + body
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()

    def __repr__(self) -> str:
        return f"LuaScript({self.name!r})"

    async def __call__(
        self, client: Redis, keys: Sequence[str], args: Sequence[ScriptArg] = ()
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


async def run_atomically(
    client: Redis, calls: Sequence[tuple[LuaScript, Sequence[str], Sequence[ScriptArg]]]
) -> list[Any]:
    """Run scripts as one: one command and one reply on the wire (a ``MULTI`` of scripts
    is four, each packed and parsed by redis-py), and no other client's command runs
    between them. Returns each script's reply, in order. As inside ``MULTI``, a script
    that errors does not stop the ones after it; the first error is then raised."""
    keys: list[str] = []
    counts: list[ScriptArg] = []
    rest: list[ScriptArg] = []
    for _, call_keys, call_args in calls:
        keys += call_keys
        counts += [len(call_keys), len(call_args)]
        rest += call_args
    replies = list(await _composite(tuple(c[0] for c in calls))(client, keys, [*counts, *rest]))
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


_COMPOSITES: dict[tuple[LuaScript, ...], LuaScript] = {}


def _composite(parts: tuple[LuaScript, ...]) -> LuaScript:
    """One script running ``parts`` in order, each as a function of its own KEYS and
    ARGV. ARGV starts with each part's key and argument counts. A part that errors has
    its error in its place among the replies; the parts after it still run."""
    found = _COMPOSITES.get(parts)
    if found is None:
        functions = "".join(
            f"parts[{i}] = function(KEYS, ARGV)\n{part.body}\nend\n"
            for i, part in enumerate(parts, 1)
        )
        found = LuaScript(
            "+".join(part.name for part in parts),
            f"""
local parts = {{}}
{functions}
local n = #parts
local replies, k, a = {{}}, 0, 2 * n
for i = 1, n do
  local nk, na = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local part_keys, part_args = {{}}, {{}}
  for j = 1, nk do part_keys[j] = KEYS[k + j] end
  for j = 1, na do part_args[j] = ARGV[a + j] end
  k, a = k + nk, a + na
  local ok, reply = pcall(parts[i], part_keys, part_args)
  if not ok then
    reply = {{err = type(reply) == 'table' and reply.err or tostring(reply)}}
  elseif reply == nil then
    reply = false  -- a nil would end the reply array here
  end
  replies[i] = reply
end
return replies
""",
        )
        _COMPOSITES[parts] = found
    return found


ENSURE_GROUPS = LuaScript(
    "ensure_groups",
    """
-- KEYS: stream, retry stream. ARGV: group.
-- The first group of a stream starts at 0 and so takes what was published before any
-- group existed; a group that joins later starts at $ (new messages only).
local function has_group(key, group)
  if redis.call('EXISTS', key) == 0 then return false, 0 end
  local groups = redis.call('XINFO', 'GROUPS', key)
  for _, g in ipairs(groups) do
    for i = 1, #g, 2 do
      if g[i] == 'name' and g[i + 1] == group then return true, #groups end
    end
  end
  return false, #groups
end
local exists, count = has_group(KEYS[1], ARGV[1])
local created = ''
if not exists then
  created = (count == 0) and '0' or '$'
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], created, 'MKSTREAM')
end
if not has_group(KEYS[2], ARGV[1]) then
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[1], '0', 'MKSTREAM')
end
return created
""",
)

SCHEDULE = LuaScript(
    "schedule",
    """
-- KEYS: delayed set. ARGV: uid, 'in' (ms from now) or 'at' (epoch ms), ms, fields...
local due = tonumber(ARGV[3])
if ARGV[2] == 'in' then due = now_ms() + due end
local member = cmsgpack.pack({ARGV[1], append({}, ARGV, 4), false, 0})
redis.call('ZADD', KEYS[1], due, member)
return due
""",
)

ACK = LuaScript(
    "ack",
    """
-- KEYS: stream. ARGV: group, id, delete (1 for retry streams).
return settle(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
""",
)

REQUEUE = LuaScript(
    "requeue",
    """
-- KEYS: stream, retry stream, retry set.
-- ARGV: group, id, delete, uid, delay ms ('' = now), origin, attempt, fields...
-- Hands the entry back to its group only: into the retry stream now, or into the
-- retry set until its backoff is over.
if settle(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) == 0 then return 0 end
local fields = append({}, ARGV, 8)
local attempt = tonumber(ARGV[7])
if ARGV[5] == '' then
  xadd_copy(KEYS[2], fields, ARGV[6], attempt, 0)
else
  local member = cmsgpack.pack({ARGV[4], fields, ARGV[6], attempt})
  redis.call('ZADD', KEYS[3], now_ms() + tonumber(ARGV[5]), member)
end
return 1
""",
)

DEAD_LETTER = LuaScript(
    "dead_letter",
    """
-- KEYS: stream, dead-letter stream, dead-letter index.
-- ARGV: group, id, delete, channel, record field/value pairs...
if settle(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
redis.call('SADD', KEYS[3], ARGV[4])
return 1
""",
)

RECLAIM = LuaScript(
    "reclaim",
    """
-- KEYS: stream, retry stream. ARGV: group, consumer, min idle ms, start, count, delete.
-- Entries pending longer than the lease (their worker died or froze) go back to the
-- group as copies with the next delivery number; the stale entry is acknowledged.
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                     'COUNT', ARGV[5])
local moved = 0
for _, entry in ipairs(r[2]) do
  if type(entry) == 'table' and type(entry[2]) == 'table' then
    local id, flat = entry[1], entry[2]
    local fields, attempt, origin = {}, 1, id
    for i = 1, #flat, 2 do
      if flat[i] == ATTEMPT then attempt = tonumber(flat[i + 1]) or 1
      elseif flat[i] == ORIGIN then origin = flat[i + 1]
      else append(fields, {flat[i], flat[i + 1]}) end
    end
    xadd_copy(KEYS[2], fields, origin, attempt + 1, 0)
    settle(KEYS[1], ARGV[1], id, ARGV[6])
    moved = moved + 1
  end
end
return {r[1], moved}
""",
)

MOVE_DUE = LuaScript(
    "move_due",
    """
-- KEYS: (sorted set, stream) pairs. ARGV: limit per set, then maxlen per pair (0: none).
-- Returns {moved, earliest due left (ms, -1: none), server now (ms)}.
local now = now_ms()
local moved, next_due = 0, -1
for p = 1, #KEYS, 2 do
  local set, stream = KEYS[p], KEYS[p + 1]
  local maxlen = tonumber(ARGV[1 + (p + 1) / 2]) or 0
  local due = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, ARGV[1])
  for _, member in ipairs(due) do
    local ok, item = pcall(cmsgpack.unpack, member)
    if ok and type(item) == 'table' and type(item[2]) == 'table' then
      xadd_copy(stream, item[2], item[3], tonumber(item[4]), maxlen)
      moved = moved + 1
    end
    redis.call('ZREM', set, member)
  end
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if first[2] then
    local score = tonumber(first[2])
    if next_due < 0 or score < next_due then next_due = score end
  end
end
return {moved, next_due, now}
""",
)

DROP_CONSUMER = LuaScript(
    "drop_consumer",
    """
-- KEYS: streams. ARGV: group, consumer. Forget the consumer where it holds nothing.
local dropped = 0
for _, key in ipairs(KEYS) do
  local ok, pending = pcall(redis.call, 'XPENDING', key, ARGV[1], '-', '+', 1, ARGV[2])
  if ok and #pending == 0 then
    redis.call('XGROUP', 'DELCONSUMER', key, ARGV[1], ARGV[2])
    dropped = dropped + 1
  end
end
return dropped
""",
)
