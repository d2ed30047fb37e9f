"""`homeserver admin ...`: the admin operations from the command line, for self-hosters
without an admin UI.

Commands open the database named by the config file and run the same service code as
the admin API, so they work whether or not the server is running. The running server
keeps each room's current tips in memory, so commands that write room events (users
deactivate, rooms delete, notice send) must not write them behind its back: when the
server answers on its client listener, those commands go through its admin API instead,
with a short-lived access token for an admin account (`--as`, default the first admin)
that is deleted again afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from homeserver.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from homeserver.homeserver import HomeServer

CLI_DEVICE_PREFIX = "ADMINCLI"


class CommandError(ConfigError):
    """A failed admin command, printed as one `error:` line (exit status 2)."""


# --- plumbing ----------------------------------------------------------------------


def _client_url(config: Config) -> str:
    host = config.listeners.client.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.listeners.client.port}"


def server_is_running(config: Config) -> bool:
    import httpx

    try:
        return httpx.get(f"{_client_url(config)}/_matrix/client/versions", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@asynccontextmanager
async def _homeserver(config: Config) -> Any:
    from homeserver.homeserver import HomeServer

    hs = HomeServer(config)
    await hs.start()
    try:
        yield hs
    finally:
        await hs.stop()


def _user_id(hs: HomeServer, value: str) -> str:
    """A full user ID from a localpart or a full ID."""
    return value if value.startswith("@") else f"@{value}:{hs.server_name}"


class LiveServer:
    """The running server's admin API, with a temporary admin session."""

    def __init__(self, hs: HomeServer, base_url: str, admin: str, token: str, device_id: str) -> None:
        self.hs = hs
        self.base_url = base_url
        self.admin = admin
        self.token = token
        self.device_id = device_id

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        async with httpx.AsyncClient(base_url=self.base_url, timeout=600) as client:
            response = await client.request(
                method, path, json=body if body is not None else {}, headers={"Authorization": f"Bearer {self.token}"}
            )
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code >= 400:
            raise CommandError(f"the server answered {response.status_code}: {payload.get('error', response.text)}")
        return payload if isinstance(payload, dict) else {}


@asynccontextmanager
async def _live_server(hs: HomeServer, config: Config, as_user: str | None) -> Any:
    from homeserver.auth import hash_token, new_access_token
    from storage.devices import NewDevice

    admin = _user_id(hs, as_user) if as_user else await hs.admin_store.first_admin()
    if admin is None:
        raise CommandError(
            "the server is running, and this command goes through its admin API, which needs an admin"
            " account: make one with `homeserver admin users set-admin USER` (or pass --as ADMIN)"
        )
    user = await hs.accounts.get_user(admin)
    if user is None or not user.is_admin or user.deactivated:
        raise CommandError(f"{admin} is not an active server admin")
    token = new_access_token()
    device_id = CLI_DEVICE_PREFIX + secrets.token_hex(4).upper()
    await hs.devices.add_device(
        admin, NewDevice(device_id, "homeserver admin (command line)", hash_token(token)), int(time.time() * 1000)
    )
    try:
        yield LiveServer(hs, _client_url(config), admin, token, device_id)
    finally:
        await hs.devices.delete_devices(admin, [device_id])


def _run(config_path: str, work: Callable[[HomeServer, Config], Awaitable[None]]) -> None:
    from homeserver.errors import MatrixError

    config = load_config(config_path)

    async def main() -> None:
        async with _homeserver(config) as hs:
            await work(hs, config)

    try:
        asyncio.run(main())
    except MatrixError as exc:
        raise CommandError(exc.error) from None


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _date(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


# --- users -------------------------------------------------------------------------


def cmd_users_list(args: argparse.Namespace) -> None:
    async def work(hs: HomeServer, config: Config) -> None:
        rows: list[list[str]] = []
        offset = 0
        while True:
            page = await hs.admin.list_users(
                offset=offset, limit=500, name=args.name, deactivated=args.deactivated
            )
            for u in page["users"]:
                flags = ",".join(f for f, on in (("admin", u["admin"]), ("deactivated", u["deactivated"])) if on)
                rows.append([u["name"], u["displayname"] or "", flags or "-", _date(u["creation_ts"])])
            if "next_token" not in page:
                break
            offset = int(page["next_token"])
        _table(rows, ["USER", "DISPLAY NAME", "FLAGS", "CREATED"])
        print(f"{len(rows)} user(s)")

    _run(args.config, work)


def cmd_users_show(args: argparse.Namespace) -> None:
    async def work(hs: HomeServer, config: Config) -> None:
        user_id = _user_id(hs, args.user)
        info = await hs.admin.user_info(user_id)
        info["devices"] = (await hs.admin.whois(user_id))["devices"]
        info["rooms"] = [m.room_id for m in await hs.room_store.rooms_for_user(user_id)]
        _print_json(info)

    _run(args.config, work)


def cmd_users_set_admin(args: argparse.Namespace) -> None:
    async def work(hs: HomeServer, config: Config) -> None:
        user_id = _user_id(hs, args.user)
        await hs.admin.set_admin(user_id, not args.revoke)
        print(f"{user_id} is {'no longer' if args.revoke else 'now'} a server admin")

    _run(args.config, work)


def _ask_password(given: str | None) -> str:
    if given is not None:
        return given
    password = getpass.getpass("New password: ")
    if password != getpass.getpass("Repeat password: "):
        raise CommandError("the passwords do not match")
    if not password:
        raise CommandError("the password must not be empty")
    return password


def cmd_users_reset_password(args: argparse.Namespace) -> None:
    password = _ask_password(args.password)

    async def work(hs: HomeServer, config: Config) -> None:
        user_id = _user_id(hs, args.user)
        if server_is_running(config):
            # Through the server: it caches sessions, and must end them itself.
            await hs.admin.existing_user(user_id)
            async with _live_server(hs, config, args.as_user) as live:
                await live.request(
                    "POST",
                    f"/_synapse/admin/v1/reset_password/{quote(user_id)}",
                    {"new_password": password, "logout_devices": not args.keep_devices},
                )
        else:
            await hs.admin.reset_password(user_id, password, logout_devices=not args.keep_devices)
        print(f"Password of {user_id} reset" + ("" if args.keep_devices else "; all its sessions ended"))

    _run(args.config, work)


def cmd_users_deactivate(args: argparse.Namespace) -> None:
    async def work(hs: HomeServer, config: Config) -> None:
        user_id = _user_id(hs, args.user)
        await hs.admin.existing_user(user_id)
        if server_is_running(config):
            async with _live_server(hs, config, args.as_user) as live:
                await live.request("POST", f"/_synapse/admin/v1/deactivate/{quote(user_id)}", {"erase": args.erase})
        else:
            await hs.admin.deactivate(user_id, erase=args.erase)
        print(f"Deactivated {user_id}" + (" and erased its profile" if args.erase else ""))

    _run(args.config, work)


# --- rooms -------------------------------------------------------------------------


def cmd_rooms_list(args: argparse.Namespace) -> None:
    async def work(hs: HomeServer, config: Config) -> None:
        page = await hs.admin.list_rooms(offset=0, limit=10**9, order_by="joined_members", search_term=args.search)
        rows = [
            [r["room_id"], r["name"] or "", r["canonical_alias"] or "", str(r["joined_members"]), r["version"],
             "public" if r["public"] else "-"]
            for r in page["rooms"]
        ]
        _table(rows, ["ROOM", "NAME", "ALIAS", "MEMBERS", "VERSION", "DIRECTORY"])
        print(f"{len(rows)} room(s)")

    _run(args.config, work)


def cmd_rooms_show(args: argparse.Namespace) -> None:
    async def work(hs: HomeServer, config: Config) -> None:
        details = await hs.admin.room_details(args.room)
        details["members"] = (await hs.admin.room_members(args.room))["members"]
        _print_json(details)

    _run(args.config, work)


def cmd_rooms_delete(args: argparse.Namespace) -> None:
    async def work(hs: HomeServer, config: Config) -> None:
        await hs.admin.room_details(args.room)  # 404 before anything else
        body = {"block": args.block, "purge": not args.no_purge}
        if server_is_running(config):
            async with _live_server(hs, config, args.as_user) as live:
                result = await live.request("DELETE", f"/_synapse/admin/v1/rooms/{quote(args.room)}", body)
        else:
            admin = _user_id(hs, args.as_user) if args.as_user else "@homeserver-admin-cli:" + hs.server_name
            status = await hs.admin.delete_room(admin, args.room, block=args.block, purge=not args.no_purge)
            result = status.shutdown_room()
        print(f"Deleted {args.room}" + (" (purged)" if not args.no_purge else "") + (" and blocked it" if args.block else ""))
        if result.get("kicked_users"):
            print("Removed: " + ", ".join(result["kicked_users"]))
        if result.get("failed_to_kick_users"):
            print("Could not remove: " + ", ".join(result["failed_to_kick_users"]))

    _run(args.config, work)


# --- registration tokens -----------------------------------------------------------


def cmd_tokens_list(args: argparse.Namespace) -> None:
    async def work(hs: HomeServer, config: Config) -> None:
        valid = True if args.valid else False if args.invalid else None
        tokens = (await hs.admin.list_tokens(valid))["registration_tokens"]
        rows = [
            [t["token"], "unlimited" if t["uses_allowed"] is None else str(t["uses_allowed"]), str(t["completed"]),
             str(t["pending"]), _date(t["expiry_time"]) if t["expiry_time"] else "never"]
            for t in tokens
        ]
        _table(rows, ["TOKEN", "USES ALLOWED", "COMPLETED", "PENDING", "EXPIRES"])

    _run(args.config, work)


def cmd_tokens_create(args: argparse.Namespace) -> None:
    async def work(hs: HomeServer, config: Config) -> None:
        body: dict[str, Any] = {"uses_allowed": args.uses, "length": args.length}
        if args.token:
            body["token"] = args.token
        if args.expires_in_days is not None:
            body["expiry_time"] = int((time.time() + args.expires_in_days * 86400) * 1000)
        token = await hs.admin.new_token(body)
        print(token["token"])

    _run(args.config, work)


def cmd_tokens_delete(args: argparse.Namespace) -> None:
    async def work(hs: HomeServer, config: Config) -> None:
        await hs.admin.delete_token(args.token)
        print(f"Deleted registration token {args.token}")

    _run(args.config, work)


# --- notices -----------------------------------------------------------------------


def cmd_notice_send(args: argparse.Namespace) -> None:
    from homeserver.notices import notice_content

    if bool(args.user) == bool(args.all):
        raise CommandError("name one user, or pass --all")
    message = args.message if args.message != "-" else sys.stdin.read()
    if not message.strip():
        raise CommandError("the notice is empty")
    content = notice_content(message)

    async def work(hs: HomeServer, config: Config) -> None:
        if args.all:
            recipients = [u for u in await hs.admin_store.active_local_user_ids() if u != hs.notices.system_user]
        else:
            recipients = [_user_id(hs, args.user)]
            await hs.notices.check_recipient(recipients[0])
        failed: list[str] = []
        if server_is_running(config):
            async with _live_server(hs, config, args.as_user) as live:
                for user_id in recipients:
                    try:
                        await live.request(
                            "POST", "/_synapse/admin/v1/send_server_notice", {"user_id": user_id, "content": content}
                        )
                    except CommandError as exc:
                        failed.append(f"{user_id} ({exc})")
        else:
            from homeserver.errors import MatrixError

            for user_id in recipients:
                try:
                    await hs.notices.send(user_id, content)
                except MatrixError as exc:
                    failed.append(f"{user_id} ({exc.error})")
        print(f"Sent the notice to {len(recipients) - len(failed)} user(s)")
        if failed:
            raise CommandError("not sent to: " + "; ".join(failed))

    _run(args.config, work)


# --- the parser --------------------------------------------------------------------


def add_admin_commands(commands: Any) -> None:
    """Add `homeserver admin ...` to the top-level subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", required=True, help="the server's config file")
    live = argparse.ArgumentParser(add_help=False)
    live.add_argument(
        "--as", dest="as_user", default=None, metavar="ADMIN",
        help="admin account to act as through a running server (default: the first admin)",
    )

    admin = commands.add_parser("admin", help="manage users, rooms, registration tokens and notices")
    groups = admin.add_subparsers(dest="admin_group", required=True)

    users = groups.add_parser("users", help="user accounts").add_subparsers(dest="action", required=True)
    p = users.add_parser("list", parents=[common], help="list accounts")
    p.add_argument("--name", default=None, help="only IDs or display names containing this")
    p.add_argument("--deactivated", action="store_true", help="include deactivated accounts")
    p.set_defaults(func=cmd_users_list)
    p = users.add_parser("show", parents=[common], help="one account, its devices and rooms")
    p.add_argument("user", help="user ID or localpart")
    p.set_defaults(func=cmd_users_show)
    p = users.add_parser("set-admin", parents=[common], help="make a user a server admin")
    p.add_argument("user")
    p.add_argument("--revoke", action="store_true", help="take the admin right away instead")
    p.set_defaults(func=cmd_users_set_admin)
    p = users.add_parser("reset-password", parents=[common, live], help="set a new password, ending all sessions")
    p.add_argument("user")
    p.add_argument("--password", "-p", default=None, help="(prompted for when omitted)")
    p.add_argument("--keep-devices", action="store_true", help="do not end the user's sessions")
    p.set_defaults(func=cmd_users_reset_password)
    p = users.add_parser("deactivate", parents=[common, live], help="lock an account for good, leaving its rooms")
    p.add_argument("user")
    p.add_argument("--erase", action="store_true", help="also remove the display name and avatar")
    p.set_defaults(func=cmd_users_deactivate)

    rooms = groups.add_parser("rooms", help="rooms").add_subparsers(dest="action", required=True)
    p = rooms.add_parser("list", parents=[common], help="list rooms, largest first")
    p.add_argument("--search", default=None, help="only rooms whose name, alias or ID contains this")
    p.set_defaults(func=cmd_rooms_list)
    p = rooms.add_parser("show", parents=[common], help="one room's details and members")
    p.add_argument("room", help="room ID")
    p.set_defaults(func=cmd_rooms_show)
    p = rooms.add_parser("delete", parents=[common, live], help="remove every local member and purge the room")
    p.add_argument("room", help="room ID")
    p.add_argument("--block", action="store_true", help="also refuse joins to this room ID from now on")
    p.add_argument("--no-purge", action="store_true", help="keep the room's history in the database")
    p.set_defaults(func=cmd_rooms_delete)

    tokens = groups.add_parser("registration-tokens", help="registration tokens for closed registration").add_subparsers(
        dest="action", required=True
    )
    p = tokens.add_parser("list", parents=[common], help="list tokens")
    p.add_argument("--valid", action="store_true", help="only tokens that can still be used")
    p.add_argument("--invalid", action="store_true", help="only expired or used-up tokens")
    p.set_defaults(func=cmd_tokens_list)
    p = tokens.add_parser("create", parents=[common], help="create a token and print it")
    p.add_argument("--token", default=None, help="the token (default: random)")
    p.add_argument("--length", type=int, default=16, help="length of a random token (1-64)")
    p.add_argument("--uses", type=int, default=None, help="how many registrations it allows (default: unlimited)")
    p.add_argument("--expires-in-days", type=float, default=None, help="(default: never)")
    p.set_defaults(func=cmd_tokens_create)
    p = tokens.add_parser("delete", parents=[common], help="delete a token")
    p.add_argument("token")
    p.set_defaults(func=cmd_tokens_delete)

    notice = groups.add_parser("notice", help="server notices").add_subparsers(dest="action", required=True)
    p = notice.add_parser("send", parents=[common, live], help="send a notice to one user or everyone")
    p.add_argument("user", nargs="?", default=None, help="user ID or localpart (or --all)")
    p.add_argument("--all", action="store_true", help="send to every active local user")
    p.add_argument("--message", "-m", required=True, help="the notice text ('-' reads it from stdin)")
    p.set_defaults(func=cmd_notice_send)
