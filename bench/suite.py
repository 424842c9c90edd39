"""One full pass of the scenarios on the running event loop."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from bench import batch, idle, latency, throughput
from bench.background import CpuWatch, server_pids, wait_for_quiet
from bench.loops import current_loop_name
from bench.results import Result, describe_error
from bench.settings import LOG_INFO, LOG_OFF, BenchSettings, Servers
from bench.targets import Target, make_target, reachable

LOG_SCENARIO_TARGETS = ("sqlite", "redis-list")
BATCH_TARGETS = ("sqlite", "redis-list")
LATENCY_TARGETS = ("sqlite", "redis-list", "rabbit")
IDLE_REFERENCE_TARGETS = ("redis-list", "rabbit")


@dataclass
class Job:
    """One measurement of the plan: what to run, and its runs so far."""

    template: Result
    target: Target | None
    measure: Callable[[], Awaitable[dict[str, float]]]
    limit: float
    runs: list[Result] = field(default_factory=list)


class Suite:
    def __init__(
        self,
        settings: BenchSettings,
        *,
        loop: str,
        prefix: str,
        workdir: Path,
        servers: Servers,
        console: Console,
    ) -> None:
        self.settings = settings
        self.loop = loop
        self.prefix = prefix
        self.workdir = workdir
        self.servers = servers
        self.console = console
        self.results: list[Result] = []
        self.setups: dict[str, str] = {}
        """Each target's setup, as described by the target after its first measurement."""
        self.server_pids = server_pids()
        self.watch = CpuWatch(set().union(*self.server_pids.values()))
        self.unreachable: dict[str, str] = {}
        """Targets whose server did not answer before the run, with the reason."""

    def target(self, key: str, tag: str) -> Target:
        endpoint = f"{self.prefix}-{tag}-{key}-{self.loop}"
        return make_target(key, endpoint, self.workdir, self.servers)

    async def run(self) -> list[Result]:
        actual = current_loop_name()
        if actual != self.loop:
            raise RuntimeError(f"asked for the {self.loop} event loop but running on {actual}")
        s = self.settings
        await self._preflight()
        jobs = self._plan()
        # With --repeat, every round runs every measurement once, so that slow drifts of
        # the machine's speed hit all brokers alike (and ratios can be taken per round).
        for round_no in range(s.repeat):
            for job in jobs:
                if job.runs and job.runs[-1].error:
                    continue  # failed once: not again
                await self._run_job(job, round_no)
        for job in jobs:
            self.results.append(_summarize(job))
        if s.wants("D", "sqlite"):
            await self._idle()
        return self.results

    def _plan(self) -> list[Job]:
        s = self.settings
        jobs: list[Job] = []
        for key in s.targets:
            if s.wants("A", key):
                jobs.append(self._end_to_end("A", key, log=False))
        for key in LOG_SCENARIO_TARGETS:
            if s.wants("E", key):
                jobs.append(self._end_to_end("E", key, log=True))
        for key in BATCH_TARGETS:
            if s.wants("B", key):
                jobs.append(self._batch(key))
        for key in LATENCY_TARGETS:
            if s.wants("C", key):
                jobs.append(self._latency(key, cross=False))
        for key in LATENCY_TARGETS:
            if s.wants("C", key) and (key == "sqlite" or s.cross_process_servers):
                jobs.append(self._latency(key, cross=True))
        return jobs

    async def _run_job(self, job: Job, round_no: int) -> None:
        t = job.template
        run = Result(t.scenario, t.target, t.loop, t.logging, t.mode)
        if job.target is not None and job.target.key in self.unreachable:
            run.error = f"skipped: {self.unreachable[job.target.key]}"
        else:
            await self._once(run, job.target, job.measure, job.limit)
        job.runs.append(run)
        suffix = f" run {round_no + 1}/{self.settings.repeat}" if self.settings.repeat > 1 else ""
        self._log(run, suffix)

    async def _preflight(self) -> None:
        """Find unreachable servers up front instead of timing out in every measurement."""
        self.unreachable.clear()
        checks = {
            "redis": ("redis-list", "redis-stream"),
            "rabbit": ("rabbit",),
        }
        for server, keys in checks.items():
            if not any(k in self.settings.targets for k in keys):
                continue
            problem = await reachable(self.servers, server)
            if problem:
                for key in keys:
                    self.unreachable[key] = problem
                self.console.log(f"[bold red]{problem}[/]: skipping {', '.join(keys)}")

    # -- one measurement, guarded ---------------------------------------------------------

    async def _once(
        self,
        result: Result,
        target: Target | None,
        measure: Callable[[], Awaitable[dict[str, float]]],
        limit: float,
    ) -> None:
        await self._settle(result)
        started = time.perf_counter()
        self.watch.start()
        try:
            async with asyncio.timeout(limit) as scope:
                result.metrics = await measure()
                if target is not None and target.key not in self.setups:
                    self.setups[target.key] = await target.describe()
        except Exception as exc:
            if isinstance(exc, TimeoutError) and scope.expired():
                result.error = f"did not finish within {limit:.0f} s (hang?)"
            else:
                result.error = describe_error(exc)
        finally:
            result.wall_seconds = time.perf_counter() - started
            self._background(result)
            if target is not None:
                try:
                    await target.cleanup()
                except Exception as exc:
                    result.note = f"{result.note}; cleanup failed: {exc}".strip("; ")

    async def _settle(self, result: Result) -> None:
        """Wait (bounded) until other programs leave the CPU mostly idle."""
        s = self.settings
        if s.quiet_wait > 0:
            waited, _ = await wait_for_quiet(
                self.watch, threshold_pct=s.quiet_threshold_pct, max_wait=s.quiet_wait
            )
            result.waited_for_quiet_s = waited

    def _background(self, result: Result) -> None:
        result.background_cpu_pct = self.watch.stop()
        if result.background_cpu_pct >= self.settings.quiet_threshold_pct:
            noisy = f"noisy: other programs used {result.background_cpu_pct:.0f}% of a core"
            result.note = f"{result.note}; {noisy}".strip("; ")

    def _log(self, r: Result, suffix: str = "") -> None:
        head = f"[{r.scenario}] {r.target:<12} {r.mode:<13} {r.loop:<7} log={r.logging:<18}"
        if r.error:
            self.console.log(f"{head} [bold red]ERROR[/] {r.error}")
            return
        m = r.metrics
        if "msg_per_s" in m:
            body = f"{m['msg_per_s']:>10,.0f} msg/s"
        elif "p50_ms" in m:
            body = (
                f"p50 {m['p50_ms']:.2f} ms  p99 {m['p99_ms']:.2f} ms  p99.9 {m['p999_ms']:.2f} ms"
            )
        else:
            body = f"{m.get('cpu_pct_of_core', float('nan')):.2f}% of one core"
        self.console.log(
            f"{head} {body}  ({r.wall_seconds:.1f} s, background CPU "
            f"{r.background_cpu_pct:.0f}% of a core){suffix}"
        )

    # -- scenarios ----------------------------------------------------------------------------

    def _end_to_end(self, scenario: str, key: str, *, log: bool) -> Job:
        s = self.settings
        target = self.target(key, f"e2e{'-log' if log else ''}")
        result = Result(scenario, key, self.loop, LOG_INFO if log else LOG_OFF)
        return Job(
            result,
            target,
            lambda: throughput.end_to_end(
                target,
                n=s.n,
                warmup=s.warmup,
                log=log,
                servers=self.server_pids.get(target.server or "", set()),
            ),
            limit=90.0 + s.n / 50,
        )

    def _batch(self, key: str) -> Job:
        s = self.settings
        target = self.target(key, "batch")
        result = Result("B", key, self.loop, LOG_OFF)
        return Job(
            result,
            target,
            lambda: batch.publish_batch_throughput(target, n=s.n, batch_size=s.batch_size),
            limit=60.0 + s.n / 200,
        )

    def _latency(self, key: str, *, cross: bool) -> Job:
        s = self.settings
        target = self.target(key, "rpc-x" if cross else "rpc")
        mode = "cross-process" if cross else "in-process"
        result = Result("C", key, self.loop, LOG_OFF, mode=mode)

        def measure() -> Awaitable[dict[str, float]]:
            if cross:
                return latency.cross_process(
                    target,
                    requests=s.requests,
                    warmup=s.request_warmup,
                    reply_timeout=s.request_timeout,
                    loop=self.loop,
                    workdir=self.workdir,
                )
            return latency.in_process(
                target,
                requests=s.requests,
                warmup=s.request_warmup,
                reply_timeout=s.request_timeout,
            )

        return Job(result, target, measure, limit=90.0 + s.requests * 0.05)

    async def _idle(self) -> None:
        s = self.settings
        references = (k for k in IDLE_REFERENCE_TARGETS if k in s.targets)
        keys = ["sqlite", *(k for k in references if k not in self.unreachable)]
        targets = [self.target(k, "idle") for k in keys]
        measured: dict[str, dict[str, float]] = {}
        error: str | None = None
        probe = Result("D", "sqlite", self.loop, LOG_OFF)
        await self._settle(probe)
        started = time.perf_counter()
        self.watch.start()
        try:
            async with asyncio.timeout(s.idle_seconds + 120.0):
                measured = await idle.idle_cpu(
                    targets, seconds=s.idle_seconds, loop=self.loop, workdir=self.workdir
                )
        except Exception as exc:
            error = describe_error(exc)
        wall = time.perf_counter() - started
        self._background(probe)
        for t in targets:
            if t.key not in self.setups:
                self.setups[t.key] = await t.describe()
            with contextlib.suppress(Exception):
                await t.cleanup()
            result = Result(
                "D",
                t.key,
                self.loop,
                LOG_OFF,
                metrics=measured.get(t.key, {}),
                error=error,
                note="; ".join(
                    n for n in ("reference" if t.key != "sqlite" else "", probe.note) if n
                ),
                wall_seconds=wall,
                background_cpu_pct=probe.background_cpu_pct,
                waited_for_quiet_s=probe.waited_for_quiet_s,
            )
            self.results.append(result)
            self._log(result)


def _primary(r: Result) -> float:
    """The figure runs are ranked by: throughput, or median latency (negated)."""
    if "msg_per_s" in r.metrics:
        return r.metrics["msg_per_s"]
    return -r.metrics.get("p50_ms", 0.0)


def _primary_text(r: Result) -> str:
    if "msg_per_s" in r.metrics:
        return f"{r.metrics['msg_per_s']:,.0f}"
    return f"{r.metrics.get('p50_ms', float('nan')):.2f}"


def _median_run(runs: list[Result]) -> Result:
    ranked = sorted(runs, key=_primary)
    return ranked[(len(ranked) - 1) // 2]


def _summarize(job: Job) -> Result:
    """The median run (or the failed one), carrying every run when there were several."""
    runs = job.runs
    chosen = copy.copy(runs[-1] if runs[-1].error else _median_run(runs))
    if len(runs) > 1:
        chosen.runs = [r.as_dict(with_runs=False) for r in runs]
        if not chosen.error:
            unit = "msg/s" if "msg_per_s" in chosen.metrics else "p50 ms"
            values = ", ".join(_primary_text(r) for r in runs)
            note = f"median of {len(runs)} runs ({unit}: {values})"
            chosen.note = f"{note}; {chosen.note}".strip("; ")
    return chosen
