"""Push rules over HTTP: the /pushrules API, m.push_rules in /sync, and a real client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from nio import AsyncClient, PushRulesEvent, SyncResponse

from tests.conftest import V3, User
from tests.push.default_rules import SPEC_OVERRIDE_ORDER, SPEC_UNDERRIDE_ORDER
from tests.server import ServerProcess

RULES = f"{V3}/pushrules"


def rule_url(kind: str, rule_id: str, attribute: str = "", scope: str = "global") -> str:
    url = f"{RULES}/{scope}/{kind}/{quote(rule_id, safe='')}"
    return f"{url}/{attribute}" if attribute else url


def put_rule(user: User, kind: str, rule_id: str, body: dict[str, Any], **params: str) -> httpx.Response:
    return user.api.put(rule_url(kind, rule_id), json=body, params=params)


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def error(response: httpx.Response, status: int, errcode: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["errcode"] == errcode, response.text


def ids(user: User, kind: str) -> list[str]:
    return [r["rule_id"] for r in ok(user.api.get(f"{RULES}/global/"))[kind]]


def own_ids(user: User, kind: str) -> list[str]:
    return [i for i in ids(user, kind) if not i.startswith(".")]


def sync(user: User, since: str | None = None, timeout: int = 0) -> dict[str, Any]:
    params: dict[str, Any] = {"timeout": timeout}
    if since:
        params["since"] = since
    return ok(user.api.get(f"{V3}/sync", params=params))


def push_rules_in(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["content"] for e in response["account_data"]["events"] if e["type"] == "m.push_rules"]


# --- reading ---------------------------------------------------------------------------


def test_defaults_for_a_new_user(user: User) -> None:
    everything = ok(user.api.get(f"{RULES}/"))
    ruleset = ok(user.api.get(f"{RULES}/global/"))
    assert everything == {"global": ruleset}
    assert set(ruleset) == {"override", "content", "room", "sender", "underride"}
    assert [r["rule_id"] for r in ruleset["override"]] == SPEC_OVERRIDE_ORDER
    assert [r["rule_id"] for r in ruleset["underride"]] == SPEC_UNDERRIDE_ORDER
    assert all(r["default"] for kind in ruleset.values() for r in kind)
    invite = ok(user.api.get(rule_url("override", ".m.rule.invite_for_me")))
    assert {"kind": "event_match", "key": "state_key", "pattern": user.user_id} in invite["conditions"]
    assert ok(user.api.get(rule_url("override", ".m.rule.master", "enabled"))) == {"enabled": False}
    assert ok(user.api.get(rule_url("underride", ".m.rule.message", "actions"))) == {"actions": ["notify"]}


def test_unknown_rules_scopes_and_kinds(user: User) -> None:
    error(user.api.get(rule_url("override", "nope")), 404, "M_NOT_FOUND")
    error(user.api.get(rule_url("override", "nope", "enabled")), 404, "M_NOT_FOUND")
    error(user.api.get(rule_url("override", "nope", "actions")), 404, "M_NOT_FOUND")
    # A default rule under the wrong kind does not exist either.
    error(user.api.get(rule_url("underride", ".m.rule.master")), 404, "M_NOT_FOUND")
    error(user.api.delete(rule_url("room", "!nope:x")), 404, "M_NOT_FOUND")
    error(user.api.put(rule_url("room", "!nope:x", "enabled"), json={"enabled": False}), 404, "M_NOT_FOUND")
    error(user.api.put(rule_url("room", "!nope:x", "actions"), json={"actions": []}), 404, "M_NOT_FOUND")
    # Outside the spec's paths: raw client, no schema to check against.
    with httpx.Client(base_url=str(user.api.base_url), headers={"Authorization": f"Bearer {user.access_token}"}) as raw:
        error(raw.get(rule_url("override", "x", scope="device")), 400, "M_INVALID_PARAM")
        error(raw.put(rule_url("override", "x", scope="device"), json={"actions": []}), 400, "M_INVALID_PARAM")
        error(raw.get(f"{RULES}/global/weird/x"), 400, "M_INVALID_PARAM")
        error(raw.put(f"{RULES}/global/weird/x", json={"actions": []}), 400, "M_INVALID_PARAM")
    error(httpx.get(f"{user.api.base_url}{RULES}/"), 401, "M_MISSING_TOKEN")


# --- writing ---------------------------------------------------------------------------


def test_create_read_update_delete(user: User) -> None:
    body = {"pattern": "cake*lie", "actions": ["notify"]}
    ok(put_rule(user, "content", "nocake", body))
    rule = ok(user.api.get(rule_url("content", "nocake")))
    assert rule == {"rule_id": "nocake", "default": False, "enabled": True, "actions": ["notify"], "pattern": "cake*lie"}
    assert ids(user, "content") == ["nocake"]
    # Updating keeps the place and changes the parameters.
    ok(put_rule(user, "content", "nocake", {"pattern": "cake", "actions": []}))
    assert ok(user.api.get(rule_url("content", "nocake")))["pattern"] == "cake"
    assert ok(user.api.get(rule_url("content", "nocake", "actions"))) == {"actions": []}
    ok(user.api.delete(rule_url("content", "nocake")))
    error(user.api.get(rule_url("content", "nocake")), 404, "M_NOT_FOUND")
    error(user.api.delete(rule_url("content", "nocake")), 404, "M_NOT_FOUND")


def test_room_sender_and_override_rule_shapes(user: User) -> None:
    room_id = "!abc:example.org"
    ok(put_rule(user, "room", room_id, {"actions": []}))
    ok(put_rule(user, "sender", "@spam:example.org", {"actions": ["dont_notify"]}))
    conditions = [
        {"kind": "event_match", "key": "content.body", "pattern": "beer"},
        {"kind": "room_member_count", "is": "<=10"},
    ]
    ok(put_rule(user, "override", "beer", {"conditions": conditions, "actions": ["notify", {"set_tweak": "sound", "value": "beeroclock.wav"}]}))
    ruleset = ok(user.api.get(f"{RULES}/global/"))
    assert ruleset["room"] == [{"rule_id": room_id, "default": False, "enabled": True, "actions": []}]
    assert ruleset["sender"][0]["rule_id"] == "@spam:example.org"
    assert ruleset["override"][0]["rule_id"] == ".m.rule.master"
    assert ruleset["override"][1] == {
        "rule_id": "beer",
        "default": False,
        "enabled": True,
        "conditions": conditions,
        "actions": ["notify", {"set_tweak": "sound", "value": "beeroclock.wav"}],
    }
    assert ruleset["override"][2]["rule_id"] == ".m.rule.suppress_notices"
    # An override rule without conditions is allowed (it matches everything).
    ok(put_rule(user, "underride", "all", {"actions": ["notify"]}))
    assert ok(user.api.get(rule_url("underride", "all")))["conditions"] == []
    assert ids(user, "underride")[0] == "all"


def test_before_and_after(user: User) -> None:
    def put(rule_id: str, **params: str) -> None:
        ok(put_rule(user, "content", rule_id, {"pattern": rule_id, "actions": ["notify"]}, **params))

    put("a")
    put("b")  # new rules without before/after become the most important
    assert own_ids(user, "content") == ["b", "a"]
    put("c", after="a")
    assert own_ids(user, "content") == ["b", "a", "c"]
    put("d", before="a")
    assert own_ids(user, "content") == ["b", "d", "a", "c"]
    put("e", after="b")
    assert own_ids(user, "content") == ["b", "e", "d", "a", "c"]
    # `before` wins when both are given.
    put("f", before="b", after="c")
    assert own_ids(user, "content") == ["f", "b", "e", "d", "a", "c"]
    # Moving an existing rule, and updating one in place.
    put("f", after="c")
    assert own_ids(user, "content") == ["b", "e", "d", "a", "c", "f"]
    put("d")
    assert own_ids(user, "content") == ["b", "e", "d", "a", "c", "f"]
    # Relative to a missing rule, to itself, to another kind's rule, or a default: 400.
    error(put_rule(user, "content", "g", {"pattern": "g", "actions": []}, before="missing"), 400, "M_UNKNOWN")
    error(put_rule(user, "content", "a", {"pattern": "a", "actions": []}, after="a"), 400, "M_UNKNOWN")
    ok(put_rule(user, "override", "o", {"actions": []}))
    error(put_rule(user, "content", "g", {"pattern": "g", "actions": []}, after="o"), 400, "M_UNKNOWN")
    error(put_rule(user, "override", "p", {"actions": []}, before=".m.rule.master"), 400, "M_UNKNOWN")
    assert own_ids(user, "content") == ["b", "e", "d", "a", "c", "f"]
    ok(user.api.delete(rule_url("content", "d")))
    put("h", before="a")
    assert own_ids(user, "content") == ["b", "e", "h", "a", "c", "f"]


def test_enabled_and_actions(user: User) -> None:
    # Server-default rules: enabled and actions can change, and come back in GETs.
    ok(user.api.put(rule_url("override", ".m.rule.master", "enabled"), json={"enabled": True}))
    assert ok(user.api.get(rule_url("override", ".m.rule.master", "enabled"))) == {"enabled": True}
    actions = ["notify", {"set_tweak": "highlight", "value": False}]
    ok(user.api.put(rule_url("underride", ".m.rule.message", "actions"), json={"actions": actions}))
    message = ok(user.api.get(rule_url("underride", ".m.rule.message")))
    assert message["actions"] == actions and message["enabled"] is True and message["default"] is True
    # Setting one attribute keeps the other.
    ok(user.api.put(rule_url("underride", ".m.rule.message", "enabled"), json={"enabled": False}))
    assert ok(user.api.get(rule_url("underride", ".m.rule.message")))["actions"] == actions
    ruleset = ok(user.api.get(f"{RULES}/global/"))
    assert ruleset["override"][0]["enabled"] is True
    # The user's own rules.
    ok(put_rule(user, "room", "!r:example.org", {"actions": []}))
    ok(user.api.put(rule_url("room", "!r:example.org", "enabled"), json={"enabled": False}))
    ok(user.api.put(rule_url("room", "!r:example.org", "actions"), json={"actions": ["notify"]}))
    assert ok(user.api.get(rule_url("room", "!r:example.org"))) == {
        "rule_id": "!r:example.org",
        "default": False,
        "enabled": False,
        "actions": ["notify"],
    }
    # Updating the rule keeps it disabled (only new rules start enabled).
    ok(put_rule(user, "room", "!r:example.org", {"actions": []}))
    assert ok(user.api.get(rule_url("room", "!r:example.org", "enabled"))) == {"enabled": False}


def test_reserved_ids_and_defaults_cannot_be_created_or_deleted(user: User) -> None:
    error(put_rule(user, "override", ".m.rule.master", {"actions": ["notify"]}), 400, "M_UNKNOWN")
    error(put_rule(user, "override", ".my.rule", {"actions": ["notify"]}), 400, "M_UNKNOWN")
    error(user.api.delete(rule_url("override", ".m.rule.master")), 400, "M_UNKNOWN")
    assert ".m.rule.master" in ids(user, "override")
    error(put_rule(user, "override", "a\\b", {"actions": []}), 400, "M_INVALID_PARAM")


@pytest.mark.parametrize(
    ("kind", "body", "errcode"),
    [
        ("override", {}, "M_MISSING_PARAM"),
        ("override", {"actions": "notify"}, "M_BAD_JSON"),
        ("override", {"actions": [1]}, "M_BAD_JSON"),
        ("override", {"actions": ["explode"]}, "M_INVALID_PARAM"),
        ("override", {"actions": [{"value": "x"}]}, "M_INVALID_PARAM"),
        ("override", {"actions": [{"set_tweak": 5}]}, "M_INVALID_PARAM"),
        ("override", {"actions": [], "conditions": {}}, "M_BAD_JSON"),
        ("override", {"actions": [], "conditions": ["x"]}, "M_BAD_JSON"),
        ("override", {"actions": [], "conditions": [{"key": "type"}]}, "M_BAD_JSON"),
        ("override", {"actions": [], "conditions": [{"kind": "event_match", "key": "type"}]}, "M_INVALID_PARAM"),
        ("override", {"actions": [], "conditions": [{"kind": "event_match", "key": 1, "pattern": "x"}]}, "M_INVALID_PARAM"),
        ("override", {"actions": [], "conditions": [{"kind": "event_property_is", "key": "a", "value": {}}]}, "M_INVALID_PARAM"),
        ("override", {"actions": [], "conditions": [{"kind": "event_property_is", "key": "a", "value": 1.5}]}, "M_INVALID_PARAM"),
        ("override", {"actions": [], "conditions": [{"kind": "room_member_count", "is": 2}]}, "M_INVALID_PARAM"),
        ("content", {"actions": []}, "M_MISSING_PARAM"),
        ("content", {"actions": [], "pattern": 5}, "M_BAD_JSON"),
        ("content", {"actions": [], "pattern": "x" * 513}, "M_INVALID_PARAM"),
        ("override", {"actions": [], "conditions": [{"kind": "event_match", "key": "a", "pattern": "?" * 513}]}, "M_INVALID_PARAM"),
    ],
)
def test_bad_bodies(user: User, kind: str, body: dict[str, Any], errcode: str) -> None:
    error(put_rule(user, kind, "bad", body), 400, errcode)
    error(user.api.get(rule_url(kind, "bad")), 404, "M_NOT_FOUND")


def test_bad_attribute_bodies_and_non_json(user: User) -> None:
    url = rule_url("override", ".m.rule.master", "enabled")
    error(user.api.put(url, json={"enabled": "true"}), 400, "M_BAD_JSON")
    error(user.api.put(url, json={}), 400, "M_MISSING_PARAM")
    error(user.api.put(url, content=b"[true]", headers={"content-type": "application/json"}), 400, "M_NOT_JSON")
    error(user.api.put(rule_url("override", ".m.rule.master", "actions"), json={"actions": {"a": 1}}), 400, "M_BAD_JSON")
    error(user.api.put(rule_url("override", ".m.rule.master", "actions"), json={}), 400, "M_MISSING_PARAM")
    error(user.api.put(rule_url("override", "x"), content=b"not json"), 400, "M_NOT_JSON")
    # Unknown condition kinds are stored (they just never match).
    ok(put_rule(user, "override", "future", {"actions": ["notify"], "conditions": [{"kind": "org.example.future"}]}))
    assert ok(user.api.get(rule_url("override", "future")))["conditions"] == [{"kind": "org.example.future"}]


def test_rules_are_per_user(new_user: Callable[..., User]) -> None:
    alice, bob = new_user(), new_user()
    ok(put_rule(alice, "room", "!r:example.org", {"actions": []}))
    ok(alice.api.put(rule_url("override", ".m.rule.master", "enabled"), json={"enabled": True}))
    assert ids(bob, "room") == []
    assert ok(bob.api.get(rule_url("override", ".m.rule.master", "enabled"))) == {"enabled": False}
    error(bob.api.delete(rule_url("room", "!r:example.org")), 404, "M_NOT_FOUND")


# --- sync ------------------------------------------------------------------------------


def test_push_rules_in_initial_and_incremental_sync(user: User) -> None:
    initial = sync(user)
    [content] = push_rules_in(initial)
    assert content == {"global": ok(user.api.get(f"{RULES}/global/"))}
    # Nothing changed: not repeated.
    quiet = sync(user, initial["next_batch"])
    assert push_rules_in(quiet) == []
    ok(put_rule(user, "content", "cake", {"pattern": "cake", "actions": ["notify"]}))
    changed = sync(user, quiet["next_batch"])
    [content] = push_rules_in(changed)
    assert [r["rule_id"] for r in content["global"]["content"]] == ["cake"]
    ok(user.api.put(rule_url("content", "cake", "enabled"), json={"enabled": False}))
    ok(user.api.delete(rule_url("content", "cake")))
    [content] = push_rules_in(sync(user, changed["next_batch"]))
    assert content["global"]["content"] == []
    # A new initial sync sees the current rules.
    [content] = push_rules_in(sync(user))
    assert content == {"global": ok(user.api.get(f"{RULES}/global/"))}


def test_a_change_wakes_a_waiting_sync(user: User) -> None:
    since = sync(user)["next_batch"]

    def change() -> None:
        time.sleep(0.5)
        ok(user.api.put(rule_url("override", ".m.rule.master", "enabled"), json={"enabled": True}))

    thread = threading.Thread(target=change)
    started = time.monotonic()
    thread.start()
    response = sync(user, since, timeout=10_000)
    thread.join()
    assert time.monotonic() - started < 8
    [content] = push_rules_in(response)
    assert content["global"]["override"][0] == {
        "rule_id": ".m.rule.master",
        "default": True,
        "enabled": True,
        "conditions": [],
        "actions": [],
    }


def test_filtered_out_push_rules(user: User) -> None:
    flt = json.dumps({"account_data": {"not_types": ["m.push_rules"]}})
    response = ok(user.api.get(f"{V3}/sync", params={"filter": flt}))
    assert push_rules_in(response) == []


def test_push_rules_as_account_data(user: User) -> None:
    url = f"{V3}/user/{quote(user.user_id)}/account_data/m.push_rules"
    assert ok(user.api.get(url)) == ok(user.api.get(f"{RULES}/"))
    error(user.api.put(url, json={"global": {}}), 400, "M_BAD_JSON")
    ok(put_rule(user, "sender", "@x:example.org", {"actions": []}))
    assert ok(user.api.get(url))["global"]["sender"][0]["rule_id"] == "@x:example.org"


async def test_matrix_nio_sees_push_rules(server: ServerProcess, user: User) -> None:
    client = AsyncClient(server.base_url, user.user_id)
    client.access_token, client.user_id, client.device_id = user.access_token, user.user_id, user.device_id
    try:
        first = await client.sync(timeout=0, full_state=True)
        assert isinstance(first, SyncResponse), first
        events = [e for e in first.account_data_events if isinstance(e, PushRulesEvent)]
        assert events, first.account_data_events
        master = events[0].global_rules.override[0]
        assert master.id == ".m.rule.master" and master.default and not master.enabled
        assert any(r.id == ".m.rule.message" for r in events[0].global_rules.underride)

        ok(put_rule(user, "room", "!muted:example.org", {"actions": []}))
        second = await client.sync(timeout=5000, since=first.next_batch)
        assert isinstance(second, SyncResponse), second
        events = [e for e in second.account_data_events if isinstance(e, PushRulesEvent)]
        assert [r.id for r in events[0].global_rules.room] == ["!muted:example.org"]
    finally:
        await client.close()
