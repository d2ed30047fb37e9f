"""Media metadata: which files the content store holds, the media IDs that point at
them, and their thumbnails. The bytes themselves live on disk (homeserver/media/).
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import func, insert, or_, select, update

from storage.database import Connection, Database
from storage.schema import local_media, media_content, media_thumbnails

# media_content.image_status: what the thumbnailer found (NULL: not looked at yet).
IMAGE_OK = "ok"
IMAGE_UNSUPPORTED = "unsupported"  # not an image Pillow may decode, or broken data
IMAGE_TOO_LARGE = "too_large"  # more pixels than media.max_image_pixels


class LocalMedia(msgspec.Struct, frozen=True):
    media_id: str
    user_id: str
    created_ts: int
    unused_expires_at: int | None
    sha256: str | None  # None: created with /create, content not uploaded yet
    size: int | None
    content_type: str | None
    upload_name: str | None
    uploaded_ts: int | None


class MediaContent(msgspec.Struct, frozen=True):
    sha256: str
    size: int
    created_ts: int
    image_status: str | None
    image_width: int | None
    image_height: int | None


class Thumbnail(msgspec.Struct, frozen=True):
    source_sha256: str
    width: int
    height: int
    method: str
    content_type: str
    sha256: str
    size: int
    actual_width: int
    actual_height: int
    created_ts: int


class UploadedContent(msgspec.Struct, frozen=True):
    """What an upload wrote to the content store, for the row that names it."""

    sha256: str
    size: int
    content_type: str
    upload_name: str | None


def dialect_insert(is_sqlite: bool) -> Any:
    """The INSERT with ON CONFLICT of the database in use. Imported here, not at module
    level: only the dialect in use is loaded (the PostgreSQL one is ~20 ms of start-up)."""
    if is_sqlite:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert


class MediaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _insert_ignore(self, table: Any) -> Any:
        # INSERT ... ON CONFLICT DO NOTHING: identical content or a thumbnail made twice
        # by concurrent requests is one row, whoever wins.
        return dialect_insert(self.db.is_sqlite)(table)

    async def _add_content(self, conn: Connection, content: UploadedContent, now_ms: int) -> None:
        await conn.execute(
            self._insert_ignore(media_content)
            .values(sha256=content.sha256, size=content.size, created_ts=now_ms)
            .on_conflict_do_nothing(index_elements=["sha256"])
        )

    async def add_media(self, media_id: str, user_id: str, content: UploadedContent, now_ms: int) -> None:
        """A new media ID with its content (POST /upload)."""
        async with self.db.write() as conn:
            await self._add_content(conn, content, now_ms)
            await conn.execute(
                insert(local_media).values(
                    media_id=media_id,
                    user_id=user_id,
                    created_ts=now_ms,
                    sha256=content.sha256,
                    size=content.size,
                    content_type=content.content_type,
                    upload_name=content.upload_name,
                    uploaded_ts=now_ms,
                )
            )

    async def create_pending(self, media_id: str, user_id: str, now_ms: int, expires_at: int) -> None:
        """A media ID whose content comes later (POST /create)."""
        async with self.db.write() as conn:
            await conn.execute(
                insert(local_media).values(
                    media_id=media_id, user_id=user_id, created_ts=now_ms, unused_expires_at=expires_at
                )
            )

    async def count_pending(self, user_id: str, now_ms: int) -> int:
        async with self.db.read() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count())
                        .select_from(local_media)
                        .where(
                            local_media.c.user_id == user_id,
                            local_media.c.sha256.is_(None),
                            local_media.c.unused_expires_at > now_ms,
                        )
                    )
                ).scalar_one()
            )

    async def complete_pending(self, media_id: str, content: UploadedContent, now_ms: int) -> bool:
        """Give a created media ID its content. False, with nothing written, if it
        already has some (or has expired) by now: a concurrent upload won."""
        try:
            await self._complete_pending(media_id, content, now_ms)
        except _AlreadyUploaded:
            return False
        return True

    async def _complete_pending(self, media_id: str, content: UploadedContent, now_ms: int) -> None:
        async with self.db.write() as conn:
            await self._add_content(conn, content, now_ms)
            result = await conn.execute(
                update(local_media)
                .where(
                    local_media.c.media_id == media_id,
                    local_media.c.sha256.is_(None),
                    local_media.c.unused_expires_at > now_ms,
                )
                .values(
                    sha256=content.sha256,
                    size=content.size,
                    content_type=content.content_type,
                    upload_name=content.upload_name,
                    uploaded_ts=now_ms,
                    unused_expires_at=None,
                )
            )
            if result.rowcount != 1:
                # Raising rolls the content row back with it.
                raise _AlreadyUploaded()

    async def get_media(self, media_id: str) -> LocalMedia | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(local_media).where(local_media.c.media_id == media_id))).first()
        return LocalMedia(**row._mapping) if row else None

    async def get_content(self, sha256: str) -> MediaContent | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(media_content).where(media_content.c.sha256 == sha256))).first()
        return MediaContent(**row._mapping) if row else None

    async def set_image_info(self, sha256: str, status: str, width: int | None, height: int | None) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(media_content)
                .where(media_content.c.sha256 == sha256)
                .values(image_status=status, image_width=width, image_height=height)
            )

    async def get_thumbnail(self, source_sha256: str, width: int, height: int, method: str) -> Thumbnail | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(media_thumbnails).where(
                        media_thumbnails.c.source_sha256 == source_sha256,
                        media_thumbnails.c.width == width,
                        media_thumbnails.c.height == height,
                        media_thumbnails.c.method == method,
                    )
                )
            ).first()
        return Thumbnail(**row._mapping) if row else None

    async def list_thumbnails(self, source_sha256: str) -> list[Thumbnail]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(media_thumbnails).where(media_thumbnails.c.source_sha256 == source_sha256)
            )
            return [Thumbnail(**row._mapping) for row in rows]

    async def add_thumbnail(self, thumbnail: Thumbnail) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                self._insert_ignore(media_thumbnails)
                .values(**msgspec.structs.asdict(thumbnail))
                .on_conflict_do_nothing(index_elements=["source_sha256", "width", "height", "method"])
            )

    async def is_file_referenced(self, sha256: str) -> bool:
        """Whether any media or thumbnail row names this file (before deleting it)."""
        async with self.db.read() as conn:
            media = (
                await conn.execute(select(local_media.c.media_id).where(local_media.c.sha256 == sha256).limit(1))
            ).first()
            if media is not None:
                return True
            thumb = (
                await conn.execute(
                    select(media_thumbnails.c.sha256)
                    .where(or_(media_thumbnails.c.sha256 == sha256, media_thumbnails.c.source_sha256 == sha256))
                    .limit(1)
                )
            ).first()
            if thumb is not None:
                return True
            content = (
                await conn.execute(select(media_content.c.sha256).where(media_content.c.sha256 == sha256))
            ).first()
            return content is not None


class _AlreadyUploaded(Exception):
    pass
