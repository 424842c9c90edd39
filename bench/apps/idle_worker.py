"""A worker with one subscriber and no traffic, for measuring idle CPU.

python -m bench.apps.idle_worker --target sqlite --endpoint Q --workdir DIR --loop uvloop
"""

from typing import Any

from bench.apps.serve import main


async def handle(body: dict[str, Any]) -> None:
    return None


if __name__ == "__main__":
    main(__doc__ or "", handle)
