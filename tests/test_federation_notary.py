"""Our server as a notary (/_matrix/key/v2/query), and the IP range blocklist that
keeps outbound federation away from private addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from unpaddedbase64 import decode_base64

from federation.keys import server_keys_response
from federation.notary import REFETCH_AFTER_S
from homeserver.config import DEFAULT_IP_RANGE_BLOCKLIST
from homeserver.config_generate import write_self_signed_certificate
from homeserver.events import generate_signing_key, sign_json, verify_key_of
from homeserver.ip_ranges import IPRangeFilter
from tests.conftest import V3, register_user
from tests.fake_peer import FakePeer
from tests.server import ServerProcess, free_port
from tests.synapse import SynapseProcess

HOUR_MS = 60 * 60 * 1000


def notary_url(server: ServerProcess, path: str) -> str:
    return f"https://127.0.0.1:{server.federation_port}/_matrix/key/v2{path}"


def verify_keys_of(federation_port: int, server_name: str) -> dict[str, Any]:
    """A server's verify keys, fetched from it directly."""
    body = httpx.get(f"https://127.0.0.1:{federation_port}/_matrix/key/v2/server", verify=False, timeout=10).json()
    assert body["server_name"] == server_name
    return {
        key_id: decode_verify_key_bytes(key_id, decode_base64(value["key"]))
        for key_id, value in body["verify_keys"].items()
    }


def check_signed_by(response: dict[str, Any], signer: str, keys: dict[str, Any]) -> None:
    assert signer in response["signatures"], response
    for key_id, key in keys.items():
        if key_id in response["signatures"][signer]:
            verify_signed_json(response, signer, key)
            return
    raise AssertionError(f"no signature of {signer} with a known key: {response['signatures']}")


class KeyPeer:
    """A server that only publishes keys: how long they are valid, whether the
    response is forged, and how often it was asked are up to the test."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.server_name = f"localhost:{self.port}"
        self.signing_key = generate_signing_key("peer")
        self.valid_for_ms = HOUR_MS
        self.forged = False
        self.garbage: Any = None  # when set, served instead of a key response
        self.fetches = 0
        cert, key = directory / "peer.crt", directory / "peer.key"
        write_self_signed_certificate(cert, key, "localhost")

        async def keys(request: Request) -> JSONResponse:
            self.fetches += 1
            if self.garbage is not None:
                return JSONResponse(self.garbage)
            now = int(time.time() * 1000)
            body = server_keys_response(self.server_name, self.signing_key, now)
            body["valid_until_ts"] = now + self.valid_for_ms
            body.pop("signatures")
            if self.forged:
                # Signed by a key other than the one the response lists.
                return JSONResponse(sign_json(body, self.server_name, generate_signing_key("peer")))
            return JSONResponse(sign_json(body, self.server_name, self.signing_key))

        config = uvicorn.Config(
            Starlette(routes=[Route("/_matrix/key/v2/server", keys)]),
            host="127.0.0.1", port=self.port, ssl_certfile=str(cert), ssl_keyfile=str(key), log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[KeyPeer]:
    started = KeyPeer(tmp_path)
    yield started
    started.stop()


def test_notary_vouches_for_synapse_keys(ours: ServerProcess, synapse: SynapseProcess) -> None:
    response = httpx.get(notary_url(ours, f"/query/{synapse.server_name}"), verify=False, timeout=30)
    assert response.status_code == 200, response.text
    [keys] = response.json()["server_keys"]
    assert keys["server_name"] == synapse.server_name
    # Synapse's own signature, untouched, and ours on top.
    check_signed_by(keys, synapse.server_name, verify_keys_of(synapse.federation_port, synapse.server_name))
    check_signed_by(keys, ours.server_name, verify_keys_of(ours.federation_port, ours.server_name))
    assert set(keys["verify_keys"]) == set(verify_keys_of(synapse.federation_port, synapse.server_name))

    # The batch form, asking for one key ID, gives the same.
    key_id = next(iter(keys["verify_keys"]))
    batch = httpx.post(
        notary_url(ours, "/query"),
        json={"server_keys": {synapse.server_name: {key_id: {"minimum_valid_until_ts": 0}}}},
        verify=False, timeout=30,
    )
    assert batch.status_code == 200, batch.text
    [again] = batch.json()["server_keys"]
    check_signed_by(again, synapse.server_name, verify_keys_of(synapse.federation_port, synapse.server_name))
    check_signed_by(again, ours.server_name, verify_keys_of(ours.federation_port, ours.server_name))


def test_notary_serves_our_own_keys(ours: ServerProcess) -> None:
    own = verify_keys_of(ours.federation_port, ours.server_name)
    response = httpx.get(notary_url(ours, f"/query/{ours.server_name}"), verify=False, timeout=30)
    assert response.status_code == 200, response.text
    [keys] = response.json()["server_keys"]
    assert set(keys["verify_keys"]) == set(own)
    check_signed_by(keys, ours.server_name, own)
    assert keys["valid_until_ts"] > time.time() * 1000

    batch = httpx.post(notary_url(ours, "/query"), json={"server_keys": {ours.server_name: {}}}, verify=False, timeout=30)
    assert [k["server_name"] for k in batch.json()["server_keys"]] == [ours.server_name]
    empty = httpx.post(notary_url(ours, "/query"), json={"server_keys": {}}, verify=False, timeout=30)
    assert empty.json() == {"server_keys": []}


def test_notary_caches_and_honours_minimum_valid_until_ts(ours: ServerProcess, peer: KeyPeer) -> None:
    def ask(**params: Any) -> dict[str, Any]:
        response = httpx.get(notary_url(ours, f"/query/{peer.server_name}"), params=params, verify=False, timeout=30)
        assert response.status_code == 200, response.text
        [keys] = response.json()["server_keys"]
        return dict(keys)

    first = ask()
    assert peer.fetches == 1
    # Still valid for the asker: from the cache, the origin is not asked again.
    assert ask(minimum_valid_until_ts=int(time.time() * 1000) + HOUR_MS // 2) == first
    assert peer.fetches == 1
    # Must stay valid longer than the cached response does: fetched again.
    time.sleep(REFETCH_AFTER_S + 0.5)
    peer.valid_for_ms = 3 * HOUR_MS
    later = ask(minimum_valid_until_ts=int(time.time() * 1000) + 2 * HOUR_MS)
    assert peer.fetches == 2
    assert later["valid_until_ts"] > first["valid_until_ts"]
    verify_signed_json(later, peer.server_name, verify_key_of(peer.signing_key))

    # The same through POST, asking for a key ID the origin does not have: the origin is
    # asked again (once the refetch interval has passed), the answer is what it has.
    time.sleep(REFETCH_AFTER_S + 0.5)
    batch = httpx.post(
        notary_url(ours, "/query"),
        json={"server_keys": {peer.server_name: {"ed25519:unknown": {}}}},
        verify=False, timeout=30,
    )
    assert batch.status_code == 200, batch.text
    assert peer.fetches == 3
    assert [k["server_name"] for k in batch.json()["server_keys"]] == [peer.server_name]


def test_notary_refuses_forged_keys_and_skips_unreachable(ours: ServerProcess, peer: KeyPeer) -> None:
    peer.forged = True
    forged = httpx.get(notary_url(ours, f"/query/{peer.server_name}"), verify=False, timeout=30)
    assert forged.status_code == 200 and forged.json() == {"server_keys": []}
    assert peer.fetches == 1
    for garbage in (
        [],
        {"server_name": peer.server_name, "valid_until_ts": "later", "verify_keys": {}},
        {"server_name": peer.server_name, "valid_until_ts": 1, "verify_keys": {"ed25519:x": {"key": "!!"}}},
        {"server_name": peer.server_name, "valid_until_ts": 1, "verify_keys": {"ed25519:x": {"key": "AAAA"}},
         "signatures": "none"},
    ):
        peer.garbage = garbage
        answer = httpx.get(notary_url(ours, f"/query/{peer.server_name}"), verify=False, timeout=30)
        assert answer.status_code == 200 and answer.json() == {"server_keys": []}, (garbage, answer.text)

    nobody = f"localhost:{free_port()}"
    response = httpx.post(
        notary_url(ours, "/query"), json={"server_keys": {nobody: {}, ours.server_name: {}}}, verify=False, timeout=30
    )
    assert response.status_code == 200
    assert [k["server_name"] for k in response.json()["server_keys"]] == [ours.server_name]


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (b"{not json", "M_NOT_JSON"),
        (b"[]", "M_NOT_JSON"),
        (b"{}", "M_MISSING_PARAM"),
        (b'{"server_keys": 5}', "M_BAD_JSON"),
        (b'{"server_keys": {"example.org": []}}', "M_BAD_JSON"),
        (b'{"server_keys": {"example.org": {"ed25519:a": {"minimum_valid_until_ts": "soon"}}}}', "M_BAD_JSON"),
        (b'{"server_keys": {"not a server/": {}}}', "M_BAD_JSON"),
    ],
)
def test_notary_bad_input(ours: ServerProcess, body: bytes, errcode: str) -> None:
    response = httpx.post(
        notary_url(ours, "/query"), content=body, headers={"Content-Type": "application/json"}, verify=False, timeout=30
    )
    assert response.status_code == 400, response.text
    assert response.json()["errcode"] == errcode


def test_notary_bad_query_parameters(ours: ServerProcess) -> None:
    response = httpx.get(
        notary_url(ours, "/query/example.org"), params={"minimum_valid_until_ts": "tomorrow"}, verify=False, timeout=30
    )
    assert response.status_code == 400 and response.json()["errcode"] == "M_INVALID_PARAM"
    too_many = {"server_keys": {f"s{i}.example.org": {} for i in range(101)}}
    response = httpx.post(notary_url(ours, "/query"), json=too_many, verify=False, timeout=30)
    assert response.status_code == 400 and response.json()["errcode"] == "M_BAD_JSON"


# The IP range blocklist


def test_ip_range_filter() -> None:
    default = IPRangeFilter(DEFAULT_IP_RANGE_BLOCKLIST, [])
    for blocked in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.1.1", "::1", "fd00::1", "fe80::1",
                    "::ffff:127.0.0.1", "0.0.0.0", "::"):
        assert default.is_blocked(ipaddress.ip_address(blocked)), blocked
    for allowed in ("8.8.8.8", "1.1.1.1", "2606:4700::1111"):
        assert not default.is_blocked(ipaddress.ip_address(allowed)), allowed
    holes = IPRangeFilter(DEFAULT_IP_RANGE_BLOCKLIST, ["127.0.0.0/8"])
    assert not holes.is_blocked(ipaddress.ip_address("127.0.0.1"))
    assert holes.is_blocked(ipaddress.ip_address("10.0.0.1"))
    assert not IPRangeFilter([], []).is_blocked(ipaddress.ip_address("127.0.0.1"))


class Listener:
    """A TCP port that counts who connects to it."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


def test_default_blocklist_refuses_loopback(tmp_path: Path, ours: ServerProcess) -> None:
    (tmp_path / "guarded").mkdir()
    guarded = ServerProcess(
        tmp_path / "guarded", {"federation": {"ip_range_blocklist": DEFAULT_IP_RANGE_BLOCKLIST}}, federation=True
    )
    guarded.start()
    listener = Listener()
    try:
        user = register_user(guarded.base_url)
        started = time.monotonic()
        for target in (f"127.0.0.1:{listener.port}", f"localhost:{listener.port}"):
            response = user.api.get(f"{V3}/profile/@x:{target}")
            assert response.status_code in (404, 502), response.text
            assert response.json()["errcode"] in ("M_NOT_FOUND", "M_UNKNOWN")
        # Remote media and the notary go through the same check.
        media = user.api.get(f"/_matrix/client/v1/media/download/localhost:{listener.port}/abc")
        assert media.status_code in (404, 502), media.text
        keys = httpx.get(
            notary_url(guarded, f"/query/localhost:{listener.port}"), verify=False, timeout=30
        )
        assert keys.json() == {"server_keys": []}
        # A real server on loopback (ours) is just as unreachable.
        keys = httpx.get(notary_url(guarded, f"/query/{ours.server_name}"), verify=False, timeout=30)
        assert keys.json() == {"server_keys": []}
        assert time.monotonic() - started < 10
        time.sleep(0.3)
        assert listener.connections == 0
        assert "blocked IP range" in guarded.log()
    finally:
        listener.close()
        guarded.stop()


def test_allowlist_reopens_a_blocked_range_but_not_for_redirects(tmp_path: Path, ours: ServerProcess) -> None:
    (tmp_path / "allowed").mkdir()
    (tmp_path / "peer").mkdir()
    allowed = ServerProcess(
        tmp_path / "allowed",
        {"federation": {"ip_range_blocklist": DEFAULT_IP_RANGE_BLOCKLIST, "ip_range_allowlist": ["127.0.0.1/32"]}},
        federation=True,
    )
    allowed.start()
    # A media origin on an allowed address whose answer redirects to a blocked one
    # (127.0.0.2 is loopback too, outside the allowlist).
    hidden = Listener("127.0.0.2")
    media_peer = FakePeer(tmp_path / "peer")

    async def download(request: Request) -> Response:
        location = f"http://127.0.0.2:{hidden.port}/internal"
        body = (
            b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n"
            + f"--b\r\nLocation: {location}\r\n\r\n\r\n--b--\r\n".encode()
        )
        return Response(body, media_type="multipart/mixed; boundary=b")

    media_peer.server.config.app.router.routes.append(
        Route("/_matrix/federation/v1/media/download/{media_id}", download)
    )
    media_peer.start()
    try:
        keys = httpx.get(notary_url(allowed, f"/query/{ours.server_name}"), verify=False, timeout=30)
        [response] = keys.json()["server_keys"]
        check_signed_by(response, ours.server_name, verify_keys_of(ours.federation_port, ours.server_name))

        user = register_user(allowed.base_url)
        media = user.api.get(f"/_matrix/client/v1/media/download/{media_peer.server_name}/abc")
        assert media.status_code == 502, media.text
        time.sleep(0.3)
        assert hidden.connections == 0
        assert "blocked IP range" in allowed.log()
    finally:
        media_peer.stop()
        hidden.close()
        allowed.stop()


def test_signature_check_helper_can_fail(ours: ServerProcess) -> None:
    # The checks above would pass vacuously if verify_signed_json accepted anything.
    response = httpx.get(notary_url(ours, f"/query/{ours.server_name}"), verify=False, timeout=30).json()
    [keys] = response["server_keys"]
    keys["valid_until_ts"] += 1
    with pytest.raises(SignatureVerifyException):
        check_signed_by(keys, ours.server_name, verify_keys_of(ours.federation_port, ours.server_name))


def test_synapse_uses_us_as_its_notary(tmp_path: Path, ours: ServerProcess, synapse: SynapseProcess) -> None:
    """A second Synapse trusts only us as key server: when the first Synapse and our
    server send it signed requests, it gets their keys through our notary."""
    (tmp_path / "other").mkdir()
    other = SynapseProcess(tmp_path / "other")
    config = yaml.safe_load(other.config_path.read_text())
    ours_keys = httpx.get(
        f"https://127.0.0.1:{ours.federation_port}/_matrix/key/v2/server", verify=False, timeout=10
    ).json()["verify_keys"]
    config["trusted_key_servers"] = [
        {"server_name": ours.server_name, "verify_keys": {k: v["key"] for k, v in ours_keys.items()}}
    ]
    other.config_path.write_text(yaml.safe_dump(config))
    other.start()
    try:
        target = other.register()["user_id"]
        # Signed requests from Synapse and from us reach the other Synapse.
        bob = synapse.register()
        from_synapse = httpx.get(
            f"{synapse.base_url}{V3}/profile/{target}",
            headers={"Authorization": f"Bearer {bob['access_token']}"},
            timeout=60,
        )
        assert from_synapse.status_code == 200, (from_synapse.text, other.log()[-3000:])
        alice = register_user(ours.base_url)
        from_ours = alice.api.get(f"{V3}/profile/{target}")
        assert from_ours.status_code == 200, (from_ours.text, other.log()[-3000:])

        log = other.log()
        asked_us = [
            line for line in log.splitlines()
            if f"[{ours.server_name}]" in line and "/_matrix/key/v2/query" in line and "200 OK" in line
        ]
        assert asked_us, log[-3000:]
        # It never needed to ask the first Synapse or us directly.
        assert f"localhost:{synapse.federation_port}/_matrix/key/v2/server" not in log
        assert f"localhost:{ours.federation_port}/_matrix/key/v2/server" not in log
    finally:
        other.stop()
