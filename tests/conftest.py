"""Fixtures: a real server per test session, HTTP clients whose every request and
response is checked against the spec's OpenAPI definitions, and fresh users."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import matrix_spec
from tests.fake_peer import FakePeer
from tests.server import ServerProcess
from tests.synapse import SynapseProcess, synapse_available

V3 = "/_matrix/client/v3"


def _check_against_spec(response: httpx.Response) -> None:
    request = response.request
    if request.headers.get("x-test-skip-spec"):
        return
    response.read()
    try:
        body = response.json()
    except ValueError:
        return
    # Streamed requests have no content to look at; only their response is checked.
    sent_raw = getattr(request, "_content", None)
    if sent_raw and request.headers.get("content-type", "").startswith("application/json"):
        try:
            sent = json.loads(sent_raw)
        except ValueError:
            sent = None
        # Only well-formed requests are expected to fit the request schema.
        if sent is not None and response.status_code < 400:
            matrix_spec.check_request(request.method, request.url.path, sent)
    matrix_spec.check_response(request.method, request.url.path, response.status_code, body)


class Api(httpx.Client):
    """An HTTP client for one server; spec-checks every exchange."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        super().__init__(
            base_url=base_url,
            headers=headers,
            timeout=30,
            event_hooks={"response": [_check_against_spec]},
        )


@dataclass
class User:
    user_id: str
    password: str
    access_token: str
    device_id: str
    api: Api

    @property
    def localpart(self) -> str:
        return self.user_id[1:].split(":", 1)[0]


def register_user(base_url: str, localpart: str | None = None, password: str | None = None) -> User:
    localpart = localpart or "user" + secrets.token_hex(5)
    password = password or secrets.token_urlsafe(12)
    with Api(base_url) as api:
        response = api.post(
            f"{V3}/register",
            json={"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    return User(body["user_id"], password, body["access_token"], body["device_id"], Api(base_url, body["access_token"]))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("server"))
    process.start()
    yield process
    process.stop()


@pytest.fixture
def make_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """Start an extra server with its own config (e.g. registration closed)."""
    started: list[ServerProcess] = []

    def make(overrides: dict[str, Any] | None = None, start: bool = True) -> ServerProcess:
        process = ServerProcess(tmp_path_factory.mktemp("server"), overrides)
        if start:
            process.start()
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Api]:
    with Api(server.base_url) as client:
        yield client


@pytest.fixture
def new_user(server: ServerProcess) -> Callable[..., User]:
    return lambda localpart=None, password=None: register_user(server.base_url, localpart, password)


@pytest.fixture
def user(new_user: Callable[..., User]) -> User:
    return new_user()


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseProcess]:
    """One real Synapse for the whole run (interop tests)."""
    if not synapse_available():
        pytest.skip("Synapse is installed by ./dev test")
    process = SynapseProcess(tmp_path_factory.mktemp("synapse"))
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Our server with its federation listener on, for the interop tests."""
    process = ServerProcess(tmp_path_factory.mktemp("ours"), federation=True)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakePeer]:
    """A hostile federation peer (tests/fake_peer.py) for one test module."""
    fake = FakePeer(tmp_path_factory.mktemp("peer"))
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
