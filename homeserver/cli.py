"""The `homeserver` command: run, generate-config, register-user, admin."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import sys
from pathlib import Path

from homeserver.config import Config, ConfigError, load_config
from homeserver.config_generate import ConfigChoices, generate, parse_listen

DEFAULT_DATA_DIR = "data"
CONFIG_FILE_NAME = "homeserver.yaml"


def _listen(value: str) -> tuple[str, int]:
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _embedded_default_config(data_dir: Path) -> Path:
    """The config of `homeserver run` without --config: created on first start."""
    path = data_dir / CONFIG_FILE_NAME
    if not path.exists():
        generate(
            ConfigChoices(server_name="localhost", data_directory=".", open_registration=True),
            path,
            self_signed_tls=False,
        )
        print(f"Created a new server in {data_dir}/ (config: {path})", flush=True)
    return path


def cmd_run(args: argparse.Namespace) -> None:
    # No cyclic garbage collection while the server starts: importing and building it
    # makes hundreds of thousands of objects that live as long as the process, and
    # walking them again and again cost ~40 ms of start-up. serve() freezes what start-up
    # made and turns the collector back on.
    gc.disable()
    from homeserver.serve import run

    path = Path(args.config) if args.config else _embedded_default_config(Path(args.data_dir))
    run(load_config(path))


def cmd_generate_config(args: argparse.Namespace) -> None:
    output = Path(args.output) if args.output else Path(args.data_dir) / CONFIG_FILE_NAME
    if output.exists() and not args.force:
        raise ConfigError(f"{output} exists already (use --force to overwrite it)")
    data_dir = args.data_dir
    choices = ConfigChoices(
        server_name=args.server_name,
        data_directory=str(Path(data_dir).resolve()),
        client_listen=args.client_listen,
        federation_listen=args.federation_listen,
        public_baseurl=args.public_baseurl,
        database_url=args.database_url,
        open_registration=args.open_registration,
    )
    path = generate(choices, output, self_signed_tls=args.self_signed_tls)
    load_config(path)  # what we write must load
    print(f"Wrote {path}")


async def _register_user(config: Config, username: str, password: str | None, admin: bool) -> str:
    from homeserver.homeserver import HomeServer

    hs = HomeServer(config)
    await hs.start()
    try:
        session = await hs.account_service.register(username, password, inhibit_login=True, is_admin=admin)
        return session.user_id
    finally:
        await hs.stop()


def cmd_register_user(args: argparse.Namespace) -> None:
    from homeserver.errors import MatrixError

    config = load_config(args.config)
    password = args.password
    if password is None and not args.no_password:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Repeat password: "):
            raise ConfigError("the passwords do not match")
    try:
        user_id = asyncio.run(_register_user(config, args.username, password, args.admin))
    except MatrixError as exc:
        raise ConfigError(exc.error) from None
    print(f"Registered {user_id}{' (admin)' if args.admin else ''}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="homeserver", description="A small, fast Matrix homeserver.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the server")
    run.add_argument("--config", "-c", help="config file (default: create/reuse DATA_DIR/homeserver.yaml)")
    run.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="data directory when no --config is given")
    run.set_defaults(func=cmd_run)

    gen = commands.add_parser("generate-config", help="write a new config file and signing key")
    gen.add_argument("--server-name", required=True, help="e.g. example.org or localhost:8448")
    gen.add_argument("--data-dir", required=True, help="where the server keeps its data")
    gen.add_argument("--output", "-o", help="config file to write (default: DATA_DIR/homeserver.yaml)")
    gen.add_argument("--client-listen", type=_listen, default=("127.0.0.1", 8008), metavar="HOST:PORT")
    gen.add_argument("--federation-listen", type=_listen, default=None, metavar="HOST:PORT")
    gen.add_argument("--self-signed-tls", action="store_true", help="create a TLS certificate for federation")
    gen.add_argument("--public-baseurl", default=None)
    gen.add_argument("--database-url", default=None, help="PostgreSQL URL (default: SQLite in DATA_DIR)")
    gen.add_argument("--open-registration", action="store_true", help="let anyone register")
    gen.add_argument("--force", action="store_true", help="overwrite an existing config file")
    gen.set_defaults(func=cmd_generate_config)

    reg = commands.add_parser("register-user", help="create a user account")
    reg.add_argument("--config", "-c", required=True)
    reg.add_argument("username", help="the localpart, e.g. alice")
    reg.add_argument("--password", "-p", default=None, help="(prompted for when omitted)")
    reg.add_argument("--no-password", action="store_true", help="create the account without a password")
    reg.add_argument("--admin", action="store_true", help="make the user a server admin")
    reg.set_defaults(func=cmd_register_user)

    from homeserver.admin.cli import add_admin_commands

    add_admin_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
