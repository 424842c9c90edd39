"""Every SQL statement of the SQLite store, by name.

Times are Unix epoch seconds (REAL) passed in by the caller. A row whose ``expires_at``
is not after ``now`` is gone as far as any read is concerned, whether or not
``purge_expired`` has deleted it yet.

Lists of ids travel as one JSON array parameter (``json_each``), so each statement has
one text, stays in sqlite3's statement cache and never meets the host-parameter limit.

The completion feed is the ``feed_seq`` column: a terminal transition takes the next
number of the counter row ``FEED_SEQ_META_KEY`` in META_TABLE and advances it in the
same transaction. Write transactions are serialised, so commit order is feed order and
a reader never sees a number before the smaller ones are visible.
"""

from typing import Final

from msgcore.constants import CACHE_CHANNELS_TABLE as CACHE_CHANNELS
from msgcore.constants import CACHE_INFLIGHT_TABLE as INFLIGHT
from msgcore.constants import CACHE_TABLE as CACHE
from msgcore.constants import FEED_SEQ_META_KEY
from msgcore.constants import HASH_TABLE as HASH
from msgcore.constants import JOBS_TABLE as JOBS
from msgcore.constants import KV_TABLE as KV
from msgcore.constants import LOCKS_TABLE as LOCKS
from msgcore.constants import MESSAGES_TABLE as MESSAGES
from msgcore.constants import META_TABLE as META
from msgcore.constants import SUBSCRIBERS_TABLE as SUBSCRIBERS
from msgcore.store.base import TERMINAL, JobStatus


def _not_terminal(column: str) -> str:
    # ``status NOT IN (...)`` builds an ephemeral index of the list on every execution
    # (OpenEphemeral, one IdxInsert per value): ~4 µs of a ~20 µs single-row FINISH.
    return " AND ".join(f"{column} <> '{s}'" for s in sorted(TERMINAL))


_NOT_TERMINAL = _not_terminal("status")
_J_NOT_TERMINAL = _not_terminal("j.status")
_LIVE = "(expires_at IS NULL OR expires_at > :now)"
_NEXT_SEQ = f"(SELECT CAST(value AS INTEGER) + 1 FROM {META} WHERE key = '{FEED_SEQ_META_KEY}')"

JOB_COLUMNS: Final = (
    "job_id, channel, status, attempts, worker_id, created_at, started_at, finished_at, "
    "result, has_result, error_type, error_message, cached, expires_at, extra"
)
EXPIRES_AT_COLUMN: Final = 13
"""Position of ``expires_at`` in ``JOB_COLUMNS``."""

# A plain rowid table, not WITHOUT ROWID: results can be large, and such rows belong in
# a table whose b-tree leaves hold one row each.
# No secondary index on the columns a listing filters by: every index adds a page to each
# job's commits (measured: a create costs ~120 µs with time, status and channel indexes,
# ~75 µs with the time index alone), and ``status`` changes two or three times per job.
# Listing walks the table newest first by rowid (the order records were written in, which
# is their creation order) and filters (operators' queries; the hot path is by job_id);
# the time index it used to walk cost every create another b-tree insert. The feed and
# expiry indexes are partial: only finished records are in them.
SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS {JOBS} (
    job_id        TEXT    PRIMARY KEY,
    channel       TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    worker_id     TEXT,
    created_at    REAL    NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    result        BLOB,
    has_result    INTEGER NOT NULL DEFAULT 0,
    error_type    TEXT,
    error_message TEXT,
    cached        INTEGER NOT NULL DEFAULT 0,
    expires_at    REAL,
    feed_seq      INTEGER,
    extra         TEXT
);

DROP INDEX IF EXISTS {JOBS}_created;
DROP INDEX IF EXISTS {JOBS}_status;
DROP INDEX IF EXISTS {JOBS}_channel;
CREATE INDEX IF NOT EXISTS {JOBS}_feed ON {JOBS} (feed_seq) WHERE feed_seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS {JOBS}_expires ON {JOBS} (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS {KV} (
    key        TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    value      TEXT,
    expires_at REAL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS {KV}_expires ON {KV} (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS {HASH} (
    key   TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (key, field)
) WITHOUT ROWID;

INSERT INTO {META} (key, value) VALUES ('{FEED_SEQ_META_KEY}', '0')
ON CONFLICT (key) DO NOTHING;

CREATE TABLE IF NOT EXISTS {CACHE} (
    key        TEXT PRIMARY KEY,
    channel    TEXT NOT NULL,
    result     BLOB,
    job_id     TEXT,
    created_at REAL NOT NULL,
    expires_at REAL
);

CREATE INDEX IF NOT EXISTS {CACHE}_age ON {CACHE} (channel, created_at);
CREATE INDEX IF NOT EXISTS {CACHE}_expires ON {CACHE} (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS {INFLIGHT} (
    key        TEXT PRIMARY KEY,
    job_id     TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS {CACHE_CHANNELS} (
    channel TEXT PRIMARY KEY,
    policy  TEXT,
    hits    INTEGER NOT NULL DEFAULT 0,
    misses  INTEGER NOT NULL DEFAULT 0,
    joined  INTEGER NOT NULL DEFAULT 0,
    entries INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS {LOCKS} (
    key        TEXT PRIMARY KEY,
    token      TEXT NOT NULL,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS {SUBSCRIBERS} (
    channel   TEXT NOT NULL,
    grp       TEXT NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (channel, grp)
) WITHOUT ROWID
"""
"""Statements separated by ``;``, run in one transaction at open."""

# -- jobs ------------------------------------------------------------------------------

GET_JOB: Final = f"SELECT {JOB_COLUMNS} FROM {JOBS} WHERE job_id = :id AND {_LIVE}"

GET_JOBS: Final = f"""
SELECT {JOB_COLUMNS} FROM {JOBS}
WHERE job_id IN (SELECT value FROM json_each(:ids)) AND {_LIVE}
"""
JOB_EXPIRES_AT: Final = f"SELECT expires_at FROM {JOBS} WHERE job_id = ?"
DELETE_JOB: Final = f"DELETE FROM {JOBS} WHERE job_id = ?"
DELETE_JOBS: Final = f"DELETE FROM {JOBS} WHERE job_id IN (SELECT value FROM json_each(:ids))"

# REPLACE: an expired row that was not purged yet must not block a new job of its id.
INSERT_JOB: Final = f"""
INSERT OR REPLACE INTO {JOBS} ({JOB_COLUMNS})
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# Creates the job when it is unknown; refuses (no row returned) when it is terminal or
# expired, so the caller can tell the two apart.
START_ATTEMPT: Final = f"""
INSERT INTO {JOBS} (job_id, channel, status, attempts, worker_id, created_at, started_at)
VALUES (:id, :channel, '{JobStatus.RUNNING}', :attempt, :worker_id, :now, :now)
ON CONFLICT (job_id) DO UPDATE SET
    status = '{JobStatus.RUNNING}',
    attempts = excluded.attempts,
    worker_id = excluded.worker_id,
    started_at = excluded.started_at
WHERE {_NOT_TERMINAL} AND {_LIVE}
RETURNING {JOB_COLUMNS}
"""

# Same refusal rule as START_ATTEMPT (0 rows changed). A job finished without a record
# (its record expired, or it was published without Client) is created, channel unknown.
# :worker_id/:started_at/:channel are NULL unless the attempt's start write was folded
# into this one (it had not committed yet when the attempt ended).
FINISH_ATTEMPT: Final = f"""
INSERT INTO {JOBS} (
    job_id, channel, status, attempts, worker_id, created_at, started_at, finished_at,
    result, has_result, error_type, error_message, cached, expires_at, feed_seq
) VALUES (
    :id, IFNULL(:channel, ''), :status, :attempt, :worker_id, :now, :started_at,
    :finished_at, :result, :has_result, :error_type, :error_message, :cached, :expires_at,
    CASE WHEN :terminal THEN {_NEXT_SEQ} END
)
ON CONFLICT (job_id) DO UPDATE SET
    status = excluded.status,
    attempts = excluded.attempts,
    worker_id = IFNULL(excluded.worker_id, worker_id),
    started_at = IFNULL(excluded.started_at, started_at),
    finished_at = excluded.finished_at,
    result = excluded.result,
    has_result = excluded.has_result,
    error_type = excluded.error_type,
    error_message = excluded.error_message,
    cached = excluded.cached,
    expires_at = excluded.expires_at,
    feed_seq = excluded.feed_seq
WHERE {_NOT_TERMINAL} AND {_LIVE}
"""

# FINISH_ATTEMPT's common case, an UPDATE of the job's live row, bound by position (a
# dict of named parameters costs a lookup per name). 0 rows changed: the row is missing,
# expired or terminal, and FINISH_ATTEMPT decides. Parameters in ``FINISH_ORDER``, which
# also names them for FINISH_ATTEMPT (with ``channel``).
FINISH_UPDATE: Final = f"""
UPDATE {JOBS} SET
    status = ?1,
    attempts = ?2,
    worker_id = IFNULL(?3, worker_id),
    started_at = IFNULL(?4, started_at),
    finished_at = ?5,
    result = ?6,
    has_result = ?7,
    error_type = ?8,
    error_message = ?9,
    cached = ?10,
    expires_at = ?11,
    feed_seq = CASE WHEN ?12 THEN {_NEXT_SEQ} END
WHERE job_id = ?13 AND {_NOT_TERMINAL} AND (expires_at IS NULL OR expires_at > ?14)
"""
FINISH_ORDER: Final = (
    "status",
    "attempt",
    "worker_id",
    "started_at",
    "finished_at",
    "result",
    "has_result",
    "error_type",
    "error_message",
    "cached",
    "expires_at",
    "terminal",
    "id",
    "now",
)

# A store on the SQLite transport's own file: a job's message is the transport's row whose
# correlation_id is the job id (Client.submit). No index serves these two: a cancel
# scans the queued rows, once, inside its transaction.
JOB_MESSAGE_TAKEN: Final = (
    f"SELECT 1 FROM {MESSAGES} WHERE correlation_id = ? AND lease_token IS NOT NULL LIMIT 1"
)
DELETE_JOB_MESSAGES: Final = f"DELETE FROM {MESSAGES} WHERE correlation_id = ?"

CANCEL_JOB: Final = f"""
UPDATE {JOBS}
SET status = '{JobStatus.CANCELLED}', finished_at = :now, expires_at = :expires_at,
    feed_seq = {_NEXT_SEQ}
WHERE job_id = :id AND status = '{JobStatus.PENDING}' AND {_LIVE}
"""

# Run after a statement above took ``_NEXT_SEQ``, in its transaction.
ADVANCE_FEED_SEQ: Final = (
    f"UPDATE {META} SET value = CAST(value AS INTEGER) + 1 WHERE key = '{FEED_SEQ_META_KEY}'"
)

# Four texts rather than ``(? IS NULL OR status = ?)``: each walks the table newest first,
# filtering on the way, and stops at the limit.
_LIST = f"SELECT {JOB_COLUMNS} FROM {JOBS} WHERE {_LIVE}"
_NEWEST = "ORDER BY rowid DESC LIMIT :limit"
LIST_JOBS: Final = f"{_LIST} {_NEWEST}"
LIST_JOBS_BY_STATUS: Final = f"{_LIST} AND status = :status {_NEWEST}"
LIST_JOBS_BY_CHANNEL: Final = f"{_LIST} AND channel = :channel {_NEWEST}"
LIST_JOBS_BY_CHANNEL_STATUS: Final = (
    f"{_LIST} AND channel = :channel AND status = :status {_NEWEST}"
)

COUNT_JOBS: Final = f"SELECT status, COUNT(*) FROM {JOBS} WHERE {_LIVE} GROUP BY status"
COUNT_JOBS_BY_CHANNEL: Final = (
    f"SELECT status, COUNT(*) FROM {JOBS} WHERE channel = :channel AND {_LIVE} GROUP BY status"
)

# Gives a record inserted as terminal (a cache hit) its place in the completion feed;
# ADVANCE_FEED_SEQ follows in the same transaction.
SET_FEED_SEQ: Final = f"UPDATE {JOBS} SET feed_seq = {_NEXT_SEQ} WHERE job_id = ?"

# -- result cache ----------------------------------------------------------------------
# ``entries`` on the channel row counts the channel's rows in CACHE (expired ones too,
# until purged), so the size cap is checked without counting the table.

CACHE_POLICY: Final = f"SELECT policy FROM {CACHE_CHANNELS} WHERE channel = ?"
REGISTER_POLICY: Final = f"""
INSERT INTO {CACHE_CHANNELS} (channel, policy) VALUES (?, ?)
ON CONFLICT (channel) DO UPDATE SET policy = excluded.policy
"""
BUMP_COUNTERS: Final = f"""
INSERT INTO {CACHE_CHANNELS} (channel, hits, misses, joined, entries)
VALUES (:channel, :hits, :misses, :joined, :entries)
ON CONFLICT (channel) DO UPDATE SET
    hits = hits + excluded.hits,
    misses = misses + excluded.misses,
    joined = joined + excluded.joined,
    entries = entries + excluded.entries
"""
CACHE_ENTRY: Final = f"""
SELECT key, channel, result, created_at, expires_at, job_id FROM {CACHE}
WHERE key = :key AND {_LIVE}
"""
CACHE_ENTRY_EXISTS: Final = f"SELECT 1 FROM {CACHE} WHERE key = ?"
PUT_ENTRY: Final = f"""
INSERT OR REPLACE INTO {CACHE} (key, channel, result, job_id, created_at, expires_at)
VALUES (:key, :channel, :result, :job_id, :now, :expires_at)
"""
CACHE_ENTRY_COUNT: Final = f"SELECT entries FROM {CACHE_CHANNELS} WHERE channel = ?"
EVICT_OLDEST: Final = f"""
DELETE FROM {CACHE} WHERE key IN (
    SELECT key FROM {CACHE} WHERE channel = :channel ORDER BY created_at LIMIT :n
)
"""
# The job holding a live claim on the key, if that job is live and not finished.
INFLIGHT_JOB: Final = f"""
SELECT {", ".join("j." + c.strip() for c in JOB_COLUMNS.split(","))}
FROM {INFLIGHT} AS i JOIN {JOBS} AS j ON j.job_id = i.job_id
WHERE i.key = :key AND i.expires_at > :now
  AND {_J_NOT_TERMINAL} AND (j.expires_at IS NULL OR j.expires_at > :now)
"""
CLAIM_KEY: Final = f"""
INSERT INTO {INFLIGHT} (key, job_id, expires_at) VALUES (:key, :job_id, :expires_at)
ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id, expires_at = excluded.expires_at
"""
EXTEND_CLAIM: Final = (
    f"UPDATE {INFLIGHT} SET expires_at = :expires_at WHERE key = :key AND job_id = :job_id"
)
RELEASE_CLAIM: Final = f"DELETE FROM {INFLIGHT} WHERE key = ? AND job_id = ?"
CACHE_CHANNEL_NAMES: Final = f"""
SELECT channel FROM {CACHE_CHANNELS}
UNION SELECT DISTINCT channel FROM {CACHE}
ORDER BY 1
"""
CACHE_CHANNEL_ROW: Final = (
    f"SELECT policy, hits, misses, joined FROM {CACHE_CHANNELS} WHERE channel = ?"
)
CACHE_SIZE: Final = f"""
SELECT COUNT(*), COALESCE(SUM(LENGTH(result)), 0) FROM {CACHE}
WHERE channel = :channel AND {_LIVE}
"""
CLEAR_ENTRIES: Final = f"DELETE FROM {CACHE} WHERE channel = ?"
CLEAR_ALL_ENTRIES: Final = f"DELETE FROM {CACHE}"
RESET_COUNTERS: Final = (
    f"UPDATE {CACHE_CHANNELS} SET hits = 0, misses = 0, joined = 0, entries = 0 WHERE channel = ?"
)
RESET_ALL_COUNTERS: Final = (
    f"UPDATE {CACHE_CHANNELS} SET hits = 0, misses = 0, joined = 0, entries = 0"
)

# -- per-key locks ---------------------------------------------------------------------

# The row is taken over only when it is free: its lease ran out, or the token is ours.
# No RETURNING on purpose: an upsert whose WHERE refuses returns nothing, and the holder
# is read in the same transaction instead.
ACQUIRE_LOCK: Final = f"""
INSERT INTO {LOCKS} (key, token, holder, expires_at)
VALUES (:key, :token, :holder, :expires_at)
ON CONFLICT (key) DO UPDATE
SET token = excluded.token, holder = excluded.holder, expires_at = excluded.expires_at
WHERE {LOCKS}.expires_at <= :now OR {LOCKS}.token = excluded.token
"""
LOCK_HOLDER: Final = f"SELECT holder, expires_at FROM {LOCKS} WHERE key = ?"
EXTEND_LOCK: Final = f"""
UPDATE {LOCKS} SET expires_at = :expires_at
WHERE key = :key AND token = :token AND expires_at > :now
"""
RELEASE_LOCK: Final = f"DELETE FROM {LOCKS} WHERE key = ? AND token = ?"
LIST_LOCKS: Final = f"""
SELECT key, holder, expires_at FROM {LOCKS}
WHERE expires_at > :now AND substr(key, 1, length(:prefix)) = :prefix
ORDER BY key
"""
PURGE_LOCKS: Final = f"DELETE FROM {LOCKS} WHERE expires_at <= :now"

# -- subscriber registry ---------------------------------------------------------------

REGISTER_SUBSCRIBER: Final = f"""
INSERT INTO {SUBSCRIBERS} (channel, grp, last_seen) VALUES (?, ?, ?)
ON CONFLICT (channel, grp) DO UPDATE SET last_seen = excluded.last_seen
"""
REGISTERED_SUBSCRIBERS: Final = f"SELECT channel, grp FROM {SUBSCRIBERS} ORDER BY channel, grp"

# -- completion feed -------------------------------------------------------------------

FEED_POSITION: Final = (
    f"SELECT CAST(value AS INTEGER) FROM {META} WHERE key = '{FEED_SEQ_META_KEY}'"
)
READ_FEED: Final = f"""
SELECT job_id, status, feed_seq FROM {JOBS}
WHERE feed_seq > ?
ORDER BY feed_seq
LIMIT ?
"""
# Changes when another connection commits; this connection's own commits do not count.
DATA_VERSION: Final = "PRAGMA data_version"

# -- application state -----------------------------------------------------------------
# A key is a row of KV: kind 'string' holds its value, kind 'hash' marks a hash whose
# fields are rows of HASH. Expiry lives on the KV row in both cases.

GET_VALUE: Final = f"SELECT kind, value FROM {KV} WHERE key = :key AND {_LIVE}"
KIND_OF_KEY: Final = f"SELECT kind FROM {KV} WHERE key = :key AND {_LIVE}"
SET_VALUE: Final = f"""
INSERT INTO {KV} (key, kind, value, expires_at) VALUES (:key, 'string', :value, :expires_at)
ON CONFLICT (key) DO UPDATE SET
    kind = 'string', value = excluded.value, expires_at = excluded.expires_at
"""
DELETE_KEYS: Final = f"""
DELETE FROM {KV} WHERE key IN (SELECT value FROM json_each(:keys))
RETURNING expires_at
"""
# (Plain columns only in RETURNING: SQLite 3.40 returns wrong values for expressions on
# a WITHOUT ROWID table.)
DELETE_FIELDS: Final = f"DELETE FROM {HASH} WHERE key IN (SELECT value FROM json_each(:keys))"

# Fields left from an expired hash (or one that became a string) must not reappear.
DROP_STALE_FIELDS: Final = f"""
DELETE FROM {HASH} WHERE key = :key AND NOT EXISTS (
    SELECT 1 FROM {KV} WHERE key = :key AND kind = 'hash' AND {_LIVE}
)
"""
# Without a ttl a live hash keeps its expiry (as Redis HSET does); a new one has none.
# A live string is left as it is (no row changes): hset on it is refused, as in Redis.
MARK_HASH: Final = f"""
INSERT INTO {KV} (key, kind, value, expires_at) VALUES (:key, 'hash', NULL, :expires_at)
ON CONFLICT (key) DO UPDATE SET
    expires_at = CASE
        WHEN :has_ttl THEN excluded.expires_at
        WHEN kind = 'hash' AND {_LIVE} THEN expires_at
    END,
    kind = 'hash',
    value = NULL
WHERE NOT (kind = 'string' AND {_LIVE})
"""
SET_FIELD: Final = f"""
INSERT INTO {HASH} (key, field, value) VALUES (?, ?, ?)
ON CONFLICT (key, field) DO UPDATE SET value = excluded.value
"""
GET_FIELDS: Final = f"""
SELECT h.field, h.value FROM {HASH} AS h JOIN {KV} AS k ON k.key = h.key
WHERE h.key = :key AND k.kind = 'hash' AND (k.expires_at IS NULL OR k.expires_at > :now)
"""

EXPIRE_KEY: Final = f"UPDATE {KV} SET expires_at = :expires_at WHERE key = :key AND {_LIVE}"

# -- housekeeping ----------------------------------------------------------------------

PURGE_JOBS: Final = f"DELETE FROM {JOBS} WHERE expires_at <= :now"
PURGE_KEYS: Final = f"DELETE FROM {KV} WHERE expires_at <= :now RETURNING key, kind"
PURGE_ENTRIES: Final = f"DELETE FROM {CACHE} WHERE expires_at <= :now RETURNING channel"
UNCOUNT_ENTRIES: Final = f"UPDATE {CACHE_CHANNELS} SET entries = entries - ? WHERE channel = ?"
PURGE_CLAIMS: Final = f"DELETE FROM {INFLIGHT} WHERE expires_at <= :now"
