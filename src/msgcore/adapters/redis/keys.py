"""Where one channel lives in Redis: its stream and the keys msgcore keeps beside it.

Every name comes from ``msgcore.naming``; this module only groups them per channel and
names the stream-entry fields msgcore writes next to FastStream's ``__data__``.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

from msgcore.constants import DEFAULT_GROUP, HEADER_ATTEMPT
from msgcore.exceptions import ConfigurationError
from msgcore.naming import (
    REDIS_RESERVED_CHANNEL_PREFIXES,
    redis_dead_letter_index,
    redis_dead_letter_stream,
    redis_delayed_set,
    redis_retry_set,
    redis_retry_stream,
    redis_stream,
)

__all__ = [
    "ATTEMPT_FIELD",
    "JOB_FIELD",
    "ORIGIN_FIELD",
    "ChannelKeys",
    "check_channel",
    "consumer_name",
]

ATTEMPT_FIELD = HEADER_ATTEMPT
"""Stream-entry field with the delivery number of a redelivered copy (absent: 1).

The parser also shows it to handlers as the header of the same name."""

ORIGIN_FIELD = "x-msgcore-origin"
"""Stream-entry field of a redelivered copy: the entry id of the original message."""

JOB_FIELD = "x-msgcore-job"
"""Stream-entry field of a job's message added with its record (``Client.submit`` with
the store on the transport's server): the job id. A cancel deletes such an entry while
no group has read it and refuses once one has, so on the entry's first delivery the
worker runs the job without reading its record first."""


@dataclass(frozen=True)
class ChannelKeys:
    """The Redis keys of one msgcore channel (and, per group, its retries)."""

    channel: str
    prefix: str

    @classmethod
    def of_stream(cls, stream: str, prefix: str) -> ChannelKeys:
        """The keys of the channel whose stream is ``stream``."""
        if not stream.startswith(prefix):
            raise ConfigurationError(
                f"Stream {stream!r} does not start with the stream prefix {prefix!r}: "
                "it was not declared through a msgcore.Router on this Settings."
            )
        return cls(stream[len(prefix) :], prefix)

    @property
    def stream(self) -> str:
        return redis_stream(self.channel, self.prefix)

    @property
    def delayed(self) -> str:
        return redis_delayed_set(self.channel, self.prefix)

    @property
    def dead(self) -> str:
        return redis_dead_letter_stream(self.channel, self.prefix)

    @property
    def dead_index(self) -> str:
        return redis_dead_letter_index(self.prefix)

    def retry_stream(self, group: str | None) -> str:
        return redis_retry_stream(self.channel, group or DEFAULT_GROUP, self.prefix)

    def retry_set(self, group: str | None) -> str:
        return redis_retry_set(self.channel, group or DEFAULT_GROUP, self.prefix)


def check_channel(channel: str) -> None:
    """Refuse a channel whose stream would be one of msgcore's own keys."""
    if channel.startswith(REDIS_RESERVED_CHANNEL_PREFIXES):
        raise ConfigurationError(
            f"Channel {channel!r} cannot be used on Redis: names starting with "
            f"{', '.join(REDIS_RESERVED_CHANNEL_PREFIXES)} are msgcore's own keys "
            "(dead letters, delays, retries, job records, state, cache, locks). Rename the "
            "channel."
        )


def consumer_name() -> str:
    """A consumer name no other broker uses: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
