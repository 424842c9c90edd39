"""What ``msgcore.ops`` says when the transport is not there: a ``StorageError`` naming
the URL without its password, and what to check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from msgcore import Settings, StorageError
from msgcore.ops import (
    TransportUnreachableError,
    channel_stats,
    get_dead_letter,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
)

SECRET = "s3cr3t-pw"

CALLS: list[Callable[[Settings], Awaitable[Any]]] = [
    channel_stats,
    list_dead_letters,
    lambda s: get_dead_letter(s, "1-0@x"),
    replay_dead_letters,
    purge_dead_letters,
]


@pytest.mark.parametrize("call", CALLS, ids=["stats", "list", "show", "replay", "purge"])
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{SECRET}@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
        (f"amqp://guest:{SECRET}@127.0.0.1:1/", "amqp://guest:***@127.0.0.1:1/"),
    ],
    ids=["redis", "rabbit"],
)
async def test_an_unreachable_server_is_named_without_its_password(
    url: str, shown: str, call: Callable[[Settings], Awaitable[Any]], tmp_path: Path
) -> None:
    settings = Settings(url=url, store_url=f"sqlite:///{tmp_path / 'store.db'}")
    with pytest.raises(TransportUnreachableError) as raised:
        await call(settings)
    message = str(raised.value)
    assert isinstance(raised.value, StorageError)
    assert shown in message
    assert SECRET not in message
    assert "MSGCORE_URL" in message


async def test_a_wrong_rabbitmq_password_is_unreachable(rabbit_url: str, tmp_path: Path) -> None:
    url = rabbit_url.replace("guest:guest@", f"guest:{SECRET}@")
    assert SECRET in url
    settings = Settings(url=url, store_url=f"sqlite:///{tmp_path / 'store.db'}")
    with pytest.raises(TransportUnreachableError) as raised:
        await channel_stats(settings)
    assert SECRET not in str(raised.value)
    assert "password" in str(raised.value)


async def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.db"
    settings = Settings(url=f"sqlite:///{path}")
    with pytest.raises(TransportUnreachableError) as raised:
        await channel_stats(settings)
    assert str(path) in str(raised.value)
    assert not path.exists()


async def test_a_rabbitmq_virtual_host_that_does_not_exist_is_named(
    rabbit_url: str, tmp_path: Path
) -> None:
    url = rabbit_url.rstrip("/") + "/msgcore-no-such-vhost"
    settings = Settings(url=url, store_url=f"sqlite:///{tmp_path / 'store.db'}")
    with pytest.raises(TransportUnreachableError, match="virtual host 'msgcore-no-such-vhost'"):
        await channel_stats(settings)
