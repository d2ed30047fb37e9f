"""Room events reach /sync in stream order even when their transactions commit out of
order (PostgreSQL, where writes to different rooms run concurrently).

A message to room A is held inside its transaction by a row lock this test takes
directly in PostgreSQL, after the event's row is inserted; a message to room B commits
meanwhile. A /sync in between must not hand out a token that covers B's position but
not A's earlier one: the next /sync from that token would never carry A's message.
On SQLite writes are serialised, so the order cannot differ there.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest

from storage.event_positions import EventPositions
from tests.conftest import V3, User
from tests.server import POSTGRES_ENV, ServerProcess

needs_postgres = pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason="concurrent commits need PostgreSQL")


def test_an_event_is_announced_only_after_every_earlier_position_is_finished() -> None:
    async def run() -> list[str]:
        positions = EventPositions()
        positions.load(100)
        first, second, third = positions.take(), positions.take(), positions.take()
        assert (first, second, third) == (101, 102, 103)
        order: list[str] = []

        async def announce(position: int) -> None:
            await positions.wait_for_earlier(position)
            order.append(f"announced {position}")
            positions.finish(position)

        later = [asyncio.create_task(announce(third)), asyncio.create_task(announce(second))]
        await asyncio.sleep(0.01)
        assert order == []  # both wait for 101
        order.append("101 given up")
        positions.finish(first)
        positions.finish(first)  # idempotent
        await asyncio.gather(*later)
        return order

    assert asyncio.run(run()) == ["101 given up", "announced 102", "announced 103"]


def _plain_url(server: ServerProcess) -> str:
    return str(server.config["database"]["url"]).replace("postgresql+asyncpg://", "postgresql://")


def _send_in_thread(user: User, room_id: str, body: str, results: dict[str, Any]) -> threading.Thread:
    def send() -> None:
        response = user.api.put(
            f"{V3}/rooms/{room_id}/send/m.room.message/{body}", json={"msgtype": "m.text", "body": body}, timeout=60
        )
        results[body] = response.status_code

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def _bodies(sync: dict[str, Any]) -> list[str]:
    found = []
    for room in sync.get("rooms", {}).get("join", {}).values():
        for event in room.get("timeline", {}).get("events", []):
            if event["type"] == "m.room.message":
                found.append(event["content"]["body"])
    return found


@needs_postgres
def test_a_message_committed_late_is_not_skipped_by_sync(server: ServerProcess, new_user: Any) -> None:
    import asyncpg

    alice = new_user()
    room_a = alice.api.post(f"{V3}/createRoom", json={}).json()["room_id"]
    room_b = alice.api.post(f"{V3}/createRoom", json={}).json()["room_id"]
    since = alice.api.get(f"{V3}/sync", params={"timeout": "0"}).json()["next_batch"]

    held = asyncio.new_event_loop()
    lock_conn = held.run_until_complete(asyncpg.connect(_plain_url(server)))
    watch_conn = held.run_until_complete(asyncpg.connect(_plain_url(server)))
    results: dict[str, Any] = {}
    threads: list[threading.Thread] = []
    try:
        # Room A's forward extremity: the message's transaction deletes it right after
        # inserting the event, and waits here.
        held.run_until_complete(lock_conn.execute("BEGIN"))
        held.run_until_complete(
            lock_conn.execute("SELECT * FROM room_forward_extremities WHERE room_id = $1 FOR UPDATE", room_a)
        )
        threads.append(_send_in_thread(alice, room_a, "first, to A", results))
        deadline = time.monotonic() + 20
        while not held.run_until_complete(
            watch_conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query ILIKE 'DELETE FROM room_forward_extremities%'"
            )
        ):
            assert time.monotonic() < deadline, "the message to A never reached the held row"
            time.sleep(0.05)

        threads.append(_send_in_thread(alice, room_b, "second, to B", results))
        while not held.run_until_complete(
            watch_conn.fetchval("SELECT count(*) FROM events WHERE room_id = $1 AND type = 'm.room.message'", room_b)
        ):
            assert time.monotonic() < deadline, "the message to B was never committed"
            time.sleep(0.05)
        time.sleep(0.5)  # B's announcement, had it not waited for A

        first = alice.api.get(f"{V3}/sync", params={"since": since, "timeout": "0"}).json()
        held.run_until_complete(lock_conn.execute("ROLLBACK"))
        for thread in threads:
            thread.join(30)
        assert results == {"first, to A": 200, "second, to B": 200}

        seen = _bodies(first)
        token = first["next_batch"]
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            later = alice.api.get(f"{V3}/sync", params={"since": token, "timeout": "2000"}).json()
            seen += _bodies(later)
            token = later["next_batch"]
        assert sorted(seen) == ["first, to A", "second, to B"]
    finally:
        held.run_until_complete(lock_conn.close())
        held.run_until_complete(watch_conn.close())
        held.close()
        for thread in threads:
            thread.join(30)
