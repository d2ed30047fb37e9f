"""Canonical JSON, signing, hashing and event IDs against the spec appendix."""

from __future__ import annotations

import copy
import json
import re

import pytest

from homeserver.events import (
    ROOM_VERSIONS,
    CanonicalJsonError,
    SignatureError,
    add_content_hash,
    build_event,
    check_canonical_values,
    check_content_hash,
    check_received_event,
    compute_content_hash,
    compute_event_id,
    encode_canonical_json,
    encode_verify_key,
    is_canonical_int,
    redact_event,
    required_signature_servers,
    sign_event,
    sign_json,
    signing_key_from_seed,
    verify_event_signature,
    verify_event_signatures,
    verify_json,
    verify_key_of,
)
from homeserver.events.hashing import room_id_from_create_event_id

from events_testlib import KEY, SPEC_SEED

V10, V11, V12 = ROOM_VERSIONS["10"], ROOM_VERSIONS["11"], ROOM_VERSIONS["12"]
VKEYS = {"ed25519:1": verify_key_of(KEY)}

# --- canonical JSON (appendices "Canonical JSON" examples) ----------------------

CANONICAL_EXAMPLES = [
    ("{}", "{}"),
    ('{"one": 1, "two": "Two"}', '{"one":1,"two":"Two"}'),
    ('{"b": "2", "a": "1"}', '{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', '{"a":"1","b":"2"}'),
    (
        '{"auth": {"success": true, "mxid": "@john.doe:example.com", "profile": {"display_name": "John Doe",'
        ' "three_pids": [{"medium": "email", "address": "john.doe@example.org"},'
        ' {"medium": "msisdn", "address": "123456789"}]}}}',
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":'
        '[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},'
        '"success":true}}',
    ),
    ('{"a": "日本語"}', '{"a":"日本語"}'),
    ('{"本": 2, "日": 1}', '{"日":1,"本":2}'),
    ('{"a": "\\u65E5"}', '{"a":"日"}'),
    ('{"a": null}', '{"a":null}'),
    ('{"a": -0, "b": 1e10}', '{"a":0,"b":10000000000}'),
]


@pytest.mark.parametrize("source,expected", CANONICAL_EXAMPLES)
def test_canonical_json_spec_examples(source: str, expected: str) -> None:
    assert encode_canonical_json(json.loads(source)) == expected.encode("utf-8")


def test_canonical_json_rejects_fractions_and_escapes_controls() -> None:
    with pytest.raises(CanonicalJsonError):
        encode_canonical_json({"a": 1.5})
    # Grammar: \n gets its short escape, other controls \u00XX in lower case.
    assert encode_canonical_json({"a": "\n\x01\x1f"}) == b'{"a":"\\n\\u0001\\u001f"}'


def test_integer_range() -> None:
    assert is_canonical_int(2**53 - 1) and is_canonical_int(-(2**53) + 1)
    assert not is_canonical_int(2**53) and not is_canonical_int(-(2**53))
    assert not is_canonical_int(True) and not is_canonical_int(1.0)
    check_canonical_values({"a": [1, {"b": 2**53 - 1}]})
    with pytest.raises(CanonicalJsonError):
        check_canonical_values({"a": [1, {"b": 2**53}]})
    with pytest.raises(CanonicalJsonError):
        check_canonical_values({"a": 1.0})


# --- JSON signing (appendices "Cryptographic Test Vectors") ---------------------


def test_spec_signing_key_seed() -> None:
    # Sanity: the key really is the one from the seed (ed25519:1).
    key = signing_key_from_seed(SPEC_SEED, "1")
    assert encode_verify_key(verify_key_of(key)) == encode_verify_key(VKEYS["ed25519:1"])
    assert key.version == "1" and key.alg == "ed25519"


def test_sign_empty_object() -> None:
    assert sign_json({}, "domain", KEY) == {
        "signatures": {
            "domain": {
                "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
            }
        }
    }


def test_sign_object_with_data() -> None:
    assert sign_json({"one": 1, "two": "Two"}, "domain", KEY) == {
        "one": 1,
        "signatures": {
            "domain": {
                "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
            }
        },
        "two": "Two",
    }


def test_sign_json_does_not_mutate_and_keeps_unsigned() -> None:
    original = {"a": 1, "signatures": {"other": {"ed25519:x": "sig"}}, "unsigned": {"age": 5}}
    before = copy.deepcopy(original)
    signed = sign_json(original, "domain", KEY)
    assert original == before
    assert signed["signatures"]["other"] == {"ed25519:x": "sig"}
    assert signed["unsigned"] == {"age": 5}
    # unsigned and other signatures are not covered
    signed["unsigned"]["age"] = 99
    verify_json(signed, "domain", VKEYS)


def test_verify_json_failures() -> None:
    signed = sign_json({"one": 1}, "domain", KEY)
    verify_json(signed, "domain", VKEYS)
    tampered = {**signed, "one": 2}
    with pytest.raises(SignatureError):
        verify_json(tampered, "domain", VKEYS)
    with pytest.raises(SignatureError):  # no signature from that entity
        verify_json(signed, "other", VKEYS)
    with pytest.raises(SignatureError):  # no known key
        verify_json(signed, "domain", {"ed25519:2": VKEYS["ed25519:1"]})
    # unknown algorithms and unknown key IDs are ignored, not failures
    extra = copy.deepcopy(signed)
    extra["signatures"]["domain"]["foo:1"] = "zzz"
    extra["signatures"]["domain"]["ed25519:zz"] = "zzz"
    verify_json(extra, "domain", VKEYS)


# --- event signing (appendices "Event Signing") --------------------------------

MINIMAL_EVENT = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}

MINIMAL_EVENT_SIGNED = {
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
    "unsigned": {"age_ts": 1000000},
}

MESSAGE_EVENT = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {"age_ts": 1000000},
}

MESSAGE_EVENT_SIGNED = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {"age_ts": 1000000},
}


@pytest.mark.parametrize(
    "event,expected", [(MINIMAL_EVENT, MINIMAL_EVENT_SIGNED), (MESSAGE_EVENT, MESSAGE_EVENT_SIGNED)]
)
def test_spec_event_signing_vectors(event: dict, expected: dict) -> None:
    # The appendix vectors predate v11 (they keep top-level `origin`), so they
    # are reproduced with the v9/v10 redaction rules.
    signed = sign_event(V10, event, "domain", KEY)
    assert signed == expected
    assert encode_canonical_json(signed) == encode_canonical_json(expected)
    verify_event_signature(V10, signed, "domain", VKEYS)
    assert check_content_hash(signed)


def test_v11_signature_differs_because_origin_is_redacted() -> None:
    # v11 drops `origin` from the redacted form, so the signature must differ
    # while the content hash (over the full event) is the same.
    signed = sign_event(V11, MINIMAL_EVENT, "domain", KEY)
    assert signed["hashes"] == MINIMAL_EVENT_SIGNED["hashes"]
    assert signed["signatures"] != MINIMAL_EVENT_SIGNED["signatures"]
    verify_event_signature(V11, signed, "domain", VKEYS)
    # and changing `origin` no longer breaks the signature (it is not covered)
    verify_event_signature(V11, {**signed, "origin": "elsewhere"}, "domain", VKEYS)
    with pytest.raises(SignatureError):
        verify_event_signature(V10, {**signed, "origin": "elsewhere"}, "domain", VKEYS)


def test_content_hash_ignores_unsigned_signatures_hashes() -> None:
    h = compute_content_hash(MESSAGE_EVENT)
    assert compute_content_hash({**MESSAGE_EVENT, "unsigned": {"x": 1}, "hashes": {"sha256": "x"}}) == h
    assert compute_content_hash({**MESSAGE_EVENT, "content": {"body": "other"}}) != h
    hashed = add_content_hash(MESSAGE_EVENT)
    assert check_content_hash(hashed)
    assert not check_content_hash({**hashed, "content": {"body": "tampered"}})
    assert not check_content_hash(MESSAGE_EVENT)  # no hashes at all


# --- event IDs ----------------------------------------------------------------

EVENT_ID_RE = re.compile(r"^\$[A-Za-z0-9_-]{43}$")


def _message(rv, room_id="!r:a.test", body="hello") -> tuple[str, dict]:
    return build_event(
        rv,
        room_id=room_id,
        sender="@alice:a.test",
        event_type="m.room.message",
        content={"msgtype": "m.text", "body": body},
        prev_event_ids=["$prev"],
        auth_event_ids=["$auth"],
        depth=5,
        origin_server_ts=1234,
        server_name="a.test",
        signing_key=KEY,
    )


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_event_id_round_trip(version: str) -> None:
    rv = ROOM_VERSIONS[version]
    eid, pdu = _message(rv)
    assert EVENT_ID_RE.match(eid)
    assert "event_id" not in pdu
    assert compute_event_id(rv, pdu) == eid
    # Stable under redaction, unsigned data and extra signatures.
    assert compute_event_id(rv, redact_event(rv, pdu)) == eid
    assert compute_event_id(rv, {**pdu, "unsigned": {"age": 1}}) == eid
    cosigned = copy.deepcopy(pdu)
    cosigned["signatures"]["b.test"] = {"ed25519:1": "x"}
    assert compute_event_id(rv, cosigned) == eid
    # Any essential change (including the content, via the hash) changes it.
    assert _message(rv, body="other")[0] != eid
    assert compute_event_id(rv, {**pdu, "depth": 6}) != eid
    # The ID is URL-safe base64 of sha256 over the canonical redacted form.
    import hashlib
    from unpaddedbase64 import encode_base64

    redacted = redact_event(rv, pdu)
    del redacted["signatures"]
    assert eid == "$" + encode_base64(hashlib.sha256(encode_canonical_json(redacted)).digest(), urlsafe=True)


def test_v12_create_event_room_id_derivation() -> None:
    eid, pdu = build_event(
        V12,
        room_id=None,
        sender="@alice:a.test",
        event_type="m.room.create",
        state_key="",
        content={"room_version": "12"},
        prev_event_ids=[],
        auth_event_ids=[],
        depth=1,
        origin_server_ts=1,
        server_name="a.test",
        signing_key=KEY,
    )
    assert "room_id" not in pdu
    room_id = room_id_from_create_event_id(eid)
    assert room_id == "!" + eid[1:] and ":" not in room_id
    with pytest.raises(ValueError):
        build_event(V12, room_id="!x:a.test", sender="@alice:a.test", event_type="m.room.create", state_key="",
                    content={}, prev_event_ids=[], auth_event_ids=[], depth=1, origin_server_ts=1,
                    server_name="a.test", signing_key=KEY)


def test_builder_version_specifics() -> None:
    common = dict(sender="@alice:a.test", prev_event_ids=["$p"], auth_event_ids=["$a"], depth=3,
                  origin_server_ts=5, server_name="a.test", signing_key=KEY)
    _, red10 = build_event(V10, room_id="!r:a.test", event_type="m.room.redaction", content={},
                           redacts="$target", **common)
    _, red11 = build_event(V11, room_id="!r:a.test", event_type="m.room.redaction", content={},
                           redacts="$target", **common)
    assert red10["redacts"] == "$target" and "redacts" not in red10["content"]
    assert red11["content"]["redacts"] == "$target" and "redacts" not in red11
    # v11 keeps content.redacts through redaction, so the target stays known
    assert redact_event(V11, red11)["content"] == {"redacts": "$target"}
    # v10 create gets `creator` filled in; v11 does not need it
    create_common = {**common, "prev_event_ids": [], "auth_event_ids": []}
    _, c10 = build_event(V10, room_id="!r:a.test", event_type="m.room.create", state_key="", content={},
                         **create_common)
    _, c11 = build_event(V11, room_id="!r:a.test", event_type="m.room.create", state_key="", content={},
                         **create_common)
    assert c10["content"] == {"creator": "@alice:a.test"}
    assert c11["content"] == {}
    # depth saturates at the canonical integer limit
    _, deep = build_event(V10, room_id="!r:a.test", event_type="m.room.message", content={},
                          **{**common, "depth": 2**60})
    assert deep["depth"] == 2**53 - 1


def test_built_event_verifies_and_received_event_checks() -> None:
    eid, pdu = _message(V11)
    verify_event_signatures(V11, pdu, {"a.test": VKEYS})
    assert check_received_event(V11, pdu, {"a.test": VKEYS}) == pdu
    # Content tampered: signature still fine (covers redacted form) but the
    # hash fails, so the redacted copy is what we get back.
    tampered = {**pdu, "content": {"body": "evil", "msgtype": "m.text"}}
    got = check_received_event(V11, tampered, {"a.test": VKEYS})
    assert got["content"] == {} and got == redact_event(V11, pdu)
    # Essential field tampered: signature fails -> dropped.
    with pytest.raises(SignatureError):
        check_received_event(V11, {**pdu, "depth": 99}, {"a.test": VKEYS})
    with pytest.raises(SignatureError):
        verify_event_signatures(V11, pdu, {"b.test": VKEYS})


def test_required_signature_servers() -> None:
    join = {"type": "m.room.member", "sender": "@bob:b.test", "state_key": "@bob:b.test",
            "content": {"membership": "join", "join_authorised_via_users_server": "@alice:a.test"}}
    assert required_signature_servers(V10, join) == {"b.test", "a.test"}
    tp_invite = {"type": "m.room.member", "sender": "@bob:b.test", "state_key": "@x:c.test",
                 "content": {"membership": "invite", "third_party_invite": {}}}
    assert required_signature_servers(V10, tp_invite) == set()
    msg = {"type": "m.room.message", "sender": "@bob:b.test", "content": {}}
    assert required_signature_servers(V10, msg) == {"b.test"}
