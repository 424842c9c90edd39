"""The ``msgcore`` command line."""

from __future__ import annotations

import typer

from msgcore.cli import cache, dlq, doctor, jobs, locks, run, stats
from msgcore.cli.demo import demo

app = typer.Typer(
    name="msgcore",
    help="Operate msgcore queues and jobs. Run `msgcore demo` for a tour.",
    no_args_is_help=True,
    add_completion=False,
)
app.command("demo")(demo)
jobs.register(app)
stats.register(app)
app.add_typer(dlq.app, name="dlq")
app.add_typer(cache.app, name="cache")
doctor.register(app)
locks.register(app)
run.register(app)


@app.callback()
def main() -> None:
    """msgcore: FastStream on SQLite, Redis or RabbitMQ."""
