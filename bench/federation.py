"""Replication benchmark: how fast a burst of messages sent on one server reaches a
user of another server, for every pairing of this server and Synapse.

    ./dev bench --federation              # about 3 to 5 minutes on 2 cores
    python -m bench.federation [--messages 300] [--senders 10] [--pairs ours-ours,...]

Two of ours and two Synapses start fresh on loopback (SQLite, rate limits off, TLS
federation listeners with self-signed certificates, as the interop tests run them;
ours with `ip_range_blocklist: []`, Synapse with loopback allowed). For each pair
A -> B: users of A create a room, a user of B joins it over federation, one warm-up
message must arrive, then `--senders` users of A send `--messages` messages back to
back (closed loop) while B's user long-polls /sync. Per message: the time from A's
send response to B's /sync response carrying it (p50/p95/p99/max); the burst's
throughput as sent on A and as received on B (messages / time from the first send to
the last arrival); messages lost (never seen on B within 90 s) or seen twice.

Writes bench/FEDERATION.md (machine, date, versions, the table with every figure
as a ratio against Synapse -> Synapse). Timings mean something only on an otherwise
idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.client import V3, Client, User  # noqa: E402
from bench.compare import _run_loop, log, raise_fd_limit  # noqa: E402
from bench.report import loadavg, machine  # noqa: E402
from bench.servers import Ours, Synapse, synapse_installed  # noqa: E402
from bench.workloads import RECEIVER_FILTER, percentile  # noqa: E402
from tests.server import ServerProcess  # noqa: E402

BENCH = Path(__file__).resolve().parent
PAIRS = ["ours-ours", "ours-synapse", "synapse-ours", "synapse-synapse"]
ARRIVAL_TIMEOUT_S = 90


@dataclass
class Node:
    label: str
    kind: str  # "ours" or "synapse"
    base_url: str
    server_name: str
    stop: Any
    version: str


def start_ours(directory: Path, label: str) -> Node:
    directory.mkdir(parents=True, exist_ok=True)
    # Loopback federation needs the IP range blocklist emptied (tests/server.py does).
    process = ServerProcess(directory, {"log_level": "INFO"}, federation=True)
    process.start(timeout=60)
    # Ours.version reads only the repository (pyproject and git), no server state.
    version = Ours.__new__(Ours).version()
    return Node(label, "ours", process.base_url, process.server_name, process.stop, version)


def start_synapse(directory: Path, label: str) -> Node:
    # bench.servers.Synapse: the interop config with every rate limit out of the way.
    synapse = Synapse(directory)
    synapse.start()
    return Node(label, "synapse", synapse.base_url, synapse.inner.server_name, synapse.stop, synapse.version())


async def replicate(a: Node, b: Node, *, messages: int, senders: int) -> dict[str, Any]:
    async with Client(a.base_url) as on_a, Client(b.base_url) as on_b:
        sending = await on_a.register_many(senders)
        room_id = await on_a.create_room(sending[0], name=f"replication {a.label} -> {b.label}")
        await asyncio.gather(*(on_a.join(u, room_id) for u in sending[1:]))
        receiver = await on_b.register()
        joined_at = time.monotonic()
        await on_b.request(
            "POST", f"{V3}/join/{quote(room_id)}", receiver, body={}, params={"server_name": a.server_name}
        )
        join_seconds = time.monotonic() - joined_at
        filter_id = await on_b.upload_filter(receiver, RECEIVER_FILTER)
        token = (await on_b.sync(receiver, sync_filter=filter_id))["next_batch"]

        seen: Counter[int] = Counter()
        first_seen: dict[int, float] = {}
        sent: dict[int, float] = {}  # bench_id -> A's send response arrived
        burst_ids = set(range(messages))
        warm = asyncio.Event()
        done = asyncio.Event()
        stop = False
        syncs = 0
        limited = 0

        async def receive(user: User) -> None:
            nonlocal token, syncs, limited
            while not stop:
                # A timeout of its own per request: Synapse answers identical /syncs
                # from a cache.
                result = await on_b.sync(user, token, timeout_ms=30000 + syncs, sync_filter=filter_id)
                now = time.monotonic()
                syncs += 1
                token = result["next_batch"]
                room = result.get("rooms", {}).get("join", {}).get(room_id, {})
                # A gap: the server left events out (a client would paginate for them).
                limited += bool(room.get("timeline", {}).get("limited"))
                for event in room.get("timeline", {}).get("events", []):
                    bench_id = event.get("content", {}).get("bench_id")
                    if not isinstance(bench_id, int):
                        continue
                    seen[bench_id] += 1
                    first_seen.setdefault(bench_id, now)
                    if bench_id == -1:
                        warm.set()
                if burst_ids <= first_seen.keys():
                    done.set()

        receiver_task = asyncio.create_task(receive(receiver))
        # Warm-up: the first event over a new connection also pays for TLS and keys.
        await on_a.send(sending[0], room_id, {"msgtype": "m.text", "body": "warm-up", "bench_id": -1})
        await asyncio.wait_for(warm.wait(), ARRIVAL_TIMEOUT_S)
        await asyncio.sleep(0.5)

        per_sender = messages // senders
        started = time.monotonic()

        async def send(index: int, user: User) -> None:
            for k in range(per_sender):
                bench_id = index * per_sender + k
                await on_a.send(user, room_id, {"msgtype": "m.text", "body": f"burst {bench_id}", "bench_id": bench_id})
                sent[bench_id] = time.monotonic()

        await asyncio.gather(*(send(i, u) for i, u in enumerate(sending)))
        send_seconds = time.monotonic() - started
        try:
            await asyncio.wait_for(done.wait(), ARRIVAL_TIMEOUT_S)
        except TimeoutError:
            pass
        await asyncio.sleep(1.0)  # a late duplicate would show up here
        stop = True
        receiver_task.cancel()
        await asyncio.gather(receiver_task, return_exceptions=True)
        # Whether what /sync never showed is at least in B's copy of the room.
        in_history: set[int] = set()
        page = await on_b.messages(receiver, room_id, None, limit=1000)
        for event in page.get("chunk", []):
            bench_id = event.get("content", {}).get("bench_id")
            if isinstance(bench_id, int) and bench_id >= 0:
                in_history.add(bench_id)

    total = per_sender * senders
    arrived = [i for i in range(total) if i in first_seen]
    latencies = [(first_seen[i] - sent[i]) * 1000 for i in arrived if i in sent]
    last_arrival = max((first_seen[i] for i in arrived), default=started)
    return {
        "pair": f"{a.label} -> {b.label}",
        "messages": total,
        "senders": senders,
        "join_seconds": join_seconds,
        "send_seconds": send_seconds,
        "sent_per_s": total / send_seconds,
        "received_per_s": len(arrived) / (last_arrival - started) if arrived else 0.0,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "lost": total - len(arrived),
        "missing_from_history": total - len(in_history),
        "duplicated": sum(n - 1 for i, n in seen.items() if i >= 0 and n > 1),
        "receiver_syncs": syncs,
        "limited_timelines": limited,
    }


# Report

FIGURES = [
    # key, label, format, which way is better
    ("p50_ms", "latency p50 (A's send response -> B's /sync)", "{:,.0f} ms", "lower"),
    ("p95_ms", "latency p95", "{:,.0f} ms", "lower"),
    ("p99_ms", "latency p99", "{:,.0f} ms", "lower"),
    ("max_ms", "latency max", "{:,.0f} ms", "lower"),
    ("received_per_s", "burst throughput received on B", "{:,.1f} /s", "higher"),
    ("sent_per_s", "burst throughput sent on A", "{:,.1f} /s", "higher"),
    ("join_seconds", "B's join over federation", "{:,.2f} s", "lower"),
    ("lost", "lost (never in B's /sync within 90 s)", "{:,.0f}", "lower"),
    ("missing_from_history", "missing from B's /messages afterwards", "{:,.0f}", "lower"),
    ("duplicated", "duplicated", "{:,.0f}", "lower"),
    ("limited_timelines", "B's /sync timelines marked limited (gaps)", "{:,.0f}", "lower"),
]


# Counts get no ratio.
COUNTS = ("lost", "missing_from_history", "duplicated", "limited_timelines")


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    runs = results["runs"]
    baseline = runs.get("Synapse -> Synapse")
    lines = [
        "# Federation replication: this server against Synapse",
        "",
        "Written by `./dev bench --federation` (`bench/federation.py`). Users of server A send a",
        f"burst of {results['messages']} messages ({results['senders']} senders, closed loop) into a room a",
        "user of server B joined over federation; B's user long-polls `/sync`. Latency is",
        "from A's send response to B's `/sync` response carrying the message; throughput",
        "received is messages / (first send -> last arrival on B). Ratios are against",
        "Synapse -> Synapse (for latency, below 1 is better; for throughput, above 1).",
        "",
        f"- **Date**: {results['date']}",
        (
            f"- **Machine**: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_bytes'] / 2**30:.1f} GiB memory, "
            f"Linux {m['kernel']}, Python {m['python']}"
        ),
        f"- **Ours**: homeserver {results['versions'].get('ours', '-')}",
        f"- **Synapse**: {results['versions'].get('synapse', '-')}",
        (
            f"- **Load average** before / after: {', '.join(f'{x:.2f}' for x in results['load_before'])} / "
            f"{', '.join(f'{x:.2f}' for x in results['load_after'])}; the run took {results['seconds']:.0f} s"
        ),
        "",
        "All four servers (two of ours, two Synapses) ran at once as child processes on",
        "loopback (SQLite, rate limits off, log level INFO, TLS federation listeners with",
        "self-signed certificates); the pairs were measured one after the other.",
        "",
        "\"Lost\" counts messages B's `/sync` never showed within 90 s of the burst. A",
        "receiving server that gets an event whose prev_events it lacks (events sent out",
        "of order, or a gap larger than `/get_missing_events` fills) records a gap; Synapse",
        "then marks the timeline `limited` and leaves out everything before the gap, for",
        "the client to paginate, so those count as lost here even when B holds them.",
        "\"Missing from B's /messages\" is read afterwards with one backwards page of 1,000.",
        "",
    ]
    pairs = list(runs)
    lines.append("| figure | " + " | ".join(pairs) + " |")
    lines.append("| --- |" + " --- |" * len(pairs))
    for key, label, fmt, _better in FIGURES:
        cells = []
        for pair in pairs:
            value = runs[pair][key]
            cell = fmt.format(value)
            base = baseline[key] if baseline else None
            comparable = base and not math.isnan(value) and not math.isnan(base)
            if key not in COUNTS and comparable and pair != "Synapse -> Synapse":
                cell += f" ({value / base:.2f}×)"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    wanted = [p.strip() for p in args.pairs.split(",") if p.strip()]
    for pair in wanted:
        if pair not in PAIRS:
            raise SystemExit(f"unknown pair {pair!r}; choose from {', '.join(PAIRS)}")
    kinds = {k for pair in wanted for k in pair.split("-")}
    if "synapse" in kinds and not synapse_installed():
        raise SystemExit("Synapse is not installed in .synapse-venv (./dev bench installs it)")
    workdir = Path(tempfile.mkdtemp(prefix="fedbench-"))
    nodes: dict[str, list[Node]] = {}
    load_before = loadavg()
    begun = time.monotonic()
    try:
        loop = asyncio.get_running_loop()
        starts = []
        if "ours" in kinds:
            log("starting two of ours")
            starts.append(("ours", [loop.run_in_executor(None, start_ours, workdir / f"ours{i}", f"ours {i}") for i in (1, 2)]))
        if "synapse" in kinds:
            log("starting two Synapses")
            starts.append(
                ("synapse", [loop.run_in_executor(None, start_synapse, workdir / f"synapse{i}", f"Synapse {i}") for i in (1, 2)])
            )
        for kind, futures in starts:
            nodes[kind] = list(await asyncio.gather(*futures))
        runs: dict[str, dict[str, Any]] = {}
        for pair in wanted:
            first, second = pair.split("-")
            a = nodes[first][0]
            b = nodes[second][1] if first == second else nodes[second][0]
            name = f"{'ours' if first == 'ours' else 'Synapse'} -> {'ours' if second == 'ours' else 'Synapse'}"
            log(f"{name} ({a.server_name} -> {b.server_name}): {args.messages} messages, {args.senders} senders")
            data = await replicate(a, b, messages=args.messages, senders=args.senders)
            runs[name] = data
            log(
                f"  p50/p95/p99 {data['p50_ms']:.0f}/{data['p95_ms']:.0f}/{data['p99_ms']:.0f} ms, "
                f"received {data['received_per_s']:.1f} msg/s (sent {data['sent_per_s']:.1f}), "
                f"lost {data['lost']} (missing from /messages {data['missing_from_history']}), "
                f"duplicated {data['duplicated']}, limited timelines {data['limited_timelines']}"
            )
        versions = {kind: group[0].version for kind, group in nodes.items()}
        return {
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "machine": machine(),
            "versions": versions,
            "messages": args.messages,
            "senders": args.senders,
            "runs": runs,
            "load_before": load_before,
            "load_after": loadavg(),
            "seconds": time.monotonic() - begun,
        }
    finally:
        for group in nodes.values():
            for node in group:
                node.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"data kept in {workdir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300, help="messages in the burst (default 300)")
    parser.add_argument("--senders", type=int, default=10, help="concurrent senders on A (default 10)")
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"comma-separated, from {', '.join(PAIRS)}")
    parser.add_argument("--out", type=Path, default=BENCH / "FEDERATION.md", help="the report to write")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data directories")
    args = parser.parse_args()
    raise_fd_limit()
    results: dict[str, Any] = {}

    async def go() -> None:
        results.update(await run(args))

    _run_loop(go())
    args.out.write_text(markdown(results))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
