"""What the helper programs share: build a target's broker, serve until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path

from bench import loops
from bench.settings import TARGET_KEYS, Servers
from bench.targets import Handler, make_target


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--target", required=True, choices=TARGET_KEYS)
    parser.add_argument("--endpoint", required=True, help="queue / list / stream name")
    parser.add_argument("--workdir", required=True, type=Path, help="where SQLite files live")
    parser.add_argument("--loop", default=loops.default_loop(), choices=loops.LOOPS)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace, handler: Handler) -> None:
    """Subscribe ``handler`` (no logger), print READY, run until SIGTERM or SIGINT."""
    target = make_target(args.target, args.endpoint, args.workdir, Servers())
    broker = target.make_broker(log=False)
    target.subscribe(broker, handler)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    print("READY", flush=True)
    try:
        await stop.wait()
    finally:
        await broker.stop()


def main(description: str, handler: Handler, argv: Sequence[str] | None = None) -> None:
    args = parse_args(description, argv)
    loops.run(lambda: serve(args, handler), args.loop)
