"""The workloads, each run against one server through the Client-Server API.

Every function takes a started `BenchServer` and returns a dict of plain numbers (and
a few lists of samples for the plot). Set-up (registering users, creating and joining
rooms) is never timed; what is timed is said in each docstring."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from typing import Any, Callable

from bench.client import Client, RawLongPoll, User, raw_sync_request
from bench.servers import BenchServer, accept_queue

# Receivers ask for a big timeline so that no message can fall into a gap
# ("limited": true) and look lost; presence is left out of every sync.
RECEIVER_FILTER = {"room": {"timeline": {"limit": 1000}}, "presence": {"types": []}}


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, int(-(-p * len(ordered) // 100)))  # ceil(p/100 * n)
    return ordered[min(rank, len(ordered)) - 1]


async def wait_quiet(server: BenchServer, *, window: float = 0.5, busy_share: float = 0.05, timeout: float = 180) -> float:
    """Wait until the server spends less than `busy_share` of a core over `window`
    seconds, twice in a row; return how long that took."""
    started = time.monotonic()
    quiet = 0
    before = server.cpu()
    while time.monotonic() - started < timeout:
        await asyncio.sleep(window)
        now = server.cpu()
        quiet = quiet + 1 if now - before < busy_share * window else 0
        before = now
        if quiet >= 2:
            break
    return time.monotonic() - started


# --- 1. send throughput and delivery latency ------------------------------------------


async def send_and_deliver(
    server: BenchServer, *, users: int = 20, rooms: int = 5, senders: int = 10, receivers: int = 2, messages: int = 1000
) -> dict[str, Any]:
    """`senders` users each send messages/senders messages back to back (closed loop)
    into `rooms` rooms that all `users` users are in; `receivers` other users long-poll
    /sync. Timed: the send phase (throughput), each delivery (send request start ->
    the receiver's /sync response carrying it), the server's CPU seconds from the
    first send until the last delivery.

    Before that, a warm-up: every sender sends one message at once and the receivers
    get them all. Those are a freshly started server's first messages (its caches
    of each room's members and push rules are cold, and each sender comes online),
    reported on their own (`warmup_latency_*`) and not in the percentiles, which are
    of the server under steady load."""
    async with Client(server.base_url) as client:
        people = await client.register_many(users)
        room_ids = [await client.create_room(people[0], name=f"bench room {i}") for i in range(rooms)]
        for room_id in room_ids:
            await asyncio.gather(*(client.join(u, room_id) for u in people[1:]))
        sending = people[:senders]
        receiving = people[-receivers:]
        assert not {u.user_id for u in sending} & {u.user_id for u in receiving}

        sent_at: dict[int, float] = {}
        send_done: dict[int, float] = {}
        seen: list[Counter[int]] = [Counter() for _ in receiving]
        arrivals: list[list[float]] = [[] for _ in receiving]
        # Warm-up messages have negative bench IDs.
        warmup_seen: list[Counter[int]] = [Counter() for _ in receiving]
        warmup_arrivals: list[float] = []
        limited = 0
        sync_calls = 0
        all_seen = asyncio.Event()
        warmed_up = asyncio.Event()
        stop = False

        tokens = [(await client.sync(u, sync_filter=RECEIVER_FILTER))["next_batch"] for u in receiving]
        filter_ids = [await client.upload_filter(u, RECEIVER_FILTER) for u in receiving]

        async def receive(index: int, user: User) -> None:
            nonlocal limited, sync_calls
            token = tokens[index]
            while not stop:
                # A timeout of its own per request (see long_poll_capacity).
                timeout_ms = 30000 + sync_calls
                result = await client.sync(user, token, timeout_ms=timeout_ms, sync_filter=filter_ids[index])
                now = time.monotonic()
                sync_calls += 1
                token = result["next_batch"]
                for room in result.get("rooms", {}).get("join", {}).values():
                    timeline = room.get("timeline", {})
                    limited += bool(timeline.get("limited"))
                    for event in timeline.get("events", []):
                        bench_id = event.get("content", {}).get("bench_id")
                        if isinstance(bench_id, int) and bench_id < 0:
                            warmup_seen[index][bench_id] += 1
                            if warmup_seen[index][bench_id] == 1:
                                warmup_arrivals.append(now - sent_at[bench_id])
                        elif isinstance(bench_id, int):
                            seen[index][bench_id] += 1
                            if seen[index][bench_id] == 1 and bench_id in sent_at:
                                arrivals[index].append(now - sent_at[bench_id])
                if all(len(c) >= senders for c in warmup_seen):
                    warmed_up.set()
                if all(len(c) >= messages for c in seen):
                    all_seen.set()

        receiver_tasks = [asyncio.create_task(receive(i, u)) for i, u in enumerate(receiving)]
        await asyncio.sleep(1.0)  # every receiver is waiting in /sync

        async def warm_up(index: int, user: User) -> None:
            bench_id = -1 - index
            sent_at[bench_id] = time.monotonic()
            await client.send(user, room_ids[index % rooms], {"msgtype": "m.text", "body": "warm-up", "bench_id": bench_id})

        await asyncio.gather(*(warm_up(i, u) for i, u in enumerate(sending)))
        try:
            await asyncio.wait_for(warmed_up.wait(), 60)
        except TimeoutError:
            pass  # a lost warm-up message shows as a missing warm-up latency
        await asyncio.sleep(0.5)
        per_sender = messages // senders
        cpu_before = server.cpu()
        started = time.monotonic()

        async def send(index: int, user: User) -> None:
            for k in range(per_sender):
                bench_id = index * per_sender + k
                room_id = room_ids[bench_id % rooms]
                sent_at[bench_id] = time.monotonic()
                await client.send(user, room_id, {"msgtype": "m.text", "body": f"bench message {bench_id}", "bench_id": bench_id})
                send_done[bench_id] = time.monotonic()

        await asyncio.gather(*(send(i, u) for i, u in enumerate(sending)))
        send_seconds = time.monotonic() - started
        try:
            await asyncio.wait_for(all_seen.wait(), 60)
        except TimeoutError:
            pass
        delivered_seconds = time.monotonic() - started
        cpu = server.cpu() - cpu_before
        await asyncio.sleep(0.5)  # a late duplicate would show up here
        stop = True
        for task in receiver_tasks:
            task.cancel()
        await asyncio.gather(*receiver_tasks, return_exceptions=True)

    total = per_sender * senders
    lost = sum(1 for c in seen for i in range(total) if c[i] == 0)
    duplicated = sum(n - 1 for c in [*seen, *warmup_seen] for n in c.values() if n > 1)
    warmup_ms = [s * 1000 for s in warmup_arrivals]
    latencies_ms = [s * 1000 for a in arrivals for s in a]
    send_ms = [(send_done[i] - sent_at[i]) * 1000 for i in send_done]
    return {
        "messages": total,
        "senders": senders,
        "rooms": rooms,
        "room_members": users,
        "receivers": receivers,
        "send_seconds": send_seconds,
        "throughput_msg_s": total / send_seconds,
        "delivered_seconds": delivered_seconds,
        "cpu_seconds": cpu,
        "cpu_ms_per_message": cpu / total * 1000,
        "send_request_p50_ms": percentile(send_ms, 50),
        "latency_p50_ms": percentile(latencies_ms, 50),
        "latency_p95_ms": percentile(latencies_ms, 95),
        "latency_p99_ms": percentile(latencies_ms, 99),
        "latency_max_ms": max(latencies_ms) if latencies_ms else float("nan"),
        "warmup_latency_p50_ms": percentile(warmup_ms, 50),
        "warmup_latency_max_ms": max(warmup_ms) if warmup_ms else float("nan"),
        "deliveries": len(latencies_ms),
        "expected_deliveries": total * receivers,
        "lost": lost,
        "duplicated": duplicated,
        "limited_timelines": limited,
        "receiver_syncs": sync_calls,
        "latencies_ms": latencies_ms,
    }


# --- 2. initial and incremental sync ---------------------------------------------------


async def sync_costs(server: BenchServer, *, rooms: int = 100, repeats: int = 3, incremental: int = 5) -> dict[str, Any]:
    """A user in `rooms` rooms (each: created by them with a name and topic, a second
    user joined, one message). Timed: the first initial /sync (no filter, so each
    server's default timeline limit), the median of `repeats` more; the median of
    `incremental` incremental syncs each carrying one new message, and of
    incremental syncs with nothing new (timeout=0)."""
    async with Client(server.base_url) as client:
        alice, bob = await client.register_many(2)
        sem = asyncio.Semaphore(4)
        # One createRoom at a time: room IDs of room version 12 are the hash of the
        # create event, so one user's identical creates in the same millisecond would
        # be the same room (ours answered 500 to that once).
        creating = asyncio.Lock()

        async def make(i: int) -> str:
            async with sem:
                async with creating:
                    room_id = await client.create_room(alice, name=f"room {i}", topic=f"topic of room {i}")
                await client.join(bob, room_id)
                await client.send(alice, room_id, {"msgtype": "m.text", "body": f"hello {i}"})
                return room_id

        room_ids = await asyncio.gather(*(make(i) for i in range(rooms)))
        await wait_quiet(server)

        async def timed_sync(since: str | None) -> tuple[float, Any]:
            # A filter ID of its own for every timed request (uploaded untimed): the
            # usual way clients pass a filter, and never an identical request.
            filter_id = await client.upload_filter(alice, unique=True)
            started = time.monotonic()
            result = await client.sync(alice, since, sync_filter=filter_id)
            return (time.monotonic() - started) * 1000, result

        first_ms, result = await timed_sync(None)
        joined = len(result.get("rooms", {}).get("join", {}))
        size = len(json.dumps(result))
        warm = [(await timed_sync(None))[0] for _ in range(repeats)]
        token = result["next_batch"]
        with_message: list[float] = []
        empty: list[float] = []
        for k in range(incremental):
            await client.send(bob, room_ids[k % len(room_ids)], {"msgtype": "m.text", "body": f"incremental {k}"})
            took, result = await timed_sync(token)
            with_message.append(took)
            token = result["next_batch"]
            took, result = await timed_sync(token)
            empty.append(took)
            token = result["next_batch"]
    return {
        "rooms": rooms,
        "rooms_in_initial_sync": joined,
        "initial_sync_bytes": size,
        "initial_sync_first_ms": first_ms,
        "initial_sync_ms": statistics.median(warm),
        "incremental_sync_ms": statistics.median(with_message),
        "empty_incremental_sync_ms": statistics.median(empty),
    }


# --- 3. /messages through a long room --------------------------------------------------


async def fill_long_room(server: BenchServer, *, events: int = 10000, concurrency: int = 10) -> dict[str, Any]:
    """One room, `events` messages from `concurrency` concurrent senders (set-up for
    the pagination; also gives database bytes per message, measured on the SQLite
    files including the WAL before and after)."""
    async with Client(server.base_url) as client:
        owner = await client.register()
        room_id = await client.create_room(owner, name="long room")
        await wait_quiet(server)
        db_before = server.db_bytes()
        next_id = 0
        started = time.monotonic()

        async def sender() -> None:
            nonlocal next_id
            while next_id < events:
                bench_id = next_id
                next_id += 1
                await client.send(owner, room_id, {"msgtype": "m.text", "body": f"long room message {bench_id}", "bench_id": bench_id})

        await asyncio.gather(*(sender() for _ in range(concurrency)))
        fill_seconds = time.monotonic() - started
        await wait_quiet(server)
        db_after = server.db_bytes()
    return {
        "owner": owner,
        "room_id": room_id,
        "events": events,
        "fill_seconds": fill_seconds,
        "fill_msg_s": events / fill_seconds,
        "db_bytes_before": db_before,
        "db_bytes_after": db_after,
        "db_bytes_per_10k_messages": (db_after - db_before) / events * 10000,
    }


async def paginate(server: BenchServer, fill: dict[str, Any], *, limit: int = 100) -> dict[str, Any]:
    """Page backwards through the whole room (`dir=b`, `limit`, starting without
    `from`, i.e. at the end). Timed: the whole walk. Checked: every message seen
    exactly once."""
    owner: User = fill["owner"]
    events = fill["events"]
    seen: Counter[int] = Counter()
    pages = 0
    page_ms: list[float] = []
    async with Client(server.base_url) as client:
        token: str | None = None
        started = time.monotonic()
        while True:
            t = time.monotonic()
            result = await client.messages(owner, fill["room_id"], token, limit)
            page_ms.append((time.monotonic() - t) * 1000)
            pages += 1
            for event in result.get("chunk", []):
                bench_id = event.get("content", {}).get("bench_id")
                if isinstance(bench_id, int):
                    seen[bench_id] += 1
            token = result.get("end")
            if not result.get("chunk") or token is None or pages > events // max(1, limit) * 3 + 20:
                break
        seconds = time.monotonic() - started
    return {
        "events": events,
        "limit": limit,
        "pages": pages,
        "paginate_seconds": seconds,
        "page_p50_ms": percentile(page_ms, 50),
        "page_p99_ms": percentile(page_ms, 99),
        "missing": sum(1 for i in range(events) if seen[i] == 0),
        "duplicated": sum(n - 1 for n in seen.values() if n > 1),
    }


# --- 4. idle long-poll capacity ----------------------------------------------------------


async def long_poll_capacity(
    server: BenchServer,
    *,
    steps: list[int],
    users: int = 100,
    connect_parallel: int = 32,
    before_wake: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """`users` users share one room. Raw connections each hold a /sync long-poll
    (timeout 10 minutes plus i ms, so that no two are the same request; user i % users,
    with a stored filter that leaves out presence). They are opened in one ramp: at
    each step N (ascending) the server holds N of them, and once its CPU is idle its
    RSS is read. At the last step one message goes into the room, and the time until
    every long-poll has its answer is measured, with the server's CPU seconds for the
    wake. (One ramp rather than a fresh set per step: connecting and waking the
    smaller steps again cost Synapse ~20 s of the run.)"""
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {"users": users, "steps": []}
    steps = sorted(steps)
    async with Client(server.base_url) as client:
        people = await client.register_many(users)
        room_id = await client.create_room(people[0], name="waiting room")
        sem = asyncio.Semaphore(8)

        async def join(user: User) -> None:
            async with sem:
                await client.join(user, room_id)

        await asyncio.gather(*(join(u) for u in people[1:]))
        # Without presence: the sender of the wake-up message goes online when it
        # sends and offline a while later, which would wake every long-poll early.
        filter_ids = await asyncio.gather(*(client.upload_filter(u, {"presence": {"types": []}}) for u in people))
        tokens = await asyncio.gather(*(client.sync(u) for u in people))
        since = [t["next_batch"] for t in tokens]
        await wait_quiet(server)
        rss_before = server.rss()
        polls: list[RawLongPoll] = []
        connect_errors = 0

        async def open_one(i: int) -> None:
            nonlocal connect_errors
            user_index = i % users
            params = {
                "since": since[user_index],
                # Ten minutes, and a different number of milliseconds for every
                # request of a user, so that no two requests are identical.
                "timeout": str(600000 + i),
                "set_presence": "offline",
                "filter": filter_ids[user_index],
            }
            request = raw_sync_request("127.0.0.1", server.port, people[user_index], params)
            try:
                _, protocol = await loop.create_connection(lambda: RawLongPoll(request), "127.0.0.1", server.port)
                polls.append(protocol)
            except OSError:
                connect_errors += 1

        async def open_range(first: int, last: int) -> None:
            """Open long-polls first..last-1, `connect_parallel` at a time, and never
            more than fill half the server's accept queue: past a full queue the kernel
            drops SYNs and each dropped one waits a second or more to retry."""
            i = first
            while i < last:
                queue = accept_queue(server.port)
                room = connect_parallel if queue is None else min(connect_parallel, queue[1] // 2 - queue[0])
                if room <= 0:
                    await asyncio.sleep(0.002)
                    continue
                batch = range(i, min(last, i + room))
                await asyncio.gather(*(open_one(j) for j in batch))
                i = batch.stop

        opened = 0
        for n in steps:
            opened_at = time.monotonic()
            hold_cpu_before = server.cpu()
            await open_range(opened, n)
            new = n - opened
            opened = n
            connected_seconds = time.monotonic() - opened_at
            settle_seconds = await wait_quiet(server, timeout=300)
            held_seconds = time.monotonic() - opened_at
            rss_held = server.rss()
            hold_cpu = server.cpu() - hold_cpu_before
            early = sum(1 for p in polls if p.woke is not None)
            early_statuses = Counter(p.status for p in polls if p.woke is not None)
            early_sample = next((p.head.decode(errors="replace") for p in polls if p.woke is not None), "")
            step: dict[str, Any] = {
                "long_polls": n,
                "connected": len(polls),
                "connect_errors": connect_errors,
                "connect_seconds": connected_seconds,
                "settle_seconds": settle_seconds,
                # For the long-polls this step added to the ramp.
                "held_after_seconds": held_seconds,
                "hold_cpu_ms_per_long_poll": hold_cpu / max(1, new) * 1000,
                "answered_before_wake": early,
                "early_statuses": {str(k): v for k, v in early_statuses.items()},
                "early_sample": early_sample[-1500:],
                "rss_before_bytes": rss_before,
                "rss_held_bytes": rss_held,
                "kib_per_long_poll": (rss_held - rss_before) / 1024 / max(1, n),
            }
            out["steps"].append(step)
        waiting = [p for p in polls if p.woke is None]
        if before_wake is not None:
            before_wake()

        cpu_before = server.cpu()
        t0 = time.monotonic()
        await client.send(people[0], room_id, {"msgtype": "m.text", "body": f"wake up, all {len(polls)} of you"})
        sent = time.monotonic()
        pending = [p.answered for p in waiting]
        if pending:
            await asyncio.wait(pending, timeout=300)
        woken = [p.woke - t0 for p in waiting if p.woke is not None]
        await wait_quiet(server, timeout=60)
        wake_cpu = server.cpu() - cpu_before
        statuses = Counter(p.status for p in waiting)
        for p in polls:
            p.close()
        out["steps"][-1].update(
            {
                "send_ms": (sent - t0) * 1000,
                "woken": len(woken),
                "not_woken": len(waiting) - len(woken),
                "wake_statuses": {str(k): v for k, v in statuses.items()},
                "all_woken_seconds": max(woken) if woken else None,
                "wake_p50_seconds": percentile(woken, 50),
                "wake_cpu_seconds": wake_cpu,
                "wake_cpu_ms_per_long_poll": wake_cpu / max(1, len(woken)) * 1000,
                "wake_seconds_samples": sorted(woken),
            }
        )
    return out
