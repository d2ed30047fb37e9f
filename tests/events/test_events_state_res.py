"""State resolution v2 (room v10) and v2.1 (room v12) on hand-built forks."""

from __future__ import annotations

import pytest

from homeserver.events import resolve_state_groups
from homeserver.events.state_res import (
    auth_difference,
    conflicted_state_subgraph,
    iterative_auth_checks,
    mainline_sort,
    reverse_topological_power_sort,
    separate,
)

from events_testlib import ALICE, BOB, CAROL, DAVE, Room

TOPIC = ("m.room.topic", "")
PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")


def bob_member():
    return ("m.room.member", BOB)


def pl_content(version: str, users: dict, **extra) -> dict:
    if version != "12":
        users = {ALICE: 100, **users}
    return {"users": users, "users_default": 0, "events_default": 0, "state_default": 50, "ban": 50,
            "kick": 50, "redact": 50, "invite": 0, "events": {"m.room.power_levels": 50}, **extra}


def setup(version: str) -> Room:
    """Alice (creator, 100 or infinite), Bob 50; PL events need 50; public."""
    room = Room(version)
    room.setup_basic({BOB: 50}, extra_pl={"events": {"m.room.power_levels": 50}})
    room.join(BOB)
    room.send(ALICE, "m.room.topic", {"topic": "base"}, "")
    return room


BOTH = ["10", "12"]


@pytest.mark.parametrize("version", BOTH)
def test_no_conflict_is_identity(version: str) -> None:
    room = setup(version)
    assert resolve_state_groups(room.rv, [room.state], room.events) == room.state
    assert resolve_state_groups(room.rv, [room.state, dict(room.state)], room.events) == room.state
    assert resolve_state_groups(room.rv, [], room.events) == {}


def test_separate() -> None:
    s1 = {("a", ""): "$1", ("b", ""): "$2", ("c", ""): "$3"}
    s2 = {("a", ""): "$1", ("b", ""): "$4"}
    unconflicted, conflicted = separate([s1, s2])
    assert unconflicted == {("a", ""): "$1"}
    # A key missing from one state set is conflicted too.
    assert conflicted == {("b", ""): {"$2", "$4"}, ("c", ""): {"$3"}}


@pytest.mark.parametrize("version", BOTH)
@pytest.mark.parametrize("bob_later", [True, False])
def test_conflicting_topics_resolved_by_mainline_then_timestamp(version: str, bob_later: bool) -> None:
    room = setup(version)
    s0, h0 = room.state, room.head
    a, sa = room.fork(s0, h0, ALICE, "m.room.topic", {"topic": "A"}, "", ts=5000 if not bob_later else 4000)
    b, sb = room.fork(s0, h0, BOB, "m.room.topic", {"topic": "B"}, "", ts=5000 if bob_later else 4000)
    resolved = resolve_state_groups(room.rv, [sa, sb], room.events)
    # Both cite the same power levels, so the later one is applied last and
    # wins, whatever the senders' power (Bob has less than Alice).
    assert resolved[TOPIC] == (b if bob_later else a)
    assert {k: v for k, v in resolved.items() if k != TOPIC} == {k: v for k, v in s0.items() if k != TOPIC}
    # The order of the state sets does not matter.
    assert resolve_state_groups(room.rv, [sb, sa], room.events) == resolved


@pytest.mark.parametrize("version", BOTH)
def test_ban_beats_concurrent_topic_from_banned_user(version: str) -> None:
    room = setup(version)
    s0, h0 = room.state, room.head
    t0 = s0[TOPIC]
    # Bob's topic even has the *earlier* timestamp.
    ban, sa = room.fork(s0, h0, ALICE, "m.room.member", {"membership": "ban"}, BOB, ts=5000)
    topic, sb = room.fork(s0, h0, BOB, "m.room.topic", {"topic": "bob was here"}, "", ts=4000)
    resolved = resolve_state_groups(room.rv, [sa, sb], room.events)
    assert resolved[bob_member()] == ban
    assert resolved[TOPIC] == t0  # Bob was banned by the time his topic is checked
    assert topic != t0


@pytest.mark.parametrize("version", BOTH)
def test_demotion_beats_concurrent_state_change(version: str) -> None:
    room = setup(version)
    s0, h0 = room.state, room.head
    demote, sa = room.fork(s0, h0, ALICE, "m.room.power_levels", pl_content(version, {BOB: 0}), "", ts=5000)
    topic, sb = room.fork(s0, h0, BOB, "m.room.topic", {"topic": "bob"}, "", ts=6000)
    resolved = resolve_state_groups(room.rv, [sa, sb], room.events)
    assert resolved[PL] == demote
    assert resolved[TOPIC] == s0[TOPIC]  # Bob (now 0) may not set a topic (state_default 50)
    assert topic


@pytest.mark.parametrize("version", BOTH)
def test_conflicting_power_levels_ordered_by_sender_power(version: str) -> None:
    room = setup(version)
    s0, h0 = room.state, room.head
    # Alice (higher power) and Bob (50) both change the power levels. Bob's
    # change is valid on top of Alice's, so the power ordering (Alice's
    # first, Bob's applied last) makes Bob's the result, even though Bob's has
    # the earlier timestamp and would come first in a timestamp ordering.
    pl_a, sa = room.fork(s0, h0, ALICE, "m.room.power_levels", pl_content(version, {BOB: 50, DAVE: 10}), "", ts=9000)
    pl_b, sb = room.fork(s0, h0, BOB, "m.room.power_levels", pl_content(version, {BOB: 50, CAROL: 50}), "", ts=3000)
    resolved = resolve_state_groups(room.rv, [sa, sb], room.events)
    assert resolved[PL] == pl_b
    # And when Bob's change is not valid on top of Alice's (it would undo a
    # change above his level), Alice's stands.
    pl_a2, sa2 = room.fork(s0, h0, ALICE, "m.room.power_levels",
                           pl_content(version, {BOB: 50}, state_default=60), "", ts=9000)
    resolved2 = resolve_state_groups(room.rv, [sa2, sb], room.events)
    assert resolved2[PL] == pl_a2
    assert pl_a


@pytest.mark.parametrize("version", BOTH)
def test_conflicting_join_rules_and_membership(version: str) -> None:
    room = setup(version)
    s0, h0 = room.state, room.head
    # Branch A: the room goes invite-only. Branch B: Carol joins (was public).
    jr, sa = room.fork(s0, h0, ALICE, "m.room.join_rules", {"join_rule": "invite"}, "", ts=5000)
    carol, sb = room.fork(s0, h0, CAROL, "m.room.member", {"membership": "join"}, CAROL, ts=6000)
    resolved = resolve_state_groups(room.rv, [sa, sb], room.events)
    assert resolved[JR] == jr
    # Carol's join is checked against the resolved (invite-only) join rules.
    assert ("m.room.member", CAROL) not in resolved
    assert carol


def _v12_base_state_fork(version: str):
    """Bob changes the power levels concurrently with Alice banning him; the
    ban is in *both* state sets (unconflicted), the power levels conflict."""
    room = setup(version)
    s0, h0 = room.state, room.head
    pl_b, sb = room.fork(s0, h0, BOB, "m.room.power_levels", pl_content(version, {BOB: 50, CAROL: 50}), "")
    ban, sa = room.fork(s0, h0, ALICE, "m.room.member", {"membership": "ban"}, BOB)
    s2 = {**sb, bob_member(): ban}
    return room, s0, sa, s2, pl_b, ban


def test_v10_iterative_auth_starts_from_unconflicted_state() -> None:
    room, s0, s1, s2, pl_b, ban = _v12_base_state_fork("10")
    resolved = resolve_state_groups(room.rv, [s1, s2], room.events)
    # v2: the unconflicted ban is in the base state, so Bob's PL change fails.
    assert resolved[PL] == s0[PL]
    assert resolved[bob_member()] == ban


def test_v12_iterative_auth_starts_from_empty_state() -> None:
    room, s0, s1, s2, pl_b, ban = _v12_base_state_fork("12")
    resolved = resolve_state_groups(room.rv, [s1, s2], room.events)
    # v2.1: the base is empty; Bob's membership comes from the resolved
    # conflicted subgraph (his join), so his PL change applies. The
    # unconflicted ban is still restored at the end.
    assert resolved[PL] == pl_b
    assert resolved[bob_member()] == ban


def test_auth_difference_and_conflicted_subgraph() -> None:
    room, s0, s1, s2, pl_b, ban = _v12_base_state_fork("12")
    pl0, jr, bob_join = s0[PL], s0[JR], s0[bob_member()]
    assert auth_difference(room.rv, [s1, s2], room.events) == {pl_b}
    # Paths pl_b -> pl0, pl_b -> bob_join -> pl0 and bob_join -> join rules -> pl0;
    # older events (the create, Alice's join) lead to no conflicted event.
    assert conflicted_state_subgraph(room.rv, {pl0, pl_b}, room.events) == {pl0, pl_b, bob_join, jr}
    assert conflicted_state_subgraph(room.rv, {pl_b}, room.events) == {pl_b}


def test_reverse_topological_power_sort() -> None:
    room = setup("10")
    s0, h0 = room.state, room.head
    pl0, jr, bob_join = s0[PL], s0[JR], s0[bob_member()]
    # Auth order beats power: Bob's join (power 50) precedes what depends on it.
    pl_b, _ = room.fork(s0, h0, BOB, "m.room.power_levels", pl_content("10", {BOB: 50, CAROL: 1}), "")
    assert reverse_topological_power_sort(room.rv, {pl_b, bob_join, jr, pl0}, room.events) == [pl0, jr, bob_join, pl_b]
    # Independent events: higher power first, then earlier timestamp, then ID.
    a_late, _ = room.fork(s0, h0, ALICE, "m.room.topic", {"topic": "1"}, "", ts=9000)
    b_early, _ = room.fork(s0, h0, BOB, "m.room.topic", {"topic": "2"}, "", ts=1)
    a_early, _ = room.fork(s0, h0, ALICE, "m.room.topic", {"topic": "3"}, "", ts=8000)
    assert reverse_topological_power_sort(room.rv, {a_late, b_early, a_early}, room.events) == [a_early, a_late, b_early]
    same1, _ = room.fork(s0, h0, ALICE, "m.room.name", {"name": "1"}, "", ts=7000)
    same2, _ = room.fork(s0, h0, ALICE, "m.room.name", {"name": "2"}, "", ts=7000)
    assert reverse_topological_power_sort(room.rv, {same1, same2}, room.events) == sorted([same1, same2])


def test_reverse_topological_power_sort_v12_creator_infinite() -> None:
    room = Room("12")
    room.setup_basic({BOB: 100})
    room.join(BOB)
    s0, h0 = room.state, room.head
    # Bob has 100, Alice (creator) infinite: Alice first despite later ts.
    alice, _ = room.fork(s0, h0, ALICE, "m.room.topic", {"topic": "a"}, "", ts=9000)
    bob, _ = room.fork(s0, h0, BOB, "m.room.topic", {"topic": "b"}, "", ts=1)
    assert reverse_topological_power_sort(room.rv, {alice, bob}, room.events) == [alice, bob]


def test_mainline_sort() -> None:
    room = setup("10")
    pl0 = room.state[PL]
    m1 = room.send(ALICE, "m.room.topic", {"topic": "1"}, "", ts=50_000)
    pl1 = room.send(ALICE, "m.room.power_levels", pl_content("10", {BOB: 50, CAROL: 1}), "")
    m2 = room.send(ALICE, "m.room.topic", {"topic": "2"}, "", ts=40_000)
    pl2 = room.send(ALICE, "m.room.power_levels", pl_content("10", {BOB: 50, CAROL: 2}), "")
    m3 = room.send(ALICE, "m.room.topic", {"topic": "3"}, "", ts=30_000)
    alice_join = room.events[pl0]["auth_events"]
    first_join = [e for e in alice_join if room.events[e]["type"] == "m.room.member"][0]
    # Based on pl2: events based on older power levels sort first regardless
    # of timestamps; an event citing no power levels at all sorts before all.
    assert mainline_sort({m3, m2, m1, first_join}, pl2, room.events) == [first_join, m1, m2, m3]
    # Based on pl1, m3 (via pl2, which is not on pl1's mainline) meets it at pl1 like m2.
    order = mainline_sort({m3, m2, m1}, pl1, room.events)
    assert order == [m1, m3, m2]  # m2 and m3 tie on position; m3 has the earlier ts
    # No power levels: only timestamps.
    assert mainline_sort({m1, m2, m3}, None, room.events) == [m3, m2, m1]


def test_iterative_auth_checks_ignore_rejected_auth_events() -> None:
    room = setup("10")
    topic, _ = room.fork(room.state, room.head, BOB, "m.room.topic", {"topic": "x"}, "")
    base = {k: v for k, v in room.state.items() if k != bob_member()}
    # Bob's membership comes from the topic's own auth events...
    assert iterative_auth_checks(room.rv, [topic], base, room.events)[TOPIC] == topic
    # ...unless that auth event was rejected.
    bob_join = room.state[bob_member()]
    out = iterative_auth_checks(room.rv, [topic], base, room.events, rejected_event_ids={bob_join})
    assert out[TOPIC] == room.state[TOPIC]
