"""Side-by-side benchmark: the same Client-Server API workloads against Synapse and
this server in one run; writes bench/RESULTS.md, bench/results.png and
bench/results.json.

Both servers start fresh (own temporary data directory, SQLite, loopback, rate limits
off) as child processes; the workloads are driven over HTTP from this process.

    ./dev bench                 # the full run (6.5 to 9.5 minutes on 2 cores)
    ./dev bench --quick         # small sizes, for trying changes (about 2 minutes)
    ./dev bench --servers ours  # one server only (no ratios)

Workloads (each against both servers, ours first):
  1. send throughput: 10 concurrent senders, 5 rooms of 20 members, 1,000 messages;
     delivery latency send -> long-poll /sync wake-up for 2 receivers; server CPU per
     message; lost and duplicated messages at the receivers.
  2. initial /sync of a user in 100 rooms; incremental /sync.
  3. /messages backwards through 10,000 events of one room (limit 100).
  4. idle long-poll capacity: 1,000 then 10,000 waiting /sync requests (one ramp),
     RSS while held, time until all 10,000 have woken after one message.
  5. start-up (spawn -> first 200 on /versions), idle RSS, RSS after load, database
     bytes per 10,000 messages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report, workloads  # noqa: E402
from bench.servers import BenchServer, Ours, Synapse, synapse_installed  # noqa: E402

BENCH = Path(__file__).resolve().parent

FULL = {
    "messages": 1000,
    "rooms_for_sync": 100,
    "long_room_events": 10000,
    "long_poll_steps": [1000, 10000],
    "long_poll_users": 100,
}
QUICK = {
    "messages": 200,
    "rooms_for_sync": 20,
    "long_room_events": 1000,
    "long_poll_steps": [100, 1000],
    "long_poll_users": 20,
}


def raise_fd_limit() -> int:
    """The soft open-files limit up to the hard one; the servers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def run(servers: list[BenchServer], sizes: dict[str, Any], results: dict[str, Any]) -> None:
    def record(server: BenchServer, key: str, value: dict[str, Any], timed: bool = True) -> None:
        results["servers"][server.name][key] = value
        if timed:
            phase(f"{server.label}: {key}")

    def phase(name: str) -> None:
        now = time.monotonic()
        results["phases"][name] = now - clock[0]
        clock[0] = now

    clock = [time.monotonic()]

    # 1. send throughput and delivery latency
    for server in servers:
        log(f"{server.label}: workload 1, send throughput and delivery latency ({sizes['messages']} messages)")
        data = await workloads.send_and_deliver(server, messages=sizes["messages"])
        record(server, "send", data)
        log(
            f"  {data['throughput_msg_s']:.1f} msg/s, {data['cpu_ms_per_message']:.2f} ms CPU/msg, "
            f"p50/p99 {data['latency_p50_ms']:.0f}/{data['latency_p99_ms']:.0f} ms, "
            f"lost {data['lost']}, duplicated {data['duplicated']}"
        )

    # 2. initial and incremental sync
    for server in servers:
        log(f"{server.label}: workload 2, initial sync in {sizes['rooms_for_sync']} rooms, incremental sync")
        data = await workloads.sync_costs(server, rooms=sizes["rooms_for_sync"])
        record(server, "sync", data)
        log(
            f"  initial {data['initial_sync_first_ms']:.0f} ms first, {data['initial_sync_ms']:.0f} ms median; "
            f"incremental {data['incremental_sync_ms']:.1f} ms"
        )

    # 3. /messages through a long room. Filling the rooms is set-up, not a measured
    # figure, and the slowest part of the run, so both servers fill at once.
    log(f"workload 3: filling one room with {sizes['long_room_events']} messages on each server (at once)")
    fills = await asyncio.gather(*(workloads.fill_long_room(s, events=sizes["long_room_events"]) for s in servers))
    phase("both: filling the long rooms")
    for server, fill in zip(servers, fills):
        record(server, "db", {k: v for k, v in fill.items() if k not in ("owner", "room_id")}, timed=False)
        log(f"  {server.label}: filled in {fill['fill_seconds']:.0f} s, {fill['db_bytes_per_10k_messages'] / 1e6:.1f} MB per 10k messages")
    for server, fill in zip(servers, fills):
        log(f"{server.label}: workload 3, /messages through {fill['events']} events")
        data = await workloads.paginate(server, fill)
        record(server, "messages", data)
        log(f"  {data['paginate_seconds']:.2f} s, {data['pages']} pages, missing {data['missing']}, duplicated {data['duplicated']}")

    # 4. idle long-poll capacity
    for server in servers:
        log(f"{server.label}: workload 4, idle long-polls {sizes['long_poll_steps']}")
        data = await workloads.long_poll_capacity(server, steps=sizes["long_poll_steps"], users=sizes["long_poll_users"])
        record(server, "long_polls", data)
        for step in data["steps"]:
            line = f"  {step['long_polls']}: held at {step['rss_held_bytes'] / 2**20:.0f} MiB"
            if "all_woken_seconds" in step:  # the last step of the ramp is woken
                woken = "never" if step["all_woken_seconds"] is None else f"{step['all_woken_seconds']:.2f} s"
                line += f", all woken in {woken} (not woken {step['not_woken']}"
            else:
                line += " (not woken: the ramp goes on"
            log(f"{line}, early {step['answered_before_wake']}, connect errors {step['connect_errors']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument("--servers", default="ours,synapse", help="comma-separated: ours, synapse")
    parser.add_argument("--out", type=Path, default=BENCH, help="where RESULTS.md, results.png and results.json go")
    parser.add_argument("--long-room-events", type=int, help="events in workload 3's room (default 10,000; --quick 1,000)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data directories")
    parser.add_argument("--report-only", action="store_true", help="rewrite RESULTS.md and results.png from results.json")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads((args.out / "results.json").read_text())
        report.write_png(results, args.out / "results.png")
        (args.out / "RESULTS.md").write_text(report.markdown(results))
        return

    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    if "synapse" in names and not synapse_installed():
        sys.exit("error: Synapse is not installed in .synapse-venv (./dev bench installs it)")
    sizes = dict(QUICK if args.quick else FULL)
    if args.long_room_events:
        sizes["long_room_events"] = args.long_room_events
    fd_limit = raise_fd_limit()
    if max(sizes["long_poll_steps"]) * 1.1 + 200 > fd_limit:
        sizes = dict(sizes, long_poll_steps=[s for s in sizes["long_poll_steps"] if s * 1.1 + 200 <= fd_limit])
        log(f"open-files limit is {fd_limit}: long-poll steps cut to {sizes['long_poll_steps']}")

    workdir = Path(tempfile.mkdtemp(prefix="homeserver-bench-"))
    classes = {"ours": Ours, "synapse": Synapse}
    servers: list[BenchServer] = [classes[n](workdir / n) for n in names]
    results: dict[str, Any] = {
        "machine": report.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "quick": args.quick,
        "sizes": sizes,
        "fd_limit": fd_limit,
        "load_before": report.loadavg(),
        "servers": {s.name: {"version": s.version()} for s in servers},
        "phases": {},
    }
    began = time.monotonic()
    try:
        # 5a. start-up and idle RSS, one server at a time.
        for server in servers:
            phase_start = time.monotonic()
            seconds = server.start()
            time.sleep(2.0)
            results["servers"][server.name]["process"] = {"startup_seconds": seconds, "idle_rss_bytes": server.rss()}
            log(f"{server.label} {results['servers'][server.name]['version']}: up in {seconds:.2f} s, idle RSS {server.rss() / 2**20:.0f} MiB")
            results["phases"][f"{server.label}: start"] = time.monotonic() - phase_start
        _run_loop(run(servers, sizes, results))
        # 5b. RSS after load, then a restart on the now populated database.
        for server in servers:
            phase_start = time.monotonic()
            time.sleep(1.0)
            process = results["servers"][server.name]["process"]
            process["rss_after_load_bytes"] = server.rss()
            process["cpu_seconds_total"] = server.cpu()
            process["db_bytes_final"] = server.db_bytes()
            process["restart_seconds"] = server.restart()
            log(f"{server.label}: RSS after load {process['rss_after_load_bytes'] / 2**20:.0f} MiB, restart in {process['restart_seconds']:.2f} s")
            results["phases"][f"{server.label}: restart"] = time.monotonic() - phase_start
    except BaseException:
        for server in servers:
            print(f"--- last lines of {server.label}'s log ---\n{server.log()[-3000:]}", file=sys.stderr)
        raise
    finally:
        for server in servers:
            server.stop()
        if args.keep:
            log(f"data directories kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["elapsed_seconds"] = time.monotonic() - began
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results["bench_cpu_seconds"] = usage.ru_utime + usage.ru_stime
    results["load_after"] = report.loadavg()

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    report.write_png(results, args.out / "results.png")
    (args.out / "RESULTS.md").write_text(report.markdown(results))
    log(f"done in {results['elapsed_seconds']:.0f} s: {args.out / 'RESULTS.md'}, {args.out / 'results.png'}")


def _run_loop(coroutine: Any) -> None:
    """uvloop when it is there (uvicorn[standard] brings it): the bench process should
    spend as little CPU per request as it can, the servers need the cores."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


if __name__ == "__main__":
    main()
