"""Every storage name msgcore writes: tables, default group, header keys.

One module holds them so a migration, the CLI and the tests agree on what exists.
"""

from typing import Final

SCHEMA_VERSION: Final = 1

# SQLite transport tables
MESSAGES_TABLE: Final = "msgcore_messages"
GROUPS_TABLE: Final = "msgcore_groups"
DEAD_LETTERS_TABLE: Final = "msgcore_dead_letters"
META_TABLE: Final = "msgcore_meta"

# A subscriber declared without ``group=`` competes in this group.
DEFAULT_GROUP: Final = "default"

# Reply queues of ``request()`` are private to one broker instance.
REPLY_QUEUE_PREFIX: Final = "msgcore.reply."
# A reply nobody collects (requester crashed) is deleted after this long.
REPLY_TTL_SECONDS: Final = 300.0

# Set by msgcore where the transport has no native attempt count (Redis, RabbitMQ).
HEADER_ATTEMPT: Final = "x-msgcore-attempt"

# Jobs: the id rides in this header from Client.submit to the worker that records it.
HEADER_JOB_ID: Final = "x-msgcore-job-id"
# How long a finished job's record (status, result, error) is kept.
DEFAULT_RESULT_TTL_SECONDS: Final = 7 * 24 * 3600.0

# Job/state store (msgcore.store). SQLite tables share the transport's file, hence the
# same ``msgcore_`` prefix.
JOBS_TABLE: Final = "msgcore_jobs"
KV_TABLE: Final = "msgcore_kv"
HASH_TABLE: Final = "msgcore_hash"
# Row of META_TABLE holding the completion feed's last sequence number.
FEED_SEQ_META_KEY: Final = "job_feed_seq"

# Redis store keys, after the stream prefix. They start with an underscore like the
# transport's own keys, so they cannot be the stream of a channel named "jobs" or "kv:x".
REDIS_JOB_KEY: Final = "_job:"
REDIS_JOBS_INDEX_KEY: Final = "_jobs"
REDIS_JOBS_FEED_KEY: Final = "_jobs:feed"
REDIS_KV_KEY: Final = "_kv:"
# The completion feed keeps about this many entries (XADD MAXLEN ~).
REDIS_FEED_MAXLEN: Final = 100_000

# Subscriber registry: the (channel, group) pairs workers declared, with when each was
# last seen, for tools that cannot list a transport's queues (RabbitMQ over AMQP).
SUBSCRIBERS_TABLE: Final = "msgcore_subscribers"
# A hash (field: JSON [channel, group], value: last seen). Under ``_jobs`` so that no
# channel's stream can have its name: channels starting with ``_jobs`` are refused.
REDIS_SUBSCRIBERS_KEY: Final = "_jobs:subscribers"

# Result cache (msgcore.cache). SQLite tables beside the job tables:
CACHE_TABLE: Final = "msgcore_cache"
"""key -> the cached result (until its TTL)."""
CACHE_INFLIGHT_TABLE: Final = "msgcore_cache_inflight"
"""key -> the job computing it (until its lease)."""
CACHE_CHANNELS_TABLE: Final = "msgcore_cache_channels"
"""channel -> registered policy and hit/miss/join counters."""
# Redis keys, after the stream prefix (all start with REDIS_CACHE_KEY_PREFIX):
REDIS_CACHE_KEY_PREFIX: Final = "_cache:"
REDIS_CACHE_ENTRY_KEY: Final = "_cache:e:"
"""+ key: hash of one entry (channel, result, job_id, created_at, expires_at), TTL."""
REDIS_CACHE_INFLIGHT_KEY: Final = "_cache:f:"
"""+ key: string, the job id holding the in-flight claim, TTL = the lease."""
REDIS_CACHE_BY_AGE_KEY: Final = "_cache:z:"
"""+ channel: sorted set of the channel's keys scored by created_at (cap, clear, size)."""
REDIS_CACHE_CHANNEL_KEY: Final = "_cache:c:"
"""+ channel: hash with the registered policy and the hits/misses/joined counters."""
REDIS_CACHE_CHANNELS_KEY: Final = "_cache:channels"
"""Set of channels that have a policy, entries or counters."""
# Set by Client.submit(..., cache=False): run the handler even if the key is filled.
HEADER_CACHE_BYPASS: Final = "x-msgcore-cache-bypass"
DEFAULT_CACHE_LEASE_SECONDS: Final = 300.0
DEFAULT_CACHE_MAX_ENTRIES: Final = 100_000

# Per-key locks (msgcore.locks). SQLite table beside the job tables; Redis hash per key,
# after the stream prefix (fields: token, holder; the lease is the key's TTL).
LOCKS_TABLE: Final = "msgcore_locks"
REDIS_LOCK_KEY: Final = "_lock:"
DEFAULT_LOCK_WAIT_SECONDS: Final = 30.0
DEFAULT_LOCK_LEASE_SECONDS: Final = 60.0

MAX_LIMIT: Final = 1_000_000
"""The most records one listing returns (``ops.list_dead_letters``, the CLI's ``--limit``):
more would not fit a store's integer types (SQLite raises OverflowError, Redis refuses the
command), nor a screen."""
