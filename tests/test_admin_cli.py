"""`homeserver admin ...` as an operator uses it: against a running server's config (room
changes then go through the server's admin API) and with the server stopped (straight
to the database)."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import V3, Api, register_user
from tests.test_admin import A1, homeserver
from tests.test_rooms_helpers import create_room, expect_error, join, q, text


def admin_cli(server: Any, *args: str) -> Any:
    return homeserver("admin", *args[:2], "-c", str(server.config_path), *args[2:])


def test_users_commands(make_server: Any) -> None:
    server = make_server()
    alice = register_user(server.base_url, "alice")
    bob = register_user(server.base_url, "bob")
    room_id = create_room(alice, preset="public_chat")
    join(bob, room_id)

    listed = admin_cli(server, "users", "list")
    assert listed.returncode == 0, listed.stderr
    assert alice.user_id in listed.stdout and bob.user_id in listed.stdout and "2 user(s)" in listed.stdout

    shown = admin_cli(server, "users", "show", "bob")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["name"] == bob.user_id and info["admin"] is False and room_id in info["rooms"]
    assert bob.device_id in info["devices"]

    # Room-changing commands through a running server need an admin to act as.
    refused = admin_cli(server, "users", "deactivate", "bob")
    assert refused.returncode == 2 and "set-admin" in refused.stderr

    made = admin_cli(server, "users", "set-admin", "alice")
    assert made.returncode == 0 and "now a server admin" in made.stdout
    assert alice.api.get(f"{A1}/server_version").status_code == 200

    reset = admin_cli(server, "users", "reset-password", "bob", "--password", "new secret")
    assert reset.returncode == 0, reset.stderr
    expect_error(bob.api.get(f"{V3}/account/whoami"), 401, "M_UNKNOWN_TOKEN")
    login = Api(server.base_url).post(f"{V3}/login", json={"type": "m.login.password", "user": "bob", "password": "new secret"})
    assert login.status_code == 200

    gone = admin_cli(server, "users", "deactivate", "bob", "--erase")
    assert gone.returncode == 0, gone.stderr
    assert bob.user_id not in alice.api.get(f"{V3}/rooms/{q(room_id)}/joined_members").json()["joined"]
    # The temporary admin session of the command is gone again.
    devices = alice.api.get(f"{V3}/devices").json()["devices"]
    assert [d["device_id"] for d in devices] == [alice.device_id]
    listed = admin_cli(server, "users", "list", "--deactivated")
    assert "deactivated" in listed.stdout

    unknown = admin_cli(server, "users", "show", "nobody")
    assert unknown.returncode == 2 and "not found" in unknown.stderr.lower()
    revoked = admin_cli(server, "users", "set-admin", "alice", "--revoke")
    assert revoked.returncode == 0
    expect_error(alice.api.get(f"{A1}/server_version"), 403, "M_FORBIDDEN")


def test_rooms_commands(make_server: Any) -> None:
    server = make_server()
    owner = register_user(server.base_url, "owner")
    admin_cli(server, "users", "set-admin", "owner")
    keep = create_room(owner, name="Keeper")
    doomed = create_room(owner, name="Doomed")
    text(owner, doomed, "bye")

    listed = admin_cli(server, "rooms", "list")
    assert listed.returncode == 0, listed.stderr
    assert keep in listed.stdout and doomed in listed.stdout and "2 room(s)" in listed.stdout
    shown = json.loads(admin_cli(server, "rooms", "show", doomed).stdout)
    assert shown["name"] == "Doomed" and shown["members"] == [owner.user_id]

    # Through the running server.
    deleted = admin_cli(server, "rooms", "delete", doomed, "--block")
    assert deleted.returncode == 0, deleted.stderr
    assert owner.user_id in deleted.stdout
    assert doomed not in owner.api.get(f"{V3}/joined_rooms").json()["joined_rooms"]
    expect_error(owner.api.get(f"{A1}/rooms/{q(doomed)}"), 404, "M_NOT_FOUND")

    # With the server stopped: straight to the database; the server starts clean.
    server.stop()
    offline = admin_cli(server, "rooms", "delete", keep)
    assert offline.returncode == 0, offline.stderr
    server.start()
    assert owner.api.get(f"{V3}/joined_rooms").json()["joined_rooms"] == []
    assert "0 room(s)" in admin_cli(server, "rooms", "list").stdout
    text(owner, create_room(owner), "the server still works")
    missing = admin_cli(server, "rooms", "delete", keep)
    assert missing.returncode == 2 and "not found" in missing.stderr.lower()


def test_registration_token_commands(make_server: Any) -> None:
    server = make_server({"registration": {"enabled": True, "require_token": True}})
    created = admin_cli(server, "registration-tokens", "create", "--token", "welcome", "--uses", "2")
    assert created.returncode == 0 and created.stdout.strip() == "welcome"
    random = admin_cli(server, "registration-tokens", "create", "--length", "10", "--expires-in-days", "1")
    token = random.stdout.strip()
    assert random.returncode == 0 and len(token) == 10
    listed = admin_cli(server, "registration-tokens", "list")
    assert "welcome" in listed.stdout and token in listed.stdout
    assert admin_cli(server, "registration-tokens", "create", "--token", "welcome").returncode == 2
    assert admin_cli(server, "registration-tokens", "create", "--token", "bad token").returncode == 2
    deleted = admin_cli(server, "registration-tokens", "delete", "welcome")
    assert deleted.returncode == 0
    assert "welcome" not in admin_cli(server, "registration-tokens", "list").stdout
    assert admin_cli(server, "registration-tokens", "delete", "welcome").returncode == 2
