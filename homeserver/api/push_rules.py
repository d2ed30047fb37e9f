"""Push rules (spec: Client-Server API, "Push Rules: API").

Rules live in `hs.push_rules` (storage/push_rules.py); the server-default rules and the
shape clients see come from homeserver/push/rules.py. Every change is also published
as the user's `m.push_rules` account data by the store's listener.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homeserver.auth import require_user
from homeserver.errors import MatrixError, invalid_param, missing_param, not_found
from homeserver.http import Body, json_response, read_json, read_model
from homeserver.push.rules import client_ruleset, default_rule, find_rule
from storage.push_rules import (
    KINDS,
    RelativeRuleNotFound,
    TooManyRules,
)

MAX_RULE_ID_BYTES = 255
# Globs are matched in O(value × pattern) against bodies of up to 64 KiB, on everyone's
# send path: keep patterns to what keywords and IDs need.
MAX_PATTERN_LENGTH = 512
MAX_ACTIONS = 50
MAX_CONDITIONS = 50
# Action strings a rule may hold: `notify`, and the historical ones the spec says to
# accept and ignore.
ACTION_STRINGS = frozenset({"notify", "dont_notify", "coalesce"})


class EnabledBody(Body):
    enabled: bool


def _unknown(error: str) -> MatrixError:
    # The spec's example for a rejected PUT is M_UNKNOWN (as Synapse answers).
    return MatrixError(400, "M_UNKNOWN", error)


def _target(request: Request) -> tuple[str, str]:
    """(kind, rule_id) from the path, after checking scope and kind."""
    params = request.path_params
    if params["scope"] != "global":
        raise invalid_param("The only push rule scope is 'global'")
    kind = params["kind"]
    if kind not in KINDS:
        raise invalid_param(f"Unknown push rule kind '{kind}'")
    rule_id = params["rule_id"]
    if not rule_id or len(rule_id.encode()) > MAX_RULE_ID_BYTES:
        raise invalid_param("Invalid rule ID")
    return kind, rule_id


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool)) or (isinstance(value, int) and -(2**53) < value < 2**53)


def validate_actions(actions: Any) -> list[Any]:
    if not isinstance(actions, list):
        raise MatrixError(400, "M_BAD_JSON", "'actions' must be an array")
    if len(actions) > MAX_ACTIONS:
        raise invalid_param("Too many actions")
    for action in actions:
        if isinstance(action, str):
            if action not in ACTION_STRINGS:
                raise invalid_param(f"Unrecognised action '{action}'")
        elif isinstance(action, dict):
            if not isinstance(action.get("set_tweak"), str) or not action["set_tweak"]:
                raise invalid_param("An action object must have a 'set_tweak' string")
        else:
            raise MatrixError(400, "M_BAD_JSON", "Each action must be a string or an object")
    return actions


def validate_conditions(conditions: Any) -> list[Any]:
    """Check the parameters of the condition kinds the spec defines; unknown kinds are
    kept (they never match, as the spec says)."""
    if not isinstance(conditions, list):
        raise MatrixError(400, "M_BAD_JSON", "'conditions' must be an array")
    if len(conditions) > MAX_CONDITIONS:
        raise invalid_param("Too many conditions")
    for condition in conditions:
        if not isinstance(condition, Mapping) or not isinstance(condition.get("kind"), str):
            raise MatrixError(400, "M_BAD_JSON", "Each condition must be an object with a 'kind' string")
        kind = condition["kind"]
        key = condition.get("key")
        keyed = ("event_match", "event_property_is", "event_property_contains", "sender_notification_permission")
        if kind in keyed and (not isinstance(key, str) or not key):
            raise invalid_param(f"A {kind} condition needs a 'key' string")
        if kind == "event_match":
            _check_pattern(condition.get("pattern"), "An event_match condition needs a 'pattern' string")
        if kind in ("event_property_is", "event_property_contains") and not _scalar(condition.get("value", {})):
            raise invalid_param(f"A {kind} condition needs a string, integer, boolean or null 'value'")
        if kind == "room_member_count" and not isinstance(condition.get("is"), str):
            raise invalid_param("A room_member_count condition needs an 'is' string")
    return conditions


def _check_pattern(pattern: Any, error: str) -> None:
    if not isinstance(pattern, str):
        raise invalid_param(error)
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise invalid_param(f"Patterns are limited to {MAX_PATTERN_LENGTH} characters")


# --- handlers ---------------------------------------------------------------------------


async def get_all(request: Request) -> Response:
    requester = await require_user(request)
    rules = await request.app.state.hs.push_rules.get(requester.user_id)
    return json_response({"global": client_ruleset(requester.user_id, rules)})


async def get_global(request: Request) -> Response:
    requester = await require_user(request)
    rules = await request.app.state.hs.push_rules.get(requester.user_id)
    return json_response(client_ruleset(requester.user_id, rules))


async def _rule(request: Request) -> tuple[str, str, str, dict[str, Any]]:
    """(user_id, kind, rule_id, the rule as clients see it), or 404."""
    requester = await require_user(request)
    kind, rule_id = _target(request)
    rules = await request.app.state.hs.push_rules.get(requester.user_id)
    rule = find_rule(requester.user_id, rules, kind, rule_id)
    if rule is None:
        raise not_found("The push rule was not found.")
    return requester.user_id, kind, rule_id, rule


async def get_rule(request: Request) -> Response:
    *_, rule = await _rule(request)
    return json_response(rule)


async def put_rule(request: Request) -> Response:
    requester = await require_user(request)
    kind, rule_id = _target(request)
    if rule_id.startswith("."):
        raise _unknown("Rule IDs starting with '.' are reserved for server-default rules")
    if "/" in rule_id or "\\" in rule_id:
        raise invalid_param("Rule IDs may not contain slashes or backslashes")
    body = await read_json(request)
    if "actions" not in body:
        raise missing_param("Missing parameter: actions")
    actions = validate_actions(body["actions"])
    conditions: list[Any] | None = None
    pattern: str | None = None
    if kind in ("override", "underride"):
        conditions = validate_conditions(body.get("conditions", []))
    elif kind == "content":
        if "pattern" not in body:
            raise missing_param("Content rules need a 'pattern'")
        pattern = body["pattern"]
        if not isinstance(pattern, str):
            raise MatrixError(400, "M_BAD_JSON", "'pattern' must be a string")
        _check_pattern(pattern, "'pattern' must be a string")
    before = request.query_params.get("before")
    after = request.query_params.get("after")
    for relative in (before, after):
        if relative is not None and relative.startswith("."):
            raise _unknown("Rules cannot be placed relative to a server-default rule")
    try:
        await request.app.state.hs.push_rules.put_rule(
            requester.user_id,
            kind,
            rule_id,
            actions=actions,
            conditions=conditions,
            pattern=pattern,
            before=before,
            after=after,
        )
    except RelativeRuleNotFound as exc:
        raise _unknown(f"before/after rule not found: {exc.rule_id}") from None
    except TooManyRules:
        limit = request.app.state.hs.push_rules.max_rules_per_kind
        raise _unknown(f"At most {limit} push rules of each kind") from None
    return json_response({})


async def delete_rule(request: Request) -> Response:
    requester = await require_user(request)
    kind, rule_id = _target(request)
    if default_rule(kind, rule_id) is not None:
        raise _unknown("Server-default rules cannot be deleted (disable them instead)")
    if not await request.app.state.hs.push_rules.delete_rule(requester.user_id, kind, rule_id):
        raise not_found("The push rule was not found.")
    return json_response({})


async def get_enabled(request: Request) -> Response:
    *_, rule = await _rule(request)
    return json_response({"enabled": rule["enabled"]})


async def get_actions(request: Request) -> Response:
    *_, rule = await _rule(request)
    return json_response({"actions": rule["actions"]})


async def put_enabled(request: Request) -> Response:
    requester = await require_user(request)
    kind, rule_id = _target(request)
    body = await read_model(request, EnabledBody)
    await _set_attribute(request, requester.user_id, kind, rule_id, enabled=body.enabled)
    return json_response({})


async def put_actions(request: Request) -> Response:
    requester = await require_user(request)
    kind, rule_id = _target(request)
    body = await read_json(request)
    if "actions" not in body:
        raise missing_param("Missing parameter: actions")
    await _set_attribute(request, requester.user_id, kind, rule_id, actions=validate_actions(body["actions"]))
    return json_response({})


async def _set_attribute(request: Request, user_id: str, kind: str, rule_id: str, **values: Any) -> None:
    store = request.app.state.hs.push_rules
    if default_rule(kind, rule_id) is not None:
        await store.set_default_attribute(user_id, rule_id, **values)
    elif not await store.set_rule_attribute(user_id, kind, rule_id, **values):
        raise not_found("The push rule was not found.")
