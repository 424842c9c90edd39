"""``msgcore run MODULE:APP``: ``faststream run`` with msgcore's settings from options.

A thin wrapper: it checks the arguments and the ``MSGCORE_*`` settings, sets
``MSGCORE_URL``/``MSGCORE_STORE_URL`` from ``--url``/``--store-url`` (every other
setting comes from the environment as usual) and replaces itself (``exec``) with
``python -m faststream run MODULE:APP --workers N [ARGS...]``.

Replacing rather than supervising a child is what makes signals and exit codes
faststream's own: SIGTERM from a process manager and Ctrl-C reach faststream directly
(and only once: a second SIGINT is faststream's "stop now"), its exit code is the
command's, and no worker can outlive a wrapper killed with SIGKILL. On Windows, which
has no ``exec``, it runs faststream as a child and exits with its code.

Exit codes: faststream's (a shell shows 128 + N when signal N ended it); 1 bad input
(MODULE:APP, an invalid URL or setting, --workers) before faststream started.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Annotated

import typer

from msgcore.cli.common import errors, fail, settings

__all__ = ["faststream_command", "register"]


def faststream_command(app_path: str, workers: int, extra: list[str]) -> list[str]:
    """The command line ``msgcore run`` becomes."""
    return [sys.executable, "-m", "faststream", "run", app_path, "--workers", str(workers), *extra]


def _become(argv: list[str], env: dict[str, str]) -> int:
    """Replace this process with ``argv`` (returns only on Windows, with its exit code)."""
    if sys.platform == "win32":
        child = subprocess.Popen(argv, env=env)
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                # the console sent Ctrl-C to the child too: wait for its shutdown
                continue
    # what this process printed must not be lost with its buffers
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)


def run_app(
    ctx: typer.Context,
    app_path: Annotated[
        str,
        typer.Argument(metavar="MODULE:APP", help="The FastStream app, e.g. services.jobs:app."),
    ],
    *,
    workers: Annotated[
        int, typer.Option("--workers", "-w", help="Worker processes (faststream --workers).")
    ] = 1,
    url: Annotated[
        str | None, typer.Option("--url", help="Transport URL: sets MSGCORE_URL for the app.")
    ] = None,
    store_url: Annotated[
        str | None,
        typer.Option("--store-url", help="Store URL: sets MSGCORE_STORE_URL for the app."),
    ] = None,
) -> None:
    """Run a FastStream app with faststream run, msgcore's URLs set from the options.

    Becomes faststream run MODULE:APP --workers N [ARGS...] with
    MSGCORE_URL from --url and MSGCORE_STORE_URL from --store-url
    (other MSGCORE_* settings from the environment).
    Put -- before ARGS that look like options of this command.
    Signals reach faststream directly: it replaces this process.

    Exit codes:
    N  faststream's own
    1  bad input (MODULE:APP, a URL or setting, --workers) before faststream started
    """
    module, _, attr = app_path.partition(":")
    if not module or not attr:
        fail(f"{app_path!r} is not MODULE:APP: name the app, e.g. services.jobs:app")
    if workers < 1:
        fail(f"--workers must be at least 1, got {workers}")
    # Validates the URLs and every MSGCORE_* setting before faststream starts: a typo
    # fails here in one line instead of in each worker's traceback.
    config = settings(url, store_url)
    env = dict(os.environ)
    if url is not None:
        env["MSGCORE_URL"] = url
    if store_url is not None:
        env["MSGCORE_STORE_URL"] = store_url
    argv = faststream_command(app_path, workers, list(ctx.args))
    errors.print(
        f"msgcore run: {app_path} with {workers} worker(s) on {config.safe_url}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    try:
        code = _become(argv, env)
    except OSError as exc:
        fail(f"cannot start faststream ({type(exc).__name__}: {exc})")
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``run`` to ``app``."""
    app.command(
        "run",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(run_app)
