"""Room aliases, canonical alias checks, directory visibility and /publicRooms."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from tests.conftest import V3, Api, User
from tests.server import ServerProcess
from tests.test_rooms_helpers import create_room, expect_error, join, put_state, q, state_of


def _alias(server: ServerProcess, name: str | None = None) -> str:
    return f"#{name or 'a' + secrets.token_hex(6)}:{server.server_name}"


def _put_alias(user: User, alias: str, room_id: str) -> Any:
    return user.api.put(f"{V3}/directory/room/{q(alias)}", json={"room_id": room_id})


def test_alias_put_get_delete(server: ServerProcess, new_user: Callable[..., User]) -> None:
    alice, bob, eve = new_user(), new_user(), new_user()
    room_id = create_room(alice, preset="public_chat")
    join(bob, room_id)
    alias = _alias(server)
    assert _put_alias(alice, alias, room_id).status_code == 200
    resolved = alice.api.get(f"{V3}/directory/room/{q(alias)}").json()
    assert resolved == {"room_id": room_id, "servers": [server.server_name]}
    # Resolving needs no membership (nor authentication).
    with Api(server.base_url) as anonymous:
        assert anonymous.get(f"{V3}/directory/room/{q(alias)}").json()["room_id"] == room_id
    # Taken: 409, whoever asks.
    expect_error(_put_alias(alice, alias, room_id), 409)
    expect_error(_put_alias(bob, alias, create_room(bob)), 409)
    # Unknown room: 404; a room the user is not in: 403.
    expect_error(_put_alias(alice, _alias(server), "!unknown:" + server.server_name), 404, "M_NOT_FOUND")
    expect_error(_put_alias(eve, _alias(server), room_id), 403, "M_FORBIDDEN")
    # Bad aliases and other servers' aliases: 400.
    expect_error(_put_alias(alice, "#no-server", room_id), 400)
    expect_error(_put_alias(alice, "#x:other.example", room_id), 400)
    expect_error(_put_alias(alice, "#has space:" + server.server_name, room_id), 400)
    expect_error(_put_alias(alice, "#" + "x" * 300 + ":" + server.server_name, room_id), 400)
    expect_error(alice.api.get(f"{V3}/directory/room/{q(_alias(server))}"), 404, "M_NOT_FOUND")

    aliases = alice.api.get(f"{V3}/rooms/{q(room_id)}/aliases").json()["aliases"]
    assert aliases == [alias]
    expect_error(eve.api.get(f"{V3}/rooms/{q(room_id)}/aliases"), 403, "M_FORBIDDEN")

    # Deleting: not the creator nor a room admin -> 403; unknown -> 404.
    expect_error(bob.api.delete(f"{V3}/directory/room/{q(alias)}"), 403, "M_FORBIDDEN")
    expect_error(eve.api.delete(f"{V3}/directory/room/{q(alias)}"), 403, "M_FORBIDDEN")
    assert alice.api.get(f"{V3}/directory/room/{q(alias)}").status_code == 200
    expect_error(alice.api.delete(f"{V3}/directory/room/{q(_alias(server))}"), 404, "M_NOT_FOUND")
    # Bob's own alias he may delete; alice (room admin) may delete anyone's.
    bobs = _alias(server)
    assert _put_alias(bob, bobs, room_id).status_code == 200
    assert bob.api.delete(f"{V3}/directory/room/{q(bobs)}").status_code == 200
    assert alice.api.delete(f"{V3}/directory/room/{q(alias)}").status_code == 200
    expect_error(alice.api.get(f"{V3}/directory/room/{q(alias)}"), 404, "M_NOT_FOUND")
    bobs = _alias(server)
    assert _put_alias(bob, bobs, room_id).status_code == 200
    assert alice.api.delete(f"{V3}/directory/room/{q(bobs)}").status_code == 200
    assert alice.api.get(f"{V3}/rooms/{q(room_id)}/aliases").json()["aliases"] == []


def test_canonical_alias_checks(server: ServerProcess, new_user: Callable[..., User]) -> None:
    alice = new_user()
    room_id = create_room(alice)
    other_room = create_room(alice)
    alias, alt, elsewhere = _alias(server), _alias(server), _alias(server)
    assert _put_alias(alice, alias, room_id).status_code == 200
    assert _put_alias(alice, alt, room_id).status_code == 200
    assert _put_alias(alice, elsewhere, other_room).status_code == 200
    base = f"{V3}/rooms/{q(room_id)}/state/m.room.canonical_alias"
    for content in (
        {"alias": elsewhere},
        {"alias": _alias(server)},
        {"alias": alias, "alt_aliases": [elsewhere]},
        {"alt_aliases": [alias, _alias(server)]},
    ):
        expect_error(alice.api.put(base, json=content), 400, "M_BAD_ALIAS")
    for content in ({"alias": "not an alias"}, {"alias": 5}, {"alt_aliases": "x"}, {"alt_aliases": [5]}):
        body = expect_error(alice.api.put(base, json=content), 400)
        assert body["errcode"] in ("M_INVALID_PARAM", "M_BAD_ALIAS", "M_BAD_JSON")
    assert ("m.room.canonical_alias", "") not in state_of(alice, room_id)
    put_state(alice, room_id, "m.room.canonical_alias", {"alias": alias, "alt_aliases": [alt]})
    assert alice.api.get(base).json() == {"alias": alias, "alt_aliases": [alt]}
    # Removing the aliases is always allowed.
    put_state(alice, room_id, "m.room.canonical_alias", {})


def test_directory_visibility(server: ServerProcess, new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = create_room(alice, preset="public_chat")
    join(bob, room_id)
    url = f"{V3}/directory/list/room/{q(room_id)}"
    assert alice.api.get(url).json() == {"visibility": "private"}
    expect_error(bob.api.put(url, json={"visibility": "public"}), 403, "M_FORBIDDEN")
    assert alice.api.get(url).json() == {"visibility": "private"}
    assert alice.api.put(url, json={"visibility": "public"}).status_code == 200
    assert bob.api.get(url).json() == {"visibility": "public"}
    expect_error(alice.api.put(url, json={"visibility": "secret"}), 400)
    expect_error(alice.api.put(url, json={}), 400, "M_MISSING_PARAM")
    assert alice.api.put(url, json={"visibility": "private"}).status_code == 200
    missing = f"{V3}/directory/list/room/{q('!nope:' + server.server_name)}"
    expect_error(alice.api.get(missing), 404, "M_NOT_FOUND")
    expect_error(alice.api.put(missing, json={"visibility": "public"}), 404, "M_NOT_FOUND")


def test_admins_may_not_publish_when_configured(make_server: Callable[..., ServerProcess]) -> None:
    from tests.conftest import register_user

    server = make_server({"rooms": {"admins_may_publish": False}})
    alice = register_user(server.base_url)
    room_id = create_room(alice)
    expect_error(
        alice.api.put(f"{V3}/directory/list/room/{q(room_id)}", json={"visibility": "public"}), 403, "M_FORBIDDEN"
    )


def test_public_rooms_paging_filter_and_counts(server: ServerProcess, new_user: Callable[..., User]) -> None:
    tag = "zz" + secrets.token_hex(4)
    owner = new_user()
    joiners = [new_user() for _ in range(4)]
    rooms: dict[str, int] = {}
    for i in range(5):
        room_id = create_room(
            owner, preset="public_chat", visibility="public", name=f"{tag} room {i}", topic=f"topic {i}",
            room_alias_name=f"{tag}-{i}",
        )
        for joiner in joiners[:i]:
            join(joiner, room_id)
        rooms[room_id] = i + 1
    hidden = create_room(owner, preset="public_chat", name=f"{tag} hidden")

    def post(body: dict[str, Any]) -> dict[str, Any]:
        response = owner.api.post(f"{V3}/publicRooms", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    found = post({"filter": {"generic_search_term": tag.upper()}})["chunk"]
    assert {c["room_id"] for c in found} == set(rooms)
    assert hidden not in {c["room_id"] for c in found}
    # Largest first, with exact joined member counts and the room's details.
    assert [c["num_joined_members"] for c in found] == [5, 4, 3, 2, 1]
    for chunk in found:
        assert chunk["num_joined_members"] == rooms[chunk["room_id"]]
        assert chunk["name"].startswith(tag)
        assert chunk["canonical_alias"].startswith(f"#{tag}-")
        assert chunk["world_readable"] is False and chunk["guest_can_join"] is False
        assert chunk["join_rule"] == "public"
    # Filter by topic and by alias.
    assert [c["room_id"] for c in post({"filter": {"generic_search_term": f"{tag}-3"}})["chunk"]] == [
        c["room_id"] for c in found if c["canonical_alias"] == f"#{tag}-3:{server.server_name}"
    ]
    # Paging with since, limit 2: every room exactly once, in order.
    seen: list[str] = []
    since = None
    for _ in range(10):
        page = post({"limit": 2, "filter": {"generic_search_term": tag}, **({"since": since} if since else {})})
        assert len(page["chunk"]) <= 2
        seen.extend(c["room_id"] for c in page["chunk"])
        since = page.get("next_batch")
        if since is None:
            break
        assert "prev_batch" in post({"limit": 2, "since": since, "filter": {"generic_search_term": tag}})
    assert seen == [c["room_id"] for c in found]
    # GET pages the whole directory the same way.
    everything: list[str] = []
    since = None
    for _ in range(1000):
        response = owner.api.get(f"{V3}/publicRooms", params={"limit": 3, **({"since": since} if since else {})})
        assert response.status_code == 200, response.text
        everything.extend(c["room_id"] for c in response.json()["chunk"])
        since = response.json().get("next_batch")
        if since is None:
            break
    assert set(rooms) <= set(everything) and len(everything) == len(set(everything))
    assert hidden not in everything
    # Leaving lowers the count.
    owner_room = next(r for r, n in rooms.items() if n == 5)
    joiners[0].api.post(f"{V3}/rooms/{q(owner_room)}/leave", json={})
    counts = {c["room_id"]: c["num_joined_members"] for c in post({"filter": {"generic_search_term": tag}})["chunk"]}
    assert counts[owner_room] == 4
    # Bad input.
    expect_error(owner.api.get(f"{V3}/publicRooms", params={"since": "garbage"}), 400)
    expect_error(owner.api.get(f"{V3}/publicRooms", params={"limit": "many"}), 400)
    expect_error(owner.api.post(f"{V3}/publicRooms", json={"limit": "2"}), 400, "M_BAD_JSON")
    expect_error(owner.api.post(f"{V3}/publicRooms", json={"filter": {"generic_search_term": 5}}), 400, "M_BAD_JSON")
