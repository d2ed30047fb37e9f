"""Password hashing with Argon2id, run on a worker thread.

A hash takes tens of milliseconds of CPU by design; on the event loop it would stall
every other request for that long.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


def configure(time_cost: int, memory_kib: int) -> None:
    """Set the Argon2id cost for new hashes; existing hashes keep their own parameters."""
    global _hasher
    _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def check_password(password: str, password_hash: str | None) -> bool:
    if password_hash is None:
        return False
    try:
        return await asyncio.to_thread(_hasher.verify, password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
