"""Scenario C: request/reply latency over sequential ``broker.request`` calls.

In one process the echo subscriber and the requester share a broker. Across
processes the echo subscriber runs in ``bench.apps.responder`` (a subprocess on the
same event loop kind, logger off) and the requester here has no subscribers.
Each reply is decoded after timing and checked against its request.
"""

import gc
import time
from pathlib import Path
from typing import Any

from bench.lifecycle import make_body, start_broker, stop_broker
from bench.results import BenchError
from bench.stats import latency_summary_ms
from bench.subprocs import spawn_app
from bench.targets import Target


async def _measure(
    target: Target, broker: Any, *, requests: int, warmup: int, reply_timeout: float
) -> dict[str, float]:
    for i in range(warmup):
        await target.request(broker, make_body(-1 - i), reply_timeout)
    gc.collect()

    samples: list[float] = []
    replies: list[Any] = []
    for i in range(requests):
        start = time.perf_counter()
        reply = await target.request(broker, make_body(i), reply_timeout)
        samples.append(time.perf_counter() - start)
        replies.append(reply)

    wrong = 0
    for i, reply in enumerate(replies):
        decoded = await reply.decode()
        if not isinstance(decoded, dict) or decoded.get("i") != i:
            wrong += 1
    if wrong:
        raise BenchError(f"{wrong}/{requests} replies did not match their request")
    return latency_summary_ms(samples)


async def in_process(
    target: Target, *, requests: int, warmup: int, reply_timeout: float
) -> dict[str, float]:
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return body

    broker = target.make_broker(log=False)
    target.subscribe(broker, echo)
    await start_broker(broker, log=False)
    try:
        return await _measure(
            target, broker, requests=requests, warmup=warmup, reply_timeout=reply_timeout
        )
    finally:
        await stop_broker(broker)


async def cross_process(
    target: Target, *, requests: int, warmup: int, reply_timeout: float, loop: str, workdir: Path
) -> dict[str, float]:
    args = [
        "--target", target.key,
        "--endpoint", target.endpoint,
        "--workdir", str(workdir),
        "--loop", loop,
    ]  # fmt: skip
    async with spawn_app("bench.apps.responder", args, workdir=workdir) as app:
        broker = target.make_broker(log=False)
        await start_broker(broker, log=False)
        try:
            return await _measure(
                target, broker, requests=requests, warmup=warmup, reply_timeout=reply_timeout
            )
        except Exception as exc:
            if app.proc.returncode is None:
                raise
            raise BenchError(
                f"{type(exc).__name__}: {exc}; the responder exited with code "
                f"{app.proc.returncode}: {app.stderr_tail() or '(no stderr)'}"
            ) from exc
        finally:
            await stop_broker(broker)
