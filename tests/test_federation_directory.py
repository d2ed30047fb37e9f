"""The public room directory over federation: our clients list other servers' public
rooms (/publicRooms?server=...), and other servers list ours
(/_matrix/federation/v1/publicRooms), with a real Synapse on the other side."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import V3, User, register_user
from tests.fake_peer import FakePeer
from tests.server import ServerProcess, free_port
from tests.synapse import SynapseProcess
from tests.test_federation_rooms import wait_for

FED = "/_matrix/federation/v1/publicRooms"


def room_ids(body: dict[str, Any]) -> list[str]:
    return [room["room_id"] for room in body["chunk"]]


def publish_on_ours(user: User, name: str, topic: str = "") -> str:
    response = user.api.post(
        f"{V3}/createRoom", json={"preset": "public_chat", "visibility": "public", "name": name, "topic": topic}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["room_id"])


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[FakePeer]:
    started = FakePeer(tmp_path)
    started.start()
    yield started
    started.stop()


def test_our_user_lists_synapse_public_rooms(ours: ServerProcess, synapse: SynapseProcess) -> None:
    registered = synapse.register()
    bob = httpx.Client(
        base_url=synapse.base_url, headers={"Authorization": f"Bearer {registered['access_token']}"}, timeout=60
    )
    name = "Synapse lounge " + secrets.token_hex(4)
    created = bob.post(
        f"{V3}/createRoom",
        json={"preset": "public_chat", "visibility": "public", "name": name, "topic": "tea and federation"},
    )
    assert created.status_code == 200, created.text
    room_id = created.json()["room_id"]

    alice = register_user(ours.base_url)

    def listed_there() -> list[dict[str, Any]]:
        listed = alice.api.get(f"{V3}/publicRooms", params={"server": synapse.server_name})
        assert listed.status_code == 200, (listed.text, ours.log()[-3000:])
        return [r for r in listed.json()["chunk"] if r["room_id"] == room_id]

    # Synapse fills its directory from room statistics it updates in the background.
    [room] = wait_for(listed_there, what="the room in Synapse's directory")
    assert room["name"] == name and room["topic"] == "tea and federation"
    assert room["num_joined_members"] == 1 and room["world_readable"] is False

    # Searching goes to Synapse as a filtered POST.
    found = alice.api.post(
        f"{V3}/publicRooms", params={"server": synapse.server_name}, json={"filter": {"generic_search_term": name}}
    )
    assert found.status_code == 200, found.text
    assert room_ids(found.json()) == [room_id]
    missed = alice.api.post(
        f"{V3}/publicRooms",
        params={"server": synapse.server_name},
        json={"filter": {"generic_search_term": "no such room " + secrets.token_hex(4)}},
    )
    assert missed.status_code == 200 and room_ids(missed.json()) == []

    # And the room found there can be joined from here.
    joined = alice.api.post(f"{V3}/join/{room_id}", params={"server_name": synapse.server_name}, json={})
    assert joined.status_code == 200, joined.text


def test_synapse_user_lists_our_public_rooms(ours: ServerProcess, synapse: SynapseProcess) -> None:
    alice = register_user(ours.base_url)
    name = "Our square " + secrets.token_hex(4)
    room_id = publish_on_ours(alice, name, topic="made here")
    registered = synapse.register()
    bob = httpx.Client(
        base_url=synapse.base_url, headers={"Authorization": f"Bearer {registered['access_token']}"}, timeout=60
    )
    listed = bob.get(f"{V3}/publicRooms", params={"server": ours.server_name})
    assert listed.status_code == 200, (listed.text, synapse.log()[-3000:])
    [room] = [r for r in listed.json()["chunk"] if r["room_id"] == room_id]
    assert room["name"] == name and room["topic"] == "made here"

    found = bob.post(
        f"{V3}/publicRooms", params={"server": ours.server_name}, json={"filter": {"generic_search_term": name}}
    )
    assert found.status_code == 200, found.text
    assert room_ids(found.json()) == [room_id]


def test_federation_endpoint_pages_and_filters(ours: ServerProcess, peer: FakePeer) -> None:
    alice = register_user(ours.base_url)
    tag = secrets.token_hex(4)
    mine = {publish_on_ours(alice, f"paging {tag} {i}") for i in range(3)}
    port = ours.federation_port
    assert port is not None

    first = peer.request("GET", ours.server_name, port, f"{FED}?limit=1")
    assert first.status_code == 200, first.text
    assert len(first.json()["chunk"]) == 1 and "next_batch" in first.json()
    second = peer.request("GET", ours.server_name, port, f"{FED}?limit=1&since={first.json()['next_batch']}")
    assert second.status_code == 200 and room_ids(second.json()) != room_ids(first.json())

    searched = peer.request("POST", ours.server_name, port, FED, {"filter": {"generic_search_term": f"paging {tag}"}})
    assert searched.status_code == 200, searched.text
    assert set(room_ids(searched.json())) == mine

    # No application services here, so a third-party network lists nothing.
    network = peer.request("POST", ours.server_name, port, FED, {"third_party_instance_id": "irc"})
    assert network.status_code == 200 and network.json()["chunk"] == []
    both = peer.request(
        "POST", ours.server_name, port, FED, {"include_all_networks": True, "third_party_instance_id": "irc"}
    )
    assert both.status_code == 400
    bad = peer.request("POST", ours.server_name, port, FED, {"limit": "ten"})
    assert bad.status_code == 400 and bad.json()["errcode"] == "M_BAD_JSON"
    bad_since = peer.request("GET", ours.server_name, port, f"{FED}?since=garbage")
    assert bad_since.status_code == 400 and bad_since.json()["errcode"] == "M_INVALID_PARAM"

    # Unsigned requests are refused.
    unsigned = httpx.get(f"https://127.0.0.1:{port}{FED}", verify=False, timeout=10)
    assert unsigned.status_code == 401 and unsigned.json()["errcode"] == "M_UNAUTHORIZED"


def test_directory_closed_to_federation_by_default(tmp_path: Path, ours: ServerProcess, peer: FakePeer) -> None:
    (tmp_path / "closed").mkdir()
    closed = ServerProcess(
        tmp_path / "closed", {"federation": {"allow_public_rooms_over_federation": False}}, federation=True
    )
    closed.start()
    try:
        assert closed.federation_port is not None
        owner = register_user(closed.base_url)
        publish_on_ours(owner, "not for export")
        direct = peer.request("GET", closed.server_name, closed.federation_port, FED)
        assert direct.status_code == 403 and direct.json()["errcode"] == "M_FORBIDDEN"
        # Its own users still see it.
        local = owner.api.get(f"{V3}/publicRooms")
        assert [r["name"] for r in local.json()["chunk"]] == ["not for export"]

        # Our client asking for that server's list gets the refusal as a Matrix error.
        alice = register_user(ours.base_url)
        proxied = alice.api.get(f"{V3}/publicRooms", params={"server": closed.server_name})
        assert proxied.status_code == 403 and proxied.json()["errcode"] == "M_FORBIDDEN"
    finally:
        closed.stop()


def test_unreachable_or_invalid_server(ours: ServerProcess) -> None:
    alice = register_user(ours.base_url)
    nobody = f"localhost:{free_port()}"
    response = alice.api.get(f"{V3}/publicRooms", params={"server": nobody})
    assert response.status_code == 502 and response.json()["errcode"] == "M_UNKNOWN"
    response = alice.api.post(
        f"{V3}/publicRooms", params={"server": nobody}, json={"filter": {"generic_search_term": "x"}}
    )
    assert response.status_code == 502 and response.json()["errcode"] == "M_UNKNOWN"
    invalid = alice.api.get(f"{V3}/publicRooms", params={"server": "not a/server"})
    assert invalid.status_code == 400 and invalid.json()["errcode"] == "M_INVALID_PARAM"
    # Our own name is the local list.
    own = alice.api.get(f"{V3}/publicRooms", params={"server": ours.server_name})
    assert own.status_code == 200


def test_without_federation_other_servers_are_not_found(server: ServerProcess, user: User) -> None:
    response = user.api.get(f"{V3}/publicRooms", params={"server": "example.org"})
    assert response.status_code == 404 and response.json()["errcode"] == "M_NOT_FOUND"
