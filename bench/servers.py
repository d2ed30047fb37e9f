"""The two servers under test, started the same way: a fresh data directory, SQLite,
a free loopback port, rate limits off; and what the bench reads about their process
from /proc (CPU seconds, RSS), from the kernel (the listening socket's accept queue)
and from disk (database bytes)."""

from __future__ import annotations

import http.client
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.server import ServerProcess  # noqa: E402
from tests.synapse import SYNAPSE_PYTHON, SynapseProcess  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_NO_LIMIT = {"per_second": 100000, "burst_count": 100000}


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise KeyError("VmRSS")


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(c) for c in text)
    return out


# sock_diag (linux/inet_diag.h): one dump request for the TCP sockets in LISTEN state.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x301
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10


def accept_queue(port: int) -> tuple[int, int] | None:
    """(connections waiting to be accepted, the backlog) of the TCP socket listening on
    `port`, or None where the kernel will not say (not Linux).

    When the queue is full the kernel drops new SYNs and the client retries only after
    1 s, 3 s, 7 s...: opening long-polls faster than a server accepts them made
    Synapse's ramp (a backlog of 50) take 98 s for 12 s of its CPU."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as netlink:
            for family in (socket.AF_INET, socket.AF_INET6):
                # inet_diag_req_v2: family, protocol, extensions, pad, states; then an
                # all-zero inet_diag_sockid (48 bytes): every listening socket.
                request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN) + bytes(48)
                netlink.send(struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0) + request)
                found = _listen_queue_in_dump(netlink, port)
                if found is not None:
                    return found
    except OSError:
        return None
    return None


def _listen_queue_in_dump(netlink: socket.socket, port: int) -> tuple[int, int] | None:
    found: tuple[int, int] | None = None
    while True:
        data = netlink.recv(65536)
        offset = 0
        while offset < len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if kind in (_NLMSG_DONE, _NLMSG_ERROR):
                return found
            # inet_diag_msg after the 16-byte header: family, state, timer, retrans,
            # then the sockid (source port first, big-endian), expires, and the queue
            # lengths, which for a listening socket are the accept queue and backlog.
            body = offset + 16
            (source_port,) = struct.unpack_from(">H", data, body + 4)
            if source_port == port:
                found = struct.unpack_from("=II", data, body + 4 + 48 + 4)  # type: ignore[assignment]
            offset += (length + 3) & ~3


def wait_for_versions(port: int, process: subprocess.Popen[bytes], started: float, timeout: float, log: Any) -> float:
    """Poll GET /_matrix/client/versions every few ms; return seconds from `started`
    to the first 200."""
    deadline = started + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log()[-4000:]}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/_matrix/client/versions")
            if conn.getresponse().status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.005)
    raise RuntimeError(f"server did not answer /versions within {timeout}s:\n{log()[-4000:]}")


class BenchServer:
    """Common face of both servers for the workloads."""

    name: str
    label: str
    base_url: str
    port: int
    process: subprocess.Popen[bytes] | None
    db_files: list[Path]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def db_bytes(self) -> int:
        """The SQLite database with its write-ahead log (not the -shm index)."""
        total = 0
        for base in self.db_files:
            for path in (base, base.with_name(base.name + "-wal")):
                if path.exists():
                    total += path.stat().st_size
        return total

    def start(self) -> float:
        """Spawn the server; return seconds from spawn to the first 200 on /versions."""
        raise NotImplementedError

    def restart(self) -> float:
        """Stop, then start again on the same data; the seconds to the first 200."""
        self.stop()
        return self.start()

    def stop(self) -> None:
        raise NotImplementedError

    def log(self) -> str:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError


class Ours(BenchServer):
    name = "ours"
    label = "ours"

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # Bytecode for our modules, as an installed server has: pip compiles a
        # package's modules when it installs it (Synapse's were, into its venv), but
        # this checkout is an editable install, and with PYTHONDONTWRITEBYTECODE set
        # (as on our CI machines) every start would compile them all again.
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "homeserver", "storage", "federation"],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.inner = ServerProcess(directory, {"log_level": "INFO"})
        self.base_url = self.inner.base_url
        self.port = self.inner.port
        self.process = None
        self.db_files = [directory / "data" / "homeserver.db"]

    def start(self) -> float:
        log = self.inner.log_path.open("ab")
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "homeserver", "run", "--config", str(self.inner.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self.inner.process = self.process
        return wait_for_versions(self.port, self.process, started, 60, self.log)

    def stop(self) -> None:
        self.inner.stop()

    def log(self) -> str:
        return self.inner.log() if self.inner.log_path.exists() else ""

    def version(self) -> str:
        import tomllib

        version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
            ).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
            commit += " + uncommitted changes" if dirty.strip() else ""
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown commit"
        return f"{version} ({commit})"


class Synapse(BenchServer):
    name = "synapse"
    label = "Synapse"

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.inner = SynapseProcess(directory)
        config = yaml.safe_load(self.inner.config_path.read_text())
        # Every rate limit Synapse knows out of the way (the test harness raises the
        # ones its tests meet); cheap password hashing, since registration is set-up
        # and not measured. Otherwise Synapse's defaults, like ours.
        config.update(
            {
                "bcrypt_rounds": 4,
                "rc_message": _NO_LIMIT,
                "rc_registration": _NO_LIMIT,
                "rc_registration_token_validity": _NO_LIMIT,
                "rc_login": {"address": _NO_LIMIT, "account": _NO_LIMIT, "failed_attempts": _NO_LIMIT},
                "rc_joins": {"local": _NO_LIMIT, "remote": _NO_LIMIT},
                "rc_joins_per_room": _NO_LIMIT,
                "rc_invites": {"per_room": _NO_LIMIT, "per_user": _NO_LIMIT, "per_issuer": _NO_LIMIT},
                "rc_room_creation": _NO_LIMIT,
                "rc_presence": {"per_user": _NO_LIMIT},
                "rc_delayed_event_mgmt": _NO_LIMIT,
                "rc_3pid_validation": _NO_LIMIT,
                "rc_admin_redaction": _NO_LIMIT,
                "rc_key_requests": _NO_LIMIT,
                "rc_reports": _NO_LIMIT,
            }
        )
        self.inner.config_path.write_text(yaml.safe_dump(config))
        self.base_url = self.inner.base_url
        self.port = self.inner.client_port
        self.process = None
        self.db_files = [directory / "homeserver.db"]

    def start(self) -> float:
        # Key generation is a separate one-off command, not part of start-up.
        if not (self.inner.directory / "signing.key").exists():
            subprocess.run(
                [str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "-c", str(self.inner.config_path), "--generate-keys"],
                check=True,
                capture_output=True,
                cwd=self.inner.directory,
            )
        out = (self.inner.directory / "stdout.log").open("ab")
        started = time.monotonic()
        self.process = subprocess.Popen(
            [str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "-c", str(self.inner.config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.inner.directory,
        )
        self.inner.process = self.process
        return wait_for_versions(self.port, self.process, started, 120, self.log)

    def stop(self) -> None:
        self.inner.stop()

    def log(self) -> str:
        return self.inner.log()

    def version(self) -> str:
        out = subprocess.run(
            [str(SYNAPSE_PYTHON), "-c", "import synapse; print(synapse.__version__)"],
            capture_output=True,
            text=True,
        )
        return out.stdout.strip() or "unknown"


def synapse_installed() -> bool:
    return SYNAPSE_PYTHON.exists()
