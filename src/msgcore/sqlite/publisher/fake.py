from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faststream._internal.endpoint.publisher.fake import FakePublisher

from msgcore.sqlite.response import SqlitePublishCommand

if TYPE_CHECKING:
    from faststream._internal.producer import ProducerProto
    from faststream.response.response import PublishCommand


class SqliteFakePublisher(FakePublisher):
    """Publishes a handler's return value to the ``reply_to`` queue of its message."""

    __slots__ = ("queue",)

    def __init__(self, producer: ProducerProto[Any], queue: str) -> None:
        super().__init__(producer=producer)
        self.queue = queue

    def patch_command(self, cmd: PublishCommand) -> SqlitePublishCommand:
        cmd = super().patch_command(cmd)
        real = SqlitePublishCommand.from_cmd(cmd)
        real.destination = self.queue
        return real
