"""Helpers for building small rooms out of real signed events in tests.

Pure: no fixtures from tests/conftest.py are used.
"""

from __future__ import annotations

from typing import Any, Mapping

from homeserver.events import (
    ROOM_VERSIONS,
    build_event,
    check_auth,
    room_id_from_create_event_id,
    select_auth_event_ids,
    signing_key_from_seed,
)

#: The seed published in the spec's "Cryptographic Test Vectors".
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
KEY = signing_key_from_seed(SPEC_SEED, "1")

ALICE = "@alice:a.test"
BOB = "@bob:b.test"
CAROL = "@carol:c.test"
DAVE = "@dave:d.test"

State = dict[tuple[str, str], str]


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1]


class Room:
    """A room built event by event. ``state`` is the state at ``head``."""

    def __init__(
        self,
        version: str,
        creator: str = ALICE,
        create_content: Mapping[str, Any] | None = None,
        ts: int = 1_000,
    ) -> None:
        self.rv = ROOM_VERSIONS[version]
        self.events: dict[str, dict[str, Any]] = {}
        self.ts = ts
        content = {"room_version": version, **(create_content or {})}
        room_id = None if self.rv.room_id_is_create_event_id else "!room:" + server_of(creator)
        eid, pdu = build_event(
            self.rv,
            room_id=room_id,
            sender=creator,
            event_type="m.room.create",
            state_key="",
            content=content,
            prev_event_ids=[],
            auth_event_ids=[],
            depth=1,
            origin_server_ts=self.next_ts(),
            server_name=server_of(creator),
            signing_key=KEY,
        )
        self.room_id = room_id_from_create_event_id(eid) if room_id is None else room_id
        self.create_id = eid
        self.events[eid] = pdu
        self.state: State = {("m.room.create", ""): eid}
        self.head = [eid]
        self.depth = 1

    def next_ts(self) -> int:
        self.ts += 10
        return self.ts

    # -- building ---------------------------------------------------------

    def build(
        self,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        *,
        state: State | None = None,
        prev: list[str] | None = None,
        ts: int | None = None,
        extra_auth: list[str] | None = None,
        redacts: str | None = None,
        signers: list[str] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Build (but do not record) an event whose auth events are chosen
        from ``state`` (default: the room's current state)."""
        state = self.state if state is None else state
        auth = select_auth_event_ids(self.rv, event_type, state_key, sender, content, state)
        eid, pdu = build_event(
            self.rv,
            room_id=self.room_id,
            sender=sender,
            event_type=event_type,
            state_key=state_key,
            content=content,
            prev_event_ids=list(self.head if prev is None else prev),
            auth_event_ids=auth + (extra_auth or []),
            depth=self.depth + 1,
            origin_server_ts=self.next_ts() if ts is None else ts,
            server_name=server_of(sender),
            signing_key=KEY,
            redacts=redacts,
        )
        for signer in signers or []:
            # Co-sign (e.g. the authorising server of a restricted join).
            pdu["signatures"].setdefault(signer, {})["ed25519:1"] = pdu["signatures"][server_of(sender)]["ed25519:1"]
        return eid, pdu

    def auth_state(self, state: State | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        state = self.state if state is None else state
        return {k: self.events[v] for k, v in state.items()}

    def check(self, pdu: Mapping[str, Any], state: State | None = None) -> None:
        """check_auth against the state (create event included)."""
        check_auth(self.rv, pdu, self.auth_state(state))

    def add(self, eid: str, pdu: dict[str, Any], state: State | None = None) -> State:
        """Record an event; returns the state after it (for state events)."""
        self.events[eid] = pdu
        base = dict(self.state if state is None else state)
        if "state_key" in pdu:
            base[(pdu["type"], pdu["state_key"])] = eid
        return base

    def send(self, sender: str, event_type: str, content: Mapping[str, Any], state_key: str | None = None, **kw: Any) -> str:
        """Build, auth-check against the current state, and append linearly."""
        eid, pdu = self.build(sender, event_type, content, state_key, **kw)
        self.check(pdu)
        self.state = self.add(eid, pdu)
        self.head = [eid]
        self.depth += 1
        return eid

    def fork(self, state: State, head: list[str], sender: str, event_type: str, content: Mapping[str, Any],
             state_key: str | None = None, **kw: Any) -> tuple[str, State]:
        """Append an event on a branch described by (state, head); checked."""
        eid, pdu = self.build(sender, event_type, content, state_key, state=state, prev=head, **kw)
        self.check(pdu, state)
        return eid, self.add(eid, pdu, state)

    # -- common set-ups -----------------------------------------------------

    def join(self, user: str, **kw: Any) -> str:
        return self.send(user, "m.room.member", {"membership": "join"}, user, **kw)

    def setup_basic(self, users: Mapping[str, int] | None = None, join_rule: str = "public",
                    extra_pl: Mapping[str, Any] | None = None) -> None:
        """Creator joins, power levels (``users`` + creator 100 unless v12),
        join rules."""
        creator = self.events[self.create_id]["sender"]
        self.join(creator)
        pl_users = dict(users or {})
        if not self.rv.creators_have_infinite_power:
            pl_users.setdefault(creator, 100)
        content: dict[str, Any] = {
            "users": pl_users,
            "users_default": 0,
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 0,
            "events": {"m.room.power_levels": 100},
        }
        content.update(extra_pl or {})
        self.send(creator, "m.room.power_levels", content, "")
        self.send(creator, "m.room.join_rules", {"join_rule": join_rule}, "")
