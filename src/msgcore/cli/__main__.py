"""``python -m msgcore.cli``: the ``msgcore`` command."""

from msgcore.cli import app

app(prog_name="msgcore")
