"""Send time into a big room, with and without push rule evaluation.

    .venv/bin/python bench/push_fanout.py [--members 1000] [--messages 200] [--pushers 20]

For each mode (push.enabled true, then false) it starts this server fresh (SQLite,
rate limits off), registers `--members` local users, puts them all in one public room,
gives `--pushers` of them a pusher aimed at a local push gateway stand-in (so the
figures include handing work to the delivery workers, not waiting for them), then
sends `--messages` messages one after another from one member and reports the time
per send (from the request to its answer), the server's CPU per message during the
sends, and again once the gateway has received every notification (delivery runs
behind the sends, in the background). With push on, every message is evaluated
against the push rules of every other member and their actions and counts are
written in one batch before the send is answered.
`--profile out.svg` records the server during the sends with push on (py-spy, in
.venv/bin: `.venv/bin/pip install py-spy`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.client import Client, User
from bench.servers import cpu_seconds
from tests.server import ServerProcess, free_port


class _Gateway(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real gateway
    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        _Gateway.received += 1
        body = b'{"rejected":[]}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


async def _run(
    base_url: str,
    pid: int,
    members: int,
    messages: int,
    pushers: int,
    gateway_url: str,
    profile: str | None,
    push_on: bool,
) -> dict[str, Any]:
    async with Client(base_url, limit=50) as client:
        started = time.monotonic()
        users: list[User] = await client.register_many(members, parallel=25)
        sender = users[0]
        room_id = await client.create_room(sender)
        others = users[1:]
        for start in range(0, len(others), 25):
            await asyncio.gather(*(client.join(u, room_id) for u in others[start : start + 25]))
        for i, user in enumerate(others[:pushers]):
            await client.request(
                "POST",
                "/_matrix/client/v3/pushers/set",
                user,
                body={
                    "kind": "http",
                    "app_id": "bench.app",
                    "pushkey": f"key{i}",
                    "app_display_name": "bench",
                    "device_display_name": "bench",
                    "lang": "en",
                    "data": {"url": gateway_url},
                },
            )
        setup_s = time.monotonic() - started
        for i in range(10):  # warm caches (members, rules, ignored lists)
            await client.send(sender, room_id, {"msgtype": "m.text", "body": f"warm-up {i}"})
        spy = None
        if profile:
            command = ["py-spy", "record", "--pid", str(pid), "--output", profile, "--rate", "200"]
            if profile.endswith(".txt"):
                command += ["--format", "raw"]  # collapsed stacks, for reading as text
            spy = subprocess.Popen(command)  # noqa: ASYNC220 (started once, before the timing)
            await asyncio.sleep(1)
        cpu_before = cpu_seconds(pid)
        sends_started = time.monotonic()
        times: list[float] = []
        for i in range(messages):
            t0 = time.perf_counter()
            await client.send(sender, room_id, {"msgtype": "m.text", "body": f"message {i}"})
            times.append((time.perf_counter() - t0) * 1000)
        sent_s = time.monotonic() - sends_started
        cpu_sends_ms = (cpu_seconds(pid) - cpu_before) * 1000 / messages
        # Deliveries run behind the sends: wait for all of them, so the CPU figure
        # includes delivering (what the sends cost in the end).
        expected = (10 + messages) * pushers if push_on else 0
        deadline = time.monotonic() + 300
        while _Gateway.received < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        delivered_s = time.monotonic() - sends_started
        cpu_ms = (cpu_seconds(pid) - cpu_before) * 1000 / messages
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait()
        # A member's view of it: one sync with the counts.
        sync = await client.sync(others[-1])
        counts = sync["rooms"]["join"][room_id].get("unread_notifications")
    times.sort()
    return {
        "setup_s": round(setup_s, 1),
        "send_ms_median": round(statistics.median(times), 2),
        "send_ms_p95": round(times[int(len(times) * 0.95) - 1], 2),
        "send_ms_mean": round(statistics.fmean(times), 2),
        "sends_s": round(sent_s, 2),
        "server_cpu_ms_per_message_during_sends": round(cpu_sends_ms, 2),
        "all_delivered_s": round(delivered_s, 2),
        "gateway_notifications": _Gateway.received,
        "server_cpu_ms_per_message_with_delivery": round(cpu_ms, 2),
        "member_unread_notifications": counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--pushers", type=int, default=20)
    parser.add_argument("--profile", help="py-spy flame graph (.svg) of the sends with push on")
    args = parser.parse_args()
    gateway_port = free_port()
    gateway = ThreadingHTTPServer(("127.0.0.1", gateway_port), _Gateway)
    threading.Thread(target=gateway.serve_forever, daemon=True).start()
    gateway_url = f"http://127.0.0.1:{gateway_port}/_matrix/push/v1/notify"
    results: dict[str, Any] = {"members": args.members, "messages": args.messages, "pushers": args.pushers}
    for enabled in (True, False):
        _Gateway.received = 0
        with tempfile.TemporaryDirectory() as tmp:
            server = ServerProcess(Path(tmp), {"push": {"enabled": enabled}, "log_level": "WARNING"})
            server.start(timeout=60)
            try:
                assert server.process is not None
                figures = _run(
                    server.base_url,
                    server.process.pid,
                    args.members,
                    args.messages,
                    args.pushers,
                    gateway_url,
                    args.profile if enabled else None,
                    enabled,
                )
                results["push_on" if enabled else "push_off"] = asyncio.run(figures)
            finally:
                server.stop()
    gateway.shutdown()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
