"""Start-up stays cheap: what no request needs before the first one is not imported
until it is used (issue 8; the time is measured by `bench/one.py startup`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.server import POSTGRES_ENV, ServerProcess

# Runs the real serve() until /versions answers, then reports which of the modules
# given on the command line the process has loaded, and shuts down as on SIGTERM.
_PROBE = """
import asyncio, json, os, signal, sys, urllib.request

from homeserver.config import load_config
from homeserver.serve import serve

config = load_config(sys.argv[1])
watched = sys.argv[2:]


async def main() -> None:
    task = asyncio.create_task(serve(config))
    url = f"http://127.0.0.1:{config.listeners.client.port}/_matrix/client/versions"
    while True:
        if task.done():
            await task
        try:
            await asyncio.to_thread(urllib.request.urlopen, url, timeout=1)
            break
        except OSError:
            await asyncio.sleep(0.02)
    loaded = [name for name in watched if name in sys.modules]
    os.kill(os.getpid(), signal.SIGTERM)
    await task
    print(json.dumps(loaded))


asyncio.run(main())
"""

LAZY = [
    "PIL",  # thumbnails: the first image upload
    "aiohttp",  # push gateway: the first notification
    "httpx",  # federation client (federation is off here)
    "federation",  # loaded only when federation.enabled
    "watchfiles",  # uvicorn's --reload, which we never use
]


def test_serving_needs_none_of_the_lazy_modules(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    watched = list(LAZY)
    if not os.environ.get(POSTGRES_ENV):
        watched.append("sqlalchemy.dialects.postgresql")  # the dialect not in use
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(server.config_path), *watched],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
