"""``MsgcoreRabbitBroker``: FastStream's ``RabbitBroker`` where a bare channel name means
a msgcore channel."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from aiormq.exceptions import AMQPConnectionError, AMQPError
from faststream.rabbit import RabbitBroker
from faststream.rabbit.publisher.producer import AioPikaFastProducerImpl
from typing_extensions import override

from msgcore.adapters.rabbit.requester import Requester
from msgcore.adapters.rabbit.topology import WaitQueues, handshake_refused, topic_exchange
from msgcore.exceptions import BrokerConnectionError
from msgcore.urls import redact_url

if TYPE_CHECKING:
    from types import TracebackType

    import aiormq
    from aio_pika import RobustConnection
    from faststream.rabbit.message import RabbitMessage
    from faststream.rabbit.schemas import RabbitExchange, RabbitQueue
    from faststream.rabbit.types import AioPikaSendableMessage

__all__ = ["MsgcoreRabbitBroker", "RabbitState", "url_heartbeat"]


def url_heartbeat(url: str) -> int | None:
    """The ``?heartbeat=`` of an amqp:// URL, if it sets one."""
    value = parse_qs(urlsplit(url).query).get("heartbeat")
    if not value:
        return None
    try:
        return int(value[-1])
    except ValueError:
        return None


@dataclass(eq=False)
class RabbitState:
    """What one broker keeps for msgcore: its exchange, declared wait queues, requester."""

    exchange: str
    request_timeout: float
    waits: WaitQueues = field(default_factory=WaitQueues)
    held: set[str] = field(default_factory=set)
    """Channels whose holding queue this broker declared (``unrouted.py``)."""
    requester: Requester | None = None


class MsgcoreRabbitBroker(RabbitBroker):
    """A ``RabbitBroker`` (``TestRabbitBroker`` applies) bound to msgcore's exchange.

    Differences from FastStream's, all so that the broker API means the same as on
    msgcore's other transports:

    - the topic exchange is declared on connect, so publishing works without
      ``start()``;
    - ``publish(msg, "orders")`` / ``request(msg, "orders")`` without an ``exchange``
      go to the channel ``orders`` of msgcore's exchange (every group), not to a queue
      named ``orders``; pass ``exchange=""`` for RabbitMQ's default exchange;
    - ``publish`` is persistent unless ``persist=False``; ``request`` times out after
      ``Settings.request_timeout`` unless given ``timeout=``.
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "msgcore",
        request_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, **kwargs)
        self.msgcore = RabbitState(exchange=exchange, request_timeout=request_timeout)
        self.msgcore_exchange: RabbitExchange = topic_exchange(exchange)

    @property
    def is_live(self) -> bool:
        """Whether publishes reach RabbitMQ (not ``TestRabbitBroker``'s fake producer)."""
        return isinstance(self.config.producer, AioPikaFastProducerImpl)

    def requester(self) -> Requester:
        if self.msgcore.requester is None:
            self.msgcore.requester = Requester(self)
        return self.msgcore.requester

    async def start(self) -> None:
        """Connect and start every subscriber and publisher; a second call does nothing
        (FastStream's would start a second consumer on every queue)."""
        if self.running:
            return
        await super().start()

    def _lease_heartbeat(self) -> int | None:
        """The AMQP heartbeat that makes ``lease_seconds`` hold: RabbitMQ closes the
        connection of a worker it has not heard from for about a heartbeat, and puts its
        unacked messages back. None if the URL sets one or no subscriber asks."""
        if url_heartbeat(str(self._connection_kwargs.get("url", ""))) is not None:
            return None
        leases = [
            plan.lease_seconds
            for sub in self.subscribers
            if (plan := getattr(sub, "plan", None)) is not None
            and isinstance(getattr(plan, "lease_seconds", None), float | int)
        ]
        return max(1, math.ceil(min(leases))) if leases else None

    @override
    async def _connect(self) -> RobustConnection:
        if (heartbeat := self._lease_heartbeat()) is not None:
            self._connection_kwargs["heartbeat"] = heartbeat
        try:
            connection = await super()._connect()
        except AMQPError as exc:
            raw_url = str(self._connection_kwargs.get("url", ""))
            if (
                isinstance(exc, AMQPConnectionError)
                or (advice := handshake_refused(raw_url, exc)) is None
            ):
                raise self._unreachable(exc) from exc
            raise BrokerConnectionError(advice, server=redact_url(raw_url)) from exc
        except (ConnectionError, OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        # Its alternate exchange is declared only once a publish needs it (unrouted.py).
        await self.config.declarer.declare_exchange(self.msgcore_exchange)
        return connection

    def _unreachable(self, exc: BaseException) -> BrokerConnectionError:
        url = redact_url(str(self._connection_kwargs.get("url", "")))
        detail = redact_url(str(exc)) or (
            f"no answer within {self._connection_kwargs.get('timeout')}s "
            "(MSGCORE_RABBIT__CONNECT_TIMEOUT)"
        )
        return BrokerConnectionError(
            f"Cannot connect to RabbitMQ at {url} ({type(exc).__name__}: {detail}). Check "
            "that RabbitMQ is running there and that the URL's host, port, user and "
            "password are right (MSGCORE_URL).",
            server=url,
        )

    async def stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        await super().stop(exc_type, exc_val, exc_tb)
        requester, self.msgcore.requester = self.msgcore.requester, None
        if requester is not None:
            await requester.close()

    @override
    async def publish(
        self,
        message: AioPikaSendableMessage = None,
        queue: RabbitQueue | str = "",
        exchange: RabbitExchange | str | None = None,
        **kwargs: Any,
    ) -> aiormq.abc.ConfirmationFrameType | None:
        kwargs.setdefault("persist", True)
        return await super().publish(
            message, queue, self.msgcore_exchange if exchange is None else exchange, **kwargs
        )

    @override
    async def request(  # type: ignore[override]
        self,
        message: AioPikaSendableMessage = None,
        queue: RabbitQueue | str = "",
        exchange: RabbitExchange | str | None = None,
        **kwargs: Any,
    ) -> RabbitMessage:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.msgcore.request_timeout
        return await super().request(
            message, queue, self.msgcore_exchange if exchange is None else exchange, **kwargs
        )
