"""Command line of the benchmark suite (``python bench/run.py --help``)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import loops
from bench.machine import describe_machine
from bench.report import build_tables, error_lines, markdown_machine, markdown_tables, print_tables
from bench.results import Result
from bench.settings import SCENARIO_KEYS, TARGET_KEYS, BenchSettings, Servers
from bench.suite import Suite
from bench.targets import sweep_redis


def _csv(allowed: Sequence[str]) -> Any:
    def parse(value: str) -> tuple[str, ...]:
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        unknown = [v for v in items if v not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(allowed)}"
            )
        return items

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Benchmark msgcore's SqliteBroker against FastStream's Redis and RabbitMQ "
        "brokers on this machine: A end-to-end throughput, B publish_batch, C request/reply "
        "latency, D idle CPU, E the cost of the per-message INFO log.",
    )
    parser.add_argument("--n", type=int, help="messages for A/B/E (default 20000, quick 3000)")
    parser.add_argument("--batch-size", type=int, help="publish_batch size (default 500)")
    parser.add_argument("--requests", type=int, help="requests for C (default 2000, quick 300)")
    parser.add_argument("--idle-seconds", type=float, help="window for D (default 10, quick 3)")
    parser.add_argument("--warmup", type=int, help="warm-up messages (default 500, quick 100)")
    parser.add_argument(
        "--loop",
        choices=(*loops.LOOPS, "both"),
        default=loops.default_loop(),
        help="event loop (default: uvloop where importable); 'both' runs uvloop then asyncio",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument(
        "--only", type=_csv(TARGET_KEYS), help=f"targets, comma separated: {','.join(TARGET_KEYS)}"
    )
    parser.add_argument(
        "--scenarios", type=_csv(SCENARIO_KEYS), help="scenarios, comma separated: A,B,C,D,E"
    )
    parser.add_argument(
        "--no-server-cross-process",
        action="store_true",
        help="measure cross-process request/reply for SQLite only",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="before each measurement, wait up to this many seconds for other programs' CPU "
        "use to drop under --quiet-threshold (default 10, quick 3; 0 disables)",
    )
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        help="background CPU, in %% of one core, that counts as noisy (default 25)",
    )
    parser.add_argument("--json", type=Path, help="write machine info and all results here")
    parser.add_argument("--markdown", type=Path, help="write the tables as Markdown here")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> BenchSettings:
    base = BenchSettings.quick() if args.quick else BenchSettings()
    overrides: dict[str, Any] = {
        "n": args.n,
        "batch_size": args.batch_size,
        "requests": args.requests,
        "idle_seconds": args.idle_seconds,
        "warmup": args.warmup,
        "targets": args.only,
        "scenarios": args.scenarios,
        "quiet_wait": args.quiet_wait,
        "quiet_threshold_pct": args.quiet_threshold,
    }
    changes = {k: v for k, v in overrides.items() if v is not None}
    if args.no_server_cross_process:
        changes["cross_process_servers"] = False
    settings = dataclasses.replace(base, **changes)
    if settings.n < 1 or settings.batch_size < 1 or settings.requests < 1:
        raise SystemExit("--n, --batch-size and --requests must be positive")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    if args.loop == "uvloop" and not loops.uvloop_available():
        raise SystemExit("uvloop is not importable here: pass --loop asyncio")
    loop_names = list(loops.LOOPS) if args.loop == "both" else [args.loop]
    if "uvloop" in loop_names and not loops.uvloop_available():
        loop_names.remove("uvloop")

    # Wide enough for the tables when the output goes to a file or a pipe.
    console = Console(width=None if sys.stdout.isatty() else 200)
    servers = Servers()
    run_id = f"{dt.datetime.now():%Y%m%d%H%M%S}-{os.getpid()}"
    prefix = f"msgcore-bench-{run_id}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))

    machine = loops.run(lambda: describe_machine(servers), "asyncio")
    console.rule("msgcore benchmark")
    console.print(", ".join(f"{k}: {v}" for k, v in machine.items()))
    console.print(
        f"settings: n={settings.n:,} batch={settings.batch_size} requests={settings.requests:,} "
        f"idle={settings.idle_seconds:g}s warmup={settings.warmup} loops={','.join(loop_names)} "
        f"targets={','.join(settings.targets)} scenarios={','.join(settings.scenarios)}"
    )

    results: list[Result] = []
    setups: dict[str, str] = {}
    durations: dict[str, float] = {}
    try:
        for loop_name in loop_names:
            console.rule(f"event loop: {loop_name}")
            suite = Suite(
                settings,
                loop=loop_name,
                prefix=prefix,
                workdir=workdir,
                servers=servers,
                console=console,
            )
            started = time.perf_counter()
            results += loops.run(suite.run, loop_name)
            setups.update(suite.setups)
            durations[loop_name] = time.perf_counter() - started
    finally:
        try:
            swept = loops.run(lambda: sweep_redis(servers.redis_url, prefix), "asyncio")
            if swept:
                console.log(f"deleted {swept} leftover Redis keys")
        except Exception as exc:
            console.log(f"[yellow]could not sweep Redis keys {prefix}*: {exc}[/]")
        shutil.rmtree(workdir, ignore_errors=True)

    tables = build_tables(results, n=settings.n, requests=settings.requests, setups=setups)
    console.rule("results")
    print_tables(console, tables)
    errors = error_lines(results)
    for line in errors:
        console.print(f"[bold red]error[/] {line}")
    console.print(
        "run time: " + ", ".join(f"{loop} {seconds:.0f} s" for loop, seconds in durations.items())
    )

    if args.json:
        payload = {
            "run_id": run_id,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "settings": dataclasses.asdict(settings),
            "machine": machine,
            "setups": setups,
            "durations_s": durations,
            "results": [r.as_dict() for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        console.print(f"wrote {args.json}")
    if args.markdown:
        args.markdown.write_text(
            markdown_machine(machine) + "\n\n" + markdown_tables(tables) + "\n"
        )
        console.print(f"wrote {args.markdown}")
    return 1 if errors else 0
