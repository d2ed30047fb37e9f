"""Send-to-sync delivery latency, and idle long-poll capacity.

1. Latency: N users long-poll /sync continuously; senders post messages into rooms of
   `--room-size` members; for every delivery (each member's sync that returns the
   event) we record the time from just before the send request to the sync returning.
   Reported: p50 / p90 / p99 / max over all deliveries.
2. Capacity: open C concurrent idle long-polls (`timeout` longer than the phase),
   read the server's RSS at each step, then send one message into the room all the
   polling users share and time how long it takes for every poll to return.

By default it starts this project's server (tests/server.py: SQLite, rate limits off)
and registers its own users. To point it at any server (e.g. Synapse), give
`--base-url` and `--users FILE` (a JSON list of {"user_id", "access_token"} whose
users may create rooms and join each other's public rooms), and `--server-pid` if
its RSS should be read from /proc.

    .venv/bin/python bench/sync_latency.py [--users-count 100] [--capacity 1000,10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

V3 = "/_matrix/client/v3"


@dataclass
class BenchUser:
    user_id: str
    access_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def rss_kib(pid: int | None) -> int | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


async def call(session: aiohttp.ClientSession, method: str, url: str, user: BenchUser | None, **kwargs: Any) -> Any:
    headers = user.headers if user else {}
    async with session.request(method, url, headers=headers, **kwargs) as response:
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"{method} {url} -> {response.status} {body}")
        return body


async def register(session: aiohttp.ClientSession, base: str, count: int) -> list[BenchUser]:
    async def one(i: int) -> BenchUser:
        body = {
            "username": f"bench{i}_{secrets.token_hex(3)}",
            "password": secrets.token_urlsafe(12),
            "auth": {"type": "m.login.dummy"},
            "inhibit_login": False,
        }
        result = await call(session, "POST", f"{base}{V3}/register", None, json=body)
        return BenchUser(result["user_id"], result["access_token"])

    users: list[BenchUser] = []
    for start in range(0, count, 20):
        users.extend(await asyncio.gather(*(one(i) for i in range(start, min(count, start + 20)))))
    return users


async def make_rooms(session: aiohttp.ClientSession, base: str, users: list[BenchUser], size: int) -> list[tuple[str, list[BenchUser]]]:
    rooms = []
    for start in range(0, len(users), size):
        members = users[start : start + size]
        created = await call(session, "POST", f"{base}{V3}/createRoom", members[0], json={"preset": "public_chat"})
        room_id = created["room_id"]
        for member in members[1:]:
            await call(session, "POST", f"{base}{V3}/join/{room_id}", member, json={})
        rooms.append((room_id, members))
    return rooms


async def initial_token(session: aiohttp.ClientSession, base: str, user: BenchUser) -> str:
    # set_presence=offline throughout: a user marked online by one sync would go
    # offline 30 s later, and that presence change would wake the idle polls.
    params = {"filter": '{"room":{"timeline":{"limit":1}}}', "set_presence": "offline"}
    result = await call(session, "GET", f"{base}{V3}/sync", user, params=params)
    return result["next_batch"]


# --- latency ---------------------------------------------------------------------


async def latency(base: str, users: list[BenchUser], room_size: int, messages: int, rate: float) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        rooms = await make_rooms(session, base, users, room_size)
        sent_at: dict[str, float] = {}
        samples: list[float] = []
        expected = 0
        done = asyncio.Event()
        stop = False

        async def poller(user: BenchUser) -> None:
            nonlocal expected
            token = await initial_token(session, base, user)
            sync_filter = json.dumps({"room": {"timeline": {"limit": 50}}, "presence": {"types": []}})
            while not stop:
                result = await call(
                    session,
                    "GET",
                    f"{base}{V3}/sync",
                    user,
                    params={"since": token, "timeout": "30000", "filter": sync_filter, "set_presence": "offline"},
                )
                now = time.perf_counter()
                token = result["next_batch"]
                for room in result["rooms"]["join"].values():
                    for event in room["timeline"]["events"]:
                        marker = event.get("content", {}).get("bench")
                        if marker in sent_at and event["sender"] != user.user_id:
                            samples.append(now - sent_at[marker])
                if expected and len(samples) >= expected:
                    done.set()

        pollers = [asyncio.create_task(poller(u)) for u in users]
        await asyncio.sleep(1.0)  # every poller is waiting
        for i in range(messages):
            room_id, members = rooms[i % len(rooms)]
            sender = members[i % len(members)]
            marker = f"m{i}"
            sent_at[marker] = time.perf_counter()
            await call(
                session,
                "PUT",
                f"{base}{V3}/rooms/{room_id}/send/m.room.message/{marker}-{secrets.token_hex(4)}",
                sender,
                json={"msgtype": "m.text", "body": marker, "bench": marker},
            )
            await asyncio.sleep(1 / rate)
        expected = sum(len(members) - 1 for room_id, members in (rooms[i % len(rooms)] for i in range(messages)))
        try:
            await asyncio.wait_for(done.wait(), 30)
        except TimeoutError:
            pass
        stop = True
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
    ms = [s * 1000 for s in samples]
    return {
        "users": len(users),
        "room_size": room_size,
        "messages": messages,
        "deliveries": len(ms),
        "expected_deliveries": expected,
        "p50_ms": round(percentile(ms, 50), 1) if ms else None,
        "p90_ms": round(percentile(ms, 90), 1) if ms else None,
        "p99_ms": round(percentile(ms, 99), 1) if ms else None,
        "max_ms": round(max(ms), 1) if ms else None,
        "mean_ms": round(statistics.mean(ms), 1) if ms else None,
    }


# --- capacity --------------------------------------------------------------------


async def capacity(
    base: str, users: list[BenchUser], targets: list[int], pid: int | None, ramp: float
) -> list[dict[str, Any]]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=60)
    results = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        owner = users[0]
        room_id = (await call(session, "POST", f"{base}{V3}/createRoom", owner, json={"preset": "public_chat"}))["room_id"]
        for user in users[1:]:
            await call(session, "POST", f"{base}{V3}/join/{room_id}", user, json={})
        tokens = {u.user_id: await initial_token(session, base, u) for u in users}
        idle_rss = rss_kib(pid)
        for target in targets:
            returned: list[float] = []
            opened = 0
            errors = 0

            async def poll(user: BenchUser) -> None:
                nonlocal opened, errors
                try:
                    async with session.get(
                        f"{base}{V3}/sync",
                        headers=user.headers,
                        params={"since": tokens[user.user_id], "timeout": "600000", "set_presence": "offline"},
                    ) as response:
                        opened += 1
                        await response.read()
                        returned.append(time.perf_counter())
                except (aiohttp.ClientError, OSError):
                    errors += 1

            # Clients arrive at `ramp` per second, not all in the same millisecond.
            tasks = []
            for i in range(target):
                tasks.append(asyncio.create_task(poll(users[i % len(users)])))
                if i % 50 == 49:
                    await asyncio.sleep(50 / ramp)
            # Wait until the server holds them all (its response headers come only
            # with the answer, so watch the waiter count through RSS stability).
            started = time.perf_counter()
            await asyncio.sleep(2)
            previous = -1
            while time.perf_counter() - started < 120:
                current = rss_kib(pid) or 0
                if current == previous:
                    break
                previous = current
                await asyncio.sleep(1.5)
            holding_rss = rss_kib(pid)
            still_waiting = sum(1 for t in tasks if not t.done())
            woke_at = time.perf_counter()
            await call(
                session,
                "PUT",
                f"{base}{V3}/rooms/{room_id}/send/m.room.message/cap{target}-{secrets.token_hex(3)}",
                owner,
                json={"msgtype": "m.text", "body": "wake"},
            )
            await asyncio.wait(tasks, timeout=120)
            finished = [t - woke_at for t in returned]
            results.append(
                {
                    "concurrent_long_polls": target,
                    "opened_at_per_s": ramp,
                    "still_waiting_before_wake": still_waiting,
                    "errors": errors,
                    "rss_idle_mib": round(idle_rss / 1024, 1) if idle_rss else None,
                    "rss_holding_mib": round(holding_rss / 1024, 1) if holding_rss else None,
                    "kib_per_poll": round((holding_rss - idle_rss) / target, 1) if holding_rss and idle_rss else None,
                    "all_returned_after_wake_s": round(max(finished), 2) if finished else None,
                    "median_return_after_wake_ms": round(statistics.median(finished) * 1000, 1) if finished else None,
                }
            )
            for task in tasks:
                task.cancel()
            tokens = {u.user_id: await initial_token(session, base, u) for u in users}
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url")
    parser.add_argument("--users", help="JSON file: [{user_id, access_token}, ...]")
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--users-count", type=int, default=100)
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--capacity", default="1000,10000", help="comma-separated long-poll counts ('' to skip)")
    parser.add_argument("--ramp", type=float, default=200.0, help="new long-polls per second in the capacity phase")
    args = parser.parse_args()

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    server = None
    if args.base_url:
        base, pid = args.base_url.rstrip("/"), args.server_pid
    else:
        from tests.server import ServerProcess

        server = ServerProcess(Path(tempfile.mkdtemp(prefix="sync-bench-")), {"log_level": "WARNING"})
        server.start()
        base, pid = server.base_url, server.process.pid if server.process else None
    try:
        async with aiohttp.ClientSession() as session:
            if args.users:
                users = [BenchUser(u["user_id"], u["access_token"]) for u in json.loads(Path(args.users).read_text())]
            else:
                users = await register(session, base, args.users_count)
        report: dict[str, Any] = {"server": base}
        if not args.skip_latency:
            report["latency"] = await latency(base, users, args.room_size, args.messages, args.rate)
        targets = [int(t) for t in args.capacity.split(",") if t.strip()]
        if targets:
            # Users of their own: the latency phase's senders going offline (presence)
            # would otherwise wake these "idle" polls.
            if not args.users:
                async with aiohttp.ClientSession() as session:
                    users = await register(session, base, min(args.users_count, 50))
            report["capacity"] = await capacity(base, users, targets, pid, args.ramp)
        print(json.dumps(report, indent=2))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    if os.environ.get("PYTHONASYNCIODEBUG"):
        asyncio.get_event_loop().set_debug(True)
    asyncio.run(main())
