"""A real homeserver process for tests: its own data directory, a free loopback port,
and SQLite or (with HOMESERVER_TEST_POSTGRES set) a fresh PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

POSTGRES_ENV = "HOMESERVER_TEST_POSTGRES"  # e.g. postgresql+asyncpg://postgres@127.0.0.1:5433


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def fresh_postgres_database(base_url: str) -> str:
    """Create an empty database on the test PostgreSQL server; return its URL."""
    import asyncpg

    name = "hs_test_" + secrets.token_hex(6)
    plain = base_url.replace("postgresql+asyncpg://", "postgresql://")

    async def create() -> None:
        conn = await asyncpg.connect(plain.rstrip("/") + "/postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    # On its own thread: async tests call this with their event loop running.
    failures: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(create())
        except BaseException as exc:  # handed back to the caller's thread
            failures.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if failures:
        raise failures[0]
    return base_url.rstrip("/") + "/" + name


class ServerProcess:
    def __init__(self, directory: Path, overrides: dict[str, Any] | None = None, *, federation: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        # With federation the server name is the TLS federation listener's address,
        # which is how other servers on loopback find it.
        self.federation_port = free_port() if federation else None
        self.server_name = f"localhost:{self.federation_port or self.port}"
        self.base_url = f"http://127.0.0.1:{self.port}"
        database: dict[str, Any] = {}
        if os.environ.get(POSTGRES_ENV):
            database = {"url": fresh_postgres_database(os.environ[POSTGRES_ENV])}
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "data_directory": str(directory / "data"),
            "listeners": {"client": {"host": "127.0.0.1", "port": self.port}},
            "database": database,
            "registration": {"enabled": True},
            "rate_limits": {"enabled": False},
            # Real Argon2id, at the lowest cost the config allows: hundreds of test
            # logins should not each spend a production-grade hash.
            "passwords": {"argon2_time_cost": 1, "argon2_memory_kib": 8192},
            "log_level": "INFO",
            # The tests' push gateways listen on loopback, which the default blocklist covers.
            "push": {"ip_range_blocklist": []},
        }
        if self.federation_port is not None:
            from homeserver.config_generate import write_self_signed_certificate

            cert, key = directory / "federation.crt", directory / "federation.key"
            write_self_signed_certificate(cert, key, "localhost")
            config["listeners"]["federation"] = {
                "host": "127.0.0.1",
                "port": self.federation_port,
                "tls_certificate_path": str(cert),
                "tls_private_key_path": str(key),
            }
            # Every test server is on loopback, which the default ip_range_blocklist
            # covers: federating here needs the blocklist emptied explicitly.
            config["federation"] = {
                "enabled": True,
                "verify_tls": False,
                "ip_range_blocklist": [],
                "allow_public_rooms_over_federation": True,
            }
        self.config = _deep_merge(config, overrides or {})
        self.config_path = directory / "homeserver.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = directory / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "homeserver", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/_matrix/client/versions", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """kill -9: no chance to flush or clean up."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text()
