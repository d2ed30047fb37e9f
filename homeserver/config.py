"""The server's configuration: one YAML file, validated into typed models.

A wrong or missing field stops start-up with one line naming the field and what is
expected (`ConfigError`), never a traceback.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from homeserver.validation import Problem, problem_of

SERVER_NAME_RE = re.compile(
    r"^(\[[0-9A-Fa-f:.]+\]|[0-9]{1,3}(\.[0-9]{1,3}){3}|[A-Za-z0-9.-]{1,255})(:[0-9]{1,5})?$"
)


class ConfigError(Exception):
    """A config problem, phrased for the operator in one line."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A config section. Unknown keys are typos more often than not: they are rejected
    so that they are noticed. Frozen, so a section's default can be one shared
    instance."""


Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


def _invalid(name: str, problem: str) -> ValueError:
    # Raised from __post_init__: msgspec adds where the enclosing section is, and the
    # field's own name goes in front of the message (validation.problem_of reads it).
    return ValueError(f"{name}: {problem}")


class Listener(_Strict):
    host: str = "127.0.0.1"
    port: Port = 8008


class FederationListener(Listener):
    port: Port = 8448
    tls_certificate_path: str | None = None
    tls_private_key_path: str | None = None


class Listeners(_Strict):
    client: Listener = Listener()
    federation: FederationListener | None = None


class Database(_Strict):
    # Either a SQLite file path or a full SQLAlchemy URL (postgresql+asyncpg://...).
    sqlite_path: str | None = None
    url: str | None = None
    # Room events kept parsed in memory (~2.5 KiB each), as Synapse's event_cache_size.
    event_cache_size: Annotated[int, msgspec.Meta(ge=0)] = 10_000

    def __post_init__(self) -> None:
        if self.url is not None and not self.url.startswith(("postgresql", "sqlite")):
            raise _invalid("url", "must be a postgresql:// or sqlite:// URL")


class Registration(_Strict):
    enabled: bool = False
    shared_secret: str | None = None
    # When non-empty, registering requires one of these tokens (m.login.registration_token)
    # in addition to any stored in the database by an admin.
    registration_tokens: list[str] = []
    require_token: bool = False


class RateLimit(_Strict):
    per_second: Annotated[float, msgspec.Meta(gt=0)] = 0.17
    burst_count: Annotated[int, msgspec.Meta(ge=1)] = 5


class RateLimits(_Strict):
    enabled: bool = True
    login: RateLimit = RateLimit()
    registration: RateLimit = RateLimit()
    message: RateLimit = RateLimit(per_second=10, burst_count=50)


class Limits(_Strict):
    max_request_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1_048_576
    max_upload_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 52_428_800


class Media(_Strict):
    # The legacy /_matrix/media/v3/download|thumbnail (unauthenticated), config and
    # preview_url endpoints, for clients older than spec v1.11. The spec lets servers
    # freeze them; off answers 404.
    enable_legacy_endpoints: bool = True
    # Images with more pixels than this are stored but never decoded: decoding is what
    # a decompression bomb (a tiny file declaring a huge image) attacks.
    max_image_pixels: Annotated[int, msgspec.Meta(ge=1)] = 32_000_000
    # URL previews fetch arbitrary URLs from the server; not available yet.
    url_preview_enabled: bool = False

    def __post_init__(self) -> None:
        if self.url_preview_enabled:
            raise _invalid("url_preview_enabled", "URL previews are not available in this version; set it to false")


# Addresses outbound federation and remote media requests never connect to, as
# Synapse's default: loopback, private, carrier-grade NAT, link-local, documentation,
# multicast and unique-local ranges. A peer that resolves into one is unreachable, so
# a remote server name cannot be used to reach services on our own network.
DEFAULT_IP_RANGE_BLOCKLIST = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
]


def _check_cidrs(name: str, value: list[str]) -> None:
    for cidr in value:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise _invalid(name, f"{cidr!r} is not an IP range (CIDR, e.g. 10.0.0.0/8)") from None


class _OutboundRanges(_Strict):
    """A section whose outbound requests to addresses in the blocklist are refused;
    the allowlist punches holes in it."""

    ip_range_blocklist: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_IP_RANGE_BLOCKLIST))
    ip_range_allowlist: list[str] = []

    def __post_init__(self) -> None:
        _check_cidrs("ip_range_blocklist", self.ip_range_blocklist)
        _check_cidrs("ip_range_allowlist", self.ip_range_allowlist)


class FederationSettings(_OutboundRanges):
    # The IP ranges (_OutboundRanges) apply to federation, remote media and its redirects.
    enabled: bool = False
    verify_tls: bool = True
    ca_file: str | None = None
    domain_allowlist: list[str] | None = None
    domain_denylist: list[str] = []
    # Answer other servers' /_matrix/federation/v1/publicRooms (false: 403, as Synapse).
    allow_public_rooms_over_federation: bool = False


class Passwords(_Strict):
    # Argon2id cost. The defaults (RFC 9106's second recommendation) take tens of
    # milliseconds of one core per login; lower them only on very small machines.
    argon2_time_cost: Annotated[int, msgspec.Meta(ge=1, le=20)] = 3
    argon2_memory_kib: Annotated[int, msgspec.Meta(ge=8192, le=4_194_304)] = 65536


class Rooms(_Strict):
    # Room admins (who may set m.room.canonical_alias) may publish their rooms to the
    # public directory; when false only server admins may.
    admins_may_publish: bool = True


class PushSettings(_OutboundRanges):
    # The IP ranges (_OutboundRanges) apply to push gateways: a user chooses the URL of
    # their pusher, and without them could make the server POST into its own network.
    # Evaluate push rules for every room event (notification counts, /notifications,
    # push gateways); false: no counts and nothing is pushed.
    enabled: bool = True
    # Seconds to wait for a push gateway's answer before trying again later.
    gateway_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0


class PresenceSettings(_Strict):
    # Track and share online/unavailable/offline; false: presence is always offline
    # and nothing about it is stored or sent.
    enabled: bool = True


class UserDirectory(_Strict):
    # Search every local user (true) or only those who share a room with the
    # searcher or are in a public room (false).
    search_all_users: bool = False


class ServerNotices(_Strict):
    # Let the operator send notices to users (admin API, `homeserver admin notice`).
    enabled: bool = True
    # The system user that sends them, created on first use.
    system_user_localpart: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9._=\-/+]+$")] = "notices"
    system_user_display_name: str = "Server Notices"
    room_name: str = "Server Notices"


class Config(_Strict):
    server_name: str
    data_directory: str
    public_baseurl: str | None = None
    media_directory: str | None = None
    signing_key_path: str | None = None
    listeners: Listeners = Listeners()
    database: Database = Database()
    registration: Registration = Registration()
    rate_limits: RateLimits = RateLimits()
    limits: Limits = Limits()
    media: Media = Media()
    federation: FederationSettings = FederationSettings()
    default_room_version: Literal["10", "11", "12"] = "12"
    rooms: Rooms = Rooms()
    passwords: Passwords = Passwords()
    presence: PresenceSettings = PresenceSettings()
    push: PushSettings = PushSettings()
    user_directory: UserDirectory = UserDirectory()
    server_notices: ServerNotices = ServerNotices()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Where relative paths in this file are resolved from (set by the loader).
    config_directory: str = "."

    def __post_init__(self) -> None:
        if not SERVER_NAME_RE.match(self.server_name):
            raise _invalid("server_name", "must be a hostname with an optional :port, e.g. example.org")
        if self.public_baseurl is not None and not self.public_baseurl.startswith(("http://", "https://")):
            raise _invalid("public_baseurl", "must start with http:// or https://")

    def path(self, value: str) -> Path:
        """Resolve a path from the config relative to the config file's directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.config_directory) / p

    @property
    def data_path(self) -> Path:
        return self.path(self.data_directory)

    @property
    def media_path(self) -> Path:
        return self.path(self.media_directory) if self.media_directory else self.data_path / "media"

    @property
    def signing_key_file(self) -> Path:
        if self.signing_key_path:
            return self.path(self.signing_key_path)
        return self.data_path / "signing.key"

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        sqlite = self.path(self.database.sqlite_path) if self.database.sqlite_path else (
            self.data_path / "homeserver.db"
        )
        return f"sqlite+aiosqlite:///{sqlite}"

    @property
    def client_base_url(self) -> str:
        if self.public_baseurl:
            return self.public_baseurl.rstrip("/")
        host = self.listeners.client.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.listeners.client.port}"


_GOT_TYPE = re.compile(r", got `[^`]*`$")


def _value_at(raw: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return None
    return raw


def _describe(problem: Problem, raw: dict[str, Any]) -> str:
    field = problem.field or "(top level)"
    if problem.kind == "missing":
        return f"config field '{field}' is missing"
    if problem.kind == "unknown":
        return f"config field '{field}' is not a known setting"
    # msgspec's "Expected `int`, got `str`": the value itself says more than its type.
    message = _GOT_TYPE.sub("", problem.message)
    return f"config field '{field}': {message} (got {_value_at(raw, problem.path)!r})"


def parse_config(raw: Any, config_directory: str = ".") -> Config:
    if not isinstance(raw, dict):
        raise ConfigError("the config file must be a YAML mapping of settings")
    try:
        # Not strict: YAML that quotes a number or a boolean ("8008", "true") is meant
        # as one, as an operator would expect.
        return msgspec.convert({**raw, "config_directory": config_directory}, type=Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(problem_of(exc), raw)) from None


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from None
    return parse_config(raw, str(path.resolve().parent))
