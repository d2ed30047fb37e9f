"""The media repository: uploads, downloads and thumbnails of `mxc://` content.

Handlers call this; it decides what is allowed, keeps the database (storage/media.py)
and the files on disk (ContentStore) in step, and runs Pillow off the event loop.

A media ID names content; content is a file named by its SHA-256. An upload is staged
to a temporary file, moved into the store, then recorded; if recording fails and no
row names the file, the file goes too, so a failed upload leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

import msgspec

from homeserver.errors import MatrixError, limit_exceeded, not_found, too_large
from homeserver.media import thumbnailer
from homeserver.media.content_store import ContentStore, ContentTooLarge, StagedFile
from homeserver.media.headers import is_image, normalise_content_type, sanitise_filename
from homeserver.media.thumbnailer import ThumbnailSize
from storage.media import (
    IMAGE_OK,
    IMAGE_TOO_LARGE,
    IMAGE_UNSUPPORTED,
    LocalMedia,
    MediaStore,
    Thumbnail,
    UploadedContent,
)

logger = logging.getLogger(__name__)

# Spec: an ID from /create should stay usable for about a day.
UNUSED_EXPIRY_MS = 24 * 60 * 60 * 1000
# Spec: servers should bound a user's pending (created, not uploaded) media IDs.
MAX_PENDING_PER_USER = 20
# Spec: downloads of not-yet-uploaded media wait up to timeout_ms (default 20 s); the
# server picks the ceiling.
DEFAULT_WAIT_MS = 20_000
MAX_WAIT_MS = 60_000
# Decoding images takes memory (up to 4 bytes a pixel); at most this many at once.
CONCURRENT_THUMBNAILERS = 2

_CANNOT_THUMBNAIL = "Cannot generate thumbnails for the requested content"

# Pillow's statuses and the database's are the same words; keep them so.
assert (thumbnailer.STATUS_OK, thumbnailer.STATUS_UNSUPPORTED, thumbnailer.STATUS_TOO_LARGE) == (
    IMAGE_OK,
    IMAGE_UNSUPPORTED,
    IMAGE_TOO_LARGE,
)


class MediaFile(msgspec.Struct, frozen=True):
    """Something to serve: a file on disk and how to describe it."""

    path: Path
    content_type: str
    filename: str | None
    size: int
    sha256: str  # its name in the content store


class RemoteMedia(Protocol):
    """Where media of other servers comes from: federation/media.py fetches it over
    /_matrix/federation/v1/media into this content store (through `keep_fetched`) and
    caches it. Without federation there is none, and remote media is 404. Thumbnails of
    remote media are made here from the cached original, like those of local media.

    `download` returns None for media the other server does not have; it raises
    MatrixError (502) when that server cannot be asked."""

    async def download(self, server_name: str, media_id: str, timeout_ms: int) -> MediaFile | None: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


def new_media_id() -> str:
    # 144 random bits, URL-safe: unguessable, since legacy downloads need no login.
    return secrets.token_urlsafe(18)


class MediaService:
    def __init__(
        self,
        server_name: str,
        store: MediaStore,
        files: ContentStore,
        *,
        max_upload_bytes: int,
        max_image_pixels: int,
        remote: RemoteMedia | None = None,
    ) -> None:
        self.server_name = server_name
        self.store = store
        self.files = files
        self.max_upload_bytes = max_upload_bytes
        self.max_image_pixels = max_image_pixels
        self.remote = remote
        # Placing a file and naming it in the database (or deleting an unnamed one)
        # happen under this lock, so a failed upload never deletes a file that a
        # concurrent identical upload has just named.
        self._placing = asyncio.Lock()
        self._thumbnail_slots = asyncio.Semaphore(CONCURRENT_THUMBNAILERS)
        # One lock per content hash: a thumbnail is made once even when asked twice.
        self._content_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # Downloads waiting for a created media ID to be uploaded.
        self._upload_waiters: dict[str, asyncio.Event] = {}
        thumbnailer.configure(max_image_pixels)

    def prepare(self) -> None:
        self.files.prepare()

    # Uploads

    async def upload(
        self,
        user_id: str,
        body: AsyncIterator[bytes],
        *,
        content_length: str | None,
        content_type: str | None,
        filename: str | None,
    ) -> str:
        """POST /upload: store the body under a new media ID; returns the mxc:// URI."""
        staged = await self._stage(body, content_length)
        content = self._describe(staged, content_type, filename)
        media_id = new_media_id()
        await self._record(staged, lambda: self.store.add_media(media_id, user_id, content, _now_ms()))
        await self._pregenerate_thumbnails(content)
        return f"mxc://{self.server_name}/{media_id}"

    async def create(self, user_id: str) -> tuple[str, int]:
        """POST /create: a media ID to upload to later; (mxc:// URI, unused_expires_at)."""
        now = _now_ms()
        if await self.store.count_pending(user_id, now) >= MAX_PENDING_PER_USER:
            raise limit_exceeded(60_000)
        media_id = new_media_id()
        expires_at = now + UNUSED_EXPIRY_MS
        await self.store.create_pending(media_id, user_id, now, expires_at)
        return f"mxc://{self.server_name}/{media_id}", expires_at

    async def upload_to(
        self,
        user_id: str,
        server_name: str,
        media_id: str,
        body: AsyncIterator[bytes],
        *,
        content_length: str | None,
        content_type: str | None,
        filename: str | None,
    ) -> None:
        """PUT /upload/{serverName}/{mediaId}: the content of a created media ID, once,
        by whoever created it."""
        media = await self.store.get_media(media_id) if server_name == self.server_name else None
        if media is None or (media.sha256 is None and not _still_pending(media)):
            raise not_found("Unknown media ID")
        if media.user_id != user_id:
            raise MatrixError(403, "M_FORBIDDEN", "This media ID was created by another user")
        if media.sha256 is not None:
            raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
        staged = await self._stage(body, content_length)
        content = self._describe(staged, content_type, filename)

        async def record() -> None:
            if not await self.store.complete_pending(media_id, content, _now_ms()):
                raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")

        await self._record(staged, record)
        waiter = self._upload_waiters.pop(media_id, None)
        if waiter is not None:
            waiter.set()
        await self._pregenerate_thumbnails(content)

    async def _stage(self, body: AsyncIterator[bytes], content_length: str | None) -> StagedFile:
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                raise MatrixError(400, "M_INVALID_PARAM", "Invalid Content-Length") from None
            # Refuse before reading a byte; the count while streaming covers the rest.
            if declared > self.max_upload_bytes:
                raise self._too_large()
        try:
            return await self.files.stage_stream(body, self.max_upload_bytes)
        except ContentTooLarge:
            raise self._too_large() from None

    def _too_large(self) -> MatrixError:
        return too_large(f"Cannot upload files larger than {self.max_upload_bytes} bytes")

    @staticmethod
    def _describe(staged: StagedFile, content_type: str | None, filename: str | None) -> UploadedContent:
        return UploadedContent(
            sha256=staged.sha256,
            size=staged.size,
            content_type=normalise_content_type(content_type),
            upload_name=sanitise_filename(filename),
        )

    async def keep_fetched(self, staged: StagedFile, write_rows: Callable[[], Awaitable[None]]) -> None:
        """Content fetched from another server: placed and recorded like an upload."""
        await self._record(staged, write_rows)

    async def _record(self, staged: StagedFile, write_rows: Callable[[], Awaitable[None]]) -> None:
        """Move the staged file into the store and run `write_rows`; undo the move if
        writing fails and nothing else names the file."""
        async with self._placing:
            try:
                created = await asyncio.to_thread(self.files.place, staged)
            except BaseException:
                self.files.discard(staged)
                raise
            try:
                await write_rows()
            except BaseException:
                if created and not await self.store.is_file_referenced(staged.sha256):
                    self.files.remove(staged.sha256)
                raise

    # Downloads

    async def download(
        self, server_name: str, media_id: str, *, timeout_ms: int | None = None, allow_remote: bool = True
    ) -> MediaFile:
        if server_name != self.server_name:
            return await self._remote_download(server_name, media_id, timeout_ms, allow_remote)
        media = await self._uploaded_local_media(media_id, timeout_ms)
        assert media.sha256 is not None and media.content_type is not None and media.size is not None
        return self._file(media.sha256, media.content_type, media.upload_name, media.size)

    async def _remote_download(
        self, server_name: str, media_id: str, timeout_ms: int | None, allow_remote: bool
    ) -> MediaFile:
        if self.remote is None or not allow_remote:
            raise not_found("Remote media is not available")
        found = await self.remote.download(server_name, media_id, _wait_ms(timeout_ms))
        if found is None:
            raise not_found("Unknown media ID")
        return found

    async def _uploaded_local_media(self, media_id: str, timeout_ms: int | None) -> LocalMedia:
        """The media row once it has content, waiting (spec: timeout_ms) if it was
        created but not uploaded yet."""
        media = await self.store.get_media(media_id)
        if media is None:
            raise not_found("Unknown media ID")
        if media.sha256 is not None:
            return media
        if not _still_pending(media):
            raise not_found("Unknown media ID")
        waiter = self._upload_waiters.setdefault(media_id, asyncio.Event())
        try:
            await asyncio.wait_for(waiter.wait(), _wait_ms(timeout_ms) / 1000)
        except TimeoutError:
            # Forget the event so abandoned IDs do not pile up; anyone else still
            # waiting on it re-reads the database when their own wait ends.
            if self._upload_waiters.get(media_id) is waiter:
                del self._upload_waiters[media_id]
        media = await self.store.get_media(media_id)
        if media is None or media.sha256 is None:
            raise MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
        return media

    def _file(self, sha256: str, content_type: str, filename: str | None, size: int) -> MediaFile:
        path = self.files.path_for(sha256)
        if not path.is_file():
            # Only an operator deleting files by hand gets here.
            logger.warning("Media content %s is missing on disk", sha256)
            raise not_found("Media content is missing")
        return MediaFile(path, content_type, filename, size, sha256)

    # Thumbnails

    async def thumbnail(
        self,
        server_name: str,
        media_id: str,
        width: int,
        height: int,
        method: str,
        *,
        timeout_ms: int | None = None,
        allow_remote: bool = True,
    ) -> MediaFile:
        if width < 1 or height < 1:
            raise MatrixError(400, "M_INVALID_PARAM", "width and height must be positive integers")
        if method not in thumbnailer.METHODS:
            raise MatrixError(400, "M_INVALID_PARAM", "method must be crop or scale")
        if server_name != self.server_name:
            # Made here from the cached original (fetched first if need be).
            original = await self._remote_download(server_name, media_id, timeout_ms, allow_remote)
            sha256, content_type = original.sha256, original.content_type
        else:
            media = await self._uploaded_local_media(media_id, timeout_ms)
            assert media.sha256 is not None and media.content_type is not None
            sha256, content_type = media.sha256, media.content_type
        if not is_image(content_type):
            raise MatrixError(400, "M_UNKNOWN", _CANNOT_THUMBNAIL)
        size = thumbnailer.choose_size(width, height, method)
        thumbnail = await self.store.get_thumbnail(sha256, size.width, size.height, size.method)
        if thumbnail is None:
            try:
                thumbnail = await self._make_thumbnail(sha256, size)
            except MatrixError as exc:
                if exc.status == 413 and server_name != self.server_name:
                    # Spec: remote content too large to thumbnail is a 502.
                    raise MatrixError(502, "M_TOO_LARGE", "Content is too large to thumbnail") from None
                raise
        suffix = "jpg" if thumbnail.content_type == "image/jpeg" else "png"
        return self._file(thumbnail.sha256, thumbnail.content_type, f"thumbnail.{suffix}", thumbnail.size)

    async def _make_thumbnail(self, sha256: str, size: ThumbnailSize) -> Thumbnail:
        lock = self._content_locks.setdefault(sha256, asyncio.Lock())
        async with lock:
            # Someone else may have made it while we waited for the lock.
            existing = await self.store.get_thumbnail(sha256, size.width, size.height, size.method)
            if existing is not None:
                return existing
            status = await self._image_status(sha256)
            if status == IMAGE_TOO_LARGE:
                raise MatrixError(413, "M_TOO_LARGE", "Content is too large to thumbnail")
            if status != IMAGE_OK:
                raise MatrixError(400, "M_UNKNOWN", _CANNOT_THUMBNAIL)
            made = await self._render_and_store(sha256, [size])
            if not made:
                raise MatrixError(400, "M_UNKNOWN", _CANNOT_THUMBNAIL)
            return made[0]

    async def _image_status(self, sha256: str) -> str:
        """What the header of this content says, looked at once and remembered."""
        content = await self.store.get_content(sha256)
        if content is not None and content.image_status is not None:
            return content.image_status
        info = await asyncio.to_thread(thumbnailer.probe, str(self.files.path_for(sha256)), self.max_image_pixels)
        await self.store.set_image_info(sha256, info.status, info.width, info.height)
        return info.status

    async def _render_and_store(self, sha256: str, sizes: list[ThumbnailSize]) -> list[Thumbnail]:
        """Render in a worker thread; a failure marks the content as not thumbnailable."""
        async with self._thumbnail_slots:
            try:
                rendered = await asyncio.to_thread(
                    thumbnailer.render, str(self.files.path_for(sha256)), sizes, self.max_image_pixels
                )
            except thumbnailer.ThumbnailError as exc:
                logger.info("Cannot thumbnail %s: %s", sha256, exc)
                await self.store.set_image_info(sha256, IMAGE_UNSUPPORTED, None, None)
                return []
        made = []
        for item in rendered:
            now = _now_ms()
            async with self._placing:
                thumb_sha, _created = await asyncio.to_thread(self.files.put_bytes, item.data)
                thumbnail = Thumbnail(
                    source_sha256=sha256,
                    width=item.size.width,
                    height=item.size.height,
                    method=item.size.method,
                    content_type=item.content_type,
                    sha256=thumb_sha,
                    size=len(item.data),
                    actual_width=item.width,
                    actual_height=item.height,
                    created_ts=now,
                )
                await self.store.add_thumbnail(thumbnail)
            made.append(thumbnail)
        return made

    async def _pregenerate_thumbnails(self, content: UploadedContent) -> None:
        """Make the spec's common sizes right after an image upload, so the first
        timeline render finds them. Never fails the upload: a broken image is still a
        perfectly good file."""
        if not is_image(content.content_type):
            return
        try:
            lock = self._content_locks.setdefault(content.sha256, asyncio.Lock())
            async with lock:
                if await self._image_status(content.sha256) != IMAGE_OK:
                    return
                have = {(t.width, t.height, t.method) for t in await self.store.list_thumbnails(content.sha256)}
                missing = [s for s in thumbnailer.PREGENERATED_SIZES if (s.width, s.height, s.method) not in have]
                if missing:
                    await self._render_and_store(content.sha256, missing)
        except Exception:
            logger.exception("Pre-generating thumbnails for %s failed", content.sha256)


def _still_pending(media: LocalMedia) -> bool:
    return media.unused_expires_at is not None and media.unused_expires_at > _now_ms()


def _wait_ms(timeout_ms: int | None) -> int:
    if timeout_ms is None:
        return DEFAULT_WAIT_MS
    return max(0, min(timeout_ms, MAX_WAIT_MS))
