"""Per-key locks as the store holds them.

A lock is a row (SQLite) or a hash (Redis) per key naming the *token* of the
acquisition that holds it, a *holder* description for people (a job id, ``host:pid``)
and when the lease runs out. A lock whose lease has run out is free, whether or not
its row is deleted yet: a holder that died releases by silence.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LockHolder"]


@dataclass(frozen=True)
class LockHolder:
    """Who holds a key's lock, and until when (epoch seconds)."""

    key: str
    holder: str
    expires_at: float
