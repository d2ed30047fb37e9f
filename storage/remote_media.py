"""The remote media cache: which `mxc://<other server>/<media_id>` we have fetched, and
which file of the content store holds it. The bytes live in the same content-addressed
store as local uploads (homeserver/media/), so a file shared across servers is kept
once, and thumbnails (keyed by content) are shared too.
"""

from __future__ import annotations

import msgspec
from sqlalchemy import select

from storage.database import Database, upsert
from storage.media import dialect_insert
from storage.schema import media_content, remote_media


class CachedRemoteMedia(msgspec.Struct, frozen=True):
    server_name: str
    media_id: str
    sha256: str
    size: int
    content_type: str
    upload_name: str | None
    fetched_ts: int


class RemoteMediaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, server_name: str, media_id: str) -> CachedRemoteMedia | None:
        query = select(remote_media).where(
            remote_media.c.server_name == server_name, remote_media.c.media_id == media_id
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return CachedRemoteMedia(**row._mapping) if row else None

    async def add(self, media: CachedRemoteMedia) -> None:
        """Record a fetched file (and its content row) in one transaction; a second
        fetch of the same media (after its file went missing) replaces the first."""
        insert = dialect_insert(self.db.is_sqlite)
        async with self.db.write() as conn:
            await conn.execute(
                insert(media_content)
                .values(sha256=media.sha256, size=media.size, created_ts=media.fetched_ts)
                .on_conflict_do_nothing(index_elements=["sha256"])
            )
            await upsert(conn, remote_media, msgspec.structs.asdict(media), ["server_name", "media_id"])
