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
