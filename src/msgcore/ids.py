"""Identifiers msgcore generates."""

from __future__ import annotations

import os
import random

_rng = random.Random()


def _reseed() -> None:
    _rng.seed(random.SystemRandom().getrandbits(128))


_reseed()
# A forked worker must not repeat its parent's ids.
os.register_at_fork(after_in_child=_reseed)


def new_message_id() -> str:
    """A random 128-bit hex id, as unique as a UUID4, without a system call per id.

    Seeded from the OS once per process; ids are identifiers, not secrets.
    """
    return f"{_rng.getrandbits(128):032x}"
