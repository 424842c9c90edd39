"""The Lua scripts of ``msgcore.ops`` on Redis.

Counting and removal run on the server: a dead-letter stream's bodies never cross the
network to be counted, and a replay cannot deliver an entry that another replay or
purge removed a moment before (the ``XDEL`` decides, atomically with the ``XADD``).
"""

from __future__ import annotations

from msgcore.adapters.redis.scripts import LuaScript

__all__ = ["REMOVE", "REPLAY", "TALLY"]

TALLY = LuaScript(
    "ops_tally",
    """
-- KEYS: stream. ARGV: after (an id, exclusive; '-' from the start), count, field ('').
-- One batch: {last id read ('' if none), entries read, value, n, value, n, ...} where
-- the values are those of ``field`` (missing: '') and n how many entries had it.
local start = ARGV[1]
if start ~= '-' then start = '(' .. start end
local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', ARGV[2])
local counts, order, last = {}, {}, ''
for _, entry in ipairs(entries) do
  last = entry[1]
  if ARGV[3] ~= '' then
    local fields, value = entry[2], ''
    for i = 1, #fields, 2 do
      if fields[i] == ARGV[3] then value = fields[i + 1]; break end
    end
    if counts[value] == nil then counts[value] = 0; order[#order + 1] = value end
    counts[value] = counts[value] + 1
  end
end
local out = {last, #entries}
for _, value in ipairs(order) do
  out[#out + 1] = value
  out[#out + 1] = counts[value]
end
return out
""",
)

_FORGET_EMPTY = """
-- an emptied dead-letter stream goes, and its channel leaves the index
local function forget_if_empty(stream, index, channel)
  if redis.call('XLEN', stream) == 0 then
    redis.call('DEL', stream)
    redis.call('SREM', index, channel)
  end
end
"""

REPLAY = LuaScript(
    "ops_replay",
    _FORGET_EMPTY
    + """
-- KEYS: dead-letter stream, the group's retry stream, dead-letter index.
-- ARGV: dead-letter entry id, channel, fields of the copy...
-- 1 if the dead letter was there and is now the group's again, else 0.
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
forget_if_empty(KEYS[1], KEYS[3], ARGV[2])
return 1
""",
)

REMOVE = LuaScript(
    "ops_remove",
    _FORGET_EMPTY
    + """
-- KEYS: dead-letter stream, dead-letter index. ARGV: channel, then entry ids, or none
-- for every entry. How many were removed.
local removed
if #ARGV == 1 then
  removed = redis.call('XLEN', KEYS[1])
  redis.call('DEL', KEYS[1])
else
  removed = redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
end
forget_if_empty(KEYS[1], KEYS[2], ARGV[1])
return removed
""",
)
