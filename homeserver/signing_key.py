"""The server's Ed25519 signing key, kept in one file (`ed25519 <id> <seed>`, the format
Synapse also uses, so keys can move between servers)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from signedjson.key import generate_signing_key, read_signing_keys, write_signing_keys
from signedjson.types import SigningKey


def generate_signing_key_file(path: Path) -> None:
    key = generate_signing_key("a_" + secrets.token_hex(2))
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created private from the start: the seed is the server's identity.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as stream:
        write_signing_keys(stream, [key])


def load_signing_key(path: Path) -> SigningKey:
    with path.open() as stream:
        keys = read_signing_keys(stream)
    if not keys:
        raise ValueError(f"no signing key in {path}")
    return keys[0]


def key_id(key: SigningKey) -> str:
    return f"{key.alg}:{key.version}"
