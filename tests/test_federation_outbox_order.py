"""Our events reach another server in the order they were sent, even when many are
sent at once: a peer handed event N+1 before N has to treat N as a gap and fetch it
(Synapse then marks its clients' timelines limited)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote


from tests.conftest import V3, register_user
from tests.fake_peer import FakePeer
from tests.server import ServerProcess


def test_concurrent_sends_reach_the_peer_in_order(ours: ServerProcess, peer: FakePeer) -> None:
    room, creator = peer.public_room()
    alice = register_user(ours.base_url)
    joined = alice.api.post(f"{V3}/join/{room.room_id}", params={"via": peer.server_name}, json={})
    assert joined.status_code == 200, joined.text

    count = 40

    def send(n: int) -> None:
        path = f"{V3}/rooms/{quote(room.room_id)}/send/m.room.message/order{n}"
        response = alice.api.put(path, json={"msgtype": "m.text", "body": f"m{n}"})
        assert response.status_code == 200, response.text

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(send, range(count)))

    def received() -> list[dict[str, object]]:
        return [p for p in peer.received_pdus if p.get("room_id") == room.room_id and p.get("type") == "m.room.message"]

    deadline = time.monotonic() + 30
    while len(received()) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    pdus = received()
    assert len(pdus) == count
    depths = [p["depth"] for p in pdus]
    assert depths == sorted(depths), depths
