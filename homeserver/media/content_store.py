"""The bytes of media on disk, stored by their SHA-256 so identical content is kept once.

An upload is written to a temporary file in `tmp/` (on the same filesystem, so moving
it into place is an atomic rename), hashed as it is written, and only then moved to
`content/ab/cd/abcd...`. Nothing half-written ever sits at a content path, and a failed
upload leaves only its temporary file, which is deleted on the spot (or at the next
start, after a crash).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import msgspec

logger = logging.getLogger(__name__)

# Incoming chunks (often a few KiB each) are gathered to this size before one trip to a
# worker thread writes and hashes them: few thread hops, bounded memory per upload.
WRITE_BATCH_BYTES = 1 << 20


class ContentTooLarge(Exception):
    """The stream went past the size limit; nothing was kept."""


class StagedFile(msgspec.Struct, frozen=True):
    """A complete, hashed upload in tmp/, not yet in the store."""

    temp_path: Path
    sha256: str
    size: int


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.content_dir = root / "content"
        self.tmp_dir = root / "tmp"

    def prepare(self) -> None:
        """Create the directories, and delete temporary files a crash left behind."""
        self.content_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():
            logger.info("Removing unfinished upload %s", leftover.name)
            leftover.unlink(missing_ok=True)

    def path_for(self, sha256: str) -> Path:
        # Two levels of fan-out keep directories small with millions of files.
        return self.content_dir / sha256[0:2] / sha256[2:4] / sha256

    async def stage_stream(self, chunks: AsyncIterator[bytes], limit: int) -> StagedFile:
        """Write `chunks` to a temporary file, at most `limit` bytes.

        Raises ContentTooLarge past the limit; on that or any other failure (the client
        went away) the temporary file is gone before the exception leaves.
        """
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        temp_path = Path(name)
        hasher = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                batch: list[bytes] = []
                batched = 0
                async for chunk in chunks:
                    if not chunk:
                        continue
                    size += len(chunk)
                    if size > limit:
                        raise ContentTooLarge()
                    batch.append(chunk)
                    batched += len(chunk)
                    if batched >= WRITE_BATCH_BYTES:
                        await asyncio.to_thread(_write_and_hash, out, hasher, b"".join(batch))
                        batch, batched = [], 0
                if batch:
                    await asyncio.to_thread(_write_and_hash, out, hasher, b"".join(batch))
                # Durable before it is named by a database row.
                await asyncio.to_thread(_flush_and_sync, out)
        except BaseException:
            temp_path.unlink(missing_ok=True)
            raise
        return StagedFile(temp_path, hasher.hexdigest(), size)

    def place(self, staged: StagedFile) -> bool:
        """Move a staged file to its content path. Returns False when identical content
        was already there (the staged copy is then simply dropped)."""
        target = self.path_for(staged.sha256)
        if target.exists():
            staged.temp_path.unlink(missing_ok=True)
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.temp_path, target)
        return True

    def discard(self, staged: StagedFile) -> None:
        staged.temp_path.unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> tuple[str, bool]:
        """Store small content held in memory (thumbnails); (sha256, newly created)."""
        sha256 = hashlib.sha256(data).hexdigest()
        if self.path_for(sha256).exists():
            return sha256, False
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="thumb-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                _flush_and_sync(out)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return sha256, self.place(StagedFile(Path(name), sha256, len(data)))

    def remove(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()


def _write_and_hash(out: BinaryIO, hasher: hashlib._Hash, data: bytes) -> None:
    # hashlib releases the GIL on large buffers, so this runs beside the event loop.
    hasher.update(data)
    out.write(data)


def _flush_and_sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())
