"""Two instances of our own server sharing rooms, including a restart with events
still queued for a peer that is down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import V3, User, register_user
from tests.server import ServerProcess
from tests.test_federation_rooms import wait_for


@pytest.fixture
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    first = ServerProcess(tmp_path_factory.mktemp("first"), federation=True)
    second = ServerProcess(tmp_path_factory.mktemp("second"), federation=True)
    first.start()
    second.start()
    yield first, second
    first.stop()
    second.stop()


def texts(user: User, room_id: str) -> list[str]:
    response = user.api.get(f"{V3}/rooms/{room_id}/messages", params={"dir": "f", "limit": 200})
    return [e["content"]["body"] for e in response.json().get("chunk", []) if e["type"] == "m.room.message"]


def test_two_of_ours_share_a_room(pair: tuple[ServerProcess, ServerProcess]) -> None:
    first, second = pair
    alice, bob = register_user(first.base_url), register_user(second.base_url)
    room_id = alice.api.post(f"{V3}/createRoom", json={"preset": "public_chat", "name": "Ours"}).json()["room_id"]
    alice.api.put(f"{V3}/rooms/{room_id}/send/m.room.message/a0", json={"msgtype": "m.text", "body": "first!"})
    joined = bob.api.post(f"{V3}/join/{room_id}", params={"via": first.server_name}, json={})
    assert joined.status_code == 200, (joined.text, second.log()[-3000:], first.log()[-3000:])
    assert bob.api.get(f"{V3}/rooms/{room_id}/state/m.room.name").json() == {"name": "Ours"}
    alice.api.put(f"{V3}/rooms/{room_id}/send/m.room.message/a1", json={"msgtype": "m.text", "body": "to bob"})
    bob.api.put(f"{V3}/rooms/{room_id}/send/m.room.message/b1", json={"msgtype": "m.text", "body": "to alice"})
    wait_for(lambda: "to bob" in texts(bob, room_id), what="alice's message at bob's server")
    wait_for(lambda: "to alice" in texts(alice, room_id), what="bob's message at alice's server")

    # Bob's server goes down; alice's server queues, restarts, and still delivers.
    second.stop()
    for i in range(3):
        alice.api.put(f"{V3}/rooms/{room_id}/send/m.room.message/q{i}", json={"msgtype": "m.text", "body": f"queued {i}"})
    first.stop()
    first.start()
    second.start()
    alice.api.put(f"{V3}/rooms/{room_id}/send/m.room.message/after", json={"msgtype": "m.text", "body": "after restart"})
    wait_for(
        lambda: texts(bob, room_id)[-4:] == ["queued 0", "queued 1", "queued 2", "after restart"],
        timeout=60,
        what="the queued events at bob's server, in order",
    )
