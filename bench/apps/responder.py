"""Echo responder for cross-process request/reply: returns each request's body.

python -m bench.apps.responder --target sqlite --endpoint Q --workdir DIR --loop uvloop
"""

from typing import Any

from bench.apps.serve import main


async def echo(body: dict[str, Any]) -> dict[str, Any]:
    return body


if __name__ == "__main__":
    main(__doc__ or "", echo)
