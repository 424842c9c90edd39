"""The Lua scripts behind the Redis store's job transitions.

Each runs atomically on the server, so a terminal transition, its record's retention
(``PEXPIRE``) and its completion-feed entry (``XADD``) happen together or not at all,
and two workers can never both finish one job. Times are the caller's (``now``), the
same clock the SQLite store records.

A job is the hash ``KEYS[job]`` whose fields are those of ``JobRecord`` (absent field:
``None``); the hash exists exactly when the job does.

The result cache (``CACHE_*``, and the cache parts of ``START_ATTEMPT_CACHED`` and
``FINISH_ATTEMPT``) keeps per key an entry hash (with its TTL) and an in-flight string
holding the id of the job computing it (with the lease as TTL), and per channel a hash
of policy and counters plus a sorted set of its keys by age. Some keys are only known
on the server (the job an in-flight claim names, the entries a channel's sorted set
lists, the channel of an entry): those scripts build them from a prefix passed in
ARGV, which is right on a single Redis instance only (a cluster would need the keys
declared; msgcore does not support Redis Cluster).
"""

from __future__ import annotations

from msgcore.adapters.redis.keys import JOB_FIELD
from msgcore.adapters.redis.scripts import LuaScript
from msgcore.store.base import TERMINAL, JobStatus
from msgcore.store.cache import ClaimKind

__all__ = [
    "CACHE_CLEAR",
    "CACHE_EXTEND",
    "CACHE_FILL",
    "CACHE_LOOKUP",
    "CACHE_RELEASE",
    "CACHE_STATS",
    "CACHE_SUBMIT",
    "CANCEL_JOB",
    "CREATE_AND_PUBLISH",
    "CREATE_JOBS",
    "DROP_STALE",
    "FILL_ARGS",
    "FILL_KEYS",
    "FINISH_ATTEMPT",
    "LOCK_ACQUIRE",
    "LOCK_EXTEND",
    "LOCK_RELEASE",
    "START_ATTEMPT",
    "START_ATTEMPT_CACHED",
]

FILL_KEYS = 5
"""Keys of a cache fill (``fill()`` below): entry, in-flight, by-age, channel, channels."""
FILL_ARGS = 11
"""ARGV of a cache fill: key, channel, has result (1/0), result, job_id ('' = none),
now, expires_at ('' = none), ttl ms ('' = none), max entries ('' = no cap), expiry
cutoff ('' = none: now - ttl, scores at or below it are expired), entry key prefix."""

_TERMINAL = ", ".join(f"['{s}'] = true" for s in sorted(TERMINAL))

_STORE_PRELUDE = f"""
local TERMINAL = {{{_TERMINAL}}}
local JOB_FIELD = '{JOB_FIELD}'

-- keep a terminal record for ms milliseconds ('' = for ever)
local function retain(key, ms)
  if ms == '' then redis.call('PERSIST', key) else redis.call('PEXPIRE', key, ms) end
end

local function to_feed(feed, maxlen, job_id, status)
  redis.call('XADD', feed, 'MAXLEN', '~', maxlen, '*', 'job_id', job_id, 'status', status)
end

-- stream ids 'ms-seq' as numbers (ms has at most 13 digits: exact in a double)
local function id_before_or_at(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as <= bs)
end

-- has any consumer group of stream read entry id (it is at or before what the group
-- was last given)?
local function read_by_a_group(stream, id)
  if redis.call('EXISTS', stream) == 0 then return false end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    for i = 1, #g, 2 do
      if g[i] == 'last-delivered-id' and id_before_or_at(id, g[i + 1]) then return true end
    end
  end
  return false
end

-- a job nobody created (published without Client, or its record expired)
local function ensure(key, index, job_id, channel, now)
  if redis.call('EXISTS', key) == 1 then return end
  redis.call('HSET', key, 'channel', channel, 'created_at', now)
  redis.call('ZADD', index, now, job_id)
end

-- a cache entry that exists and has not expired by the caller's clock (the one its
-- expires_at was computed with; Redis's own TTL may lag or lead it a little)
local function live_entry(entry, now)
  local expires_at = redis.call('HGET', entry, 'expires_at')
  if expires_at then return tonumber(expires_at) > tonumber(now) end
  return redis.call('EXISTS', entry) == 1
end

-- drop the in-flight claim on a key, only if job_id still holds it (a later claimant,
-- after the lease ran out, keeps its own)
local function release(inflight, job_id)
  if job_id ~= '' and redis.call('GET', inflight) == job_id then
    redis.call('DEL', inflight)
  end
end

-- fill a cache entry from KEYS[k..k+4] and ARGV[a..a+10] (layout: FILL_KEYS/FILL_ARGS)
local function fill(k, a)
  local entry, inflight, by_age, chash, channels = KEYS[k], KEYS[k + 1], KEYS[k + 2],
    KEYS[k + 3], KEYS[k + 4]
  local key, channel, has_result, result, job_id = ARGV[a], ARGV[a + 1], ARGV[a + 2],
    ARGV[a + 3], ARGV[a + 4]
  local now, expires_at, ttl_ms, max_entries, cutoff, entry_prefix = ARGV[a + 5],
    ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9], ARGV[a + 10]
  -- a refill replaces every field (an earlier job_id or result must not linger)
  redis.call('DEL', entry)
  local fields = {{'channel', channel, 'created_at', now}}
  if has_result == '1' then append(fields, {{'result', result}}) end
  if job_id ~= '' then append(fields, {{'job_id', job_id}}) end
  if expires_at ~= '' then append(fields, {{'expires_at', expires_at}}) end
  redis.call('HSET', entry, unpack(fields))
  if ttl_ms ~= '' then redis.call('PEXPIRE', entry, ttl_ms) end
  redis.call('ZADD', by_age, now, key)
  redis.call('SADD', channels, channel)
  redis.call('HINCRBY', chash, 'misses', 1)
  release(inflight, job_id)
  if max_entries == '' then return end
  if cutoff ~= '' then
    -- expired by now; deleted too in case a longer TTL of an earlier policy kept one
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', by_age, '-inf', cutoff)) do
      redis.call('DEL', entry_prefix .. old)
      redis.call('ZREM', by_age, old)
    end
  end
  local over = redis.call('ZCARD', by_age) - tonumber(max_entries)
  if over > 0 then
    local popped = redis.call('ZPOPMIN', by_age, over)
    for i = 1, #popped, 2 do redis.call('DEL', entry_prefix .. popped[i]) end
  end
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
-- KEYS: job, index. ARGV: job_id, channel, attempt, worker_id, now[, late].
-- Returns the job's hash: unchanged when it is terminal, else running this attempt.
-- late = '1': a running write sent after its attempt began (RedisStore._start_deferred),
-- which may land after that attempt's outcome over another connection: it applies only
-- to a record still pending.
local status = redis.call('HGET', KEYS[1], 'status')
if status and TERMINAL[status] then return redis.call('HGETALL', KEYS[1]) end
if ARGV[6] == '1' and status and status ~= '{JobStatus.PENDING}' then
  return redis.call('HGETALL', KEYS[1])
end
ensure(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[5])
redis.call('HSET', KEYS[1], 'status', '{JobStatus.RUNNING}', 'attempts', ARGV[3],
           'worker_id', ARGV[4], 'started_at', ARGV[5])
return redis.call('HGETALL', KEYS[1])
""",
)

START_ATTEMPT_CACHED = _script(
    "store_start_attempt_cached",
    f"""
-- KEYS: job, index, feed, cache entry, in-flight claim, channel hash, channels set.
-- ARGV: job_id, channel, attempt, worker_id, now, read (1/0), lease ms, retention ms
-- ('' = for ever), expires_at ('' = none), feed maxlen.
-- Returns the job's hash: unchanged when it is terminal; completed from the entry
-- when read is 1 and the key is filled (a hit); else running, holding the claim.
local status = redis.call('HGET', KEYS[1], 'status')
if status and TERMINAL[status] then return redis.call('HGETALL', KEYS[1]) end
ensure(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[5])
if ARGV[6] == '1' and live_entry(KEYS[4], ARGV[5]) then
  local result = redis.call('HGET', KEYS[4], 'result')
  redis.call('HSET', KEYS[1], 'status', '{JobStatus.COMPLETED}', 'attempts', ARGV[3],
             'worker_id', ARGV[4], 'started_at', ARGV[5], 'finished_at', ARGV[5],
             'cached', '1', 'has_result', '1')
  redis.call('HDEL', KEYS[1], 'error_type', 'error_message')
  if result then
    redis.call('HSET', KEYS[1], 'result', result)
  else
    redis.call('HDEL', KEYS[1], 'result')
  end
  if ARGV[9] == '' then
    redis.call('HDEL', KEYS[1], 'expires_at')
  else
    redis.call('HSET', KEYS[1], 'expires_at', ARGV[9])
  end
  retain(KEYS[1], ARGV[8])
  to_feed(KEYS[3], ARGV[10], ARGV[1], '{JobStatus.COMPLETED}')
  redis.call('HINCRBY', KEYS[6], 'hits', 1)
  redis.call('SADD', KEYS[7], ARGV[2])
  return redis.call('HGETALL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'status', '{JobStatus.RUNNING}', 'attempts', ARGV[3],
           'worker_id', ARGV[4], 'started_at', ARGV[5])
redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[7])
return redis.call('HGETALL', KEYS[1])
""",
)

FINISH_ATTEMPT = _script(
    "store_finish_attempt",
    f"""
-- KEYS: job, index, feed; then, for a handler with a cache, the FILL_KEYS of its key.
-- ARGV: job_id, status, now, retention ms ('' = for ever), feed maxlen, pair count n,
-- count g of fields to delete, n field/value pairs to set, the g fields to delete
-- (they are None now); then, with the cache keys, the FILL_ARGS of the fill.
-- Returns 0 when the job is terminal already (a late duplicate changes nothing).
local status = redis.call('HGET', KEYS[1], 'status')
if status and TERMINAL[status] then return 0 end
ensure(KEYS[1], KEYS[2], ARGV[1], '', ARGV[3])
local last = 7 + 2 * tonumber(ARGV[6])
redis.call('HSET', KEYS[1], unpack(ARGV, 8, last))
local gone = tonumber(ARGV[7])
if gone > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, last + 1, last + gone)) end
if TERMINAL[ARGV[2]] then
  retain(KEYS[1], ARGV[4])
  to_feed(KEYS[3], ARGV[5], ARGV[1], ARGV[2])
  if #KEYS > 3 then
    if ARGV[2] == '{JobStatus.COMPLETED}' then
      fill(4, last + gone + 1)
    else
      -- dead: nothing to cache, but the next submit of the key must not join it
      release(KEYS[5], ARGV[1])
    end
  end
end
return 1
""",
)

CANCEL_JOB = _script(
    "store_cancel_job",
    f"""
-- KEYS: job, feed. ARGV: job_id, now, retention ms ('' = for ever), expires_at, maxlen.
-- A job whose entry a worker has read is not cancelled: that worker runs it without
-- reading the record first. An entry no group has read yet is deleted with the cancel.
-- (msg_stream is the Redis transport's stream on this same server, standalone: it is
-- not among KEYS because only the record knows it.)
if redis.call('HGET', KEYS[1], 'status') ~= '{JobStatus.PENDING}' then return 0 end
local place = redis.call('HMGET', KEYS[1], 'msg_stream', 'msg_id')
local stream, id = place[1], place[2]
if stream and id then
  if read_by_a_group(stream, id) then return 0 end
  redis.call('XDEL', stream, id)
end
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

GET_JOBS = _script(
    "store_get_jobs",
    """
-- KEYS: job hashes. Each one's HGETALL (an empty list: no such job), in order: one
-- command and one reply, where a pipeline of HGETALLs is one command per job for the
-- client to pack and parse.
local found = {}
for i = 1, #KEYS do
  found[i] = redis.call('HGETALL', KEYS[i])
end
return found
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
-- The entry carries the job id (JOB_FIELD: the worker knows it need not read the record
-- before running it) and the record the entry's place (msg_stream, msg_id: a cancel
-- deletes the entry while no worker has it).
-- Returns per record 1 (created) or the stored hash of the job that existed.
local n, data_key = tonumber(ARGV[1]), ARGV[2]
local out, created, ids, a = {}, {}, {}, 3
for k = 1, n do
  local key = KEYS[1 + k]
  local job_id, score, expire_at, f = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  ids[k] = job_id
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
    local stream, job_id = KEYS[1 + n + k], ids[k]
    local id
    if maxlen == '' then
      id = redis.call('XADD', stream, '*', data_key, data, JOB_FIELD, job_id)
    else
      id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', data_key, data,
                      JOB_FIELD, job_id)
    end
    -- where the message is: a cancel deletes it from there while no worker has it
    redis.call('HSET', KEYS[1 + k], 'msg_stream', stream, 'msg_id', id)
  end
end
return out
""",
)

CACHE_SUBMIT = _script(
    "store_cache_submit",
    f"""
-- KEYS: index, feed, channels set, then per item: job, channel hash, entry, in-flight.
-- ARGV: job key prefix, now, feed maxlen, then per item: job_id, version, created_at,
-- expire-at ms of the pending record ('' = none), lease ms, retention ms of a hit
-- record ('' = for ever), pair count n, n pairs of the pending record, pair count m,
-- m pairs of the hit record (all but its result, which is the entry's).
-- Items run in order, each seeing what the earlier ones did. Returns per item
-- {{kind}}, {{kind, hash}} (exists, hit) or {{kind, hash, job_id}} (joined).
local prefix, now, maxlen = ARGV[1], ARGV[2], ARGV[3]
local out, a = {{}}, 4
for k = 4, #KEYS, 4 do
  local job, chash, entry, inflight = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local job_id, version, score, expire_at, lease, retention =
    ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local n = tonumber(ARGV[a + 6])
  local pending_first, pending_last = a + 7, a + 6 + 2 * n
  local m = tonumber(ARGV[pending_last + 1])
  local hit_first, hit_last = pending_last + 2, pending_last + 1 + 2 * m
  a = hit_last + 1
  local holder = nil
  if redis.call('EXISTS', job) == 1 then
    out[#out + 1] = {{'{ClaimKind.EXISTS}', redis.call('HGETALL', job)}}
  elseif redis.call('HGET', chash, 'version') ~= version then
    out[#out + 1] = {{'{ClaimKind.STALE}'}}
  elseif live_entry(entry, now) then
    local result = redis.call('HGET', entry, 'result')
    redis.call('HSET', job, unpack(ARGV, hit_first, hit_last))
    if result then redis.call('HSET', job, 'result', result) end
    retain(job, retention)
    redis.call('ZADD', KEYS[1], now, job_id)
    to_feed(KEYS[2], maxlen, job_id, '{JobStatus.COMPLETED}')
    redis.call('HINCRBY', chash, 'hits', 1)
    redis.call('SADD', KEYS[3], redis.call('HGET', job, 'channel'))
    out[#out + 1] = {{'{ClaimKind.HIT}', redis.call('HGETALL', job)}}
  else
    local other = redis.call('GET', inflight)
    if other then
      local status = redis.call('HGET', prefix .. other, 'status')
      if status and not TERMINAL[status] then holder = other end
    end
    if holder then
      redis.call('HINCRBY', chash, 'joined', 1)
      out[#out + 1] = {{'{ClaimKind.JOINED}', redis.call('HGETALL', prefix .. holder), holder}}
    else
      redis.call('HSET', job, unpack(ARGV, pending_first, pending_last))
      if expire_at ~= '' then redis.call('PEXPIREAT', job, expire_at) end
      redis.call('ZADD', KEYS[1], score, job_id)
      redis.call('SET', inflight, job_id, 'PX', lease)
      out[#out + 1] = {{'{ClaimKind.CLAIMED}'}}
    end
  end
end
return out
""",
)

CACHE_LOOKUP = _script(
    "store_cache_lookup",
    """
-- KEYS: entry. ARGV: now, count (1/0), channel hash key prefix.
-- Returns the entry's hash (nil: no live entry); count: a found one is a hit.
if not live_entry(KEYS[1], ARGV[1]) then return false end
local h = redis.call('HGETALL', KEYS[1])
if ARGV[2] == '1' then
  local channel = redis.call('HGET', KEYS[1], 'channel')
  if channel then redis.call('HINCRBY', ARGV[3] .. channel, 'hits', 1) end
end
return h
""",
)

CACHE_FILL = _script(
    "store_cache_fill",
    """
-- KEYS: the FILL_KEYS. ARGV: the FILL_ARGS.
fill(1, 1)
return 1
""",
)

CACHE_EXTEND = _script(
    "store_cache_extend",
    """
-- KEYS: in-flight claim. ARGV: job_id, lease ms.
-- Returns 1 when job_id still held the claim (now for the lease again), else 0.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
""",
)

CACHE_RELEASE = _script(
    "store_cache_release",
    """
-- KEYS: in-flight claims. ARGV: the job id expected to hold each.
for i = 1, #KEYS do release(KEYS[i], ARGV[i]) end
return 1
""",
)

CACHE_STATS = _script(
    "store_cache_stats",
    """
-- KEYS: per channel its hash and its by-age sorted set. ARGV: entry key prefix.
-- Returns per channel {{hits, misses, joined, version}, entries, bytes}; members whose
-- entry expired are dropped from the sorted set on the way. Walks every member (at
-- most the channel's max_entries, plus the expired ones not yet dropped).
local out = {}
for k = 1, #KEYS, 2 do
  local counters = redis.call('HMGET', KEYS[k], 'hits', 'misses', 'joined', 'version')
  local entries, bytes = 0, 0
  for _, key in ipairs(redis.call('ZRANGE', KEYS[k + 1], 0, -1)) do
    local entry = ARGV[1] .. key
    if redis.call('EXISTS', entry) == 1 then
      entries = entries + 1
      bytes = bytes + redis.call('HSTRLEN', entry, 'result')
    else
      redis.call('ZREM', KEYS[k + 1], key)
    end
  end
  out[#out + 1] = {counters, entries, bytes}
end
return out
""",
)

CACHE_CLEAR = _script(
    "store_cache_clear",
    """
-- KEYS: per channel its hash and its by-age sorted set. ARGV: entry key prefix.
-- Deletes the channels' entries and zeroes their counters; the policy and the
-- in-flight claims stay (a claim's job is still queued or running). Returns how many
-- entries existed.
local cleared = 0
for k = 1, #KEYS, 2 do
  for _, key in ipairs(redis.call('ZRANGE', KEYS[k + 1], 0, -1)) do
    cleared = cleared + redis.call('DEL', ARGV[1] .. key)
  end
  redis.call('DEL', KEYS[k + 1])
  if redis.call('EXISTS', KEYS[k]) == 1 then
    redis.call('HSET', KEYS[k], 'hits', 0, 'misses', 0, 'joined', 0)
  end
end
return cleared
""",
)


# -- per-key locks: a hash (token, holder) whose TTL is the lease ------------------------
# These need none of the job prelude.

LOCK_ACQUIRE = LuaScript(
    "store_lock_acquire",
    """
-- KEYS: the lock. ARGV: token, holder, lease ms.
-- Returns nil when token holds the lock now, else {holder, ms left}.
local held = redis.call('HGET', KEYS[1], 'token')
if held and held ~= ARGV[1] then
  return {redis.call('HGET', KEYS[1], 'holder') or '', redis.call('PTTL', KEYS[1])}
end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'holder', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return nil
""",
)

LOCK_EXTEND = LuaScript(
    "store_lock_extend",
    """
-- KEYS: the lock. ARGV: token, lease ms. 1: still held by token, for the lease again.
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
""",
)

LOCK_RELEASE = LuaScript(
    "store_lock_release",
    """
-- KEYS: the lock. ARGV: token. 1: token held it and it is free now.
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
""",
)
