"""Push rules: each user's own rules and their settings of the server-default rules.

The server-default rules themselves are code (`homeserver/push/rules.py`), not rows: a
user who never changed anything has no rows at all. Rows are turned into whatever the
caller evaluates (`compile`, injected, so this module stays free of push logic) and
cached in the process: the send path asks for every member of a room at once, and
users without rows all share one compiled value. Writes of this process invalidate
the cache; there is no other writer of these tables.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import msgspec
from sqlalchemy import delete, select, update

from storage.database import Database, upsert
from storage.schema import push_rule_defaults, push_rules

# Evaluation order of the kinds (spec: "Push Rules").
KINDS = ("override", "content", "room", "sender", "underride")

_CHUNK = 500  # users per IN (...) query: below every driver's parameter limit
_CACHE_MAX = 100_000
# Every rule is evaluated on the send path of each room the user is in; muting rooms
# one by one (an override rule each, as Element does) stays far below this.
MAX_RULES_PER_KIND = 1000


class StoredPushRule(msgspec.Struct, frozen=True):
    kind: str
    rule_id: str
    actions: list[Any]
    enabled: bool
    conditions: list[Any] | None = None  # override and underride
    pattern: str | None = None  # content


class DefaultRuleSetting(msgspec.Struct, frozen=True):
    """A user's change to a server-default rule; None is "as the default"."""

    enabled: bool | None = None
    actions: list[Any] | None = None


class UserPushRules(msgspec.Struct, frozen=True):
    # By kind, most important first.
    custom: Mapping[str, tuple[StoredPushRule, ...]] = msgspec.field(default_factory=dict)
    defaults: Mapping[str, DefaultRuleSetting] = msgspec.field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.custom and not self.defaults

    def rule(self, kind: str, rule_id: str) -> StoredPushRule | None:
        for rule in self.custom.get(kind, ()):
            if rule.rule_id == rule_id:
                return rule
        return None


NO_RULES = UserPushRules()


class TooManyRules(Exception):
    """The user already has the most rules of that kind the store allows."""


class RelativeRuleNotFound(Exception):
    """`before`/`after` names no rule of the user's of that kind."""

    def __init__(self, rule_id: str) -> None:
        super().__init__(rule_id)
        self.rule_id = rule_id


Compiled = TypeVar("Compiled")
Listener = Callable[[str], Awaitable[None]]


class PushRuleStore(Generic[Compiled]):
    def __init__(
        self,
        db: Database,
        compile: Callable[[UserPushRules], Compiled],
        max_rules_per_kind: int = MAX_RULES_PER_KIND,
    ) -> None:
        self.db = db
        self.max_rules_per_kind = max_rules_per_kind
        self._compile = compile
        self._shared_default = compile(NO_RULES)
        self._rows: dict[str, UserPushRules] = {}
        self._compiled: dict[str, Compiled] = {}
        # Bumped by every write: a read that raced a write does not fill the cache.
        self._generation = 0
        # Called with the user ID after each change (the m.push_rules account data).
        self.listeners: list[Listener] = []

    # --- reads ------------------------------------------------------------------------

    async def get(self, user_id: str) -> UserPushRules:
        return (await self._load([user_id]))[user_id]

    async def rules_for_users(self, user_ids: Iterable[str]) -> dict[str, Compiled]:
        """Compiled rules for each user; one query per 500 uncached users."""
        wanted = list(dict.fromkeys(user_ids))
        out: dict[str, Compiled] = {}
        missing: list[str] = []
        for user_id in wanted:
            compiled = self._compiled.get(user_id)
            if compiled is None:
                missing.append(user_id)
            else:
                out[user_id] = compiled
        if missing:
            generation = self._generation
            loaded = await self._load(missing)
            for user_id, rows in loaded.items():
                compiled = self._shared_default if rows.empty else self._compile(rows)
                out[user_id] = compiled
                if generation == self._generation:
                    self._remember(self._compiled, user_id, compiled)
        return out

    async def _load(self, user_ids: list[str]) -> dict[str, UserPushRules]:
        out: dict[str, UserPushRules] = {}
        missing = []
        for user_id in user_ids:
            rows = self._rows.get(user_id)
            if rows is None:
                missing.append(user_id)
            else:
                out[user_id] = rows
        if not missing:
            return out
        generation = self._generation
        custom: dict[str, dict[str, list[StoredPushRule]]] = {}
        settings: dict[str, dict[str, DefaultRuleSetting]] = {}
        async with self.db.read() as conn:
            for start in range(0, len(missing), _CHUNK):
                chunk = missing[start : start + _CHUNK]
                query = (
                    select(push_rules)
                    .where(push_rules.c.user_id.in_(chunk))
                    .order_by(push_rules.c.user_id, push_rules.c.kind, push_rules.c.position)
                )
                for row in await conn.execute(query):
                    custom.setdefault(row.user_id, {}).setdefault(row.kind, []).append(
                        StoredPushRule(
                            kind=row.kind,
                            rule_id=row.rule_id,
                            actions=json.loads(row.actions),
                            enabled=bool(row.enabled),
                            conditions=json.loads(row.conditions) if row.conditions is not None else None,
                            pattern=row.pattern,
                        )
                    )
                query = select(push_rule_defaults).where(push_rule_defaults.c.user_id.in_(chunk))
                for row in await conn.execute(query):
                    settings.setdefault(row.user_id, {})[row.rule_id] = DefaultRuleSetting(
                        enabled=None if row.enabled is None else bool(row.enabled),
                        actions=json.loads(row.actions) if row.actions is not None else None,
                    )
        for user_id in missing:
            if user_id in custom or user_id in settings:
                rows = UserPushRules(
                    {kind: tuple(rules) for kind, rules in custom.get(user_id, {}).items()},
                    settings.get(user_id, {}),
                )
            else:
                rows = NO_RULES
            out[user_id] = rows
            if generation == self._generation:
                self._remember(self._rows, user_id, rows)
        return out

    @staticmethod
    def _remember(cache: dict[str, Any], user_id: str, value: Any) -> None:
        if len(cache) >= _CACHE_MAX:
            cache.clear()  # crude, but bounded; refilling is one query per room
        cache[user_id] = value

    # --- writes -----------------------------------------------------------------------

    async def put_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        *,
        actions: list[Any],
        conditions: list[Any] | None,
        pattern: str | None,
        before: str | None,
        after: str | None,
    ) -> None:
        """Create or update one of the user's rules (spec: PUT /pushrules/global/...).

        `before` wins over `after`; without either a new rule becomes the most
        important of its kind and an existing one keeps its place. Raises
        `RelativeRuleNotFound` and `TooManyRules`."""
        async with self.db.write() as conn:
            query = (
                select(push_rules.c.rule_id, push_rules.c.enabled, push_rules.c.position)
                .where(push_rules.c.user_id == user_id, push_rules.c.kind == kind)
                .order_by(push_rules.c.position)
            )
            rows = list(await conn.execute(query))
            order = [row.rule_id for row in rows]
            existing = {row.rule_id: bool(row.enabled) for row in rows}
            positions = {row.rule_id: row.position for row in rows}
            if rule_id not in existing and len(existing) >= self.max_rules_per_kind:
                raise TooManyRules()
            values = {
                "user_id": user_id,
                "kind": kind,
                "rule_id": rule_id,
                "conditions": json.dumps(conditions) if conditions is not None else None,
                "pattern": pattern,
                "actions": json.dumps(actions),
                # New rules are enabled (spec); an update keeps the rule's state.
                "enabled": existing.get(rule_id, True),
            }
            key = ["user_id", "kind", "rule_id"]
            relative = before if before is not None else after
            if relative is None:
                # In place, or in front (positions may go below zero): no renumbering.
                if rule_id in positions:
                    position = positions[rule_id]
                else:
                    position = min(positions.values()) - 1 if positions else 0
                await upsert(conn, push_rules, {**values, "position": position}, key)
            else:
                if relative == rule_id or relative not in existing:
                    raise RelativeRuleNotFound(relative)
                if rule_id in existing:
                    order.remove(rule_id)
                index = order.index(relative)
                order.insert(index if before is not None else index + 1, rule_id)
                for position, rid in enumerate(order):
                    if rid == rule_id:
                        await upsert(conn, push_rules, {**values, "position": position}, key)
                    elif positions[rid] != position:
                        await conn.execute(
                            update(push_rules)
                            .where(
                                push_rules.c.user_id == user_id,
                                push_rules.c.kind == kind,
                                push_rules.c.rule_id == rid,
                            )
                            .values(position=position)
                        )
        await self._changed(user_id)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(push_rules).where(
                    push_rules.c.user_id == user_id, push_rules.c.kind == kind, push_rules.c.rule_id == rule_id
                )
            )
        if not result.rowcount:
            return False
        await self._changed(user_id)
        return True

    async def set_rule_attribute(self, user_id: str, kind: str, rule_id: str, **values: Any) -> bool:
        """Set `enabled` or `actions` of one of the user's own rules; False if absent."""
        if "actions" in values:
            values["actions"] = json.dumps(values["actions"])
        async with self.db.write() as conn:
            result = await conn.execute(
                update(push_rules)
                .where(push_rules.c.user_id == user_id, push_rules.c.kind == kind, push_rules.c.rule_id == rule_id)
                .values(**values)
            )
        if not result.rowcount:
            return False
        await self._changed(user_id)
        return True

    async def set_default_attribute(self, user_id: str, rule_id: str, **values: Any) -> None:
        """Set `enabled` or `actions` of a server-default rule for this user."""
        if "actions" in values:
            values["actions"] = json.dumps(values["actions"])
        async with self.db.write() as conn:
            current = (
                await conn.execute(
                    select(push_rule_defaults.c.enabled, push_rule_defaults.c.actions).where(
                        push_rule_defaults.c.user_id == user_id, push_rule_defaults.c.rule_id == rule_id
                    )
                )
            ).first()
            row = {"enabled": None, "actions": None}
            if current is not None:
                row = {"enabled": current.enabled, "actions": current.actions}
            row.update(values)
            await upsert(
                conn, push_rule_defaults, {"user_id": user_id, "rule_id": rule_id, **row}, ["user_id", "rule_id"]
            )
        await self._changed(user_id)

    def forget(self, user_id: str) -> None:
        """Drop the user's cached rules (their rows were changed behind this store)."""
        self._generation += 1
        self._rows.pop(user_id, None)
        self._compiled.pop(user_id, None)

    async def _changed(self, user_id: str) -> None:
        self.forget(user_id)
        for listener in self.listeners:
            await listener(user_id)
