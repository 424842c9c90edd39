"""The publisher of one msgcore channel on RabbitMQ."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from faststream._internal.broker.registrator import Registrator
from faststream._internal.utils.path import Address
from faststream.rabbit.publisher.config import (
    RabbitPublisherConfig,
    RabbitPublisherSpecificationConfig,
)
from faststream.rabbit.publisher.options import PublishKwargs
from faststream.rabbit.publisher.specification import RabbitPublisherSpecification
from faststream.rabbit.publisher.usecase import RabbitPublisher
from faststream.rabbit.response import RabbitPublishCommand
from faststream.rabbit.schemas import RabbitExchange, RabbitQueue
from faststream.rabbit.schemas.queue import RABBIT_ADDRESS_SYNTAX
from typing_extensions import Unpack, override

from msgcore.adapters.rabbit.settlement import ensure_routed
from msgcore.adapters.rabbit.topology import topic_exchange
from msgcore.adapters.rabbit.unrouted import hold, is_returned
from msgcore.naming import rabbit_routing_key

if TYPE_CHECKING:
    import aiormq
    from faststream._internal.types import PublisherMiddleware
    from faststream.rabbit.broker.router import RabbitRouter
    from faststream.rabbit.configs import RabbitBrokerConfig
    from faststream.rabbit.types import AioPikaSendableMessage
    from faststream.response.response import PublishCommand

    from msgcore.router import PublisherHandle

__all__ = ["MsgcoreRabbitPublisher", "create_channel_publisher"]


class MsgcoreRabbitPublisher(RabbitPublisher):
    """Publishes persistent messages to one channel of msgcore's topic exchange.

    Unlike FastStream's, a publish to a channel no group has a queue for yet does not
    vanish: it is kept for the first group that starts (``unrouted.py``).
    """

    def __init__(self, *args: Any, channel: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.msgcore_channel = channel

    async def hold(self) -> None:
        """Keep what is published to this channel until its first group starts."""
        amqp = await self._outer_config.channel_manager.get_channel()
        await hold(amqp, exchange=self.exchange.name, channel=self.msgcore_channel)

    @override
    async def publish(
        self,
        message: AioPikaSendableMessage,
        queue: RabbitQueue | str | None = None,
        exchange: RabbitExchange | str | None = None,
        *,
        routing_key: str = "",
        **publish_kwargs: Unpack[PublishKwargs],
    ) -> aiormq.abc.ConfirmationFrameType | None:
        to_channel = queue is None and exchange is None and not routing_key
        kwargs = dict(publish_kwargs)  # RabbitPublisher.publish pops from it
        result = await super().publish(
            message, queue, exchange, routing_key=routing_key, **cast("Any", dict(kwargs))
        )
        if to_channel and is_returned(result):
            # no group exists yet: keep it for the first one (unrouted.py)
            await self.hold()
            result = await super().publish(
                message, queue, exchange, routing_key=routing_key, **cast("Any", kwargs)
            )
        ensure_routed(result, f"a message to channel {self.msgcore_channel!r}")
        return result

    @override
    async def _publish(
        self,
        cmd: RabbitPublishCommand | PublishCommand,
        *,
        _extra_middlewares: Iterable[PublisherMiddleware],
    ) -> None:
        # RabbitPublisher._publish, keeping the publish result to check it
        cmd = RabbitPublishCommand.from_cmd(cmd)
        to_channel = cmd._exchange is None
        cmd.exchange = RabbitExchange.validate(cmd._exchange or self.exchange)
        cmd.destination = self.routing()
        cmd.reply_to = cmd.reply_to or self.reply_to
        cmd.add_headers(self.headers, override=False)
        cmd.timeout = cmd.timeout or self.timeout
        cmd.message_options = {**self.message_options, **cmd.message_options}
        cmd.publish_options = {**self.publish_options, **cmd.publish_options}
        middlewares = tuple(_extra_middlewares)
        producer = self._outer_config.producer
        result = await self._basic_publish(cmd, producer=producer, _extra_middlewares=middlewares)
        if to_channel and is_returned(result):
            await self.hold()
            result = await self._basic_publish(
                cmd, producer=producer, _extra_middlewares=middlewares
            )
        ensure_routed(result, f"a message to channel {self.msgcore_channel!r}")


def create_channel_publisher(
    router: RabbitRouter, *, channel: str, exchange: str, handle: PublisherHandle
) -> MsgcoreRabbitPublisher:
    """Declare the publisher of ``channel`` on ``router`` (as ``router.publisher()`` does
    for FastStream's own), so that AsyncAPI documents it."""
    message_kwargs = PublishKwargs(
        mandatory=True,
        immediate=False,
        timeout=None,
        persist=True,
        reply_to=None,
        headers=handle.headers or None,
        priority=None,
        content_type=None,
        content_encoding=None,
        message_type=None,
        user_id=None,
        expiration=None,
    )
    routing_address = Address(rabbit_routing_key(channel), RABBIT_ADDRESS_SYNTAX)
    queue = RabbitQueue("")  # what router.publisher(routing_key=...) holds
    topic = topic_exchange(exchange)
    config = cast("RabbitBrokerConfig", router.config)
    publisher = MsgcoreRabbitPublisher(
        config=RabbitPublisherConfig(
            routing_address=routing_address,
            message_kwargs=message_kwargs,
            queue=queue,
            exchange=topic,
            _outer_config=config,
        ),
        specification=RabbitPublisherSpecification(
            _outer_config=config,
            specification_config=RabbitPublisherSpecificationConfig(
                message_kwargs=message_kwargs,
                routing_address=routing_address,
                queue=queue,
                exchange=topic,
                schema_=handle.schema,
                title_=handle.title,
                description_=handle.description,
                include_in_schema=handle.include_in_schema,
            ),
        ),
        channel=channel,
    )
    Registrator.publisher(router, publisher, persistent=True)
    return publisher
