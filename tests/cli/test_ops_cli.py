"""``msgcore stats`` and ``msgcore dlq list|show|replay|purge`` end to end: a subprocess
against a real SQLite file, Redis and RabbitMQ, with ``--json`` parsed and the error paths."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from typing import Any

from msgcore import RetryPolicy, Router
from msgcore.ops import list_dead_letters
from tests.contract.harness import Sink, wait_until
from tests.ops.conftest import Ops, ops  # noqa: F401  (the fixture)


def msgcore(case: Ops, *args: str) -> subprocess.CompletedProcess[str]:
    settings = case.settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGCORE_")}
    env.update(
        {
            "MSGCORE_URL": settings.url,
            "MSGCORE_REDIS__STREAM_PREFIX": settings.redis.stream_prefix,
            "MSGCORE_RABBIT__EXCHANGE": settings.rabbit.exchange,
            "COLUMNS": "200",
        }
    )
    if settings.store_url:
        env["MSGCORE_STORE_URL"] = settings.store_url
    return subprocess.run(
        [sys.executable, "-m", "msgcore.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)


async def test_stats_and_dead_letters(ops: Ops) -> None:  # noqa: F811
    work = ops.channel("work")
    handled = Sink()

    async def fragile(n: int) -> None:
        if n < 0:
            raise ValueError(f"cannot bill {n}")
        handled.add(n)

    def declare() -> Router:
        router = Router()
        router.subscriber(work, group="billing", retry=RetryPolicy(max_attempts=1))(fragile)
        return router

    async with ops.run(ops.broker(declare())):
        publisher = Router()
        to_work = publisher.publisher(work)
        async with ops.broker(publisher):
            await to_work.publish(-1)
            await to_work.publish(-2)
        await wait_until(lambda: _dead_count(ops), within=20, interval=0.1, what="two dead letters")
    # the workers are down: these wait
    publishing = Router()
    to_work = publishing.publisher(work)
    async with ops.broker(publishing):
        for n in range(3):
            await to_work.publish(n)

    [group] = ok_json(msgcore(ops, "stats", "--channel", work, "--json"))
    assert (group["channel"], group["group"]) == (work, "billing")
    assert (group["waiting"], group["dead"]) == (3, 2)
    table = msgcore(ops, "stats")
    assert table.returncode == 0, table.stderr
    assert work in table.stdout and "billing" in table.stdout

    dead = ok_json(msgcore(ops, "dlq", "list", "--channel", work, "--json"))
    assert sorted(d["body"] for d in dead) == [-2, -1]
    assert {d["group"] for d in dead} == {"billing"}
    first = next(d for d in dead if d["body"] == -1)
    assert "cannot bill -1" in (first["error"] or "")

    shown = ok_json(msgcore(ops, "dlq", "show", first["id"], "--json"))
    assert (shown["id"], shown["body"], shown["attempts"]) == (first["id"], -1, 1)
    human = msgcore(ops, "dlq", "show", first["id"])
    assert human.returncode == 0 and "cannot bill -1" in human.stdout

    missing = msgcore(ops, "dlq", "show", "no-such-id")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: No dead letter 'no-such-id'")
    nothing_named = msgcore(ops, "dlq", "replay")
    assert nothing_named.returncode == 1
    assert "--all" in nothing_named.stderr
    for verb, done in (("replay", "replayed"), ("purge", "purged")):
        # an id that names nothing: the count, exit 1, and why
        unknown = msgcore(ops, "dlq", verb, "no-such-id", "--json")
        assert unknown.returncode == 1
        assert json.loads(unknown.stdout) == {done: 0}
        assert unknown.stderr.startswith("error: 1 of the 1 id(s) named no dead letter")

    # replay one: it goes back to its group and is handled again (and dies again)
    assert ok_json(msgcore(ops, "dlq", "replay", first["id"], "--json")) == {"replayed": 1}
    async with ops.run(ops.broker(declare())):
        await handled.wait(3, within=20)  # the three that waited
        await wait_until(
            lambda: _dead_count(ops, 2), within=20, interval=0.1, what="the replay to die again"
        )
    assert ok_json(msgcore(ops, "dlq", "purge", "--channel", work, "--json")) == {"purged": 2}
    assert ok_json(msgcore(ops, "dlq", "list", "--json")) == []
    [after] = ok_json(msgcore(ops, "stats", "--channel", work, "--json"))
    assert (after["waiting"], after["dead"]) == (0, 0)


async def _dead_count(case: Ops, n: int = 2) -> bool:
    return len(await list_dead_letters(case.settings())) >= n


def test_unreachable_transport_is_one_line_without_the_password() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGCORE_")}
    for args in (["stats"], ["dlq", "list"]):
        done = subprocess.run(
            [sys.executable, "-m", "msgcore.cli", *args, "--url", "redis://:s3cret@127.0.0.1:1/0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 3, done.stderr
        assert "s3cret" not in done.stdout + done.stderr
        assert done.stderr.startswith("error:")
        assert "Traceback" not in done.stderr


async def test_stats_watch_refreshes_until_interrupted(ops: Ops) -> None:  # noqa: F811
    work = ops.channel("watched")

    async def handle(n: int) -> None:
        return None

    router = Router()
    router.subscriber(work, group="watchers")(handle)
    async with ops.run(ops.broker(router)):
        pass  # the group exists (and is registered)
    settings = ops.settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGCORE_")}
    env.update(
        {
            "MSGCORE_URL": settings.url,
            "MSGCORE_REDIS__STREAM_PREFIX": settings.redis.stream_prefix,
            "MSGCORE_RABBIT__EXCHANGE": settings.rabbit.exchange,
            "COLUMNS": "200",
        }
    )
    if settings.store_url:
        env["MSGCORE_STORE_URL"] = settings.store_url
    proc = subprocess.Popen(  # noqa: ASYNC220  (a child to interrupt, not to await)
        [sys.executable, "-m", "msgcore.cli", "stats", "--watch", "--interval", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await asyncio.sleep(3.0)  # several refreshes
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert work in out and "watchers" in out
