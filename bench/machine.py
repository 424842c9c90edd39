"""What the numbers were measured on: CPU, kernel, Python, packages, servers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import aio_pika
import psutil
from redis.asyncio import Redis

from bench.settings import Servers

PACKAGES: tuple[str, ...] = (
    "msgcore",
    "faststream",
    "aiosqlite",
    "redis",
    "aio-pika",
    "aiormq",
    "uvloop",
    "fast-depends",
    "pydantic",
    "anyio",
)
ROOT = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _filesystem_of(path: str) -> str:
    best, fs = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and path.startswith(parts[1]) and len(parts[1]) > len(best):
                best, fs = parts[1], f"{parts[2]} ({parts[0]} on {parts[1]})"
    return fs


def _git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev} (src/ has uncommitted changes)" if dirty else rev


def _source_digest() -> str:
    """Short hash of src/msgcore's Python files: which code the numbers belong to."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "src" / "msgcore").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _affinity() -> str:
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return "unknown"
    pinned = len(cpus) < (os.cpu_count() or len(cpus))
    return ",".join(map(str, cpus)) + (" (pinned)" if pinned else " (all)")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


async def _redis_version(url: str) -> str:
    client = Redis.from_url(url)
    try:
        info = await client.info("server")
        return str(info.get("redis_version", "unknown"))
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    finally:
        await client.aclose()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _rabbit_version(url: str) -> str:
    try:
        connection = await aio_pika.connect(url)
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    try:
        underlay = connection.transport
        props = underlay.connection.server_properties if underlay is not None else {}
        product, version = (_text(props.get(k, "?")) for k in ("product", "version"))
        return f"{product} {version}"
    finally:
        await connection.close()


async def describe_machine(servers: Servers) -> dict[str, str]:
    tmp = tempfile.gettempdir()
    info = {
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} logical, {psutil.cpu_count(logical=False)} physical",
        "benchmark CPU affinity": _affinity(),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": sys.version.split()[0] + f" ({platform.python_implementation()})",
        "sqlite": sqlite3.sqlite_version,
        "tempdir": f"{tmp}: {_filesystem_of(tmp)}",
        "redis server": await _redis_version(servers.redis_url),
        "rabbitmq server": await _rabbit_version(servers.rabbit_url),
        "msgcore git": _git_revision(),
        "msgcore src sha256": _source_digest(),
    }
    for package in PACKAGES:
        info[package] = _version(package)
    return info
