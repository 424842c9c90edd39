"""Turning results into tables: rich for the terminal, Markdown for docs, JSON."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from rich import box
from rich.console import Console
from rich.table import Table as RichTable

from bench.results import Result
from bench.settings import BASELINE, TARGET_KEYS
from bench.targets import TARGETS

TARGET_ORDER = {key: i for i, key in enumerate(TARGET_KEYS)}


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    caption: str = ""


def _title(key: str) -> str:
    cls = TARGETS.get(key)
    return cls.title if cls else key


def _num(value: float | None, fmt: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def _sorted(results: Iterable[Result]) -> list[Result]:
    return sorted(
        results,
        key=lambda r: (r.loop != "uvloop", TARGET_ORDER.get(r.target, 99), r.mode, r.scenario),
    )


def _pick(results: Sequence[Result], **where: str) -> Result | None:
    for r in results:
        if all(getattr(r, k) == v for k, v in where.items()) and r.error is None:
            return r
    return None


def _bg(r: Result) -> str:
    return f"{r.background_cpu_pct:.0f}%"


def _rate_ratio(r: Result, base: Result | None) -> float:
    """r's msg/s over base's; with repeated runs, the median of the per-round ratios."""
    if base is None:
        return math.nan
    pairs = [
        (a["metrics"].get("msg_per_s"), b["metrics"].get("msg_per_s"))
        for a, b in zip(r.runs, base.runs, strict=False)
        if not a.get("error") and not b.get("error")
    ]
    ratios = sorted(a / b for a, b in pairs if a and b)
    if len(ratios) > 1 and len(ratios) == len(r.runs) == len(base.runs):
        mid = len(ratios) // 2
        return float(ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2)
    return float(r.metrics["msg_per_s"] / base.metrics["msg_per_s"])


def throughput_table(results: Sequence[Result], n: int) -> Table:
    table = Table(
        f"A/E. End-to-end throughput: publish {n:,} sequentially -> one subscriber "
        "(default settings, same process) -> handler",
        ["broker", "loop", "logging", "msg/s", f"vs {BASELINE}", "publish-side msg/s",
         "seconds", "CPU us/msg", "loop thread us/msg", "server us/msg", "bg CPU", "note"],
        caption=f"Ratio = msg/s / {_title(BASELINE)} msg/s on the same loop and logging setting. "
        "With --repeat: median of the per-round ratios (every round runs every broker once). "
        "Clock: first publish to the last handler call. CPU us/msg: this process (all threads) "
        "per message during the timed run; loop thread: its event-loop thread alone; server: "
        "the Redis or RabbitMQ server processes (SQLite has none: its work is in the "
        "process, on aiosqlite's thread).",
    )  # fmt: skip
    for r in _sorted(r for r in results if r.scenario in ("A", "E")):
        if r.error:
            table.rows.append([
                _title(r.target), r.loop, r.logging, "ERROR", "-", "-", "-", "-", "-", "-",
                _bg(r), r.error,
            ])  # fmt: skip
            continue
        base = _pick(results, scenario=r.scenario, target=BASELINE, loop=r.loop)
        ratio = _rate_ratio(r, base)
        note = r.note
        if r.metrics.get("duplicates"):
            note = f"{note}; {r.metrics['duplicates']:.0f} duplicate deliveries".strip("; ")
        table.rows.append([
            _title(r.target), r.loop, r.logging, _num(r.metrics["msg_per_s"]),
            _num(ratio, ".2f") + "x" if not math.isnan(ratio) else "-",
            _num(r.metrics["publish_msg_per_s"]), _num(r.metrics["seconds"], ".2f"),
            _num(r.metrics.get("cpu_us_per_msg")),
            _num(r.metrics.get("loop_thread_cpu_us_per_msg")),
            _num(r.metrics.get("server_cpu_us_per_msg")) if r.target != "sqlite" else "-",
            _bg(r), note,
        ])  # fmt: skip
    return table


def log_effect_table(results: Sequence[Result]) -> Table:
    table = Table(
        "E. Effect of FastStream's per-message INFO access log on end-to-end throughput",
        ["broker", "loop", "msg/s logging off", "msg/s INFO -> /dev/null", "change"],
        caption="Same run as A; 'INFO -> /dev/null' keeps the default logger (records are "
        "filtered, formatted and written) but writes to /dev/null.",
    )
    for r in _sorted(r for r in results if r.scenario == "E"):
        off = _pick(results, scenario="A", target=r.target, loop=r.loop)
        if r.error or off is None:
            table.rows.append([_title(r.target), r.loop, "-", "ERROR" if r.error else "-", "-"])
            continue
        a, e = off.metrics["msg_per_s"], r.metrics["msg_per_s"]
        table.rows.append(
            [_title(r.target), r.loop, _num(a), _num(e), f"{100.0 * (e - a) / a:+.1f}%"]
        )
    return table


def batch_table(results: Sequence[Result], n: int) -> Table:
    table = Table(
        f"B. publish_batch throughput: {n:,} messages, publisher only (no consumer running)",
        ["broker", "loop", "logging", "batch size", "msg/s", "seconds", "bg CPU", "note"],
        caption="Every message's storage is checked afterwards (queue depth / LLEN).",
    )
    for r in _sorted(r for r in results if r.scenario == "B"):
        if r.error:
            table.rows.append(
                [_title(r.target), r.loop, r.logging, "-", "ERROR", "-", _bg(r), r.error]
            )
            continue
        table.rows.append([
            _title(r.target), r.loop, r.logging, _num(r.metrics["batch_size"]),
            _num(r.metrics["msg_per_s"]), _num(r.metrics["seconds"], ".3f"), _bg(r), r.note,
        ])  # fmt: skip
    return table


def latency_table(results: Sequence[Result], requests: int) -> Table:
    table = Table(
        f"C. Request/reply latency: {requests:,} sequential broker.request() calls (ms)",
        ["broker", "mode", "loop", "logging", "p50", "p90", "p99", "p99.9", "max", "bg CPU",
         "note"],
        caption="cross-process: the echo subscriber runs in a subprocess "
        "(bench.apps.responder, same loop kind, logger off).",
    )  # fmt: skip
    rows = sorted(
        (r for r in results if r.scenario == "C"),
        key=lambda r: (r.loop != "uvloop", r.mode != "in-process", TARGET_ORDER.get(r.target, 99)),
    )
    for r in rows:
        if r.error:
            table.rows.append([
                _title(r.target), r.mode, r.loop, r.logging, "ERROR", "-", "-", "-", "-", _bg(r),
                r.error,
            ])  # fmt: skip
            continue
        m = r.metrics
        table.rows.append([
            _title(r.target), r.mode, r.loop, r.logging,
            *(_num(m[k], ".2f") for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")),
            _bg(r), r.note,
        ])  # fmt: skip
    return table


def idle_table(results: Sequence[Result]) -> Table:
    table = Table(
        "D. Idle CPU of a worker process: one subscriber, no traffic",
        ["broker", "loop", "logging", "window s", "CPU s", "% of one core",
         "vol. ctx switches/s", "threads", "bg CPU", "note"],
        caption="psutil user+system time of the worker process (all threads), workers "
        "measured side by side in one window.",
    )  # fmt: skip
    for r in _sorted(r for r in results if r.scenario == "D"):
        if r.error:
            table.rows.append([
                _title(r.target), r.loop, r.logging, "ERROR", "-", "-", "-", "-", _bg(r), r.error,
            ])  # fmt: skip
            continue
        m = r.metrics
        table.rows.append([
            _title(r.target), r.loop, r.logging,
            _num(m["window_s"], ".1f"), _num(m["cpu_s"], ".3f"),
            _num(m["cpu_pct_of_core"], ".2f") + "%", _num(m["wakeups_per_s"], ".1f"),
            _num(m["threads"]), _bg(r), r.note,
        ])  # fmt: skip
    return table


def setups_table(setups: dict[str, str]) -> Table:
    table = Table("Setups", ["broker", "key", "setup"])
    for key in sorted(setups, key=lambda k: TARGET_ORDER.get(k, 99)):
        table.rows.append([_title(key), key, setups[key]])
    return table


BG_CAPTION = (
    "bg CPU: CPU used meanwhile by other programs on this machine (not the benchmark, its "
    "subprocesses or the Redis/RabbitMQ servers), in % of one core; rows at or above the "
    "quiet threshold are marked noisy."
)


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def targets_table(results: Sequence[Result]) -> Table:
    table = Table(
        "Issue targets for msgcore SqliteBroker",
        ["target", "loop", "logging", "measured", "verdict"],
    )
    loops = sorted({r.loop for r in results}, key=lambda loop: loop != "uvloop")
    Check = Callable[[str], tuple[str, str, bool] | None]

    def e2e(scenario: str) -> Check:
        def check(loop: str) -> tuple[str, str, bool] | None:
            sq = _pick(results, scenario=scenario, target="sqlite", loop=loop)
            base = _pick(results, scenario=scenario, target=BASELINE, loop=loop)
            if not sq or not base:
                return None
            a, b = sq.metrics["msg_per_s"], base.metrics["msg_per_s"]
            ratio = _rate_ratio(sq, base)
            return sq.logging, f"{ratio:.2f}x ({_num(a)} vs {_num(b)} msg/s)", ratio >= 1.0

        return check

    def batch(loop: str) -> tuple[str, str, bool] | None:
        r = _pick(results, scenario="B", target="sqlite", loop=loop)
        if not r:
            return None
        rate = r.metrics["msg_per_s"]
        return r.logging, f"{_num(rate)} msg/s", rate >= 20_000

    def p50(mode: str, limit: float) -> Check:
        def check(loop: str) -> tuple[str, str, bool] | None:
            r = _pick(results, scenario="C", target="sqlite", loop=loop, mode=mode)
            if not r:
                return None
            return r.logging, f"p50 {r.metrics['p50_ms']:.2f} ms", r.metrics["p50_ms"] <= limit

        return check

    checks: list[tuple[str, Check]] = [
        ("end-to-end >= 1.0x RedisBroker(list)", e2e("A")),
        ("end-to-end >= 1.0x RedisBroker(list), INFO log on both", e2e("E")),
        ("publish_batch >= 20,000 msg/s", batch),
        ("request/reply p50 <= 2 ms, one process", p50("in-process", 2.0)),
        ("request/reply p50 <= 10 ms, across processes", p50("cross-process", 10.0)),
    ]
    for name, check in checks:
        for loop in loops:
            got = check(loop)
            if got is None:
                continue
            logging, measured, ok = got
            table.rows.append([name, loop, logging, measured, _verdict(ok)])
    return table


def error_lines(results: Sequence[Result]) -> list[str]:
    return [
        f"[{r.scenario}] {_title(r.target)} {r.mode} ({r.loop}, logging {r.logging}): {r.error}"
        for r in results
        if r.error
    ]


def build_tables(
    results: Sequence[Result], *, n: int, requests: int, setups: dict[str, str]
) -> list[Table]:
    measured = [
        throughput_table(results, n),
        log_effect_table(results),
        batch_table(results, n),
        latency_table(results, requests),
        idle_table(results),
    ]
    for t in measured:
        if "bg CPU" in t.columns:
            t.caption = f"{t.caption} {BG_CAPTION}".strip()
    tables = [setups_table(setups), *measured, targets_table(results)]
    return [t for t in tables if t.rows]


def print_tables(console: Console, tables: Sequence[Table]) -> None:
    for t in tables:
        rich_table = RichTable(
            title=t.title, caption=t.caption or None, box=box.SIMPLE_HEAVY, title_justify="left"
        )
        for i, col in enumerate(t.columns):
            numeric = i > 0 and col not in ("loop", "logging", "mode", "note", "verdict")
            rich_table.add_column(col, justify="right" if numeric else "left", overflow="fold")
        for row in t.rows:
            styled = [
                f"[bold red]{cell}[/]" if cell in ("NOT met", "ERROR")
                else f"[green]{cell}[/]" if cell == "met" else cell
                for cell in row
            ]  # fmt: skip
            rich_table.add_row(*styled)
        console.print(rich_table)
        console.print()


def _md_cell(cell: str) -> str:
    return cell.replace("|", "\\|") or " "


def markdown_tables(tables: Sequence[Table]) -> str:
    out: list[str] = []
    for t in tables:
        out.append(f"**{t.title}**\n")
        out.append("| " + " | ".join(t.columns) + " |")
        out.append("|" + "|".join("---" for _ in t.columns) + "|")
        for row in t.rows:
            out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
        if t.caption:
            out.append(f"\n{t.caption}")
        out.append("")
    return "\n".join(out)


def markdown_machine(info: dict[str, str]) -> str:
    lines = ["| item | value |", "|---|---|"]
    lines += [f"| {k} | {_md_cell(v)} |" for k, v in info.items()]
    return "\n".join(lines)
