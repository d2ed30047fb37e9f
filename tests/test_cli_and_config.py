"""The `homeserver` command and the config file, as an operator uses them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from homeserver.config import ConfigError, load_config, parse_config
from homeserver.config_generate import render_example
from tests.conftest import V3, Api
from tests.server import free_port


def homeserver(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "homeserver", *args], capture_output=True, text=True, timeout=timeout
    )


def test_example_config_is_the_rendered_template(repo_root: Path) -> None:
    example = (repo_root / "config.example.yaml").read_text()
    assert example == render_example(), "run: python -m homeserver.config_generate > config.example.yaml"
    config = parse_config(yaml.safe_load(example))
    assert config.server_name == "example.org"
    assert config.listeners.federation is not None and config.listeners.federation.port == 8448


def test_generate_config_with_self_signed_tls(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = homeserver(
        "generate-config",
        "--server-name", "chat.example:8448",
        "--data-dir", str(data),
        "--client-listen", "127.0.0.1:18008",
        "--federation-listen", "127.0.0.1:18448",
        "--self-signed-tls",
    )
    assert result.returncode == 0, result.stderr
    config = load_config(data / "homeserver.yaml")
    assert config.server_name == "chat.example:8448"
    assert (config.listeners.client.host, config.listeners.client.port) == ("127.0.0.1", 18008)
    federation = config.listeners.federation
    assert federation is not None and federation.port == 18448
    cert = Path(federation.tls_certificate_path or "")
    assert cert.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert oct(Path(federation.tls_private_key_path or "").stat().st_mode & 0o777) == "0o600"
    assert (data / "signing.key").read_text().startswith("ed25519 a_")
    # A second run refuses to overwrite what is there.
    again = homeserver("generate-config", "--server-name", "x.org", "--data-dir", str(data))
    assert again.returncode == 2 and "exists already" in again.stderr


def test_bad_config_stops_with_one_clear_line(tmp_path: Path) -> None:
    cases = {
        "server_name: 5\ndata_directory: /tmp/x\n": "server_name",
        "data_directory: /tmp/x\n": "'server_name' is missing",
        "server_name: ok.org\ndata_directory: /tmp/x\nlisteners: {client: {port: 99999}}\n": "listeners.client.port",
        "server_name: ok.org\ndata_directory: /tmp/x\nregistration: {enabled: maybe}\n": "registration.enabled",
        "server_name: ok.org\ndata_directory: /tmp/x\nsurprise: 1\n": "'surprise' is not a known setting",
        "server_name: [unclosed\n": "not valid YAML",
        "- a list\n": "mapping",
    }
    for text, expected in cases.items():
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        result = homeserver("run", "--config", str(path))
        assert result.returncode == 2, text
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: config") or "config file" in lines[0]
        assert expected in lines[0], (text, lines[0])
    missing = homeserver("run", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read config file" in missing.stderr


def test_config_error_names_nested_field() -> None:
    try:
        parse_config({"server_name": "a.org", "data_directory": "/x", "rate_limits": {"login": {"per_second": -1}}})
    except ConfigError as exc:
        assert "rate_limits.login.per_second" in str(exc)
    else:
        raise AssertionError("negative rate accepted")
    # Checks of a field's meaning name it too, in every section that has it.
    for section in ("federation", "push"):
        try:
            parse_config({"server_name": "a.org", "data_directory": "/x", section: {"ip_range_allowlist": ["10.0.0.0/8", "lan"]}})
        except ConfigError as exc:
            assert f"config field '{section}.ip_range_allowlist': 'lan' is not an IP range" in str(exc), str(exc)
        else:
            raise AssertionError(f"bad range in {section} accepted")
    defaults = parse_config({"server_name": "a.org", "data_directory": "/x"})
    assert "127.0.0.0/8" in defaults.push.ip_range_blocklist and "127.0.0.0/8" in defaults.federation.ip_range_blocklist
    assert defaults.database.event_cache_size == 10_000
    for size in (-1, "many"):
        try:
            parse_config({"server_name": "a.org", "data_directory": "/x", "database": {"event_cache_size": size}})
        except ConfigError as exc:
            assert "database.event_cache_size" in str(exc), str(exc)
        else:
            raise AssertionError(f"event_cache_size {size!r} accepted")


def test_register_user_command_makes_an_admin(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    assert homeserver("generate-config", "--server-name", "localhost", "--data-dir", str(data), "--client-listen", f"127.0.0.1:{port}").returncode == 0
    config = data / "homeserver.yaml"
    created = homeserver("register-user", "--config", str(config), "root", "--password", "s3cret", "--admin")
    assert created.returncode == 0, created.stderr
    assert "@root:localhost (admin)" in created.stdout
    duplicate = homeserver("register-user", "--config", str(config), "root", "--password", "x")
    assert duplicate.returncode == 2 and "taken" in duplicate.stderr
    process = subprocess.Popen([sys.executable, "-m", "homeserver", "run", "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}")
        login = Api(f"http://127.0.0.1:{port}").post(f"{V3}/login", json={"type": "m.login.password", "user": "root", "password": "s3cret"})
        assert login.status_code == 200
        # Registration is closed in a generated config unless asked for.
        closed = Api(f"http://127.0.0.1:{port}").post(f"{V3}/register", json={"auth": {"type": "m.login.dummy"}})
        assert closed.status_code == 403
    finally:
        process.terminate()
        process.wait(10)


def _wait_until_up(base_url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/_matrix/client/versions", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"{base_url} did not come up")


def test_embedded_default_run_creates_then_reuses_its_data(tmp_path: Path) -> None:
    """`homeserver run` with no config: data dir, config, key and SQLite on 127.0.0.1:8008."""
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "homeserver", "run", "--data-dir", str(data)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        assert process.stdout is not None
        for line in process.stdout:
            if "Point your Matrix client at" in line:
                assert line.strip().endswith("http://127.0.0.1:8008")
                return process
        raise AssertionError("the server did not print its URL")

    first = start()
    try:
        assert {p.name for p in data.iterdir()} >= {"homeserver.yaml", "signing.key", "homeserver.db"}
        registered = Api("http://127.0.0.1:8008").post(
            f"{V3}/register", json={"username": "keeper", "password": "pw", "auth": {"type": "m.login.dummy"}}
        )
        assert registered.status_code == 200
    finally:
        first.terminate()
        first.wait(10)
    key = (data / "signing.key").read_text()
    second = start()
    try:
        assert (data / "signing.key").read_text() == key
        login = Api("http://127.0.0.1:8008").post(f"{V3}/login", json={"type": "m.login.password", "user": "keeper", "password": "pw"})
        assert login.status_code == 200
    finally:
        second.terminate()
        second.wait(10)
