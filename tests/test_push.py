"""Push notifications end to end: push rules evaluated on the send path, unread and
highlight counts in /sync (also through matrix-nio), pushers, delivery to a real
HTTP push gateway stand-in (a small HTTP server on loopback that records what it is
sent), and GET /notifications."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from nio import AsyncClient, SyncResponse

from homeserver.config import DEFAULT_IP_RANGE_BLOCKLIST
from tests.conftest import V3, Api, User, register_user
from tests.server import POSTGRES_ENV, ServerProcess, free_port
from tests.test_sync import create_room, join, send, shared_room, sync

NOTIFY_PATH = "/_matrix/push/v1/notify"


class Gateway:
    """A push gateway: records every notification POSTed to it; answers
    `rejected` for the pushkeys in `self.rejecting`. Can be stopped and restarted
    on the same port (a gateway that is down)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[dict[str, Any]] = []
        self.rejecting: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{NOTIFY_PATH}"

    def start(self) -> None:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one connection per request, so stop() really takes it down.
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with gateway._lock:
                    gateway.received.append({"path": self.path, "body": body})
                    devices = body["notification"]["devices"]
                    rejected = [d["pushkey"] for d in devices if d["pushkey"] in gateway.rejecting]
                answer = json.dumps({"rejected": rejected}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def notifications(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r["body"]["notification"] for r in self.received]

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.notifications()
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"expected {count} notifications, got {self.notifications()}")


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gw = Gateway()
    gw.start()
    yield gw
    gw.stop()


def set_pusher(user: User, url: str, pushkey: str = "key1", **extra: Any) -> None:
    data = extra.pop("data", {})
    body = {
        "kind": "http",
        "app_id": "org.example.app",
        "pushkey": pushkey,
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "lang": "en",
        "data": {"url": url, **data},
        **extra,
    }
    response = user.api.post(f"{V3}/pushers/set", json=body)
    assert response.status_code == 200, response.text


def pushers(user: User) -> list[dict[str, Any]]:
    response = user.api.get(f"{V3}/pushers")
    assert response.status_code == 200, response.text
    return response.json()["pushers"]


def counts(user: User, room_id: str, **params: Any) -> dict[str, Any]:
    room = sync(user, **params)["rooms"]["join"][room_id]
    return room


def group_room(owner: User, *others: User, **body: Any) -> str:
    """A room of 3 or more: messages notify without the one-to-one rule."""
    room_id = create_room(owner, invite=[o.user_id for o in others], **body)
    for other in others:
        join(other, room_id)
    return room_id


def send_content(user: User, room_id: str, content: dict[str, Any]) -> str:
    response = user.api.put(f"{V3}/rooms/{room_id}/send/m.room.message/t{time.monotonic_ns()}", json=content)
    assert response.status_code == 200, response.text
    return str(response.json()["event_id"])


# --- pushers API -------------------------------------------------------------------------


def test_pushers_set_list_update_delete_append(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    url = "https://push.example.org/_matrix/push/v1/notify"
    assert pushers(alice) == []
    set_pusher(alice, url, data={"format": "event_id_only", "custom": 1}, profile_tag="tag")
    [pusher] = pushers(alice)
    assert pusher == {
        "pushkey": "key1",
        "kind": "http",
        "app_id": "org.example.app",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "profile_tag": "tag",
        "lang": "en",
        "data": {"url": url, "format": "event_id_only", "custom": 1},
    }
    # Same app_id + pushkey: updated, not duplicated.
    set_pusher(alice, url, lang="de")
    assert [p["lang"] for p in pushers(alice)] == ["de"]
    # Another user takes the same pushkey without append: alice's goes.
    set_pusher(bob, url)
    assert pushers(alice) == []
    assert len(pushers(bob)) == 1
    # With append both stay.
    set_pusher(alice, url, append=True)
    assert len(pushers(alice)) == 1 and len(pushers(bob)) == 1
    # kind null deletes.
    response = alice.api.post(f"{V3}/pushers/set", json={"kind": None, "app_id": "org.example.app", "pushkey": "key1"})
    assert response.status_code == 200
    assert pushers(alice) == []
    assert len(pushers(bob)) == 1


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"app_id": "a", "pushkey": "k"}, "M_MISSING_PARAM"),
        ({"kind": "http", "pushkey": "k"}, "M_MISSING_PARAM"),
        ({"kind": "http", "app_id": "a", "pushkey": "k", "lang": "en", "device_display_name": "d", "data": {}}, "M_MISSING_PARAM"),
        ({"kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "x", "device_display_name": "d", "lang": "en", "data": {}}, "M_MISSING_PARAM"),
        ({"kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "x", "device_display_name": "d", "lang": "en", "data": {"url": "https://h/notify"}}, "M_INVALID_PARAM"),
        ({"kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "x", "device_display_name": "d", "lang": "en", "data": {"url": "ftp://h/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
        ({"kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "x", "device_display_name": "d", "lang": "en", "data": {"url": 5}}, "M_BAD_JSON"),
        ({"kind": "email", "app_id": "m.email", "pushkey": "a@b.c", "app_display_name": "x", "device_display_name": "d", "lang": "en", "data": {}}, "M_INVALID_PARAM"),
        ({"kind": "carrier-pigeon", "app_id": "a", "pushkey": "k", "app_display_name": "x", "device_display_name": "d", "lang": "en", "data": {}}, "M_INVALID_PARAM"),
        ({"kind": 5, "app_id": "a", "pushkey": "k"}, "M_BAD_JSON"),
        ({"kind": "http", "app_id": "a" * 65, "pushkey": "k"}, "M_INVALID_PARAM"),
        ({"kind": "http", "app_id": "a", "pushkey": "k" * 513}, "M_INVALID_PARAM"),
        ({"kind": None, "app_id": "a", "pushkey": "k", "append": "yes"}, "M_BAD_JSON"),
        ({"kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "x", "device_display_name": "d", "lang": "en", "data": []}, "M_BAD_JSON"),
    ],
)
def test_set_pusher_bad_input(user: User, body: dict[str, Any], errcode: str) -> None:
    response = user.api.post(f"{V3}/pushers/set", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["errcode"] == errcode
    assert pushers(user) == []


def test_set_pusher_not_json(user: User) -> None:
    response = user.api.post(f"{V3}/pushers/set", content=b"[1]", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_NOT_JSON"
    assert user.api.get(f"{V3}/pushers", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_logout_removes_the_devices_pushers(server: ServerProcess, new_user: Callable[..., User]) -> None:
    alice = new_user()
    set_pusher(alice, "https://push.example.org/_matrix/push/v1/notify")
    # A second session of the same user with its own pusher.
    login = Api(server.base_url).post(
        f"{V3}/login", json={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id}, "password": alice.password}
    )
    other = Api(server.base_url, login.json()["access_token"])
    response = other.post(
        f"{V3}/pushers/set",
        json={"kind": "http", "app_id": "org.example.app", "pushkey": "key2", "app_display_name": "E",
              "device_display_name": "Tablet", "lang": "en", "data": {"url": "https://push.example.org/_matrix/push/v1/notify"}},
    )
    assert response.status_code == 200
    assert sorted(p["pushkey"] for p in pushers(alice)) == ["key1", "key2"]
    assert other.post(f"{V3}/logout", json={}).status_code == 200
    assert [p["pushkey"] for p in pushers(alice)] == ["key1"]


@pytest.mark.skipif(bool(os.environ.get(POSTGRES_ENV)), reason="reads the SQLite file")
def test_deactivation_removes_the_users_pushers(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server()
    alice, bob = register_user(server.base_url), register_user(server.base_url)
    set_pusher(alice, "https://push.example.org/_matrix/push/v1/notify", pushkey="alice")
    set_pusher(bob, "https://push.example.org/_matrix/push/v1/notify", pushkey="bob")
    first = alice.api.post(f"{V3}/account/deactivate", json={})
    auth = {"type": "m.login.password", "session": first.json()["session"], "user": alice.localpart, "password": alice.password}
    assert alice.api.post(f"{V3}/account/deactivate", json={"auth": auth}).status_code == 200
    database = server.directory / "data" / "homeserver.db"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with sqlite3.connect(database) as conn:
            owners = sorted(row[0] for row in conn.execute("SELECT user_id FROM pushers"))
        if owners == [bob.user_id]:
            break
        time.sleep(0.05)
    assert owners == [bob.user_id]
    assert [p["pushkey"] for p in pushers(bob)] == ["bob"]


# --- delivery ---------------------------------------------------------------------------


def test_messages_reach_the_gateway_with_counts(new_user: Callable[..., User], gateway: Gateway) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob, name="Chat")
    set_pusher(bob, gateway.url, data={"extra": "kept"})
    first = send(alice, room_id, "hello")
    second = send(alice, room_id, "again")
    found = gateway.wait_for(2)
    assert [n["event_id"] for n in found] == [first, second]
    assert all(r["path"] == NOTIFY_PATH for r in gateway.received)
    note = found[1]
    assert note["room_id"] == room_id
    assert note["type"] == "m.room.message"
    assert note["sender"] == alice.user_id
    assert note["content"] == {"msgtype": "m.text", "body": "again"}
    assert note["room_name"] == "Chat"
    assert note["counts"] == {"unread": 2}
    # A one-to-one room's default rule plays a sound: high priority.
    assert note["prio"] == "high"
    [device] = note["devices"]
    assert device["app_id"] == "org.example.app" and device["pushkey"] == "key1"
    assert device["data"] == {"extra": "kept"}  # everything but the url
    assert device["tweaks"] == {"sound": "default"}
    assert isinstance(device["pushkey_ts"], int) and abs(device["pushkey_ts"] - time.time()) < 600
    # The sender is never notified of their own messages.
    assert all(n["sender"] != bob.user_id for n in found)
    time.sleep(0.3)
    assert len(gateway.notifications()) == 2


def test_event_id_only_format(new_user: Callable[..., User], gateway: Gateway) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    set_pusher(bob, gateway.url, data={"format": "event_id_only"})
    event_id = send(alice, room_id, "secret")
    [note] = gateway.wait_for(1)
    assert set(note) == {"event_id", "room_id", "counts", "devices", "prio"}
    assert note["event_id"] == event_id and note["room_id"] == room_id
    assert note["counts"] == {"unread": 1}
    assert note["devices"][0]["data"] == {"format": "event_id_only"}


def test_mentions_highlight_and_count(new_user: Callable[..., User], gateway: Gateway) -> None:
    alice, bob, carol = new_user(), new_user(), new_user()
    room_id = group_room(alice, bob, carol)
    assert alice.api.put(f"{V3}/profile/{alice.user_id}/displayname", json={"displayname": "Alice A"}).status_code == 200
    set_pusher(bob, gateway.url)
    send(alice, room_id, "just chatting")
    send_content(alice, room_id, {"msgtype": "m.text", "body": "hey you", "m.mentions": {"user_ids": [bob.user_id]}})
    send(alice, room_id, "back to chatting")
    found = gateway.wait_for(3)
    # A group message is low priority; a mention highlights and plays a sound.
    assert [n["prio"] for n in found] == ["low", "high", "low"]
    assert [n["devices"][0]["tweaks"].get("highlight", False) for n in found] == [False, True, False]
    assert {n["sender_display_name"] for n in found} == {"Alice A"}
    room = counts(bob, room_id)
    assert room["unread_notifications"] == {"notification_count": 3, "highlight_count": 1}
    # Carol was not mentioned: counted, not highlighted.
    assert counts(carol, room_id)["unread_notifications"] == {"notification_count": 3, "highlight_count": 0}
    highlights = bob.api.get(f"{V3}/notifications", params={"only": "highlight"}).json()["notifications"]
    assert [n["event"]["content"]["body"] for n in highlights] == ["hey you"]


def test_muted_room_stops_pushes_and_counts(new_user: Callable[..., User], gateway: Gateway) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    set_pusher(bob, gateway.url)
    response = bob.api.put(f"{V3}/pushrules/global/room/{room_id}", json={"actions": []})
    assert response.status_code == 200, response.text
    send(alice, room_id, "nobody hears this")
    time.sleep(0.5)
    assert gateway.notifications() == []
    assert counts(bob, room_id)["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}
    # Unmuted: notifications flow again.
    assert bob.api.delete(f"{V3}/pushrules/global/room/{room_id}").status_code == 200
    event_id = send(alice, room_id, "now you hear me")
    assert [n["event_id"] for n in gateway.wait_for(1)] == [event_id]
    assert counts(bob, room_id)["unread_notifications"]["notification_count"] == 1


def test_ignored_sender_does_not_notify(new_user: Callable[..., User], gateway: Gateway) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    set_pusher(bob, gateway.url)
    path = f"{V3}/user/{bob.user_id}/account_data/m.ignored_user_list"
    assert bob.api.put(path, json={"ignored_users": {alice.user_id: {}}}).status_code == 200
    send(alice, room_id, "ignored")
    time.sleep(0.5)
    assert gateway.notifications() == []
    assert bob.api.put(path, json={"ignored_users": {}}).status_code == 200
    event_id = send(alice, room_id, "heard")
    assert [n["event_id"] for n in gateway.wait_for(1)] == [event_id]


def test_gateway_down_then_up_loses_nothing(new_user: Callable[..., User], gateway: Gateway) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    set_pusher(bob, gateway.url)
    gateway.stop()
    started = time.monotonic()
    sent = [send(alice, room_id, f"m{i}") for i in range(3)]
    # Sending never waits for the gateway.
    assert time.monotonic() - started < 5
    time.sleep(1.5)  # a few failed attempts
    gateway.start()
    found = gateway.wait_for(3, timeout=30)
    assert [n["event_id"] for n in found] == sent
    time.sleep(0.5)
    assert len(gateway.notifications()) == 3


def test_delivery_resumes_after_restart(make_server: Callable[..., ServerProcess], gateway: Gateway) -> None:
    server = make_server()
    alice, bob = register_user(server.base_url), register_user(server.base_url)
    room_id = shared_room(alice, bob)
    set_pusher(bob, gateway.url)
    first = send(alice, room_id, "before")
    gateway.wait_for(1)
    gateway.stop()
    pending = send(alice, room_id, "while the gateway is down")
    server.stop()
    gateway.start()
    server.start()
    found = gateway.wait_for(2, timeout=30)
    assert [n["event_id"] for n in found] == [first, pending]
    assert "Traceback" not in server.log()


@pytest.mark.skipif(bool(os.environ.get(POSTGRES_ENV)), reason="reads the SQLite file")
def test_catch_up_that_finds_nothing_moves_the_pushers_position(
    make_server: Callable[..., ServerProcess], gateway: Gateway
) -> None:
    """After a restart a pusher reads what it missed since its position; when that
    is nothing, its position moves to the present, so that the next start does not
    read the same positions again (all of them, for a user rarely notified)."""
    server = make_server()
    alice, bob = register_user(server.base_url), register_user(server.base_url)
    set_pusher(bob, gateway.url)
    alone = create_room(alice)
    for i in range(5):
        send(alice, alone, f"nothing for bob {i}")
    database = server.directory / "data" / "homeserver.db"

    def positions() -> tuple[int, int]:
        with sqlite3.connect(database) as conn:
            [(pusher,)] = conn.execute("SELECT last_stream_ordering FROM pushers").fetchall()
            [(newest,)] = conn.execute("SELECT max(stream_ordering) FROM events").fetchall()
        return int(pusher), int(newest)

    pusher, newest = positions()
    assert pusher < newest
    server.stop()
    server.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and positions()[0] < newest:
        time.sleep(0.1)
    assert positions() == (newest, newest)
    # And it still delivers what comes next.
    room_id = shared_room(alice, bob)
    event_id = send(alice, room_id, "for bob")
    deadline = time.monotonic() + 30
    # (bob's invite notifies too, and his join may send a badge-only update)
    while time.monotonic() < deadline and event_id not in [n.get("event_id") for n in gateway.notifications()]:
        time.sleep(0.05)
    assert event_id in [n.get("event_id") for n in gateway.notifications()]


def test_gateways_in_blocked_ranges_are_never_contacted(
    make_server: Callable[..., ServerProcess], gateway: Gateway
) -> None:
    # The default push.ip_range_blocklist covers loopback: neither the address nor a
    # name that resolves to it may be posted to, while an allowed gateway still is.
    server = make_server({"push": {"ip_range_blocklist": DEFAULT_IP_RANGE_BLOCKLIST}})
    alice, bob, carol = (register_user(server.base_url) for _ in range(3))
    room_id = shared_room(alice, bob)
    shared_room(alice, carol)
    set_pusher(bob, gateway.url, pushkey="literal")
    set_pusher(bob, gateway.url.replace("127.0.0.1", "localhost"), pushkey="name")
    send(alice, room_id, "not for the loopback")
    time.sleep(2)
    assert gateway.notifications() == []
    assert "blocked" in server.log()

    allowing = make_server({"push": {"ip_range_blocklist": DEFAULT_IP_RANGE_BLOCKLIST,
                                     "ip_range_allowlist": ["127.0.0.1/32"]}})
    dave, erin = register_user(allowing.base_url), register_user(allowing.base_url)
    room_id = shared_room(dave, erin)
    set_pusher(erin, gateway.url)
    event_id = send(dave, room_id, "allowed")
    [note] = gateway.wait_for(1)
    assert note["event_id"] == event_id


def test_rejected_pushkey_removes_the_pusher(new_user: Callable[..., User], gateway: Gateway) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    set_pusher(bob, gateway.url, pushkey="expired")
    set_pusher(bob, gateway.url, pushkey="fine")
    gateway.rejecting.add("expired")
    send(alice, room_id, "one")
    gateway.wait_for(2)
    deadline = time.monotonic() + 10
    while [p["pushkey"] for p in pushers(bob)] != ["fine"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p["pushkey"] for p in pushers(bob)] == ["fine"]
    send(alice, room_id, "two")
    found = gateway.wait_for(3)
    time.sleep(0.3)
    assert [n["devices"][0]["pushkey"] for n in gateway.notifications()[2:]] == ["fine"]
    assert len(found) == 3


# --- counts in /sync ----------------------------------------------------------------------


async def test_read_receipt_resets_counts_in_nio(server: ServerProcess, new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    client = AsyncClient(server.base_url, bob.user_id)
    client.access_token, client.user_id, client.device_id = bob.access_token, bob.user_id, bob.device_id
    try:
        first = await client.sync(timeout=0)
        assert isinstance(first, SyncResponse)
        send(alice, room_id, "a")
        middle = send(alice, room_id, "b")
        last = send(alice, room_id, "c")
        response = await client.sync(timeout=0)
        assert isinstance(response, SyncResponse)
        unread = response.rooms.join[room_id].unread_notifications
        assert (unread.notification_count, unread.highlight_count) == (3, 0)
        # nio's receipt is threaded ("main"): it reads the main timeline up to b.
        await client.update_receipt_marker(room_id, middle)
        response = await client.sync(timeout=0)
        assert isinstance(response, SyncResponse)
        assert response.rooms.join[room_id].unread_notifications.notification_count == 1
        await client.room_read_markers(room_id, last, last)
        response = await client.sync(timeout=0)
        assert isinstance(response, SyncResponse)
        assert response.rooms.join[room_id].unread_notifications.notification_count == 0
    finally:
        await client.close()


def test_receipt_wakes_a_waiting_sync_with_new_counts(server: ServerProcess, new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    event_id = send(alice, room_id, "read me")
    token = sync(bob)["next_batch"]
    result: dict[str, Any] = {}

    def wait() -> None:
        # Other streams (bob's own presence) may answer first: poll on until the room.
        since = token
        with Api(server.base_url, bob.access_token) as waiting:
            while time.monotonic() - started < 15:
                response = waiting.get(f"{V3}/sync", params={"since": since, "timeout": 20000}).json()
                since = response["next_batch"]
                if room_id in response["rooms"]["join"]:
                    result["response"] = response
                    return

    thread = threading.Thread(target=wait)
    started = time.monotonic()
    thread.start()
    time.sleep(0.5)
    # The receipt comes from another session of bob's (a second device).
    assert bob.api.post(f"{V3}/rooms/{room_id}/receipt/m.read.private/{event_id}", json={}).status_code == 200
    thread.join(15)
    assert time.monotonic() - started < 10
    room = result["response"]["rooms"]["join"][room_id]
    assert room["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}


def test_reading_on_another_device_updates_the_badge(server: ServerProcess, new_user: Callable[..., User], gateway: Gateway) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    set_pusher(bob, gateway.url)  # bob's phone
    send(alice, room_id, "one")
    last = send(alice, room_id, "two")
    assert gateway.wait_for(2)[1]["counts"] == {"unread": 2}

    # bob reads on his desktop, a session of its own.
    with Api(server.base_url) as api:
        login = api.post(
            f"{V3}/login",
            json={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": bob.user_id}, "password": bob.password},
        ).json()
    with Api(server.base_url, login["access_token"]) as desktop:
        assert desktop.post(f"{V3}/rooms/{room_id}/receipt/m.read/{last}", json={}).status_code == 200
        badge = gateway.wait_for(3)[2]
        # Counts only, about no event; zero is sent, as that is what clears a badge.
        assert badge == {
            "counts": {"unread": 0},
            "devices": [badge["devices"][0]],
            "prio": "low",
        }
        assert badge["devices"][0]["pushkey"] == "key1" and "url" not in badge["devices"][0]["data"]
        # A receipt that changes no count sends nothing.
        assert desktop.post(f"{V3}/rooms/{room_id}/receipt/m.read/{last}", json={}).status_code == 200
        time.sleep(0.5)
        assert len(gateway.notifications()) == 3

    # The next message counts from zero again.
    send(alice, room_id, "three")
    assert gateway.wait_for(4)[3]["counts"] == {"unread": 1}

    # bob answers from his desktop: sending read the room, and his phone's badge goes.
    with Api(server.base_url, login["access_token"]) as desktop:
        answered = desktop.put(f"{V3}/rooms/{room_id}/send/m.room.message/a1", json={"msgtype": "m.text", "body": "hi"})
        assert answered.status_code == 200, answered.text
        assert gateway.wait_for(5)[4]["counts"] == {"unread": 0}
        # Another message of his changes no count: nothing more is sent.
        again = desktop.put(f"{V3}/rooms/{room_id}/send/m.room.message/a2", json={"msgtype": "m.text", "body": "again"})
        assert again.status_code == 200, again.text
        time.sleep(0.5)
        assert len(gateway.notifications()) == 5


def test_thread_counts(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    root = send(alice, room_id, "root")
    in_thread = [
        send_content(alice, room_id, {"msgtype": "m.text", "body": f"reply {i}", "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
        for i in range(2)
    ]
    threaded_filter = {"room": {"timeline": {"unread_thread_notifications": True}}}
    room = counts(bob, room_id, filter=threaded_filter)
    assert room["unread_notifications"] == {"notification_count": 1, "highlight_count": 0}
    assert room["unread_thread_notifications"] == {root: {"notification_count": 2, "highlight_count": 0}}
    # Without the flag: everything together, and no per-thread object.
    room = counts(bob, room_id)
    assert room["unread_notifications"]["notification_count"] == 3
    assert "unread_thread_notifications" not in room
    # A receipt in the thread reads the thread only.
    response = bob.api.post(f"{V3}/rooms/{room_id}/receipt/m.read/{in_thread[0]}", json={"thread_id": root})
    assert response.status_code == 200, response.text
    room = counts(bob, room_id, filter=threaded_filter)
    assert room["unread_notifications"]["notification_count"] == 1
    assert room["unread_thread_notifications"] == {root: {"notification_count": 1, "highlight_count": 0}}
    # A receipt for the main timeline leaves the thread alone.
    assert bob.api.post(f"{V3}/rooms/{room_id}/receipt/m.read/{root}", json={"thread_id": "main"}).status_code == 200
    room = counts(bob, room_id, filter=threaded_filter)
    assert room["unread_notifications"]["notification_count"] == 0
    assert room["unread_thread_notifications"] == {root: {"notification_count": 1, "highlight_count": 0}}
    # An unthreaded receipt reads everything before it, in every thread.
    assert bob.api.post(f"{V3}/rooms/{room_id}/receipt/m.read/{in_thread[1]}", json={}).status_code == 200
    room = counts(bob, room_id, filter=threaded_filter)
    assert room["unread_notifications"]["notification_count"] == 0
    assert room["unread_thread_notifications"] == {}


# --- /notifications -----------------------------------------------------------------------


def all_notifications(api: Api, start: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
    """Every notification from `start` back, following next_token to the end."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    if start is not None:
        params["from"] = start
    for _ in range(1000):
        response = api.get(f"{V3}/notifications", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(page["notifications"])
        if "next_token" not in page:
            return found
        params["from"] = page["next_token"]
    raise AssertionError("next_token never ran out")


def test_notifications_list(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    room_id = shared_room(alice, bob)
    sent = [send(alice, room_id, f"n{i}") for i in range(5)]
    assert bob.api.post(f"{V3}/rooms/{room_id}/receipt/m.read/{sent[1]}", json={}).status_code == 200
    response = bob.api.get(f"{V3}/notifications", params={"limit": 3})
    assert response.status_code == 200, response.text
    page = response.json()
    assert [n["event"]["event_id"] for n in page["notifications"]] == [sent[4], sent[3], sent[2]]
    first = page["notifications"][0]
    assert first["room_id"] == room_id and first["read"] is False
    assert "notify" in first["actions"]
    assert abs(first["ts"] - time.time() * 1000) < 60_000
    assert first["event"]["content"]["body"] == "n4"
    rest = all_notifications(bob.api, page["next_token"])
    # The oldest is bob's invite (.m.rule.invite_for_me), read by his own join.
    assert [n["event"]["event_id"] for n in rest[:2]] == [sent[1], sent[0]]
    assert [n["event"]["type"] for n in rest[2:]] == ["m.room.member"]
    assert [n["read"] for n in rest] == [True, True, True]
    # Alice sent them: she has nothing.
    assert all_notifications(alice.api) == []
    bad = bob.api.get(f"{V3}/notifications", params={"from": "garbage"})
    assert bad.status_code == 400 and bad.json()["errcode"] == "M_INVALID_PARAM"
    assert bob.api.get(f"{V3}/notifications", params={"limit": "x"}).status_code == 400


def test_notifications_far_back_are_reached_page_by_page(make_server: Callable[..., ServerProcess]) -> None:
    """A page looks at a window of the room event stream (not every user's rows back
    to the start): a notification older than the window comes on a later page, after
    pages that may be empty but still carry a next_token."""
    server = make_server()
    alice, bob = register_user(server.base_url), register_user(server.base_url)
    room_id = shared_room(alice, bob)
    old = send(alice, room_id, "long ago")
    alone = create_room(alice)
    for i in range(2100):  # events that notify nobody
        response = alice.api.put(f"{V3}/rooms/{alone}/send/m.room.message/q{i}", json={"msgtype": "m.text", "body": "."})
        assert response.status_code == 200, response.text
    new = send(alice, room_id, "just now")
    first = bob.api.get(f"{V3}/notifications", params={"limit": 5}).json()
    assert [n["event"]["event_id"] for n in first["notifications"]] == [new]
    assert "next_token" in first
    rest = all_notifications(bob.api, first["next_token"], limit=5)
    assert [n["event"]["event_id"] for n in rest][:1] == [old]
    assert [n["event"]["type"] for n in rest[1:]] == ["m.room.member"]  # the invite
    # A token from beyond the newest position starts at the newest.
    beyond = bob.api.get(f"{V3}/notifications", params={"from": "999999999999", "limit": 5}).json()
    assert [n["event"]["event_id"] for n in beyond["notifications"]] == [new]
