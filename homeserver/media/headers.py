"""What makes serving user-uploaded bytes safe: the Content-Type we keep, the filename
we repeat, and the headers that stop a browser from running or sniffing the content.

Media is served from the homeserver's own origin, so an uploaded HTML or SVG file shown
inline could run script as that origin. Only types a browser renders as passive content
are served inline; everything else is an attachment, and every response carries a
sandboxing Content-Security-Policy and `nosniff` in case a browser thinks otherwise.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

DEFAULT_CONTENT_TYPE = "application/octet-stream"

# The spec's "serving inline content" list (as Synapse and Element use it). SVG is left
# out on purpose: it can carry script.
INLINE_CONTENT_TYPES = frozenset(
    {
        "text/css",
        "text/plain",
        "text/csv",
        "application/json",
        "application/ld+json",
        "image/jpeg",
        "image/gif",
        "image/png",
        "image/apng",
        "image/webp",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        "audio/mp4",
        "audio/webm",
        "audio/aac",
        "audio/mpeg",
        "audio/ogg",
        "audio/wave",
        "audio/wav",
        "audio/x-wav",
        "audio/x-pn-wav",
        "audio/flac",
        "audio/x-flac",
    }
)

CONTENT_SECURITY_POLICY = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    "style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
)

MAX_CONTENT_TYPE_LENGTH = 255
MAX_FILENAME_LENGTH = 255

# type/subtype with optional parameters; anything else is not a media type we repeat.
_CONTENT_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(\s*;.*)?$")
# RFC 7230 token characters: such a filename needs no quoting at all.
# '%' is left out: some browsers percent-decode a plain filename parameter.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9!#$&'*+.^_`|~-]+$")


def normalise_content_type(raw: str | None) -> str:
    """The Content-Type to store for an upload; octet-stream when missing or malformed
    (the spec's default, and never something a browser would render)."""
    if raw is None:
        return DEFAULT_CONTENT_TYPE
    value = raw.strip()
    if not value or len(value) > MAX_CONTENT_TYPE_LENGTH or not value.isascii() or not _CONTENT_TYPE_RE.match(value):
        return DEFAULT_CONTENT_TYPE
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return DEFAULT_CONTENT_TYPE
    return value


def essence(content_type: str) -> str:
    """`text/plain; charset=utf-8` -> `text/plain`."""
    return content_type.split(";", 1)[0].strip().lower()


def is_image(content_type: str) -> bool:
    return essence(content_type).startswith("image/")


def sanitise_filename(raw: str | None) -> str | None:
    """A filename safe to store and repeat: no control characters, no path separators
    (a name is not a path), at most MAX_FILENAME_LENGTH characters; None when nothing
    is left."""
    if raw is None:
        return None
    cleaned = "".join(
        "_" if c in "/\\" else c for c in raw if unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp")
    ).strip()
    cleaned = cleaned[:MAX_FILENAME_LENGTH]
    if cleaned in ("", ".", ".."):
        return None
    return cleaned


def _filename_param(filename: str) -> str:
    if _TOKEN_RE.match(filename):
        return f"filename={filename}"
    if filename.isascii() and filename.isprintable() and not any(c in filename for c in '"\\%'):
        return f'filename="{filename}"'
    # RFC 6266 / RFC 8187: anything else goes percent-encoded as UTF-8.
    return "filename*=utf-8''" + quote(filename, safe="")


def content_disposition(content_type: str, filename: str | None, *, inline: bool | None = None) -> str:
    """`inline` only for the allowlisted types (or when the caller says so, as for our
    own thumbnails); `attachment` otherwise."""
    if inline is None:
        inline = essence(content_type) in INLINE_CONTENT_TYPES
    disposition = "inline" if inline else "attachment"
    return f"{disposition}; {_filename_param(filename)}" if filename else disposition


def serving_headers(content_type: str, filename: str | None, *, inline: bool | None = None) -> dict[str, str]:
    """Headers for every media response, download or thumbnail."""
    return {
        "Content-Disposition": content_disposition(content_type, filename, inline=inline),
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        # Lets web clients that isolate their origin (COEP) still embed media.
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
