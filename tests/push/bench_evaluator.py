"""Time the push rule evaluator: one message, 1,000 room members.

Not a test (pytest does not collect it): `.venv/bin/python -m tests.push.bench_evaluator`.
"""

from __future__ import annotations

import time

from homeserver.push.evaluator import PushEvent, actions_for
from homeserver.push.rules import DEFAULT_RULESET, compile_rules
from storage.push_rules import StoredPushRule, UserPushRules

MEMBERS = 1000
ROUNDS = 50


def main() -> None:
    event = {
        "type": "m.room.message",
        "room_id": "!room:example.org",
        "sender": "@sender:example.org",
        "content": {"msgtype": "m.text", "body": "hello there everyone, how is it going today"},
        "origin_server_ts": 1,
        "depth": 5,
        "prev_events": ["$p"],
        "auth_events": ["$a", "$b", "$c"],
        "hashes": {"sha256": "x"},
        "signatures": {"example.org": {"ed25519:a": "sig"}},
    }
    users = [(f"@user{i}:example.org", f"User {i}") for i in range(MEMBERS)]
    own = [
        compile_rules(
            UserPushRules(
                {
                    "room": (StoredPushRule("room", "!other:example.org", [], True),),
                    "content": (StoredPushRule("content", "c", ["notify"], True, pattern="cake*lie"),),
                }
            )
        )
        for _ in users
    ]
    for label, rulesets in (("default rules", [DEFAULT_RULESET] * MEMBERS), ("own rules each", own)):
        started = time.perf_counter()
        for _ in range(ROUNDS):
            push_event = PushEvent(event, member_count=MEMBERS, sender_power_level=0, notification_levels={})
            for (user_id, name), rules in zip(users, rulesets, strict=True):
                actions_for(rules, push_event, user_id, name)
        per_event = (time.perf_counter() - started) / ROUNDS
        print(f"{label}: {per_event * 1e3:.2f} ms per event for {MEMBERS} users, {per_event * 1e6 / MEMBERS:.2f} µs/user")


if __name__ == "__main__":
    main()
