"""The Lua scripts behind the Redis store's job transitions.

Each runs atomically on the server, so a terminal transition, its record's retention
(``PEXPIRE``) and its completion-feed entry (``XADD``) happen together or not at all,
and two workers can never both finish one job. Times are the caller's (``now``), the
same clock the SQLite store records.

A job is the hash ``KEYS[job]`` whose fields are those of ``JobRecord`` (absent field:
``None``); the hash exists exactly when the job does.
"""

from __future__ import annotations

from msgcore.adapters.redis.scripts import LuaScript
from msgcore.store.base import TERMINAL, JobStatus

__all__ = [
    "CANCEL_JOB",
    "CREATE_AND_PUBLISH",
    "CREATE_JOBS",
    "DROP_STALE",
    "FINISH_ATTEMPT",
    "START_ATTEMPT",
]

_TERMINAL = ", ".join(f"['{s}'] = true" for s in sorted(TERMINAL))

_STORE_PRELUDE = f"""
local TERMINAL = {{{_TERMINAL}}}

-- keep a terminal record for ms milliseconds ('' = for ever)
local function retain(key, ms)
  if ms == '' then redis.call('PERSIST', key) else redis.call('PEXPIRE', key, ms) end
end

local function to_feed(feed, maxlen, job_id, status)
  redis.call('XADD', feed, 'MAXLEN', '~', maxlen, '*', 'job_id', job_id, 'status', status)
end

-- a job nobody created (published without Client, or its record expired)
local function ensure(key, index, job_id, channel, now)
  if redis.call('EXISTS', key) == 1 then return end
  redis.call('HSET', key, 'channel', channel, 'created_at', now)
  redis.call('ZADD', index, now, job_id)
end
"""


def _script(name: str, body: str) -> LuaScript:
    return LuaScript(name, _STORE_PRELUDE + body)


CREATE_JOBS = _script(
    "store_create_jobs",
    """
-- KEYS: index, then the hash of each record.
-- ARGV per record: job_id, created_at, expire-at ms ('' = none), field count n, n pairs.
-- Returns per record 1 (created) or the stored hash (HGETALL) of the job that existed.
local out, a = {}, 1
for k = 2, #KEYS do
  local job_id, score, expire_at, n = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local first, last = a + 4, a + 3 + 2 * n
  a = last + 1
  if redis.call('EXISTS', KEYS[k]) == 1 then
    out[#out + 1] = redis.call('HGETALL', KEYS[k])
  else
    redis.call('HSET', KEYS[k], unpack(ARGV, first, last))
    if expire_at ~= '' then redis.call('PEXPIREAT', KEYS[k], expire_at) end
    redis.call('ZADD', KEYS[1], score, job_id)
    out[#out + 1] = 1
  end
end
return out
""",
)

START_ATTEMPT = _script(
    "store_start_attempt",
    f"""
-- KEYS: job, index. ARGV: job_id, channel, attempt, worker_id, now.
-- Returns the job's hash: unchanged when it is terminal, else running this attempt.
local status = redis.call('HGET', KEYS[1], 'status')
if status and TERMINAL[status] then return redis.call('HGETALL', KEYS[1]) end
ensure(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[5])
redis.call('HSET', KEYS[1], 'status', '{JobStatus.RUNNING}', 'attempts', ARGV[3],
           'worker_id', ARGV[4], 'started_at', ARGV[5])
return redis.call('HGETALL', KEYS[1])
""",
)

FINISH_ATTEMPT = _script(
    "store_finish_attempt",
    """
-- KEYS: job, index, feed.
-- ARGV: job_id, status, now, retention ms ('' = for ever), feed maxlen, pair count n,
-- n field/value pairs to set, then the fields to delete (they are None now).
-- Returns 0 when the job is terminal already (a late duplicate changes nothing).
local status = redis.call('HGET', KEYS[1], 'status')
if status and TERMINAL[status] then return 0 end
ensure(KEYS[1], KEYS[2], ARGV[1], '', ARGV[3])
local last = 6 + 2 * tonumber(ARGV[6])
redis.call('HSET', KEYS[1], unpack(ARGV, 7, last))
if #ARGV > last then redis.call('HDEL', KEYS[1], unpack(ARGV, last + 1)) end
if TERMINAL[ARGV[2]] then
  retain(KEYS[1], ARGV[4])
  to_feed(KEYS[3], ARGV[5], ARGV[1], ARGV[2])
end
return 1
""",
)

CANCEL_JOB = _script(
    "store_cancel_job",
    f"""
-- KEYS: job, feed. ARGV: job_id, now, retention ms ('' = for ever), expires_at, maxlen.
if redis.call('HGET', KEYS[1], 'status') ~= '{JobStatus.PENDING}' then return 0 end
redis.call('HSET', KEYS[1], 'status', '{JobStatus.CANCELLED}', 'finished_at', ARGV[2])
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[1], 'expires_at')
else
  redis.call('HSET', KEYS[1], 'expires_at', ARGV[4])
end
retain(KEYS[1], ARGV[3])
to_feed(KEYS[2], ARGV[5], ARGV[1], '{JobStatus.CANCELLED}')
return 1
""",
)

DROP_STALE = _script(
    "store_drop_stale",
    """
-- KEYS: index, then job hashes. ARGV: their job ids.
-- Forget index members whose record expired, checked here so that a job recreated
-- since the caller saw it missing keeps its entry.
local dropped = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    dropped = dropped + redis.call('ZREM', KEYS[1], ARGV[i - 1])
  end
end
return dropped
""",
)

CREATE_AND_PUBLISH = _script(
    "store_create_and_publish",
    """
-- KEYS: index, then n job hashes, then the n streams of their messages.
-- ARGV: n, data field name, then per record: job_id, created_at, expire-at ms ('' =
-- none), field count f, f pairs; then per record: maxlen ('' = none), envelope.
-- Creates each record that does not exist and adds its message to its stream, in one
-- step: a record never exists without its message, nor a message without its record.
-- Returns per record 1 (created) or the stored hash of the job that existed.
local n, data_key = tonumber(ARGV[1]), ARGV[2]
local out, created, a = {}, {}, 3
for k = 1, n do
  local key = KEYS[1 + k]
  local job_id, score, expire_at, f = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local first, last = a + 4, a + 3 + 2 * f
  a = last + 1
  if redis.call('EXISTS', key) == 1 then
    out[k], created[k] = redis.call('HGETALL', key), false
  else
    redis.call('HSET', key, unpack(ARGV, first, last))
    if expire_at ~= '' then redis.call('PEXPIREAT', key, expire_at) end
    redis.call('ZADD', KEYS[1], score, job_id)
    out[k], created[k] = 1, true
  end
end
for k = 1, n do
  local maxlen, data = ARGV[a], ARGV[a + 1]
  a = a + 2
  if created[k] then
    local stream = KEYS[1 + n + k]
    if maxlen == '' then
      redis.call('XADD', stream, '*', data_key, data)
    else
      redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', data_key, data)
    end
  end
end
return out
""",
)
