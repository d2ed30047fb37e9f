"""POST /user_directory/search: who can be found (room sharers, public room members,
everyone with search_all_users), how terms match, `limited`, and staying right as
profiles and memberships change."""

from __future__ import annotations

import secrets
from typing import Any

from tests.conftest import V3, User, register_user
from tests.test_admin import A1, make_admin
from tests.test_rooms_helpers import (
    create_room,
    expect_error,
    invite_ok,
    join,
    leave,
    q,
)

SEARCH = f"{V3}/user_directory/search"


def search(user: User, term: str, limit: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"search_term": term}
    if limit is not None:
        body["limit"] = limit
    response = user.api.post(SEARCH, json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def found(user: User, term: str) -> set[str]:
    return {r["user_id"] for r in search(user, term)["results"]}


def set_name(user: User, name: str) -> None:
    response = user.api.put(f"{V3}/profile/{q(user.user_id)}/displayname", json={"displayname": name})
    assert response.status_code == 200, response.text


def test_room_sharers_and_public_rooms(new_user: Any) -> None:
    tag = secrets.token_hex(3)
    alice, bob, carol, dave = new_user(), new_user(), new_user(), new_user()
    set_name(bob, f"Robert Paulson{tag}")
    set_name(dave, f"Dave Public{tag}")
    private = create_room(alice)
    invite_ok(alice, private, bob)
    join(bob, private)
    public = create_room(dave, preset="public_chat")
    # Alice shares a room with Bob; nobody shares one with Carol.
    assert found(alice, f"paulson{tag}") == {bob.user_id}
    assert found(carol, f"paulson{tag}") == set()
    # Dave is in a public room: everyone finds him.
    assert found(carol, f"public{tag}") == {dave.user_id}
    # Results carry the profile.
    result = search(alice, f"Paulson{tag}")["results"][0]
    assert result == {"user_id": bob.user_id, "display_name": f"Robert Paulson{tag}"}
    # Invites do not count as sharing a room.
    erin = new_user()
    set_name(erin, f"Erin Invited{tag}")
    invite_ok(alice, private, erin)
    assert found(alice, f"invited{tag}") == set()
    join(erin, private)
    assert found(alice, f"invited{tag}") == {erin.user_id}
    # A public room whose join rule changes is no longer public.
    assert dave.api.put(f"{V3}/rooms/{q(public)}/state/m.room.join_rules/", json={"join_rule": "invite"}).status_code == 200
    assert found(carol, f"public{tag}") == set()


def test_matching_rules(new_user: Any) -> None:
    tag = secrets.token_hex(3)
    me = new_user()
    them = new_user(f"zed{tag}")
    set_name(them, f"Émile Zola-Rougon {tag}")
    room = create_room(me, preset="public_chat")
    join(them, room)
    # Word prefixes of the display name, any case; all words must match.
    for term in (f"zola {tag}", f"ROUGON {tag}", f"émile {tag}", f"ÉMILE {tag}", f"zo {tag}", tag):
        assert them.user_id in found(me, term), term
    for term in (f"ola {tag}", f"zola {tag} missing", f"mile {tag}"):
        assert them.user_id not in found(me, term), term
    # The user ID: its localpart, the full ID.
    assert them.user_id in found(me, f"zed{tag}")
    assert them.user_id in found(me, them.user_id)
    assert found(me, "") == set() and found(me, "   ") == set()


def test_limited_and_limit(new_user: Any) -> None:
    tag = "lim" + secrets.token_hex(3)
    me = new_user()
    room = create_room(me, preset="public_chat")
    for i in range(3):
        other = new_user(f"{tag}{i}")
        join(other, room)
    full = search(me, tag)
    assert len(full["results"]) == 3 and full["limited"] is False
    cut = search(me, tag, limit=2)
    assert len(cut["results"]) == 2 and cut["limited"] is True
    assert search(me, tag, limit=0) == {"results": [], "limited": True}
    expect_error(me.api.post(SEARCH, json={"search_term": tag, "limit": -1}), 400, "M_INVALID_PARAM")
    expect_error(me.api.post(SEARCH, json={"search_term": tag, "limit": "2"}), 400, "M_BAD_JSON")
    expect_error(me.api.post(SEARCH, json={"limit": 2}), 400, "M_MISSING_PARAM")
    expect_error(me.api.post(SEARCH, json={"search_term": 5}), 400, "M_BAD_JSON")
    expect_error(me.api.post(SEARCH, content=b"nope"), 400, "M_NOT_JSON")


def test_follows_profile_and_membership_changes(new_user: Any, server: Any) -> None:
    tag = secrets.token_hex(3)
    me, friend = new_user(), new_user()
    set_name(friend, f"Before{tag}")
    room = create_room(me)
    invite_ok(me, room, friend)
    join(friend, room)
    assert found(me, f"before{tag}") == {friend.user_id}
    set_name(friend, f"After{tag}")
    assert found(me, f"before{tag}") == set()
    assert found(me, f"after{tag}") == {friend.user_id}
    leave(friend, room)
    assert found(me, f"after{tag}") == set()
    # Deactivated users are never found.
    other_room = create_room(me, preset="public_chat")
    gone = new_user()
    set_name(gone, f"Gone{tag}")
    join(gone, other_room)
    assert found(me, f"gone{tag}") == {gone.user_id}
    admin = make_admin(server)
    assert admin.api.post(f"{A1}/deactivate/{q(gone.user_id)}", json={}).status_code == 200
    assert found(me, f"gone{tag}") == set()


def test_search_all_users(make_server: Any) -> None:
    server = make_server({"user_directory": {"search_all_users": True}})
    me = register_user(server.base_url)
    loner = register_user(server.base_url, "loner" + secrets.token_hex(3))
    assert found(me, loner.localpart) == {loner.user_id}
    # The server notices user is never listed.
    admin = make_admin(server)
    admin.api.post(f"{A1}/send_server_notice", json={"user_id": me.user_id, "content": {"msgtype": "m.text", "body": "x"}})
    assert found(me, "notices") == set()


def test_needs_authentication(server: Any) -> None:
    from tests.conftest import Api

    expect_error(Api(server.base_url).post(SEARCH, json={"search_term": "x"}), 401, "M_MISSING_TOKEN")
