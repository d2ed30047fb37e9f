"""/sync's batched paths give the same answers as the one-room paths.

An initial sync over several rooms reads their timelines, state groups and members
in a few queries for all rooms, and serialises every room's events together; a sync
restricted to one room by its filter takes the one-room path. Long-polls woken by the
same event share one read of the room's new events."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import V3, User
from tests.test_sync import bodies, create_room, join, send, sync


def _state(user: User, room_id: str, event_type: str, content: dict[str, Any], state_key: str = "") -> str:
    response = user.api.put(f"{V3}/rooms/{room_id}/state/{event_type}/{state_key}", json=content)
    assert response.status_code == 200, response.text
    return str(response.json()["event_id"])


def _without_age(value: Any) -> Any:
    """The response without what depends on when it was built: ages, next_batch, and
    in a prev_batch the positions of the other streams (on a shared server another
    test's user going offline between two syncs moves the presence position)."""
    if isinstance(value, dict):
        return {
            k: v.split("_")[0] if k == "prev_batch" and isinstance(v, str) else _without_age(v)
            for k, v in value.items()
            if k not in ("age", "next_batch")
        }
    if isinstance(value, list):
        return [_without_age(v) for v in value]
    return value


def test_initial_sync_of_many_rooms_equals_each_room_alone(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    # History before bob joined: hidden in a `joined` room, shown in a `shared` one.
    joined_only = create_room(alice, name="joined only", initial_state=[
        {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}},
    ], preset="public_chat")
    shared = create_room(alice, name="shared", preset="public_chat")
    # More events than the timeline limit, with state set before the window.
    long_room = create_room(alice, name="long", preset="public_chat")
    _state(alice, long_room, "m.room.topic", {"topic": "set before the window"})
    for room_id in (joined_only, shared, long_room):
        send(alice, room_id, f"before bob in {room_id}")
    for room_id in (joined_only, shared, long_room):
        join(bob, room_id)
    for i in range(6):
        send(alice, long_room, f"after bob {i}")
    # A state change inside the timeline window: the state block has the one before.
    _state(alice, long_room, "m.room.topic", {"topic": "changed in the window"})
    send(bob, shared, "bob speaks")
    # A room bob only left, and one he is invited to.
    left = create_room(alice, name="left", preset="public_chat")
    join(bob, left)
    assert bob.api.post(f"{V3}/rooms/{left}/leave", json={}).status_code == 200
    invited = create_room(alice, name="invited", invite=[bob.user_id])

    room_filter = {"room": {"timeline": {"limit": 4}, "include_leave": True}}
    everything = sync(bob, filter=room_filter)
    assert set(everything["rooms"]["join"]) == {joined_only, shared, long_room}
    assert set(everything["rooms"]["invite"]) == {invited}
    assert set(everything["rooms"]["leave"]) == {left}

    for room_id in (joined_only, shared, long_room):
        alone = sync(bob, filter={"room": {"rooms": [room_id], "timeline": {"limit": 4}}})
        assert set(alone["rooms"]["join"]) == {room_id}
        assert _without_age(everything["rooms"]["join"][room_id]) == _without_age(alone["rooms"]["join"][room_id])

    assert bodies(everything, joined_only) == []
    assert bodies(everything, shared) == [f"before bob in {shared}", "bob speaks"]
    long_body = everything["rooms"]["join"][long_room]
    assert long_body["timeline"]["limited"] is True
    assert bodies(everything, long_room) == [f"after bob {i}" for i in range(3, 6)]
    assert long_body["timeline"]["events"][-1]["content"] == {"topic": "changed in the window"}
    state = {(e["type"], e["state_key"]): e["content"] for e in long_body["state"]["events"]}
    assert state[("m.room.topic", "")] == {"topic": "set before the window"}
    assert state[("m.room.name", "")] == {"name": "long"}
    assert long_body["summary"]["m.joined_member_count"] == 2
    # The prev_batch of the batched timeline pages on to the events before it.
    earlier = bob.api.get(
        f"{V3}/rooms/{long_room}/messages", params={"from": long_body["timeline"]["prev_batch"], "dir": "b", "limit": 2}
    )
    assert earlier.status_code == 200, earlier.text
    assert [e["content"].get("body") for e in earlier.json()["chunk"]] == ["after bob 2", "after bob 1"]

    # The own event carries its transaction ID when the sending device syncs.
    own = [e for e in everything["rooms"]["join"][shared]["timeline"]["events"] if e["sender"] == bob.user_id]
    assert own and "transaction_id" in own[-1]["unsigned"]


def test_long_polls_woken_together_each_get_the_event_once(new_user: Callable[..., User]) -> None:
    alice = new_user()
    waiters = [new_user() for _ in range(4)]
    room_id = create_room(alice, preset="public_chat")
    for user in waiters:
        join(user, room_id)
    ignoring = waiters[0]
    assert ignoring.api.put(
        f"{V3}/user/{ignoring.user_id}/account_data/m.ignored_user_list",
        json={"ignored_users": {alice.user_id: {}}},
    ).status_code == 200
    tokens = [sync(user)["next_batch"] for user in waiters]
    results: dict[tuple[int, int], dict[str, Any]] = {}

    def wait(index: int, copy: int) -> None:
        results[(index, copy)] = sync(waiters[index], tokens[index], timeout=20000 + copy)

    threads = [threading.Thread(target=wait, args=(i, c)) for i in range(len(waiters)) for c in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    send(waiters[1], room_id, "from a member")
    send(alice, room_id, "from alice")
    for thread in threads:
        thread.join(20)
    assert len(results) == len(threads)

    # Each long-poll answers with what was new when it woke; syncing on from there
    # must give every message exactly once, and never alice's to the user ignoring her.
    for (index, _), response in results.items():
        seen = bodies(response, room_id)
        token = response["next_batch"]
        for _ in range(5):
            if len(seen) >= (1 if index == 0 else 2):
                break
            later = sync(waiters[index], token, timeout=2000)
            seen += bodies(later, room_id)
            token = later["next_batch"]
        expected = ["from a member"] if index == 0 else ["from a member", "from alice"]
        assert seen == expected, (index, seen)
