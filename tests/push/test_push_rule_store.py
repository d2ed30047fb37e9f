"""The push rule store on a real database: one query per table for a whole room's
members, the shared default rule set, and invalidation by writes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from homeserver.push.evaluator import PushEvent, RuleSet, actions_for
from homeserver.push.rules import DEFAULT_RULESET, compile_rules
from storage.database import Database
from storage.migrations import migrate
from storage.push_rules import PushRuleStore, RelativeRuleNotFound, TooManyRules
from tests.server import POSTGRES_ENV, fresh_postgres_database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    if os.environ.get(POSTGRES_ENV):
        url = fresh_postgres_database(os.environ[POSTGRES_ENV])
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'push.db'}"
    database = Database.open(url)
    await migrate(database)
    yield database
    await database.close()


class QueryCounter:
    def __init__(self, db: Database) -> None:
        self.selects = 0
        event.listen(db.sync_engine, "before_cursor_execute", self._count)

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            self.selects += 1


def message(room_id: str = "!r:x") -> PushEvent:
    content = {"msgtype": "m.text", "body": "hi"}
    return PushEvent(
        {"type": "m.room.message", "room_id": room_id, "sender": "@s:x", "content": content},
        member_count=1000,
        sender_power_level=0,
        notification_levels={},
    )


async def test_a_thousand_members_in_a_few_queries(db: Database) -> None:
    store: PushRuleStore[RuleSet] = PushRuleStore(db, compile_rules)
    users = [f"@u{i}:x" for i in range(1000)]
    await store.put_rule("@u7:x", "room", "!r:x", actions=[], conditions=None, pattern=None, before=None, after=None)
    counter = QueryCounter(db)
    rules = await store.rules_for_users(users)
    # Two tables, 500 users per query.
    assert counter.selects == 4
    assert set(rules) == set(users)
    assert all(rules[u] is DEFAULT_RULESET for u in users if u != "@u7:x")
    assert actions_for(rules["@u7:x"], message(), "@u7:x", None) == []
    assert actions_for(rules["@u8:x"], message(), "@u8:x", None) == ["notify"]
    # Cached: no queries at all the next time.
    again = await store.rules_for_users(users)
    assert counter.selects == 4
    assert again["@u7:x"] is rules["@u7:x"]


async def test_writes_invalidate_and_notify(db: Database) -> None:
    store: PushRuleStore[RuleSet] = PushRuleStore(db, compile_rules)
    changed: list[str] = []

    async def listener(user_id: str) -> None:
        changed.append(user_id)

    store.listeners.append(listener)
    before = (await store.rules_for_users(["@a:x"]))["@a:x"]
    assert before is DEFAULT_RULESET
    await store.set_default_attribute("@a:x", ".m.rule.master", enabled=True)
    muted = (await store.rules_for_users(["@a:x"]))["@a:x"]
    assert actions_for(muted, message(), "@a:x", None) == []
    await store.set_default_attribute("@a:x", ".m.rule.master", actions=["notify"])
    rows = await store.get("@a:x")
    assert rows.defaults[".m.rule.master"].enabled is True
    assert rows.defaults[".m.rule.master"].actions == ["notify"]
    await store.set_default_attribute("@a:x", ".m.rule.master", enabled=False)
    await store.put_rule("@a:x", "sender", "@s:x", actions=[], conditions=None, pattern=None, before=None, after=None)
    assert actions_for((await store.rules_for_users(["@a:x"]))["@a:x"], message(), "@a:x", None) == []
    assert await store.delete_rule("@a:x", "sender", "@s:x")
    assert not await store.delete_rule("@a:x", "sender", "@s:x")
    assert actions_for((await store.rules_for_users(["@a:x"]))["@a:x"], message(), "@a:x", None) == ["notify"]
    assert not await store.set_rule_attribute("@a:x", "sender", "@s:x", enabled=False)
    with pytest.raises(RelativeRuleNotFound):
        await store.put_rule("@a:x", "room", "!r:x", actions=[], conditions=None, pattern=None, before="nope", after=None)
    assert changed == ["@a:x"] * 5
    # A fresh store (another start of the server) reads the same rules back.
    other: PushRuleStore[RuleSet] = PushRuleStore(db, compile_rules)
    assert (await other.get("@a:x")) == (await store.get("@a:x"))


async def test_order_and_the_limit_per_kind(db: Database) -> None:
    store: PushRuleStore[RuleSet] = PushRuleStore(db, compile_rules, max_rules_per_kind=4)

    async def put(rule_id: str, **where: str) -> None:
        relative = {"before": where.get("before"), "after": where.get("after")}
        await store.put_rule("@a:x", "content", rule_id, actions=[], conditions=None, pattern=rule_id, **relative)

    for rule_id in ("a", "b", "c"):
        await put(rule_id)  # each new one in front
    await put("d", after="b")
    rows = await store.get("@a:x")
    assert [r.rule_id for r in rows.custom["content"]] == ["c", "b", "d", "a"]
    with pytest.raises(TooManyRules):
        await put("e")
    await put("a", before="c")  # moving and updating is still allowed
    await put("b")
    rows = await store.get("@a:x")
    assert [r.rule_id for r in rows.custom["content"]] == ["a", "c", "b", "d"]
    # The same order from the database, for a fresh store.
    fresh: PushRuleStore[RuleSet] = PushRuleStore(db, compile_rules)
    assert [r.rule_id for r in (await fresh.get("@a:x")).custom["content"]] == ["a", "c", "b", "d"]
