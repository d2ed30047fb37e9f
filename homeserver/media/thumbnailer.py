"""Thumbnails with Pillow: pure, blocking functions, run by the service in a worker
thread so decoding never stalls the event loop.

Decoding is where hostile images hurt: a few hundred bytes of PNG can declare a
100,000 x 100,000 image that needs 40 GB to decode. So an image's size is read from its
header first and nothing over the configured pixel limit is ever decoded, Pillow's own
bomb check is set to the same limit as a second line, and only a few well-known formats
are opened at all.
"""

from __future__ import annotations

import io
import warnings
from types import ModuleType
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from PIL import Image

# The sizes the spec suggests servers make; made at upload for images.
CROP = "crop"
SCALE = "scale"
METHODS = (CROP, SCALE)

# Requests larger than every pre-generated size get exactly what they ask for (never
# upscaled), up to this many pixels a side: the largest a client reasonably shows.
MAX_DYNAMIC_DIMENSION = 2048

# The decoders we let near untrusted bytes; the rest of Pillow's formats stay unused.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")

STATUS_OK = "ok"
STATUS_UNSUPPORTED = "unsupported"
STATUS_TOO_LARGE = "too_large"


class ThumbnailSize(msgspec.Struct, frozen=True, order=True):
    width: int
    height: int
    method: str

    @property
    def area(self) -> int:
        return self.width * self.height


PREGENERATED_SIZES = (
    ThumbnailSize(32, 32, CROP),
    ThumbnailSize(96, 96, CROP),
    ThumbnailSize(320, 240, SCALE),
    ThumbnailSize(640, 480, SCALE),
    ThumbnailSize(800, 600, SCALE),
)


class ImageInfo(msgspec.Struct, frozen=True):
    status: str  # STATUS_*
    width: int | None = None
    height: int | None = None


class RenderedThumbnail(msgspec.Struct, frozen=True):
    size: ThumbnailSize  # what was asked for
    data: bytes
    content_type: str
    width: int  # what it is
    height: int


class ThumbnailError(Exception):
    """The image cannot be thumbnailed (broken data found while decoding)."""


# Pillow is imported on the first image, not at start-up (it is a good part of the
# media module's import time); `configure` records the limit until then.
_max_image_pixels: int | None = None
_pillow_configured = False


def configure(max_image_pixels: int) -> None:
    """Pillow's own decompression-bomb limit, process-wide. Pillow warns above it and
    refuses above twice it; we never get that far, but keep it as a backstop."""
    global _max_image_pixels, _pillow_configured
    _max_image_pixels = max_image_pixels
    _pillow_configured = False


def _pillow() -> ModuleType:  # PIL.Image
    global _pillow_configured
    from PIL import Image

    if not _pillow_configured:
        # Idempotent, so two worker threads getting here at once is harmless.
        if _max_image_pixels is not None:
            Image.MAX_IMAGE_PIXELS = _max_image_pixels
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        _pillow_configured = True
    return Image


def choose_size(width: int, height: int, method: str) -> ThumbnailSize:
    """The thumbnail to serve for a request: the smallest pre-generated size of that
    method at least as large as asked (spec: never smaller than requested when the
    original allows), else exactly the requested size, capped."""
    fitting = [s for s in PREGENERATED_SIZES if s.method == method and s.width >= width and s.height >= height]
    if fitting:
        return min(fitting, key=lambda s: (s.area, s.width))
    return ThumbnailSize(min(width, MAX_DYNAMIC_DIMENSION), min(height, MAX_DYNAMIC_DIMENSION), method)


def probe(path: str, max_pixels: int) -> ImageInfo:
    """What the header says, without decoding any pixels."""
    Image = _pillow()  # the PIL.Image module
    try:
        with Image.open(path, formats=ALLOWED_FORMATS) as image:
            width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return ImageInfo(STATUS_TOO_LARGE)
    except Exception:  # noqa: BLE001 - any failure to parse a hostile header means "not an image"
        return ImageInfo(STATUS_UNSUPPORTED)
    if width <= 0 or height <= 0:
        return ImageInfo(STATUS_UNSUPPORTED)
    if width * height > max_pixels:
        return ImageInfo(STATUS_TOO_LARGE, width, height)
    return ImageInfo(STATUS_OK, width, height)


def render(path: str, sizes: list[ThumbnailSize], max_pixels: int) -> list[RenderedThumbnail]:
    """Decode the image once and make every size from it.

    Raises ThumbnailError when the data turns out to be broken or too large.
    """
    Image = _pillow()  # the PIL.Image module
    from PIL import ImageOps

    try:
        with Image.open(path, formats=ALLOWED_FORMATS) as image:
            if image.size[0] * image.size[1] > max_pixels:
                raise ThumbnailError("image has too many pixels")
            as_jpeg = image.format == "JPEG"
            oriented = _oriented_size(image)
            # JPEG can decode at 1/2, 1/4 or 1/8 scale: far less memory and time for
            # a phone photo. The draft stays at least as large as the largest size.
            need_w = max(s.width for s in sizes)
            need_h = max(s.height for s in sizes)
            if oriented != image.size:
                need_w, need_h = need_h, need_w
            image.draft("RGB", (need_w, need_h))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            decoded = _normalise_mode(image)
            results = []
            for size in sizes:
                resize = _crop if size.method == CROP else _scale
                results.append(_encode(resize(decoded, oriented, size), size, as_jpeg))
            return results
    except ThumbnailError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated data, bad chunks, bombs: all "cannot thumbnail"
        raise ThumbnailError(str(exc) or type(exc).__name__) from exc


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    """The size as shown: EXIF orientations 5-8 turn the picture a quarter."""
    width, height = image.size
    try:
        orientation = image.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - broken EXIF just means "as stored"
        orientation = None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _normalise_mode(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "RGBA", "L", "LA"):
        return image
    has_alpha = image.mode in ("PA", "RGBa", "La") or "transparency" in image.info or image.mode.endswith("A")
    return image.convert("RGBA" if has_alpha else "RGB")


def _scale(image: Image.Image, original: tuple[int, int], size: ThumbnailSize) -> Image.Image:
    """Fit inside width x height keeping the aspect ratio; never larger than the
    original. Output sizes come from the original dimensions, so a JPEG decoded in
    draft mode gives exactly the same size as a full decode would."""
    ow, oh = original
    factor = min(size.width / ow, size.height / oh, 1.0)
    target = (max(1, round(ow * factor)), max(1, round(oh * factor)))
    if target == image.size:
        return image
    return image.resize(target, _pillow().Resampling.LANCZOS, reducing_gap=3.0)


def _crop(image: Image.Image, original: tuple[int, int], size: ThumbnailSize) -> Image.Image:
    """Exactly width x height, filled, the centre kept. An original too small to fill
    it gives the largest centred region of that aspect ratio instead (no upscaling)."""
    ow, oh = original
    # The centred region of the original with the requested aspect ratio.
    if ow * size.height > oh * size.width:
        box_w, box_h = oh * size.width / size.height, float(oh)
    else:
        box_w, box_h = float(ow), ow * size.height / size.width
    if box_w >= size.width and box_h >= size.height:
        target = (size.width, size.height)
    else:
        target = (max(1, round(box_w)), max(1, round(box_h)))
    # The region in the decoded image's coordinates (smaller when drafted).
    sx, sy = image.size[0] / ow, image.size[1] / oh
    left, top = (ow - box_w) / 2 * sx, (oh - box_h) / 2 * sy
    box = (left, top, left + box_w * sx, top + box_h * sy)
    return image.resize(target, _pillow().Resampling.LANCZOS, box=box, reducing_gap=3.0)


def _encode(image: Image.Image, size: ThumbnailSize, as_jpeg: bool) -> RenderedThumbnail:
    out = io.BytesIO()
    if as_jpeg and image.mode in ("RGB", "L"):
        image.save(out, "JPEG", quality=80)
        content_type = "image/jpeg"
    else:
        image.save(out, "PNG")
        content_type = "image/png"
    return RenderedThumbnail(size, out.getvalue(), content_type, image.size[0], image.size[1])
