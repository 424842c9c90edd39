"""bench/jobs.py's worker in a process of its own, as a deployment runs it.

python -m bench.apps.jobs_worker --transport T --workdir DIR --tag TAG [--track]
       [--expect N] [--max-workers 1] [--loop uvloop]

The same handler as the in-process worker. Prints READY once the broker runs; without
``--track`` (bare publish) it also prints FIRST at the first message and DONE once it has
seen ``--expect`` messages, the bench's clock for the bare side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from bench import loops
from bench.runs import run_loop, settings_for
from msgcore import Router, create_broker

# The bench reads this process's stdout line by line; FastStream's logger writes there
# too, so the protocol lines get the original stdout and everything else goes to stderr.
_PROTOCOL = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)


def _say(line: str) -> None:
    _PROTOCOL.write(line + "\n")


async def serve(args: argparse.Namespace) -> None:
    router = Router()
    seen = 0

    @router.subscriber(
        args.channel, group="bench", max_workers=args.max_workers, prefetch=args.prefetch
    )
    async def handle(n: int) -> int:
        nonlocal seen
        if not args.track:
            seen += 1
            if seen == 1:
                _say("FIRST")
            if seen == args.expect:
                _say("DONE")
        return n * n

    settings = settings_for(args.transport, args.workdir, args.tag, track=args.track)
    broker = create_broker(router, settings=settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with broker:
        await broker.start()
        _say("READY")
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transport", required=True, choices=("sqlite", "redis", "rabbit"))
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--track", action="store_true")
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--max-workers", type=int, default=1)
    parser.add_argument("--prefetch", type=int, default=None)
    parser.add_argument("--loop", default=loops.default_loop(), choices=loops.LOOPS)
    run_loop(serve, parser.parse_args())
