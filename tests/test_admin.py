"""The admin API over HTTP: users, rooms, deletion and purge, whois, registration tokens,
media quarantine, event reports, server version; and that only admins get in.

Admins are made with the command line (`homeserver admin users set-admin`) against the
running test server's config, as an operator would.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import sys
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from homeserver.api.admin import admin_routes
from storage.database import Database
from storage.schema import current_state, events, room_memberships, rooms, state_groups
from tests.conftest import V3, Api, User, register_user
from tests.server import ServerProcess
from tests.test_push import all_notifications
from tests.test_rooms_helpers import (
    create_room,
    database_url,
    expect_error,
    invite_ok,
    join,
    q,
    send,
    text,
)

A1 = "/_synapse/admin/v1"
A2 = "/_synapse/admin/v2"


def homeserver(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "homeserver", *args], check=False, capture_output=True, text=True, timeout=timeout
    )


def make_admin(server: ServerProcess, localpart: str | None = None) -> User:
    user = register_user(server.base_url, localpart or "admin" + secrets.token_hex(4))
    result = homeserver("admin", "users", "set-admin", "--config", str(server.config_path), user.user_id)
    assert result.returncode == 0, result.stderr
    return user


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> User:
    return make_admin(server)


def db_count(server: ServerProcess, table: Any, *where: Any) -> int:
    async def count() -> int:
        db = Database.open(database_url(server))
        try:
            async with db.read() as conn:
                return int((await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one())
        finally:
            await db.close()

    return asyncio.run(count())


# --- access ------------------------------------------------------------------------


def _concrete(path: str, other: str, server: ServerProcess) -> str:
    values = {
        "user_id": other,
        "room_id": f"!nothing:{server.server_name}",
        "server_name": server.server_name,
        "media_id": "abcdef",
        "token": "sometoken",
        "report_id": "1",
        "delete_id": "xyz",
        "txn_id": "t1",
    }
    return re.sub(r"\{(\w+)\}", lambda m: q(values[m.group(1)]), path)


def test_every_admin_route_refuses_non_admins(user: User, new_user: Any, server: ServerProcess) -> None:
    other = new_user()
    checked = 0
    for route in admin_routes():
        for method in sorted(route.methods - {"HEAD"}):  # type: ignore[attr-defined]
            path = _concrete(route.path, other.user_id, server)  # type: ignore[attr-defined]
            kwargs: dict[str, Any] = {} if method == "GET" else {"json": {}}
            response = user.api.request(method, path, **kwargs)
            expect_error(response, 403, "M_FORBIDDEN")
            anonymous = Api(server.base_url).request(method, path, **kwargs)
            expect_error(anonymous, 401, "M_MISSING_TOKEN")
            checked += 1
    assert checked >= 30


def test_server_version(admin: User) -> None:
    response = admin.api.get(f"{A1}/server_version")
    assert response.status_code == 200
    assert isinstance(response.json()["server_version"], str)


# --- users -------------------------------------------------------------------------


def test_list_users_paginates_and_filters(admin: User, server: ServerProcess) -> None:
    prefix = "pager" + secrets.token_hex(3)
    made = sorted(register_user(server.base_url, f"{prefix}{i}").user_id for i in range(5))
    first = admin.api.get(f"{A2}/users", params={"name": prefix, "limit": 2}).json()
    assert [u["name"] for u in first["users"]] == made[:2]
    assert first["total"] == 5 and first["next_token"] == "2"
    seen = [u["name"] for u in first["users"]]
    token = first["next_token"]
    while token is not None:
        page = admin.api.get(f"{A2}/users", params={"name": prefix, "limit": 2, "from": token}).json()
        seen += [u["name"] for u in page["users"]]
        token = page.get("next_token")
    assert seen == made
    one = first["users"][0]
    assert one["admin"] is False and one["deactivated"] is False and one["is_guest"] is False
    assert isinstance(one["creation_ts"], int)
    # Deactivated users are left out unless asked for.
    assert admin.api.post(f"{A1}/deactivate/{q(made[0])}", json={}).status_code == 200
    assert admin.api.get(f"{A2}/users", params={"name": prefix}).json()["total"] == 4
    assert admin.api.get(f"{A2}/users", params={"name": prefix, "deactivated": "true"}).json()["total"] == 5
    assert admin.api.get(f"{A2}/users", params={"guests": "false", "name": prefix}).json()["total"] == 4
    expect_error(admin.api.get(f"{A2}/users", params={"limit": "ten"}), 400, "M_INVALID_PARAM")
    expect_error(admin.api.get(f"{A2}/users", params={"from": "-1"}), 400, "M_INVALID_PARAM")
    expect_error(admin.api.get(f"{A2}/users", params={"deactivated": "maybe"}), 400, "M_INVALID_PARAM")


def test_query_create_and_modify_user(admin: User, server: ServerProcess) -> None:
    user_id = f"@made{secrets.token_hex(4)}:{server.server_name}"
    expect_error(admin.api.get(f"{A2}/users/{q(user_id)}"), 404, "M_NOT_FOUND")
    created = admin.api.put(
        f"{A2}/users/{q(user_id)}", json={"password": "first pw", "displayname": "Made Up", "admin": False}
    )
    assert created.status_code == 201, created.text
    assert created.json()["name"] == user_id and created.json()["displayname"] == "Made Up"
    login = Api(server.base_url).post(
        f"{V3}/login", json={"type": "m.login.password", "user": user_id, "password": "first pw"}
    )
    assert login.status_code == 200
    token = login.json()["access_token"]
    modified = admin.api.put(
        f"{A2}/users/{q(user_id)}",
        json={"displayname": "Renamed", "avatar_url": "mxc://x/y", "admin": True, "password": "second pw"},
    )
    assert modified.status_code == 200, modified.text
    body = modified.json()
    assert (body["displayname"], body["avatar_url"], body["admin"]) == ("Renamed", "mxc://x/y", True)
    # A new password logs the user out everywhere by default.
    expect_error(Api(server.base_url, token).get(f"{V3}/account/whoami"), 401, "M_UNKNOWN_TOKEN")
    profile = Api(server.base_url).get(f"{V3}/profile/{q(user_id)}").json()
    assert profile == {"displayname": "Renamed", "avatar_url": "mxc://x/y"}
    assert admin.api.get(f"{A1}/users/{q(user_id)}/admin").json() == {"admin": True}
    assert admin.api.put(f"{A1}/users/{q(user_id)}/admin", json={"admin": False}).status_code == 200
    assert admin.api.get(f"{A2}/users/{q(user_id)}").json()["admin"] is False
    # Deactivate through PUT, then reactivate with a new password.
    gone = admin.api.put(f"{A2}/users/{q(user_id)}", json={"deactivated": True})
    assert gone.status_code == 200 and gone.json()["deactivated"] is True
    back = admin.api.put(f"{A2}/users/{q(user_id)}", json={"deactivated": False, "password": "third pw"})
    assert back.json()["deactivated"] is False
    login = Api(server.base_url).post(
        f"{V3}/login", json={"type": "m.login.password", "user": user_id, "password": "third pw"}
    )
    assert login.status_code == 200
    # Bad input.
    expect_error(admin.api.put(f"{A2}/users/{q(user_id)}", json={"admin": "yes"}), 400, "M_BAD_JSON")
    expect_error(admin.api.put(f"{A2}/users/{q(user_id)}", json={"displayname": 5}), 400, "M_BAD_JSON")
    expect_error(admin.api.put(f"{A2}/users/{q(user_id)}", json={"avatar_url": "http://x"}), 400, "M_INVALID_PARAM")
    expect_error(admin.api.put(f"{A2}/users/{q(user_id)}", content=b"[1]"), 400, "M_NOT_JSON")
    expect_error(admin.api.get(f"{A2}/users/not-a-user"), 400, "M_INVALID_PARAM")
    expect_error(admin.api.get(f"{A2}/users/{q('@someone:elsewhere.org')}"), 400, "M_INVALID_PARAM")
    expect_error(admin.api.put(f"{A2}/users/{q('@BAD NAME:' + server.server_name)}", json={}), 400)
    expect_error(admin.api.put(f"{A1}/users/{q(admin.user_id)}/admin", json={"admin": False}), 400)


def test_deactivate_with_erase_leaves_rooms(admin: User, new_user: Any) -> None:
    owner, victim = new_user(), new_user()
    room_id = create_room(owner, preset="public_chat")
    join(victim, room_id)
    invited_room = create_room(owner)
    invite_ok(owner, invited_room, victim)
    response = admin.api.post(f"{A1}/deactivate/{q(victim.user_id)}", json={"erase": True})
    assert response.status_code == 200, response.text
    expect_error(victim.api.get(f"{V3}/account/whoami"), 401, "M_UNKNOWN_TOKEN")
    members = owner.api.get(f"{V3}/rooms/{q(room_id)}/joined_members").json()["joined"]
    assert victim.user_id not in members
    state = {(e["type"], e["state_key"]): e for e in owner.api.get(f"{V3}/rooms/{q(invited_room)}/state").json()}
    assert state[("m.room.member", victim.user_id)]["content"]["membership"] == "leave"
    info = admin.api.get(f"{A2}/users/{q(victim.user_id)}").json()
    assert info["deactivated"] is True and info["erased"] is True and info["displayname"] is None
    expect_error(admin.api.post(f"{A1}/deactivate/{q('@nobody' + secrets.token_hex(3) + ':x')}", json={}), 400)
    expect_error(admin.api.post(f"{A1}/deactivate/{q(victim.user_id)}", json={"erase": "yes"}), 400, "M_BAD_JSON")


def test_deactivation_deletes_the_accounts_private_data(admin: User, new_user: Any, server: ServerProcess) -> None:
    from tests.test_e2ee import device_keys, otk

    alice, bob, carol = new_user(), new_user(), new_user()
    room_id = create_room(bob, preset="public_chat")
    join(alice, room_id)
    join(carol, room_id)
    text(bob, room_id, "a message that notifies alice (and carol)")
    # A room of two: the message's push row has alice alone, and goes with her.
    private_room = create_room(bob, preset="private_chat", invite=[alice.user_id])
    join(alice, private_room)
    text(bob, private_room, "a message that notifies alice alone")
    bodies = {n["event"]["content"].get("body") for n in all_notifications(alice.api)}
    assert {"a message that notifies alice (and carol)", "a message that notifies alice alone"} <= bodies
    assert alice.api.put(f"{V3}/pushrules/global/content/lunch", json={"pattern": "lunch", "actions": ["notify"]}).status_code == 200
    secret = f"{V3}/user/{q(alice.user_id)}/account_data/org.example.secret"
    assert alice.api.put(secret, json={"diary": "private"}).status_code == 200
    keys = {"device_keys": device_keys(alice), "one_time_keys": otk(2)}
    assert alice.api.post(f"{V3}/keys/upload", json=keys).status_code == 200
    backup = {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "abc"}}
    assert alice.api.post(f"{V3}/room_keys/version", json=backup).status_code == 200
    query = {"device_keys": {alice.user_id: []}}
    assert alice.device_id in bob.api.post(f"{V3}/keys/query", json=query).json()["device_keys"][alice.user_id]

    assert admin.api.post(f"{A1}/deactivate/{q(alice.user_id)}", json={}).status_code == 200
    assert bob.api.post(f"{V3}/keys/query", json=query).json()["device_keys"].get(alice.user_id, {}) == {}

    # Reactivated by the operator, the account starts afresh.
    back = admin.api.put(f"{A2}/users/{q(alice.user_id)}", json={"deactivated": False, "password": "fresh start"})
    assert back.status_code == 200, back.text
    login = Api(server.base_url).post(
        f"{V3}/login", json={"type": "m.login.password", "user": alice.user_id, "password": "fresh start"}
    )
    again = Api(server.base_url, login.json()["access_token"])
    expect_error(again.get(f"{V3}/pushrules/global/content/lunch"), 404, "M_NOT_FOUND")
    expect_error(again.get(secret), 404, "M_NOT_FOUND")
    expect_error(again.get(f"{V3}/room_keys/version"), 404, "M_NOT_FOUND")
    devices = again.get(f"{V3}/devices").json()["devices"]
    assert [d["device_id"] for d in devices] == [login.json()["device_id"]]
    assert all_notifications(again) == []
    # The same event's notification of another member stays.
    assert [n["event"]["content"]["body"] for n in all_notifications(carol.api)] == [
        "a message that notifies alice (and carol)"
    ]


def test_account_data_written_after_a_deactivation_reaches_sync(admin: User, new_user: Any) -> None:
    """Deactivation deletes the account's account data, the newest rows among them;
    the next write must still take a position past every token handed out."""
    from tests.test_sync import sync

    alice, bob = new_user(), new_user()
    assert alice.api.put(f"{V3}/user/{q(alice.user_id)}/account_data/org.example.a", json={"n": 1}).status_code == 200
    token = sync(bob)["next_batch"]
    assert admin.api.post(f"{A1}/deactivate/{q(alice.user_id)}", json={}).status_code == 200
    assert bob.api.put(f"{V3}/user/{q(bob.user_id)}/account_data/org.example.b", json={"n": 2}).status_code == 200
    written = sync(bob, token)["account_data"]["events"]
    assert {"type": "org.example.b", "content": {"n": 2}} in written


def test_reset_password(admin: User, new_user: Any, server: ServerProcess) -> None:
    target = new_user()
    response = admin.api.post(f"{A1}/reset_password/{q(target.user_id)}", json={"new_password": "brand new"})
    assert response.status_code == 200, response.text
    expect_error(target.api.get(f"{V3}/account/whoami"), 401, "M_UNKNOWN_TOKEN")
    login = Api(server.base_url).post(
        f"{V3}/login", json={"type": "m.login.password", "user": target.user_id, "password": "brand new"}
    )
    assert login.status_code == 200
    kept = Api(server.base_url, login.json()["access_token"])
    admin.api.post(f"{A1}/reset_password/{q(target.user_id)}", json={"new_password": "newer", "logout_devices": False})
    assert kept.get(f"{V3}/account/whoami").status_code == 200
    expect_error(admin.api.post(f"{A1}/reset_password/{q(target.user_id)}", json={}), 400, "M_MISSING_PARAM")
    expect_error(admin.api.post(f"{A1}/reset_password/{q(target.user_id)}", json={"new_password": 1}), 400, "M_BAD_JSON")
    unknown = f"@ghost{secrets.token_hex(3)}:{server.server_name}"
    expect_error(admin.api.post(f"{A1}/reset_password/{q(unknown)}", json={"new_password": "x"}), 404, "M_NOT_FOUND")


def test_whois(admin: User, user: User, new_user: Any, server: ServerProcess) -> None:
    # The spec endpoint (its response is checked against the spec by the client).
    response = admin.api.get(f"{V3}/admin/whois/{q(user.user_id)}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == user.user_id and user.device_id in body["devices"]
    connection = body["devices"][user.device_id]["sessions"][0]["connections"][0]
    assert connection["ip"] == "127.0.0.1" and isinstance(connection["last_seen"], int)
    assert admin.api.get(f"{A1}/whois/{q(user.user_id)}").json() == body
    # Users may look themselves up; others are admins only.
    assert user.api.get(f"{V3}/admin/whois/{q(user.user_id)}").status_code == 200
    expect_error(new_user().api.get(f"{V3}/admin/whois/{q(user.user_id)}"), 403, "M_FORBIDDEN")
    unknown = f"@ghost{secrets.token_hex(3)}:{server.server_name}"
    expect_error(admin.api.get(f"{V3}/admin/whois/{q(unknown)}"), 404, "M_NOT_FOUND")


# --- rooms -------------------------------------------------------------------------


def test_list_and_inspect_rooms(admin: User, new_user: Any, server: ServerProcess) -> None:
    owner, guest = new_user(), new_user()
    name = "Room " + secrets.token_hex(4)
    alias_local = "r" + secrets.token_hex(4)
    room_id = create_room(owner, name=name, room_alias_name=alias_local, preset="public_chat", visibility="public")
    join(guest, room_id)
    listed = admin.api.get(f"{A1}/rooms", params={"search_term": name}).json()
    assert listed["total_rooms"] == 1 and listed["offset"] == 0
    room = listed["rooms"][0]
    assert room["room_id"] == room_id and room["name"] == name
    assert room["canonical_alias"] == f"#{alias_local}:{server.server_name}"
    assert room["joined_members"] == 2 and room["creator"] == owner.user_id
    assert room["version"] == "12" and room["public"] is True and room["join_rules"] == "public"
    assert room["state_events"] >= 6
    details = admin.api.get(f"{A1}/rooms/{q(room_id)}").json()
    assert details["name"] == name and details["forgotten"] is False and details["tombstoned"] is False
    members = admin.api.get(f"{A1}/rooms/{q(room_id)}/members").json()
    assert members == {"members": sorted([owner.user_id, guest.user_id]), "total": 2}
    state = admin.api.get(f"{A1}/rooms/{q(room_id)}/state").json()["state"]
    assert {e["type"] for e in state} >= {"m.room.create", "m.room.power_levels", "m.room.name", "m.room.member"}
    only_members = admin.api.get(f"{A1}/rooms/{q(room_id)}/state", params={"type": "m.room.member"}).json()["state"]
    assert {e["state_key"] for e in only_members} == {owner.user_id, guest.user_id}
    # Pagination over everything.
    page = admin.api.get(f"{A1}/rooms", params={"limit": 1, "order_by": "joined_members"}).json()
    assert len(page["rooms"]) == 1 and page["next_batch"] == 1 and page["total_rooms"] >= 1
    # Unknown rooms and bad input.
    unknown = f"!nothing{secrets.token_hex(3)}:{server.server_name}"
    for suffix in ("", "/members", "/state"):
        expect_error(admin.api.get(f"{A1}/rooms/{q(unknown)}{suffix}"), 404, "M_NOT_FOUND")
    expect_error(admin.api.get(f"{A1}/rooms/not-a-room"), 400, "M_INVALID_PARAM")
    expect_error(admin.api.get(f"{A1}/rooms", params={"order_by": "colour"}), 400, "M_INVALID_PARAM")
    expect_error(admin.api.get(f"{A1}/rooms", params={"dir": "sideways"}), 400, "M_INVALID_PARAM")


def test_delete_and_purge_room(admin: User, new_user: Any, server: ServerProcess) -> None:
    owner, member, invited = new_user(), new_user(), new_user()
    alias_local = "doomed" + secrets.token_hex(4)
    room_id = create_room(owner, name="Doomed", room_alias_name=alias_local, preset="public_chat", visibility="public")
    join(member, room_id)
    invite_ok(owner, room_id, invited)
    for i in range(3):
        text(member, room_id, f"message {i}")
    assert db_count(server, events, events.c.room_id == room_id) > 5
    response = admin.api.request("DELETE", f"{A2}/rooms/{q(room_id)}", json={"block": True, "purge": True})
    assert response.status_code == 200, response.text
    delete_id = response.json()["delete_id"]
    status = admin.api.get(f"{A2}/rooms/delete_status/{q(delete_id)}").json()
    assert status["status"] == "complete" and status["room_id"] == room_id
    assert sorted(status["shutdown_room"]["kicked_users"]) == sorted([owner.user_id, member.user_id, invited.user_id])
    assert status["shutdown_room"]["local_aliases"] == [f"#{alias_local}:{server.server_name}"]
    by_room = admin.api.get(f"{A2}/rooms/{q(room_id)}/delete_status").json()["results"]
    assert [r["delete_id"] for r in by_room] == [delete_id]
    # Gone for clients...
    for user in (owner, member):
        assert room_id not in user.api.get(f"{V3}/joined_rooms").json()["joined_rooms"]
    assert owner.api.get(f"{V3}/rooms/{q(room_id)}/messages", params={"dir": "b"}).status_code in (403, 404)
    expect_error(owner.api.post(f"{V3}/join/{q(room_id)}", json={}), 403, "M_FORBIDDEN")
    expect_error(owner.api.get(f"{V3}/directory/room/{q('#' + alias_local + ':' + server.server_name)}"), 404)
    assert room_id not in [r["room_id"] for r in owner.api.get(f"{V3}/publicRooms").json()["chunk"]]
    # ... for admins ...
    expect_error(admin.api.get(f"{A1}/rooms/{q(room_id)}"), 404, "M_NOT_FOUND")
    assert admin.api.get(f"{A1}/rooms/{q(room_id)}/block").json() == {"block": True, "user_id": admin.user_id}
    # ... and in the database.
    for table, where in (
        (events, events.c.room_id == room_id),
        (current_state, current_state.c.room_id == room_id),
        (room_memberships, room_memberships.c.room_id == room_id),
        (state_groups, state_groups.c.room_id == room_id),
        (rooms, rooms.c.room_id == room_id),
    ):
        assert db_count(server, table, where) == 0, table.name
    # The server keeps working for everyone's other rooms.
    other = create_room(owner)
    text(owner, other, "still here")
    # Deleting it again: unknown room.
    expect_error(admin.api.request("DELETE", f"{A2}/rooms/{q(room_id)}", json={}), 404, "M_NOT_FOUND")
    expect_error(admin.api.request("DELETE", f"{A2}/rooms/{q(other)}", json={"purge": "yes"}), 400, "M_BAD_JSON")
    expect_error(admin.api.get(f"{A2}/rooms/delete_status/nope"), 404, "M_NOT_FOUND")


def test_a_purged_rooms_positions_are_never_given_out_again(make_server: Any) -> None:
    """A client's sync token past the events of a purged room still sees what comes
    after, across a restart (positions then come from the database)."""
    server = make_server()
    admin = make_admin(server)
    reader = register_user(server.base_url)
    kept = create_room(reader, name="Kept")
    doomed = create_room(admin, name="Doomed")
    for i in range(3):
        text(admin, doomed, f"doomed {i}")  # the newest events in the database
    token = reader.api.get(f"{V3}/sync", params={"timeout": "0"}).json()["next_batch"]
    purged = admin.api.request("DELETE", f"{A2}/rooms/{q(doomed)}", json={"purge": True})
    assert purged.status_code == 200, purged.text
    server.stop()
    server.start()
    text(reader, kept, "after the restart")
    later = reader.api.get(f"{V3}/sync", params={"since": token, "timeout": "5000"}).json()
    timeline = later["rooms"]["join"][kept]["timeline"]["events"]
    assert [e["content"]["body"] for e in timeline if e["type"] == "m.room.message"] == ["after the restart"]


def test_delete_without_purge_keeps_history(admin: User, new_user: Any, server: ServerProcess) -> None:
    owner = new_user()
    room_id = create_room(owner, name="Kept")
    text(owner, room_id, "history")
    response = admin.api.request("DELETE", f"{A1}/rooms/{q(room_id)}", json={"purge": False})
    assert response.status_code == 200, response.text
    assert response.json()["kicked_users"] == [owner.user_id]
    assert room_id not in owner.api.get(f"{V3}/joined_rooms").json()["joined_rooms"]
    details = admin.api.get(f"{A1}/rooms/{q(room_id)}").json()
    assert details["joined_members"] == 0
    assert admin.api.get(f"{A1}/rooms/{q(room_id)}/block").json() == {"block": False}
    assert db_count(server, events, events.c.room_id == room_id) > 5



def test_blocked_room_cannot_be_joined(admin: User, new_user: Any) -> None:
    owner, visitor = new_user(), new_user()
    room_id = owner.api.post(f"{V3}/createRoom", json={"preset": "public_chat"}).json()["room_id"]
    assert admin.api.put(f"{A1}/rooms/{q(room_id)}/block", json={"block": True}).status_code == 200
    expect_error(visitor.api.post(f"{V3}/rooms/{q(room_id)}/join", json={}), 403, "M_FORBIDDEN")
    assert admin.api.put(f"{A1}/rooms/{q(room_id)}/block", json={"block": False}).status_code == 200
    assert visitor.api.post(f"{V3}/rooms/{q(room_id)}/join", json={}).status_code == 200


# --- registration tokens -----------------------------------------------------------


def test_registration_tokens_crud(admin: User) -> None:
    name = "tok" + secrets.token_hex(4)
    created = admin.api.post(f"{A1}/registration_tokens/new", json={"token": name, "uses_allowed": 1})
    assert created.status_code == 200, created.text
    assert created.json() == {"token": name, "uses_allowed": 1, "pending": 0, "completed": 0, "expiry_time": None}
    generated = admin.api.post(f"{A1}/registration_tokens/new", json={"length": 24}).json()
    assert len(generated["token"]) == 24 and generated["uses_allowed"] is None
    default = admin.api.post(f"{A1}/registration_tokens/new", json={}).json()
    assert len(default["token"]) == 16
    assert admin.api.get(f"{A1}/registration_tokens/{name}").json()["uses_allowed"] == 1
    later = int(time.time() * 1000) + 86_400_000
    updated = admin.api.put(f"{A1}/registration_tokens/{name}", json={"expiry_time": later, "uses_allowed": 0})
    assert updated.json()["expiry_time"] == later and updated.json()["uses_allowed"] == 0
    valid = {t["token"] for t in admin.api.get(f"{A1}/registration_tokens", params={"valid": "true"}).json()["registration_tokens"]}
    invalid = {t["token"] for t in admin.api.get(f"{A1}/registration_tokens", params={"valid": "false"}).json()["registration_tokens"]}
    assert name in invalid and name not in valid and generated["token"] in valid
    every = {t["token"] for t in admin.api.get(f"{A1}/registration_tokens").json()["registration_tokens"]}
    assert every >= valid | invalid
    assert admin.api.request("DELETE", f"{A1}/registration_tokens/{name}").json() == {}
    expect_error(admin.api.get(f"{A1}/registration_tokens/{name}"), 404, "M_NOT_FOUND")
    expect_error(admin.api.request("DELETE", f"{A1}/registration_tokens/{name}"), 404, "M_NOT_FOUND")
    expect_error(admin.api.put(f"{A1}/registration_tokens/{name}", json={}), 404, "M_NOT_FOUND")
    # Bad input.
    dup = generated["token"]
    expect_error(admin.api.post(f"{A1}/registration_tokens/new", json={"token": dup}), 400, "M_INVALID_PARAM")
    for body in (
        {"token": "has space"},
        {"token": "x" * 65},
        {"token": 5},
        {"length": 0},
        {"length": 65},
        {"length": "8"},
        {"uses_allowed": -1},
        {"uses_allowed": 1.5},
        {"expiry_time": 1000},
        {"expiry_time": "tomorrow"},
    ):
        expect_error(admin.api.post(f"{A1}/registration_tokens/new", json=body), 400, "M_INVALID_PARAM")
    expect_error(admin.api.put(f"{A1}/registration_tokens/{dup}", json={"uses_allowed": "many"}), 400, "M_INVALID_PARAM")
    expect_error(admin.api.get(f"{A1}/registration_tokens", params={"valid": "perhaps"}), 400, "M_INVALID_PARAM")


def test_registration_token_lets_someone_register(make_server: Any) -> None:
    closed = make_server({"registration": {"enabled": True, "require_token": True}})
    # Registration needs a token now: the first admin comes from the command line.
    result = homeserver("register-user", "--config", str(closed.config_path), "boss", "--password", "pw", "--admin")
    assert result.returncode == 0, result.stderr
    login = Api(closed.base_url).post(f"{V3}/login", json={"type": "m.login.password", "user": "boss", "password": "pw"})
    boss = Api(closed.base_url, login.json()["access_token"])
    token = boss.post(f"{A1}/registration_tokens/new", json={"uses_allowed": 1}).json()["token"]
    api = Api(closed.base_url)
    first = api.post(f"{V3}/register", json={"username": "newbie", "password": "pw"})
    session = first.json()["session"]
    done = api.post(
        f"{V3}/register",
        json={"username": "newbie", "password": "pw", "auth": {"type": "m.login.registration_token", "token": token, "session": session}},
    )
    if done.status_code == 401:  # a further stage (dummy) may follow the token
        done = api.post(
            f"{V3}/register",
            json={"username": "newbie", "password": "pw", "auth": {"type": "m.login.dummy", "session": session}},
        )
    assert done.status_code == 200, done.text
    assert boss.get(f"{A1}/registration_tokens/{token}").json()["completed"] == 1


# --- media -------------------------------------------------------------------------


def test_quarantine_media(admin: User, user: User, server: ServerProcess) -> None:
    upload = user.api.post(
        "/_matrix/media/v3/upload", content=b"naughty bytes", headers={"Content-Type": "application/octet-stream"}
    )
    assert upload.status_code == 200, upload.text
    mxc = upload.json()["content_uri"]
    origin, media_id = mxc[len("mxc://") :].split("/")
    download = f"/_matrix/client/v1/media/download/{origin}/{media_id}"
    legacy = f"/_matrix/media/v3/download/{origin}/{media_id}"
    assert user.api.get(download).content == b"naughty bytes"
    assert admin.api.post(f"{A1}/media/quarantine/{origin}/{media_id}", json={}).json() == {}
    expect_error(user.api.get(download), 404, "M_NOT_FOUND")
    expect_error(Api(server.base_url).get(legacy), 404, "M_NOT_FOUND")
    assert admin.api.post(f"{A1}/media/unquarantine/{origin}/{media_id}", json={}).json() == {}
    assert user.api.get(download).content == b"naughty bytes"
    # Everything posted in a room at once.
    room_id = create_room(user)
    send(user, room_id, {"msgtype": "m.file", "body": "f", "url": mxc})
    counted = admin.api.post(f"{A1}/room/{q(room_id)}/media/quarantine", json={}).json()
    assert counted == {"num_quarantined": 1}
    expect_error(user.api.get(download), 404, "M_NOT_FOUND")
    admin.api.post(f"{A1}/media/unquarantine/{origin}/{media_id}", json={})
    # Everything a user uploaded.
    assert admin.api.post(f"{A1}/user/{q(user.user_id)}/media/quarantine", json={}).json()["num_quarantined"] >= 1
    expect_error(user.api.get(download), 404, "M_NOT_FOUND")


# --- event reports -----------------------------------------------------------------


def test_event_reports(admin: User, new_user: Any) -> None:
    sender, reporter = new_user(), new_user()
    room_id = create_room(sender, name="Reported room", preset="public_chat")
    join(reporter, room_id)
    event_id = text(sender, room_id, "something rude")
    response = reporter.api.post(f"{V3}/rooms/{q(room_id)}/report/{q(event_id)}", json={"reason": "rude", "score": -100})
    assert response.status_code == 200, response.text
    listed = admin.api.get(f"{A1}/event_reports", params={"room_id": room_id}).json()
    assert listed["total"] == 1
    report = listed["event_reports"][0]
    assert (report["event_id"], report["user_id"], report["sender"]) == (event_id, reporter.user_id, sender.user_id)
    assert (report["reason"], report["score"], report["name"]) == ("rude", -100, "Reported room")
    by_sender = admin.api.get(f"{A1}/event_reports", params={"event_sender_user_id": sender.user_id}).json()
    assert [r["id"] for r in by_sender["event_reports"]] == [report["id"]]
    one = admin.api.get(f"{A1}/event_reports/{report['id']}").json()
    assert one["event_json"]["content"]["body"] == "something rude" and one["reason"] == "rude"
    everything = admin.api.get(f"{A1}/event_reports", params={"limit": 1}).json()
    assert len(everything["event_reports"]) == 1 and everything["total"] >= 1
    expect_error(admin.api.get(f"{A1}/event_reports/999999999"), 404, "M_NOT_FOUND")
    expect_error(admin.api.get(f"{A1}/event_reports/abc"), 400, "M_INVALID_PARAM")
    expect_error(admin.api.get(f"{A1}/event_reports", params={"dir": "x"}), 400, "M_INVALID_PARAM")
