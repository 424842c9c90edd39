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
