"""Push: the rules that decide which events notify whom (rules.py, evaluator.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.push.evaluator import RuleSet
from homeserver.push.rules import client_ruleset, compile_rules
from storage.push_rules import PushRuleStore

if TYPE_CHECKING:
    from homeserver.homeserver import HomeServer

PUSH_RULES_TYPE = "m.push_rules"


def push_rules_content(user_id: str, rules: Any) -> dict[str, Any]:
    """The content of the user's `m.push_rules` account data event."""
    return {"global": client_ruleset(user_id, rules)}


def wire_push_rules(hs: HomeServer) -> PushRuleStore[RuleSet]:
    """The push rule store, publishing every change as `m.push_rules` account data (so
    the user's clients get it in their next /sync, spec "Push Rules: Events")."""
    store: PushRuleStore[RuleSet] = PushRuleStore(hs.db, compile_rules)

    async def publish(user_id: str) -> None:
        await hs.account_data.put(user_id, PUSH_RULES_TYPE, push_rules_content(user_id, await store.get(user_id)))

    store.listeners.append(publish)
    return store
