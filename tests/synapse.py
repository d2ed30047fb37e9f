"""A real Synapse on loopback, for interop tests (installed from PyPI by ./dev test
into .synapse-venv; see the design's notes on running Synapse on loopback)."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from homeserver.config_generate import write_self_signed_certificate
from tests.server import free_port

REPO = Path(__file__).resolve().parents[1]
SYNAPSE_PYTHON = Path(os.environ.get("SYNAPSE_VENV", REPO / ".synapse-venv")) / "bin" / "python"

# Rate limits that never get in a test's way.
_NO_LIMIT = {"per_second": 10000, "burst_count": 10000}


def synapse_available() -> bool:
    # CI sets HOMESERVER_REQUIRE_SYNAPSE so a failed install fails the interop tests
    # instead of skipping them.
    return SYNAPSE_PYTHON.exists() or bool(os.environ.get("HOMESERVER_REQUIRE_SYNAPSE"))


class SynapseProcess:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.client_port = free_port()
        self.federation_port = free_port()
        self.server_name = f"localhost:{self.federation_port}"
        self.base_url = f"http://127.0.0.1:{self.client_port}"
        cert, key = directory / "tls.crt", directory / "tls.key"
        write_self_signed_certificate(cert, key, "localhost")
        log_config = directory / "log.yaml"
        log_config.write_text(
            yaml.safe_dump(
                {
                    "version": 1,
                    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
                    "handlers": {
                        "file": {"class": "logging.FileHandler", "filename": str(directory / "synapse.log"), "formatter": "plain"}
                    },
                    "root": {"level": "INFO", "handlers": ["file"]},
                    "disable_existing_loggers": False,
                }
            )
        )
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "pid_file": str(directory / "synapse.pid"),
            "listeners": [
                {
                    "port": self.client_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "resources": [{"names": ["client"], "compress": False}],
                },
                {
                    "port": self.federation_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": True,
                    "resources": [{"names": ["federation"], "compress": False}],
                },
            ],
            "tls_certificate_path": str(cert),
            "tls_private_key_path": str(key),
            "database": {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}},
            "log_config": str(log_config),
            "media_store_path": str(directory / "media"),
            "signing_key_path": str(directory / "signing.key"),
            "report_stats": False,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "registration_shared_secret": secrets.token_hex(16),
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_verify_certificates": False,
            "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
            # Our /publicRooms?server=<synapse> reads its directory over federation.
            "allow_public_rooms_over_federation": True,
            # Synapse lets nobody but admins publish to its directory by default.
            "room_list_publication_rules": [{"action": "allow"}],
            "rc_message": _NO_LIMIT,
            "rc_registration": _NO_LIMIT,
            "rc_login": {"address": _NO_LIMIT, "account": _NO_LIMIT, "failed_attempts": _NO_LIMIT},
            "rc_joins": {"local": _NO_LIMIT, "remote": _NO_LIMIT},
            "rc_invites": {"per_room": _NO_LIMIT, "per_user": _NO_LIMIT, "per_issuer": _NO_LIMIT},
            "rc_federation": {"window_size": 1000, "sleep_limit": 10000, "sleep_delay": 1, "reject_limit": 10000, "concurrent": 100},
            "url_preview_enabled": False,
        }
        self.config_path = directory / "homeserver.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        subprocess.run(
            [str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "-c", str(self.config_path), "--generate-keys"],
            check=True,
            capture_output=True,
            cwd=self.directory,
        )
        out = (self.directory / "stdout.log").open("ab")
        self.process = subprocess.Popen(
            [str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"synapse exited early:\n{self.log()[-5000:]}")
            try:
                if httpx.get(f"{self.base_url}/_matrix/client/versions", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"synapse did not start:\n{self.log()[-5000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        path = self.directory / "synapse.log"
        out = self.directory / "stdout.log"
        return (out.read_text() if out.exists() else "") + (path.read_text() if path.exists() else "")

    def register(self, localpart: str | None = None, password: str = "synapse-password") -> dict[str, Any]:
        localpart = localpart or "syn" + secrets.token_hex(4)
        body = {"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}}
        response = httpx.post(f"{self.base_url}/_matrix/client/v3/register", json=body, timeout=30)
        if response.status_code == 401:
            body["auth"]["session"] = response.json()["session"]
            response = httpx.post(f"{self.base_url}/_matrix/client/v3/register", json=body, timeout=30)
        response.raise_for_status()
        return dict(response.json())
