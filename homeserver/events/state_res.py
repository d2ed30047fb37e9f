"""State resolution v2 (rooms v2-v11) and v2.1 (room v12).

``resolve_state_groups`` follows the room version spec's "Algorithm" section
step by step; the helpers below are named after the spec's definitions.
"""

from __future__ import annotations

import heapq
import math
from typing import Any, Collection, Iterable, Mapping, Sequence

from .auth import AuthError, check_auth
from .builder import auth_event_types
from .hashing import create_event_id_from_room_id
from .power_levels import CREATE_KEY, POWER_LEVELS_KEY, PowerLevel, user_power_level
from .room_versions import RoomVersion, StateResVersion

StateKey = tuple[str, str]
EventMap = Mapping[str, Mapping[str, Any]]


# --- graph helpers -----------------------------------------------------------


def auth_event_ids(room_version: RoomVersion, event: Mapping[str, Any]) -> list[str]:
    """The event's ``auth_events`` plus, in v12, the create event its room ID names.

    v12 stops citing the create event because the room ID implies it; we put
    the implied edge back so that auth chains still reach the start of the
    room and auth checks during resolution can find the create event (this is
    what Synapse does too).
    """
    ids = [a for a in event.get("auth_events", ()) if isinstance(a, str)]
    if room_version.room_id_is_create_event_id and event.get("type") != "m.room.create":
        room_id = event.get("room_id")
        if isinstance(room_id, str) and room_id.startswith("!"):
            create_id = create_event_id_from_room_id(room_id)
            if create_id not in ids:
                ids.append(create_id)
    return ids


def _closure(room_version: RoomVersion, start: Iterable[str], event_map: EventMap) -> set[str]:
    """``start`` plus every event reachable from it through auth events."""
    seen: set[str] = set()
    stack = [e for e in start if e in event_map]
    while stack:
        eid = stack.pop()
        if eid in seen:
            continue
        seen.add(eid)
        for aid in auth_event_ids(room_version, event_map[eid]):
            if aid in event_map and aid not in seen:
                stack.append(aid)
    return seen


def _is_power_event(event: Mapping[str, Any]) -> bool:
    """Spec "Power events": events that can take abilities away."""
    event_type, state_key = event.get("type"), event.get("state_key")
    if event_type in ("m.room.power_levels", "m.room.join_rules"):
        # Only the real PL / join rules state (state_key "") can; this matches
        # Synapse and Ruma.
        return state_key == ""
    if event_type == "m.room.member" and isinstance(state_key, str):
        content = event.get("content")
        membership = content.get("membership") if isinstance(content, Mapping) else None
        return membership in ("leave", "ban") and event.get("sender") != state_key
    return False


def _ts(event: Mapping[str, Any]) -> int:
    ts = event.get("origin_server_ts")
    return ts if type(ts) is int else 0


# --- definitions -------------------------------------------------------------


def separate(
    state_sets: Sequence[Mapping[StateKey, str]],
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Split into the *unconflicted state map* and the *conflicted state set*
    (grouped by key). A key missing from some state set is conflicted."""
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    keys: set[StateKey] = set()
    for state in state_sets:
        keys.update(state)
    for key in keys:
        values = {state.get(key) for state in state_sets}
        if len(values) == 1 and None not in values:
            unconflicted[key] = values.pop()  # type: ignore[assignment]
        else:
            conflicted[key] = {v for v in values if v is not None}
    return unconflicted, conflicted


def auth_difference(
    room_version: RoomVersion, state_sets: Sequence[Mapping[StateKey, str]], event_map: EventMap
) -> set[str]:
    """Union minus intersection of the state sets' full auth chains.

    Each state set's chain includes the state events themselves (as Synapse
    computes it): otherwise an unconflicted event that nothing else cites would
    land in the difference for no reason.
    """
    chains = [_closure(room_version, state.values(), event_map) for state in state_sets]
    if not chains:
        return set()
    common = set(chains[0]).intersection(*chains[1:])
    return set().union(*chains) - common


def conflicted_state_subgraph(
    room_version: RoomVersion, conflicted_ids: Collection[str], event_map: EventMap
) -> set[str]:
    """v2.1: every event on an auth-events path between two conflicted events.

    An event qualifies if it is reachable from a conflicted event *and* a
    conflicted event is reachable from it (endpoints included).
    """
    conflicted = set(conflicted_ids)
    below = _closure(room_version, conflicted, event_map)  # reachable from a conflicted event
    reaches: dict[str, bool] = {}
    for root in below:
        if root in reaches:
            continue
        # Iterative post-order DFS: a node reaches the conflicted set if it is
        # in it or one of its auth events reaches it.
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            eid, expanded = stack.pop()
            if eid in reaches:
                continue
            parents = [a for a in auth_event_ids(room_version, event_map[eid]) if a in event_map]
            if not expanded:
                stack.append((eid, True))
                stack.extend((a, False) for a in parents if a not in reaches)
            else:
                reaches[eid] = eid in conflicted or any(reaches.get(a, False) for a in parents)
    return {eid for eid in below if reaches.get(eid)}


def _sender_power(room_version: RoomVersion, event: Mapping[str, Any], event_map: EventMap) -> PowerLevel:
    """The sender's level "when looking at their respective auth_events"."""
    create = pl = None
    for aid in auth_event_ids(room_version, event):
        aev = event_map.get(aid)
        if aev is None:
            continue
        key = (aev.get("type"), aev.get("state_key"))
        if key == CREATE_KEY:
            create = aev
        elif key == POWER_LEVELS_KEY:
            pl = aev
    sender = event.get("sender")
    if not isinstance(sender, str):
        return 0
    return user_power_level(room_version, sender, create, pl)


def reverse_topological_power_sort(
    room_version: RoomVersion, event_ids: Collection[str], event_map: EventMap
) -> list[str]:
    """Kahn's algorithm over the auth DAG restricted to ``event_ids``, always
    taking the candidate with the highest sender power, then the lowest
    ``origin_server_ts``, then the lowest event ID. Earliest event first.

    Ordering edges follow auth paths even through events outside the set, so
    the result is a topological order of the induced partial order.
    """
    nodes = set(event_ids)
    # below[x] = the nearest members of `nodes` reachable from x via auth events.
    below: dict[str, frozenset[str]] = {}

    def nearest(root: str) -> frozenset[str]:
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            eid, expanded = stack.pop()
            if eid in below:
                continue
            parents = [a for a in auth_event_ids(room_version, event_map[eid]) if a in event_map]
            if not expanded:
                stack.append((eid, True))
                stack.extend((a, False) for a in parents if a not in nodes and a not in below)
            else:
                acc: set[str] = set()
                for a in parents:
                    if a in nodes:
                        acc.add(a)
                    else:
                        acc |= below[a]
                below[eid] = frozenset(acc)
        return below[root]

    deps = {n: set(nearest(n)) for n in nodes}
    dependants: dict[str, set[str]] = {n: set() for n in nodes}
    for n, ds in deps.items():
        for d in ds:
            dependants[d].add(n)

    def key(eid: str) -> tuple[float, int, str]:
        ev = event_map[eid]
        return (-_sender_power(room_version, ev, event_map), _ts(ev), eid)

    heap = [(key(n), n) for n, ds in deps.items() if not ds]
    heapq.heapify(heap)
    out: list[str] = []
    while heap:
        _, n = heapq.heappop(heap)
        out.append(n)
        for child in dependants[n]:
            deps[child].discard(n)
            if not deps[child]:
                heapq.heappush(heap, (key(child), child))
    return out


def _power_levels_auth_event(event: Mapping[str, Any], event_map: EventMap) -> str | None:
    for aid in event.get("auth_events", ()):
        aev = event_map.get(aid)
        if aev is not None and isinstance(aid, str) and (aev.get("type"), aev.get("state_key")) == POWER_LEVELS_KEY:
            return aid
    return None


def mainline_sort(event_ids: Collection[str], power_levels_id: str | None, event_map: EventMap) -> list[str]:
    """Order events by *mainline ordering* based on ``power_levels_id``.

    An event whose power-levels ancestry meets the mainline at an older power
    levels event sorts first; events that never meet it (position infinity)
    sort before all of those. Ties: ``origin_server_ts``, then event ID.
    """
    mainline: dict[str, int] = {}
    pl = power_levels_id
    while pl is not None and pl in event_map and pl not in mainline:
        mainline[pl] = len(mainline)
        pl = _power_levels_auth_event(event_map[pl], event_map)

    memo: dict[str, float] = {}

    def position(eid: str) -> float:
        # Walk e1, e2, ... (e itself is not part of its own list).
        path: list[str] = []
        cur = _power_levels_auth_event(event_map[eid], event_map)
        result: float = math.inf
        while cur is not None:
            if cur in mainline:
                result = mainline[cur]
                break
            if cur in memo:
                result = memo[cur]
                break
            if cur in path:  # defensive: a malformed cyclic chain
                break
            path.append(cur)
            cur = _power_levels_auth_event(event_map[cur], event_map)
        for p in path:
            memo[p] = result
        return result

    def key(eid: str) -> tuple[float, int, str]:
        return (-position(eid), _ts(event_map[eid]), eid)

    return sorted(event_ids, key=key)


def iterative_auth_checks(
    room_version: RoomVersion,
    event_ids: Sequence[str],
    base_state: Mapping[StateKey, str],
    event_map: EventMap,
    rejected_event_ids: Collection[str] = frozenset(),
) -> dict[StateKey, str]:
    """Apply each event in order if the auth rules allow it against the
    state built so far, falling back to the event's own (non-rejected) auth
    events for keys the state lacks."""
    resolved = dict(base_state)
    for eid in event_ids:
        event = event_map[eid]
        state_key = event.get("state_key")
        event_type = event.get("type")
        if not isinstance(state_key, str) or not isinstance(event_type, str):
            continue
        auth_state: dict[StateKey, Mapping[str, Any]] = {}
        auth_ids: dict[StateKey, str] = {}
        for aid in auth_event_ids(room_version, event):
            aev = event_map.get(aid)
            if aev is None or aid in rejected_event_ids:
                continue
            a_type, a_state_key = aev.get("type"), aev.get("state_key")
            if isinstance(a_type, str) and isinstance(a_state_key, str):
                auth_state[(a_type, a_state_key)] = aev
                auth_ids[(a_type, a_state_key)] = aid
        raw_content = event.get("content")
        content: Mapping[str, Any] = raw_content if isinstance(raw_content, Mapping) else {}
        wanted = auth_event_types(room_version, event_type, state_key, event.get("sender", ""), content)
        for key in wanted:
            if key in resolved and resolved[key] in event_map:
                auth_state[key], auth_ids[key] = event_map[resolved[key]], resolved[key]
        try:
            check_auth(
                room_version,
                event,
                auth_state,
                enforce_size_limits=False,
                create_event_id=auth_ids.get(CREATE_KEY),
            )
        except AuthError:
            continue
        resolved[(event_type, state_key)] = eid
    return resolved


# --- the algorithm -----------------------------------------------------------


def resolve_state_groups(
    room_version: RoomVersion,
    state_sets: Sequence[Mapping[StateKey, str]],
    event_map: EventMap,
    *,
    rejected_event_ids: Collection[str] = frozenset(),
) -> dict[StateKey, str]:
    """Resolve several room states into one.

    ``event_map`` must hold every event named by the state sets and their
    full auth chains. ``rejected_event_ids`` are events rejected on receipt;
    they are never used as auth events during the iterative auth checks.
    """
    if not state_sets:
        return {}
    unconflicted, conflicted = separate(state_sets)
    if not conflicted:
        return unconflicted

    conflicted_ids = set().union(*conflicted.values())
    full = conflicted_ids | auth_difference(room_version, state_sets, event_map)
    v21 = room_version.state_res is StateResVersion.V2_1
    if v21:
        full |= conflicted_state_subgraph(room_version, conflicted_ids, event_map)
    full = {e for e in full if e in event_map}

    # Step 1: power events and their auth ancestry within the full conflicted set.
    power = [e for e in full if _is_power_event(event_map[e])]
    x = _closure(room_version, power, event_map) & full
    sorted_power = reverse_topological_power_sort(room_version, x, event_map)

    # Step 2: v2.1 starts from nothing, so unconflicted state (which may be
    # bogus) cannot grant anything; the auth-events fallback supplies what is
    # needed.
    base: Mapping[StateKey, str] = {} if v21 else unconflicted
    resolved = iterative_auth_checks(room_version, sorted_power, base, event_map, rejected_event_ids)

    # Steps 3-4: everything else, ordered along the resolved power levels' mainline.
    leftover = full - set(sorted_power)
    ordered = mainline_sort(leftover, resolved.get(POWER_LEVELS_KEY), event_map)
    resolved = iterative_auth_checks(room_version, ordered, resolved, event_map, rejected_event_ids)

    # Step 5: unconflicted state always wins.
    resolved.update(unconflicted)
    return resolved
