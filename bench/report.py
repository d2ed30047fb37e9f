"""RESULTS.md and results.png from the numbers bench/compare.py collected."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from collections.abc import Callable
from typing import Any

MIB = 1024 * 1024


# --- the machine --------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "memory_bytes": mem_total,
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


# --- figures ------------------------------------------------------------------------

# (section, label, path into a server's results, unit/formatter, better: "lower"/"higher")
Figure = tuple[str, str, Callable[[dict[str, Any]], float | None], Callable[[float], str], str]


def _get(*keys: str) -> Callable[[dict[str, Any]], float | None]:
    def read(data: dict[str, Any]) -> float | None:
        value: Any = data
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return float(value) if isinstance(value, (int, float)) else None

    return read


def _step(n: int, key: str) -> Callable[[dict[str, Any]], float | None]:
    def read(data: dict[str, Any]) -> float | None:
        for step in data.get("long_polls", {}).get("steps", []):
            if step["long_polls"] == n:
                value = step.get(key)
                return float(value) if isinstance(value, (int, float)) else None
        return None

    return read


def ms(v: float) -> str:
    return f"{v:,.1f} ms" if v < 100 else f"{v:,.0f} ms"


def sec(v: float) -> str:
    return f"{v:,.2f} s"


def mib(v: float) -> str:
    return f"{v / MIB:,.1f} MiB"


def mbytes(v: float) -> str:
    return f"{v / 1e6:,.2f} MB"


def per_s(v: float) -> str:
    return f"{v:,.1f} /s"


def count(v: float) -> str:
    return f"{v:,.0f}"


def kib(v: float) -> str:
    return f"{v:,.1f} KiB"


def figures(results: dict[str, Any]) -> list[Figure]:
    sizes = results["sizes"]
    out: list[Figure] = [
        ("Send and deliver", "send throughput", _get("send", "throughput_msg_s"), per_s, "higher"),
        ("Send and deliver", "server CPU per message", _get("send", "cpu_ms_per_message"), ms, "lower"),
        ("Send and deliver", "send request p50", _get("send", "send_request_p50_ms"), ms, "lower"),
        ("Send and deliver", "delivery latency p50", _get("send", "latency_p50_ms"), ms, "lower"),
        ("Send and deliver", "delivery latency p95", _get("send", "latency_p95_ms"), ms, "lower"),
        ("Send and deliver", "delivery latency p99", _get("send", "latency_p99_ms"), ms, "lower"),
        ("Send and deliver", "delivery latency max", _get("send", "latency_max_ms"), ms, "lower"),
        ("Send and deliver", "warm-up delivery latency p50 (first messages after start)", _get("send", "warmup_latency_p50_ms"), ms, "lower"),
        ("Send and deliver", "warm-up delivery latency max", _get("send", "warmup_latency_max_ms"), ms, "lower"),
        ("Send and deliver", "messages lost at receivers", _get("send", "lost"), count, "lower"),
        ("Send and deliver", "messages duplicated at receivers", _get("send", "duplicated"), count, "lower"),
        ("Send and deliver", "limited (gappy) timelines", _get("send", "limited_timelines"), count, "lower"),
        ("Sync", f"initial sync, {sizes['rooms_for_sync']} rooms, first", _get("sync", "initial_sync_first_ms"), ms, "lower"),
        ("Sync", f"initial sync, {sizes['rooms_for_sync']} rooms, median of 3 more", _get("sync", "initial_sync_ms"), ms, "lower"),
        ("Sync", "initial sync response size", _get("sync", "initial_sync_bytes"), mbytes, "lower"),
        ("Sync", "incremental sync with 1 new message (median of 5)", _get("sync", "incremental_sync_ms"), ms, "lower"),
        ("Sync", "incremental sync, nothing new (median of 5)", _get("sync", "empty_incremental_sync_ms"), ms, "lower"),
        ("/messages", f"page through {sizes['long_room_events']:,} events (limit 100)", _get("messages", "paginate_seconds"), sec, "lower"),
        ("/messages", "one page p50", _get("messages", "page_p50_ms"), ms, "lower"),
        ("/messages", "one page p99", _get("messages", "page_p99_ms"), ms, "lower"),
        ("/messages", "events missing", _get("messages", "missing"), count, "lower"),
        ("/messages", "events seen twice", _get("messages", "duplicated"), count, "lower"),
    ]
    section = "Idle long-polls"
    for n in sizes["long_poll_steps"]:
        out += [
            (section, f"{n:,}: RSS while held", _step(n, "rss_held_bytes"), mib, "lower"),
            (section, f"{n:,}: RSS per long-poll", _step(n, "kib_per_long_poll"), kib, "lower"),
            (section, f"{n:,}: time to add them to the ramp (connect + settle)", _step(n, "held_after_seconds"), sec, "lower"),
            (section, f"{n:,}: server CPU per added long-poll to start waiting", _step(n, "hold_cpu_ms_per_long_poll"), ms, "lower"),
            (section, f"{n:,}: answered before the message", _step(n, "answered_before_wake"), count, "lower"),
        ]
    if sizes["long_poll_steps"]:  # only the top of the ramp is woken
        n = max(sizes["long_poll_steps"])
        out += [
            (section, f"{n:,}: all woken after one message", _step(n, "all_woken_seconds"), sec, "lower"),
            (section, f"{n:,}: median wake", _step(n, "wake_p50_seconds"), sec, "lower"),
            (section, f"{n:,}: server CPU per woken long-poll", _step(n, "wake_cpu_ms_per_long_poll"), ms, "lower"),
            (section, f"{n:,}: not woken / failed", _step(n, "not_woken"), count, "lower"),
        ]
    out += [
        ("Process", "start-up, fresh data (spawn -> 200 on /versions)", _get("process", "startup_seconds"), sec, "lower"),
        ("Process", "restart on the loaded database", _get("process", "restart_seconds"), sec, "lower"),
        ("Process", "idle RSS after start", _get("process", "idle_rss_bytes"), mib, "lower"),
        ("Process", "RSS after load", _get("process", "rss_after_load_bytes"), mib, "lower"),
        ("Process", "database bytes per 10,000 messages", _get("db", "db_bytes_per_10k_messages"), mbytes, "lower"),
        ("Process", "database size at the end", _get("process", "db_bytes_final"), mbytes, "lower"),
        ("Process", "fill rate, one room, 10 concurrent senders (both servers at once)", _get("db", "fill_msg_s"), per_s, "higher"),
        ("Process", "server CPU seconds, whole run", _get("process", "cpu_seconds_total"), sec, "lower"),
    ]
    return out


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or math.isnan(ours) or math.isnan(theirs):
        return None
    if theirs == 0:
        return None
    return ours / theirs


def _fmt(value: float | None, formatter: Callable[[float], str]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return formatter(value)


def _fmt_ratio(r: float | None) -> str:
    if r is None:
        return "—"
    if r >= 10 or r == 0:
        return f"{r:,.0f}×" if r else "0"
    if r >= 0.1:
        return f"{r:.2f}×"
    return f"{r:.3f}×"


# --- targets ------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, ours, Synapse, verdict)."""
    ours = results["servers"].get("ours", {})
    syn = results["servers"].get("synapse", {})
    steps = results["sizes"]["long_poll_steps"]
    big = max(steps) if steps else None
    rows: list[tuple[str, str, str, str]] = []

    def verdict(ok: bool | None, note: str = "") -> str:
        text = "—" if ok is None else ("**met**" if ok else "**not met**")
        return text + (f" ({note})" if note else "")

    def both(read: Callable[[dict[str, Any]], float | None]) -> tuple[float | None, float | None, float | None]:
        a, b = read(ours), read(syn)
        return a, b, _ratio(a, b)

    a, b, r = both(_get("send", "throughput_msg_s"))
    rows.append(("send throughput ≥ 20× Synapse's", _fmt(a, per_s), _fmt(b, per_s), verdict(None if r is None else r >= 20, f"{_fmt_ratio(r)}")))
    a, b, r = both(_get("send", "latency_p99_ms"))
    rows.append(("delivery p99 ≤ 50 ms at that load", _fmt(a, ms), _fmt(b, ms), verdict(None if a is None else a <= 50)))
    a, b, r = both(_get("send", "cpu_ms_per_message"))
    rows.append(("server CPU per message ≤ 1/20 of Synapse's", _fmt(a, ms), _fmt(b, ms), verdict(None if r is None else r <= 0.05, f"{_fmt_ratio(r)}")))
    a, b, r = both(_get("process", "idle_rss_bytes"))
    rows.append(("idle RSS ≤ 1/3 of Synapse's", _fmt(a, mib), _fmt(b, mib), verdict(None if r is None else r <= 1 / 3, f"{_fmt_ratio(r)}")))
    a, b, r = both(_get("process", "startup_seconds"))
    rows.append(("start-up < 0.5 s", _fmt(a, sec), _fmt(b, sec), verdict(None if a is None else a < 0.5)))
    note = "" if big == 10000 else f"measured at {big:,} only" if big else "not measured"
    a, b, r = both(_step(big, "rss_held_bytes")) if big else (None, None, None)
    rows.append(("10,000 idle long-polls in one process under 300 MB", _fmt(a, mib), _fmt(b, mib), verdict(None if a is None or big != 10000 else a < 300e6, note)))
    a, b, r = both(_step(big, "all_woken_seconds")) if big else (None, None, None)
    failed = sum(_step(big, k)(ours) or 0 for k in ("not_woken", "answered_before_wake", "connect_errors")) if big else 0
    ok = None if a is None or big != 10000 else (a <= 2 and not failed)
    if failed:
        note = (note + "; " if note else "") + f"{failed:.0f} long-polls failed, answered early or were not woken"
    rows.append(("one message wakes all 10,000 within 2 s", _fmt(a, sec), _fmt(b, sec), verdict(ok, note)))
    a, b, r = both(_get("db", "db_bytes_per_10k_messages"))
    rows.append(("database bytes per message ≤ Synapse's", _fmt(a, mbytes) + " /10k", _fmt(b, mbytes) + " /10k", verdict(None if r is None else r <= 1, f"{_fmt_ratio(r)}")))
    lost = [_get("send", k)(ours) for k in ("lost", "duplicated")] + [_get("messages", k)(ours) for k in ("missing", "duplicated")]
    lost_syn = [_get("send", k)(syn) for k in ("lost", "duplicated")] + [_get("messages", k)(syn) for k in ("missing", "duplicated")]

    def lost_text(values: list[float | None]) -> str:
        if all(v is None for v in values):
            return "—"
        return f"{int(values[0] or 0)} lost, {int(values[1] or 0)} dup; /messages {int(values[2] or 0)} missing, {int(values[3] or 0)} dup"

    ok = None if all(v is None for v in lost) else all(not v for v in lost)
    rows.append(("no message lost or duplicated (delivery and /messages)", lost_text(lost), lost_text(lost_syn), verdict(ok)))
    return rows


# --- RESULTS.md ---------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    servers = results["servers"]
    ours = servers.get("ours", {})
    syn = servers.get("synapse", {})
    load = results.get("load_before") or []
    busy = bool(load) and load[0] > 0.5 * m["nproc"]
    lines = [
        "# Benchmark: this server against Synapse",
        "",
        "Written by `./dev bench` (`bench/compare.py`); the raw numbers are in `results.json`, the",
        "plot in `results.png`. Every figure is ours / Synapse / ratio (ours ÷ Synapse).",
        "",
        f"- **Date**: {results['date']}" + (" — **quick run (small sizes)**" if results.get("quick") else ""),
        f"- **Machine**: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_bytes'] / 2**30:.1f} GiB memory, "
        f"Linux {m['kernel']}, Python {m['python']}",
        f"- **Ours**: homeserver {ours.get('version', 'not run')}",
        f"- **Synapse**: {syn.get('version', 'not run')}",
        f"- **Load average** before / after the run: {', '.join(f'{x:.2f}' for x in load)} / "
        f"{', '.join(f'{x:.2f}' for x in results.get('load_after') or [])}; the run took {results.get('elapsed_seconds', 0):.0f} s, "
        f"the bench process itself {results.get('bench_cpu_seconds', 0):.0f} s of CPU",
        "",
    ]
    if busy:
        lines += [
            "> **Provisional**: the machine was busy with other work during this run (load average above",
            "> half the CPU count before it started), so timings are noisy and CPU-bound figures low for",
            "> both servers. Rerun on a quiet machine for figures to quote.",
            "",
        ]
    lines += [
        "Both servers ran fresh as child processes of the bench (own temporary data directory,",
        "SQLite, loopback, rate limits off, log level INFO, Synapse with its defaults otherwise),",
        "at the same time but measured one after the other; the bench process drove them over",
        "HTTP with aiohttp on uvloop. Every `/sync` from the bench uses `set_presence=offline`, and",
        "no two are identical (Synapse answers a repeated identical `/sync` from a two-minute",
        "response cache; the bench times the work): timed syncs use a stored filter of their own,",
        "long-polls differ in their `timeout` by a few milliseconds.",
        "",
        "## Targets (issue 8)",
        "",
        "| target | ours | Synapse | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for target, a, b, v in targets(results):
        lines.append(f"| {target} | {a} | {b} | {v} |")
    lines += ["", "## Every figure"]
    section = None
    for sec_name, label, read, formatter, better in figures(results):
        if sec_name != section:
            section = sec_name
            lines += ["", f"### {sec_name}", "", "| figure | ours | Synapse | ratio | better |", "| --- | --- | --- | --- | --- |"]
        a, b = read(ours), read(syn)
        lines.append(f"| {label} | {_fmt(a, formatter)} | {_fmt(b, formatter)} | {_fmt_ratio(_ratio(a, b))} | {better} |")
    sizes = results["sizes"]
    phases = results.get("phases") or {}
    if phases:
        lines += ["", "## Where the run's time went", "", "| phase | seconds |", "| --- | --- |"]
        lines += [f"| {name} | {seconds:,.0f} |" for name, seconds in phases.items()]
    lines += [
        "",
        "## Workloads",
        "",
        f"1. **Send and deliver**: 20 users, all in 5 rooms; 10 of them send {sizes['messages']:,} messages in",
        "   all, back to back (each sender waits for its previous send), round-robin over the rooms;",
        "   2 others long-poll `/sync` (timeline limit 1000). Throughput is messages over the send phase;",
        "   delivery latency runs from the start of a send request to the receiver's `/sync` response",
        "   that carries it (both receivers, every message); CPU is the server's utime + stime",
        "   (`/proc/<pid>/stat`) from the first send to the last delivery, over the message count.",
        "   Before the measured sends, a warm-up: each sender sends one message, all at once, and",
        "   the receivers get them. Those are the freshly started server's first messages (cold caches",
        "   of members and push rules, each sender coming online); their latency is its own row, and",
        "   the percentiles above are of the server under steady load.",
        f"2. **Sync**: a user who created {sizes['rooms_for_sync']} rooms (name, topic, a second member, a",
        "   message each). Initial sync without a filter (each server's default timeline limit);",
        "   incremental syncs with `timeout=0` after one new message, and with nothing new.",
        f"3. **/messages**: one room filled with {sizes['long_room_events']:,} messages by 10 concurrent",
        "   requests (both servers fill at the same time: set-up, not a comparison), then paged",
        "   backwards from the end with `limit=100` until the history ends; every message must be",
        "   seen exactly once. Database bytes are the SQLite file plus its `-wal`, before and after",
        "   the fill, once the server is idle.",
        f"4. **Idle long-polls**: {sizes['long_poll_users']} users in one room; N raw HTTP connections",
        "   each hold `/sync?since=…&timeout=600000+i&filter=ID` (connection i as user i mod users,",
        "   whose stored filter leaves out presence; no two requests are identical);",
        "   they are opened in one ramp (32 at a time, and never past half the server's accept",
        "   queue, read from the kernel: past a full queue dropped SYNs wait 1 s or more to retry),",
        "   and at each N, once the server's CPU is idle, its RSS is",
        "   read. At the last N one message goes into the room, and the time until every",
        "   connection has the first byte of its answer is measured.",
        "5. **Process**: start-up is spawn to the first 200 on `/_matrix/client/versions`, on a fresh",
        "   data directory (Synapse creates its schema then; its key generation runs before and is",
        "   not counted) and again on restart after all workloads; idle RSS 2 s after start-up; RSS",
        "   after load after the last workload. Both start from bytecode, as installed servers do:",
        "   pip compiled Synapse's modules when it installed them, and the bench compiles ours",
        "   (an editable checkout) first.",
        "",
    ]
    return "\n".join(lines)


# --- results.png --------------------------------------------------------------------


def write_png(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = results["servers"]
    names = [n for n in ("ours", "synapse") if n in servers]
    label = {"ours": "ours", "synapse": "Synapse"}
    color = {"ours": "tab:blue", "synapse": "tab:orange"}
    fig, axes = plt.subplots(2, 3, figsize=(17, 10))
    fig.suptitle(f"homeserver vs Synapse — {results['date']}" + (" (quick)" if results.get("quick") else ""))

    ax = axes[0][0]
    for n in names:
        samples = sorted(servers[n].get("send", {}).get("latencies_ms", []))
        if samples:
            ax.plot(samples, [(i + 1) / len(samples) for i in range(len(samples))], label=label[n], color=color[n])
    ax.set_xscale("log")
    ax.set_xlabel("delivery latency, send -> /sync wake-up (ms, log)")
    ax.set_ylabel("fraction of deliveries")
    ax.set_title("Delivery latency (CDF)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()

    def bars(ax: Any, title: str, items: list[tuple[str, Callable[[dict[str, Any]], float | None]]], unit: str, log: bool = False) -> None:
        width = 0.8 / max(1, len(names))
        for k, n in enumerate(names):
            values = [read(servers[n]) or 0 for _, read in items]
            xs = [i + k * width for i in range(len(items))]
            drawn = ax.bar(xs, values, width, label=label[n], color=color[n])
            ax.bar_label(drawn, fmt="%.3g", fontsize=7)
        ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(items))])
        ax.set_xticklabels([t for t, _ in items], fontsize=8)
        ax.set_ylabel(unit)
        ax.set_title(title)
        if log:
            ax.set_yscale("log")
        ax.legend()
        ax.grid(True, axis="y", alpha=0.3)

    bars(
        axes[0][1],
        "Throughput",
        [("send, 5 rooms\n10 senders", _get("send", "throughput_msg_s")), ("fill, 1 room\n(both at once)", _get("db", "fill_msg_s"))],
        "messages / s",
    )
    bars(
        axes[0][2],
        "Server CPU and delivery latency",
        [
            ("CPU per msg", _get("send", "cpu_ms_per_message")),
            ("latency p50", _get("send", "latency_p50_ms")),
            ("p95", _get("send", "latency_p95_ms")),
            ("p99", _get("send", "latency_p99_ms")),
        ],
        "ms (log)",
        log=True,
    )
    bars(
        axes[1][0],
        "Sync and /messages",
        [
            ("initial sync\nfirst", _get("sync", "initial_sync_first_ms")),
            ("initial sync\nmedian", _get("sync", "initial_sync_ms")),
            ("incremental\n1 message", _get("sync", "incremental_sync_ms")),
            ("/messages\npage p50", _get("messages", "page_p50_ms")),
        ],
        "ms (log)",
        log=True,
    )

    ax = axes[1][1]
    for n in names:
        for step in servers[n].get("long_polls", {}).get("steps", []):
            samples = step.get("wake_seconds_samples") or []
            if samples:
                style = "-" if step["long_polls"] == max(results["sizes"]["long_poll_steps"]) else "--"
                ax.plot(
                    samples,
                    [(i + 1) / len(samples) for i in range(len(samples))],
                    style,
                    color=color[n],
                    label=f"{label[n]}, {step['long_polls']:,} waiting ({step['rss_held_bytes'] / MIB:.0f} MiB)"
                    + (f", {failed:,} failed before" if (failed := step.get("answered_before_wake", 0)) else ""),
                )
    ax.set_xlabel("seconds after the message until the long-poll answered")
    ax.set_ylabel("fraction of long-polls woken")
    ax.set_title("Waking idle long-polls (CDF; RSS while held)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)

    bars(
        axes[1][2],
        "Process",
        [
            ("start-up s", _get("process", "startup_seconds")),
            ("idle RSS\nMiB", lambda d: (_get("process", "idle_rss_bytes")(d) or 0) / MIB),
            ("RSS after\nload MiB", lambda d: (_get("process", "rss_after_load_bytes")(d) or 0) / MIB),
            ("DB MB per\n10k msgs", lambda d: (_get("db", "db_bytes_per_10k_messages")(d) or 0) / 1e6),
        ],
        "(log)",
        log=True,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
