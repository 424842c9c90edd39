"""Every SQL statement of the SQLite transport, by name.

Times are Unix epoch seconds (REAL) passed in by the caller, so that every process on
one host agrees on them and tests can reason about them.

``visible_at`` carries three meanings in one indexed column: when a new or delayed
row becomes claimable, when a nacked row may be retried (backoff), and the lease
deadline of a claimed row. A row is claimable exactly when ``visible_at <= now``:
ready rows, due delayed rows and rows whose worker stopped renewing its lease.
"""

import hashlib
from typing import Final

from msgcore.constants import (
    DEAD_LETTERS_TABLE as DLQ,
)
from msgcore.constants import (
    GROUPS_TABLE as GROUPS,
)
from msgcore.constants import (
    MESSAGES_TABLE as MSGS,
)
from msgcore.constants import (
    META_TABLE as META,
)

PRAGMAS: Final = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    # SqliteClient checkpoints on a connection and thread of its own instead
    "PRAGMA wal_autocheckpoint=0",
    # the WAL file shrinks back to this when it starts over after a spell of missed
    # rewinds (see SqliteClient._checkpoint_now)
    "PRAGMA journal_size_limit=16777216",
    "PRAGMA foreign_keys=OFF",
    "PRAGMA temp_store=MEMORY",
)

SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS {META} (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS {MSGS} (
    id             INTEGER PRIMARY KEY,
    queue          TEXT    NOT NULL,
    grp            TEXT    NOT NULL,
    body           BLOB    NOT NULL,
    headers        TEXT,
    content_type   TEXT,
    correlation_id TEXT,
    message_id     TEXT,
    reply_to       TEXT    NOT NULL DEFAULT '',
    priority       INTEGER NOT NULL DEFAULT 0,
    visible_at     REAL    NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    lease_token    TEXT,
    leased_by      TEXT,
    created_at     REAL    NOT NULL,
    expires_at     REAL,
    last_error     TEXT
);

CREATE INDEX IF NOT EXISTS {MSGS}_claim
    ON {MSGS} (queue, grp, priority DESC, visible_at);

CREATE TABLE IF NOT EXISTS {GROUPS} (
    queue      TEXT NOT NULL,
    grp        TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (queue, grp)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS {DLQ} (
    id             INTEGER PRIMARY KEY,
    queue          TEXT    NOT NULL,
    grp            TEXT    NOT NULL,
    body           BLOB    NOT NULL,
    headers        TEXT,
    content_type   TEXT,
    correlation_id TEXT,
    message_id     TEXT,
    reply_to       TEXT    NOT NULL DEFAULT '',
    priority       INTEGER NOT NULL DEFAULT 0,
    attempts       INTEGER NOT NULL,
    created_at     REAL    NOT NULL,
    failed_at      REAL    NOT NULL,
    reason         TEXT    NOT NULL,
    error          TEXT
);

CREATE INDEX IF NOT EXISTS {DLQ}_queue ON {DLQ} (queue, failed_at);
"""

GET_SCHEMA_VERSION: Final = f"SELECT value FROM {META} WHERE key = 'schema_version'"
# The digest of SCHEMA that last set the file up: equal, the tables exist as SCHEMA has
# them and a starting connection needs no write transaction.
SCHEMA_DIGEST: Final = hashlib.sha256(SCHEMA.encode()).hexdigest()
GET_SCHEMA_STATE: Final = (
    f"SELECT (SELECT value FROM {META} WHERE key = 'schema_version'), "
    f"(SELECT value FROM {META} WHERE key = 'schema_digest')"
)
SET_SCHEMA_DIGEST: Final = (
    f"INSERT INTO {META} (key, value) VALUES ('schema_digest', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
SET_SCHEMA_VERSION: Final = (
    f"INSERT INTO {META} (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO NOTHING"
)

REGISTER_GROUP: Final = (
    f"INSERT INTO {GROUPS} (queue, grp, created_at) VALUES (?, ?, ?) "
    "ON CONFLICT (queue, grp) DO NOTHING"
)
ADOPT_ORPHANS: Final = f"UPDATE {MSGS} SET grp = ? WHERE queue = ? AND grp = ?"
GROUPS_OF_QUEUE: Final = f"SELECT grp FROM {GROUPS} WHERE queue = ?"

INSERT_MESSAGE: Final = f"""
INSERT INTO {MSGS} (
    queue, grp, body, headers, content_type, correlation_id, message_id,
    reply_to, priority, visible_at, created_at, expires_at
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# The cheap read that runs before any claim: no write lock unless there is work.
HAS_CLAIMABLE: Final = f"""
SELECT 1 FROM {MSGS}
WHERE queue = ? AND grp = ? AND visible_at <= ?
LIMIT 1
"""

NEXT_DUE: Final = f"SELECT MIN(visible_at) FROM {MSGS} WHERE queue = ? AND grp = ?"

CLAIM: Final = f"""
UPDATE {MSGS}
SET lease_token = ?, visible_at = ?, leased_by = ?, attempts = attempts + 1
WHERE id IN (
    SELECT id FROM {MSGS}
    WHERE queue = ? AND grp = ? AND visible_at <= ?
    ORDER BY priority DESC, visible_at, id
    LIMIT ?
)
RETURNING id, body, headers, content_type, correlation_id, message_id, reply_to,
          priority, attempts, created_at
"""

# Fencing: every settlement names the lease token it was claimed with. A worker whose
# lease expired (and whose row was claimed again) matches no row and changes nothing.
ACK: Final = f"DELETE FROM {MSGS} WHERE id = ? AND lease_token = ?"

NACK: Final = f"""
UPDATE {MSGS}
SET lease_token = NULL, leased_by = NULL, visible_at = ?, last_error = ?
WHERE id = ? AND lease_token = ?
"""

RELEASE: Final = f"""
UPDATE {MSGS}
SET lease_token = NULL, leased_by = NULL, visible_at = ?, attempts = MAX(attempts - ?, 0)
WHERE id = ? AND lease_token = ?
"""

EXTEND_LEASE: Final = f"UPDATE {MSGS} SET visible_at = ? WHERE lease_token = ?"

DEAD_LETTER: Final = f"""
INSERT INTO {DLQ} (
    queue, grp, body, headers, content_type, correlation_id, message_id, reply_to,
    priority, attempts, created_at, failed_at, reason, error
)
SELECT queue, grp, body, headers, content_type, correlation_id, message_id, reply_to,
       priority, attempts, created_at, ?, ?, ?
FROM {MSGS} WHERE id = ? AND lease_token = ?
"""

DELETE_MESSAGE: Final = f"DELETE FROM {MSGS} WHERE id = ?"

# Reply queues have one reader, so replies are taken without a lease.
TAKE_REPLIES: Final = f"""
DELETE FROM {MSGS} WHERE queue = ?
RETURNING id, body, headers, content_type, correlation_id, message_id, reply_to,
          priority, attempts, created_at
"""

DELETE_QUEUE: Final = f"DELETE FROM {MSGS} WHERE queue = ?"
DELETE_EXPIRED: Final = f"DELETE FROM {MSGS} WHERE expires_at IS NOT NULL AND expires_at < ?"

LIST_DEAD_LETTERS: Final = f"""
SELECT id, queue, grp, body, headers, content_type, correlation_id, message_id, reply_to,
       priority, attempts, created_at, failed_at, reason, error
FROM {DLQ}
WHERE (? IS NULL OR queue = ?)
ORDER BY id
LIMIT ?
"""

REPLAY_DEAD_LETTER: Final = f"""
INSERT INTO {MSGS} (
    queue, grp, body, headers, content_type, correlation_id, message_id, reply_to,
    priority, visible_at, created_at
)
SELECT queue, grp, body, headers, content_type, correlation_id, message_id, reply_to,
       priority, ?, created_at
FROM {DLQ} WHERE id = ?
"""
DEAD_LETTER_QUEUE: Final = f"SELECT queue FROM {DLQ} WHERE id = ?"
DELETE_DEAD_LETTER: Final = f"DELETE FROM {DLQ} WHERE id = ?"

QUEUE_DEPTH: Final = f"""
SELECT COUNT(*) FROM {MSGS} WHERE queue = ? AND (? IS NULL OR grp = ?)
"""

DATA_VERSION: Final = "PRAGMA data_version"
WAL_CHECKPOINT: Final = "PRAGMA wal_checkpoint(PASSIVE)"
WAL_CHECKPOINT_RESTART: Final = "PRAGMA wal_checkpoint(RESTART)"

# -- operations (msgcore.ops): what an operator sees and does from another process -------
# A row is *waiting* when claimable (``visible_at <= now``, an expired lease included),
# *running* while leased, and otherwise not due yet: *retrying* once it was attempted
# (a nack's backoff), *delayed* before its first attempt.

GROUP_COUNTS: Final = f"""
SELECT queue, grp,
       SUM(visible_at <= :now),
       SUM(visible_at > :now AND lease_token IS NOT NULL),
       SUM(visible_at > :now AND lease_token IS NULL AND attempts = 0),
       SUM(visible_at > :now AND lease_token IS NULL AND attempts > 0),
       MIN(CASE WHEN visible_at <= :now THEN created_at END)
FROM {MSGS}
WHERE :queue IS NULL OR queue = :queue
GROUP BY queue, grp
"""
REGISTERED_GROUPS: Final = f"SELECT queue, grp FROM {GROUPS} WHERE ? IS NULL OR queue = ?"
DEAD_LETTER_COUNTS: Final = f"""
SELECT queue, grp, COUNT(*) FROM {DLQ} WHERE ? IS NULL OR queue = ? GROUP BY queue, grp
"""

# ``:ids`` is a JSON array of row ids, or NULL for any.
_DEAD_LETTER_FILTER = """
(:ids IS NULL OR id IN (SELECT value FROM json_each(:ids)))
AND (:queue IS NULL OR queue = :queue)
AND (:grp IS NULL OR grp = :grp)
AND (:failed_before IS NULL OR failed_at < :failed_before)
"""
FIND_DEAD_LETTERS: Final = f"""
SELECT id, queue, grp, body, headers, content_type, correlation_id, message_id, reply_to,
       priority, attempts, created_at, failed_at, reason, error
FROM {DLQ}
WHERE {_DEAD_LETTER_FILTER} AND id > :after AND (:upto IS NULL OR id <= :upto)
ORDER BY id
LIMIT :limit
"""
LAST_DEAD_LETTER: Final = f"SELECT MAX(id) FROM {DLQ}"
DELETE_DEAD_LETTERS: Final = f"DELETE FROM {DLQ} WHERE {_DEAD_LETTER_FILTER}"

# Back into the group it died in only (not fanned out again), with a fresh attempt count.
REPLAY_DEAD_LETTERS: Final = f"""
INSERT INTO {MSGS} (
    queue, grp, body, headers, content_type, correlation_id, message_id, reply_to,
    priority, visible_at, created_at
)
SELECT queue, grp, body, headers, content_type, correlation_id, message_id, reply_to,
       priority, :now, created_at
FROM {DLQ} WHERE id IN (SELECT value FROM json_each(:ids))
ORDER BY id
RETURNING queue
"""
DELETE_DEAD_LETTERS_BY_ID: Final = (
    f"DELETE FROM {DLQ} WHERE id IN (SELECT value FROM json_each(:ids))"
)
