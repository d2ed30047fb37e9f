"""Federation groundwork against a real Synapse: published keys, X-Matrix request
signing both ways, and rejection of unsigned or forged requests."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from federation.key_fetcher import parse_key_response
from federation.request_auth import authorization_header
from homeserver.events import generate_signing_key
from tests.conftest import V3, register_user
from tests.server import ServerProcess
from tests.synapse import SynapseProcess


def federation_url(server: ServerProcess, path: str) -> str:
    return f"https://127.0.0.1:{server.federation_port}{path}"


def test_published_keys_are_self_signed(ours: ServerProcess) -> None:
    body = httpx.get(federation_url(ours, "/_matrix/key/v2/server"), verify=False).json()
    now = int(time.time() * 1000)
    keys = parse_key_response(ours.server_name, body, now)
    assert keys and all(key_id.startswith("ed25519:") for key_id in keys)
    assert body["valid_until_ts"] > now
    signing_key = Path(ours.config["data_directory"], "signing.key").read_text().split()
    assert f"ed25519:{signing_key[1]}" in keys


def test_synapse_reads_our_profile_over_federation(ours: ServerProcess, synapse: SynapseProcess) -> None:
    alice = register_user(ours.base_url)
    alice.api.put(f"{V3}/profile/{alice.user_id}/displayname", json={"displayname": "Alice of Ours"})
    bob = synapse.register()
    response = httpx.get(
        f"{synapse.base_url}/_matrix/client/v3/profile/{alice.user_id}",
        headers={"Authorization": f"Bearer {bob['access_token']}"},
        timeout=30,
    )
    assert response.status_code == 200, (response.text, ours.log()[-3000:])
    assert response.json()["displayname"] == "Alice of Ours"


def test_we_read_synapse_profiles_over_federation(ours: ServerProcess, synapse: SynapseProcess) -> None:
    bob = synapse.register()
    httpx.put(
        f"{synapse.base_url}/_matrix/client/v3/profile/{bob['user_id']}/displayname",
        json={"displayname": "Bob of Synapse"},
        headers={"Authorization": f"Bearer {bob['access_token']}"},
    ).raise_for_status()
    alice = register_user(ours.base_url)
    profile = alice.api.get(f"{V3}/profile/{bob['user_id']}")
    assert profile.status_code == 200, (profile.text, ours.log()[-3000:])
    assert profile.json()["displayname"] == "Bob of Synapse"
    unknown = alice.api.get(f"{V3}/profile/@nobody:{synapse.server_name}")
    assert unknown.status_code == 404


def test_unsigned_and_forged_requests_are_refused(ours: ServerProcess, synapse: SynapseProcess) -> None:
    alice = register_user(ours.base_url)
    path = f"/_matrix/federation/v1/query/profile?user_id={alice.user_id}"
    unsigned = httpx.get(federation_url(ours, path), verify=False)
    assert (unsigned.status_code, unsigned.json()["errcode"]) == (401, "M_UNAUTHORIZED")
    # Claims to be Synapse, signed with a key Synapse never published.
    forged_key = generate_signing_key(f"a_{synapse.federation_port}")
    header = authorization_header("GET", path, synapse.server_name, ours.server_name, None, forged_key)
    forged = httpx.get(federation_url(ours, path), headers={"Authorization": header}, verify=False)
    assert (forged.status_code, forged.json()["errcode"]) == (401, "M_UNAUTHORIZED")
    garbage = httpx.get(federation_url(ours, path), headers={"Authorization": "X-Matrix nonsense"}, verify=False)
    assert garbage.status_code == 401
