"""Server notices: the admin API and the command line send a notice; it reaches the
user in their own notices room (invited, tagged m.server_notice), from the system user,
and the user cannot post there."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.conftest import V3, User, register_user
from tests.server import ServerProcess
from tests.test_admin import A1, homeserver, make_admin
from tests.test_rooms_helpers import all_messages, expect_error, join, q


def notices_user(server: ServerProcess) -> str:
    return f"@notices:{server.server_name}"


def send_notice(admin: User, user_id: str, body: str) -> str:
    response = admin.api.post(
        f"{A1}/send_server_notice", json={"user_id": user_id, "content": {"msgtype": "m.text", "body": body}}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["event_id"])


def notice_room_of(admin: User, user: User, server: ServerProcess) -> str:
    """The room the user is invited to or joined by the notices user."""
    found = []
    rooms = admin.api.get(f"{A1}/rooms", params={"search_term": "Server Notices", "limit": 1000}).json()["rooms"]
    for room in rooms:
        state = admin.api.get(f"{A1}/rooms/{q(room['room_id'])}/state", params={"type": "m.room.member"}).json()
        members = {e["state_key"]: e["content"]["membership"] for e in state["state"]}
        if members.get(user.user_id) in ("invite", "join") and members.get(notices_user(server)) == "join":
            found.append(room["room_id"])
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> User:
    return make_admin(server)


def test_notice_arrives_in_a_notices_room_the_user_cannot_post_in(admin: User, user: User, server: ServerProcess) -> None:
    first = send_notice(admin, user.user_id, "Maintenance tonight at 22:00")
    room_id = notice_room_of(admin, user, server)
    # Invited, with the room already tagged so clients show it as server notices.
    tag = user.api.get(f"{V3}/user/{q(user.user_id)}/rooms/{q(room_id)}/account_data/m.tag")
    assert tag.status_code == 200 and tag.json() == {"tags": {"m.server_notice": {}}}
    join(user, room_id)
    second = send_notice(admin, user.user_id, "Done")
    assert notice_room_of(admin, user, server) == room_id  # one room per user
    messages = [e for e in all_messages(user, room_id) if e["type"] == "m.room.message"]
    assert [(e["event_id"], e["content"]["body"]) for e in messages] == [
        (first, "Maintenance tonight at 22:00"),
        (second, "Done"),
    ]
    assert {e["sender"] for e in messages} == {notices_user(server)}
    state = {(e["type"], e["state_key"]): e["content"] for e in user.api.get(f"{V3}/rooms/{q(room_id)}/state").json()}
    assert state[("m.room.name", "")]["name"] == "Server Notices"
    assert state[("m.room.power_levels", "")]["users_default"] < state[("m.room.power_levels", "")].get("events_default", 0)
    refused = user.api.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/{secrets.token_hex(4)}", json={"msgtype": "m.text", "body": "hi"}
    )
    expect_error(refused, 403, "M_FORBIDDEN")


def test_notice_with_transaction_id_is_sent_once(admin: User, user: User) -> None:
    body = {"user_id": user.user_id, "content": {"msgtype": "m.text", "body": "once"}}
    first = admin.api.put(f"{A1}/send_server_notice/txn1", json=body)
    again = admin.api.put(f"{A1}/send_server_notice/txn1", json=body)
    assert first.status_code == 200 and first.json() == again.json()


def test_notice_bad_input(admin: User, user: User, server: ServerProcess) -> None:
    url = f"{A1}/send_server_notice"
    expect_error(admin.api.post(url, json={"user_id": user.user_id}), 400, "M_MISSING_PARAM")
    expect_error(admin.api.post(url, json={"user_id": user.user_id, "content": "text"}), 400, "M_BAD_JSON")
    expect_error(admin.api.post(url, json={"user_id": 7, "content": {}}), 400, "M_BAD_JSON")
    expect_error(admin.api.post(url, json={"user_id": "nobody", "content": {}}), 400, "M_INVALID_PARAM")
    expect_error(admin.api.post(url, json={"user_id": "@a:elsewhere.org", "content": {}}), 400)
    unknown = f"@ghost{secrets.token_hex(3)}:{server.server_name}"
    expect_error(admin.api.post(url, json={"user_id": unknown, "content": {}}), 404, "M_NOT_FOUND")
    expect_error(admin.api.post(url, json={"user_id": notices_user(server), "content": {}}), 400)
    expect_error(user.api.post(url, json={"user_id": user.user_id, "content": {}}), 403, "M_FORBIDDEN")


def test_notices_can_be_switched_off(make_server: Any) -> None:
    server = make_server({"server_notices": {"enabled": False}})
    admin = make_admin(server)
    response = admin.api.post(
        f"{A1}/send_server_notice", json={"user_id": admin.user_id, "content": {"msgtype": "m.text", "body": "x"}}
    )
    expect_error(response, 400)


def test_notice_reaches_the_client_through_sync(admin: User, new_user: Any, server: ServerProcess) -> None:
    user = new_user()
    first = user.api.get(f"{V3}/sync", params={"timeout": 0})
    if first.status_code == 404 and first.json().get("errcode") == "M_UNRECOGNIZED":
        pytest.skip("/sync is not available yet")
    assert first.status_code == 200, first.text
    since = first.json()["next_batch"]
    send_notice(admin, user.user_id, "Hello through sync")
    invited: dict[str, Any] = {}
    for _ in range(10):
        response = user.api.get(f"{V3}/sync", params={"since": since, "timeout": 5000})
        assert response.status_code == 200, response.text
        since = response.json()["next_batch"]
        invited.update(response.json().get("rooms", {}).get("invite", {}))
        if invited:
            break
    assert len(invited) == 1
    room_id = next(iter(invited))
    join(user, room_id)
    bodies: list[str] = []
    sync = user.api.get(f"{V3}/sync", params={"timeout": 0}).json()
    joined = sync.get("rooms", {}).get("join", {}).get(room_id, {})
    bodies = [e["content"].get("body") for e in joined.get("timeline", {}).get("events", []) if e["type"] == "m.room.message"]
    assert "Hello through sync" in bodies
    tags = [e for e in joined.get("account_data", {}).get("events", []) if e["type"] == "m.tag"]
    assert tags and "m.server_notice" in tags[0]["content"]["tags"]


def test_notice_from_the_command_line(make_server: Any) -> None:
    # A server of its own: --all reaches every user on it.
    server = make_server()
    admin = make_admin(server)
    one, two = (register_user(server.base_url) for _ in range(2))
    # The server is running: the command goes through its admin API.
    result = homeserver("admin", "notice", "send", "-c", str(server.config_path), one.user_id, "-m", "CLI notice")
    assert result.returncode == 0, result.stderr
    room_id = notice_room_of(admin, one, server)
    join(one, room_id)
    notices = [e for e in all_messages(one, room_id) if e["type"] == "m.room.message"]
    assert [e["content"]["body"] for e in notices] == ["CLI notice"]
    assert notices[0]["content"]["msgtype"] == "m.server_notice" and notices[0]["sender"] == notices_user(server)
    everyone = homeserver("admin", "notice", "send", "-c", str(server.config_path), "--all", "-m", "To all")
    assert everyone.returncode == 0, everyone.stderr
    assert "Sent the notice to 3 user(s)" in everyone.stdout
    join(two, notice_room_of(admin, two, server))
    for user in (one, two, admin):
        room = notice_room_of(admin, user, server)
        if user is admin:
            join(admin, room)
        assert "To all" in [e["content"].get("body") for e in all_messages(user, room)]
    # While the server is down the command writes to the database itself; the server
    # picks the room up where the command left it.
    server.stop()
    offline = homeserver("admin", "notice", "send", "-c", str(server.config_path), one.localpart, "-m", "Offline")
    assert offline.returncode == 0, offline.stderr
    server.start()
    send_notice(admin, one.user_id, "Back online")
    bodies = [e["content"].get("body") for e in all_messages(one, room_id) if e["type"] == "m.room.message"]
    assert bodies == ["CLI notice", "To all", "Offline", "Back online"]
    bad = homeserver("admin", "notice", "send", "-c", str(server.config_path), "-m", "nobody")
    assert bad.returncode == 2 and "--all" in bad.stderr
    unknown = homeserver("admin", "notice", "send", "-c", str(server.config_path), "ghost", "-m", "x")
    assert unknown.returncode == 2 and "not found" in unknown.stderr.lower()
