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
    parser.add_argument(
        "--repeat",
        type=int,
        help="runs per measurement of A/B/C/E, the median is reported (default 1)",
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
    parser.add_argument(
        "--cpus",
        help="pin the benchmark (and its subprocesses) to these CPUs, e.g. '1' or '0,1' "
        "(Linux; like taskset). Servers stay where they are.",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="measure nothing: print (and --markdown) the tables of earlier --json files together",
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
        "repeat": args.repeat,
        "targets": args.only,
        "scenarios": args.scenarios,
        "quiet_wait": args.quiet_wait,
        "quiet_threshold_pct": args.quiet_threshold,
    }
    changes = {k: v for k, v in overrides.items() if v is not None}
    if args.no_server_cross_process:
        changes["cross_process_servers"] = False
    settings = dataclasses.replace(base, **changes)
    if min(settings.n, settings.batch_size, settings.requests, settings.repeat) < 1:
        raise SystemExit("--n, --batch-size, --requests and --repeat must be positive")
    return settings


def pin_cpus(spec: str) -> None:
    try:
        cpus = {int(c) for c in spec.split(",") if c.strip()}
        os.sched_setaffinity(0, cpus)
    except (ValueError, OSError, AttributeError) as exc:
        raise SystemExit(f"--cpus {spec!r}: {exc}") from None


def report_saved(args: argparse.Namespace) -> int:
    """``--from-json``: one set of tables from several saved runs (e.g. uvloop + asyncio)."""
    console = Console(width=None if sys.stdout.isatty() else 200, log_path=False)
    runs = [json.loads(path.read_text()) for path in args.from_json]
    results = [Result.from_dict(r) for run in runs for r in run["results"]]
    setups: dict[str, str] = {}
    for run in runs:
        setups.update(run.get("setups", {}))
    first = runs[0]
    n, requests = first["settings"]["n"], first["settings"]["requests"]
    if any(run["settings"]["n"] != n or run["settings"]["requests"] != requests for run in runs):
        console.print("[yellow]the files were measured with different --n/--requests[/]")
    tables = build_tables(results, n=n, requests=requests, setups=setups)
    print_tables(console, tables)
    if args.markdown:
        args.markdown.write_text(
            markdown_machine(first["machine"]) + "\n\n" + markdown_tables(tables) + "\n"
        )
        console.print(f"wrote {args.markdown}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return report_saved(args)
    settings = settings_from(args)
    if args.cpus:
        pin_cpus(args.cpus)
    if args.loop == "uvloop" and not loops.uvloop_available():
        raise SystemExit("uvloop is not importable here: pass --loop asyncio")
    loop_names = list(loops.LOOPS) if args.loop == "both" else [args.loop]
    if "uvloop" in loop_names and not loops.uvloop_available():
        loop_names.remove("uvloop")

    # Wide enough for the tables when the output goes to a file or a pipe.
    console = Console(width=None if sys.stdout.isatty() else 200, log_path=False)
    servers = Servers()
    run_id = f"{dt.datetime.now():%Y%m%d%H%M%S}-{os.getpid()}"
    prefix = f"msgcore-bench-{run_id}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))

    machine = loops.run(lambda: describe_machine(servers), "asyncio")
    console.rule("msgcore benchmark")
    console.print(", ".join(f"{k}: {v}" for k, v in machine.items()))
    console.print(
        f"settings: n={settings.n:,} batch={settings.batch_size} requests={settings.requests:,} "
        f"idle={settings.idle_seconds:g}s warmup={settings.warmup} repeat={settings.repeat} "
        f"loops={','.join(loop_names)} "
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
