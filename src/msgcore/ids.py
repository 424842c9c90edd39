"""Identifiers msgcore generates."""

from __future__ import annotations

import os
import random
import time

_rng = random.Random()
_MS_MASK = (1 << 48) - 1


def _reseed() -> None:
    _rng.seed(random.SystemRandom().getrandbits(128))


_reseed()
# A forked worker must not repeat its parent's ids.
os.register_at_fork(after_in_child=_reseed)


def new_message_id() -> str:
    """A 128-bit hex id: 48 bits of milliseconds since the epoch, then 80 random bits
    (the layout of a UUIDv7, without its version bits), without a system call per id.

    Time first because job ids are primary keys: ids of one period land in the same
    index pages of the SQLite store, not all over the index (fewer pages written per
    commit). Seeded from the OS once per process; ids are identifiers, not secrets.
    """
    return f"{time.time_ns() // 1_000_000 & _MS_MASK:012x}{_rng.getrandbits(80):020x}"
