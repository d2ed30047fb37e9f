"""Run one workload against this server only, for profiling a change.

    .venv/bin/python bench/one.py sync [--rooms 100]
    .venv/bin/python bench/one.py long_polls [--steps 10000] [--users 100]
    .venv/bin/python bench/one.py startup
    .venv/bin/python bench/one.py sync --profile /tmp/sync.svg   # py-spy while it runs
    .venv/bin/python bench/one.py long_polls --steps 10000 --profile /tmp/wake.txt  # the wake only

Prints the workload's figures (as JSON, without the long sample lists) and the
server's CPU seconds over the whole workload. `--profile` needs py-spy
(`.venv/bin/pip install py-spy`) and records the server process from just before the
workload (set-up included) as a flame graph (`.svg`) or speedscope (`.json`) file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import workloads  # noqa: E402
from bench.compare import _run_loop, raise_fd_limit  # noqa: E402
from bench.servers import Ours  # noqa: E402


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not (isinstance(v, list) and len(v) > 20)}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=["sync", "long_polls", "send", "startup"])
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[1000])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--profile", type=Path, help="py-spy output file (.svg flame graph, .json speedscope, .txt collapsed stacks)")
    args = parser.parse_args()
    raise_fd_limit()

    workdir = Path(tempfile.mkdtemp(prefix="homeserver-one-"))
    server = Ours(workdir / "ours")
    spy: subprocess.Popen[bytes] | None = None
    try:
        startup = server.start()
        time.sleep(2.0)
        out: dict[str, Any] = {"startup_seconds": startup, "idle_rss_mib": server.rss() / 2**20}
        if args.workload != "startup":
            def start_spy() -> None:
                nonlocal spy
                if spy is not None or args.profile is None:
                    return
                fmt = {".json": "speedscope", ".txt": "raw"}.get(args.profile.suffix, "flamegraph")
                # --nonblocking: stopping the process for every sample made a wake of
                # 10,000 long-polls take ten times as long.
                command = [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(server.pid), "-o", str(args.profile)]
                spy = subprocess.Popen(
                    [*command, "-f", fmt, "-r", "200", "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                time.sleep(1.0)

            # long_polls profiles only the wake (the message and the answers it causes).
            if args.workload != "long_polls":
                start_spy()
            cpu_before = server.cpu()
            started = time.monotonic()
            coroutine: Any
            if args.workload == "sync":
                coroutine = workloads.sync_costs(server, rooms=args.rooms)
            elif args.workload == "send":
                coroutine = workloads.send_and_deliver(server, messages=args.messages)
            else:
                coroutine = workloads.long_poll_capacity(server, steps=args.steps, users=args.users, before_wake=start_spy)
            result: dict[str, Any] = {}

            async def go() -> None:
                result.update(await coroutine)

            _run_loop(go())
            out.update(_strip(result))
            out["workload_seconds"] = time.monotonic() - started
            out["server_cpu_seconds"] = server.cpu() - cpu_before
            out["rss_after_mib"] = server.rss() / 2**20
        print(json.dumps(out, indent=1, default=str))
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
