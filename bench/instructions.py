"""Instructions per message, counted (callgrind) instead of timed: job tracking and tracing.

    python bench/instructions.py [--only sqlite,redis,rabbit] [--cases jobs,batches,tracing]
                                 [--n 1000] [--base 500] [--sampled 0.1]

On a shared VM the same run's CPU time swings by a third within minutes, so the timed
ratios of ``bench/jobs.py`` and ``bench/telemetry.py`` move by ±0.2 between runs of the
same code. Instruction counts spread by 1-4 %. Each figure here is one side of those
benchmarks run twice under valgrind's callgrind, with ``base`` and ``base + n`` messages,
the difference divided by ``n``: start-up, warm-up and clean-up cancel out.

- ``jobs``: one by one, bare publish against ``Client.submit`` + ``wait``;
  ``batches``: the same in batches of 500 (``bench/jobs.py``, worker in the process).
- ``tracing``: tracing off against on, ``--sampled`` of the traces head-sampled
  (``bench/telemetry.py``).

What the counts leave out: the servers' work (Redis, RabbitMQ: a separate process), time
in the kernel (a system call counts as one instruction; SQLite's commits make a dozen or
more), and how fast the instructions run (cache misses). So it tells whether a change made the
code do less; it is not the timed ratio the targets in docs/benchmarks.md are about.
Needs valgrind (Debian: ``apt install valgrind``); each case takes about a minute a side,
two sides at once.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "src", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

SIDES = {
    "jobs": ("bare", "jobs"),
    "batches": ("bare", "jobs"),
    "tracing": ("off", "on"),
}
_COLLECTED = re.compile(r"Collected : (\d+)")


def child(transport: str, case: str, side: str, n: int) -> None:
    """One side of one case, ``n`` messages, in this process (what valgrind counts)."""
    from bench.runs import run_loop

    async def run(_: argparse.Namespace) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            if case == "tracing":
                from bench import telemetry

                await telemetry.once(transport, n, Path(tmp), traced=side == "on")
            else:
                from bench import jobs

                many = case == "batches"
                if side == "bare":
                    await jobs.bare(transport, n, Path(tmp), many=many)
                else:
                    await jobs.jobs(transport, n, Path(tmp), many=many)

    run_loop(run, argparse.Namespace(loop="uvloop"))


def _count(transport: str, case: str, side: str, n: int, sampled: float) -> int:
    """Instructions of one child run under callgrind."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if case == "tracing":
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        env["OTEL_TRACES_SAMPLER_ARG"] = str(sampled)
    command = [
        *("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"),
        *(sys.executable, str(Path(__file__).resolve())),
        *("--child", transport, case, side, str(n)),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{transport} {case} {side} (n={n}) failed:\n{tail}")
    return int(found.group(1))


def per_message(transport: str, case: str, side: str, args: argparse.Namespace) -> float:
    """(instructions with base + n messages - with base) / n."""
    small = _count(transport, case, side, args.base, args.sampled)
    large = _count(transport, case, side, args.base + args.n, args.sampled)
    return (large - small) / args.n


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    if shutil.which("valgrind") is None:
        print("bench/instructions.py needs valgrind on PATH (Debian: apt install valgrind).")
        return 2
    cases = args.cases.split(",")
    unknown = set(cases) - set(SIDES)
    if unknown:
        print(f"unknown case(s) {sorted(unknown)}: choose from {sorted(SIDES)}")
        return 2
    table = Table(
        title=f"instructions per message (callgrind; n={args.n} after {args.base}; the "
        f"bench process only: servers and kernel time not counted; tracing sampled "
        f"{args.sampled:g}; uvloop, per-message logs off)"
    )
    for column in ("transport", "case", "baseline side", "measured side", "ratio"):
        table.add_column(column, justify="right")
    with ThreadPoolExecutor(max_workers=2) as pool:
        for transport in args.only.split(","):
            for case in cases:
                low, high = SIDES[case]
                # the two sides at once: one core each
                futures = [
                    pool.submit(per_message, transport, case, side, args) for side in (low, high)
                ]
                base, measured = (f.result() for f in futures)
                table.add_row(
                    transport,
                    case,
                    f"{low} {base / 1e6:.3f}M",
                    f"{high} {measured / 1e6:.3f}M",
                    f"{measured / base:.2f}x",
                )
                print(f"{transport} {case}: {low} {base:,.0f}  {high} {measured:,.0f}", flush=True)
    Console(width=max(Console().width, 120)).print(table)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        transport, case, side, n = sys.argv[2:6]
        child(transport, case, side, int(n))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="sqlite,redis,rabbit")
    parser.add_argument("--cases", default="jobs,batches,tracing")
    parser.add_argument("--n", type=int, default=1000, help="messages counted")
    parser.add_argument("--base", type=int, default=500, help="messages subtracted")
    parser.add_argument("--sampled", type=float, default=0.1, help="traces sampled (tracing)")
    parsed = parser.parse_args()
    if parsed.n % 500 or parsed.base % 500:
        parser.error("--n and --base are multiples of 500 (the batch size)")
    sys.exit(main(parsed))
