"""Untrusted image input. Every image that enters darkroom (multipart parts, data URLs, bare base64,
stored files, the models' answers) passes through here before any other code sees its pixels.

The order of checks is the point: sizes are bounded before decoding base64, the format is decided by
the bytes (never by a declared type or file name), the file's structure is walked for the work it would
ask of a decoder (:mod:`darkroom.decode_work`), Pillow is only allowed the decoder for that format, the
pixel count and sides are checked from the header, animated images are refused, and the pixels are
charged to the request's :class:`DecodeBudget` -- all in :func:`read_header`, before any pixel is
decoded. A caller with several images reads every header first, then decodes: a request over its budget
is refused before its first image is decoded. Every failure is an :class:`ImageRejected` (400) with a
stable code and the parameter it concerns; no message repeats the input.
"""

from __future__ import annotations

import binascii
import io
import math
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from darkroom import config, decode_work
from darkroom.api.errors import InvalidRequest

# Pillow's own bomb guard, as a hard error at this many pixels (open() checks the declared size).
# Per-request limits below are lower; this is the ceiling no configuration can lift.
HARD_MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = HARD_MAX_PIXELS
# PNG text chunks Pillow decompresses and keeps with the image: 4 MiB an image, not Pillow's 64 MiB
# (sixteen images would hold 1 GiB of text no pixel budget sees). Past it the image is invalid_image.
PngImagePlugin.MAX_TEXT_MEMORY = 4 * PngImagePlugin.MAX_TEXT_CHUNK

# The decode budget: the pixels one request may decode, all its images together (inputs, references,
# masks, stored images, the models' answers and the images an edit will produce), sized from the
# function's memory. Half of it is for decoded pixels (the rest: the runtime, request and response
# bodies, encoders), at 12 bytes a pixel: a whole edit peaked at up to 10.6 bytes per pixel of its
# inputs and outputs (the decoded raster, its working copies, the answer; benchmarks/bench_decode_limits.py).
MEMORY_FRACTION = 0.5
BYTES_PER_PIXEL = 12

PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF"}
MEDIA_TYPES = {
    "png": {"image/png"},
    "jpeg": {"image/jpeg", "image/jpg", "image/pjpeg"},
    "webp": {"image/webp"},
    "gif": {"image/gif"},
}
EDIT_FORMATS = frozenset({"png", "jpeg", "webp"})

_DATA_URL = re.compile(r"data:(?P<type>[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+)?(?P<params>(?:;[A-Za-z0-9=._+-]*)*?);base64,")


class ImageRejected(InvalidRequest):
    """An image input darkroom will not process (always a 400 naming the parameter)."""


@dataclass(frozen=True)
class IntakeLimits:
    """Bounds for one request's images (the edit function's defaults; configurable per deployment)."""

    max_images: int = 16
    max_image_bytes: int = 20 * 1024 * 1024
    max_total_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 12_000
    formats: frozenset[str] = EDIT_FORMATS


# What an upstream model's answer may hold (it is untrusted input like any client's): the edit formats, 128 MB
# in all, 32 MB and 40 Mpx an image. Every inference adapter reads answers within these.
UPSTREAM_LIMITS = IntakeLimits(
    max_images=10,
    max_image_bytes=32 * 1024 * 1024,
    max_total_bytes=128 * 1024 * 1024,
    max_pixels=40_000_000,
    max_side=12_000,
    formats=EDIT_FORMATS,
)


def budget_pixels(memory_mb: int) -> int:
    """The decoded pixels one request may hold in a function with ``memory_mb`` MB of memory."""
    return int(memory_mb * 1024 * 1024 * MEMORY_FRACTION / BYTES_PER_PIXEL)


class DecodeBudget:
    """The pixels one request may still decode; every image's header is charged before its pixels are."""

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
        self.spent = 0

    @classmethod
    def for_function(cls) -> DecodeBudget:
        """A budget sized from this function's memory (:func:`darkroom.config.function_memory_mb`)."""
        return cls(budget_pixels(config.function_memory_mb()))

    def charge(self, pixels: int, *, param: str) -> None:
        """Spend ``pixels``; :class:`ImageRejected` ``images_too_large`` naming ``param`` if they do not fit."""
        self.ensure_room(pixels, param=param)
        self.spent += pixels

    def ensure_room(self, pixels: int, *, param: str) -> None:
        """Refuse now if ``pixels`` more (say, the images an edit will produce) would not fit."""
        if self.spent + pixels > self.pixels:
            raise ImageRejected(
                f"This request's images would decode to more than {self.pixels} pixels (sent images, masks and "
                "the images to produce, together); send fewer or smaller images.",
                param=param,
                code="images_too_large",
            )


_request_budget: ContextVar[DecodeBudget | None] = ContextVar("darkroom_decode_budget", default=None)


@contextmanager
def request_decode_budget(budget: DecodeBudget | None = None) -> Iterator[DecodeBudget]:
    """One decode budget for the request handled inside the block (the entry point opens one per request,
    the worker one per job); ``budget`` defaults to :meth:`DecodeBudget.for_function`."""
    budget = budget or DecodeBudget.for_function()
    token = _request_budget.set(budget)
    try:
        yield budget
    finally:
        _request_budget.reset(token)


def request_budget() -> DecodeBudget:
    """The decode budget of the request being handled; outside one (scripts, unit tests), a fresh budget
    for each call, so an image is bounded on its own."""
    return _request_budget.get() or DecodeBudget.for_function()


@dataclass(frozen=True)
class IntakeImage:
    """A decoded, validated image: orientation applied, RGB or RGBA, no metadata kept."""

    image: Image.Image
    format: str  # decided by the bytes: png, jpeg, webp or gif
    byte_size: int
    has_alpha: bool
    # The bytes as sent, for an edit's Content Credentials only: c2pa-rs reads the input's own manifest from them
    # into the ingredient (darkroom.content_credentials). Never decoded again, stored or logged.
    encoded: bytes | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def decode(self) -> IntakeImage:
        """Itself: already decoded (a Responses edit decodes its inputs while it plans)."""
        return self


@dataclass(frozen=True)
class ImageHeader:
    """An image that passed every check made before decoding, its pixels charged to the request's budget."""

    opened: Image.Image  # opened by Pillow, its pixels not decoded yet
    format: str
    byte_size: int
    param: str
    source: io.BytesIO | None = None  # what ``opened`` reads: closed once decoded, so the image keeps no bytes

    @property
    def size(self) -> tuple[int, int]:
        """As stored, before EXIF orientation (which may swap the sides, never the pixel count)."""
        return self.opened.size

    def decode(self) -> IntakeImage:
        """Decode the pixels, apply EXIF orientation, normalise to RGB or RGBA."""
        image = self.opened
        encoded = self.source.getvalue() if self.source is not None else None  # BytesIO's own bytes: no copy
        with _pillow_errors(self.param):
            try:
                image.load()
                ImageOps.exif_transpose(image, in_place=True)  # no copy when nothing needs turning
            finally:  # Pillow keeps a PNG's file after loading it: without this, its bytes live as long as it
                if self.source is not None:
                    self.source.close()
        has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
        mode = "RGBA" if has_alpha else "RGB"
        # convert() always copies; most inputs are already RGB/RGBA, so keep the one decoded raster.
        return IntakeImage(
            image=image if image.mode == mode else image.convert(mode),
            format=self.format,
            byte_size=self.byte_size,
            has_alpha=has_alpha,
            encoded=encoded,
        )


def sniff(data: bytes) -> str | None:
    """The image format from magic numbers (WHATWG image type patterns), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":  # RIFF alone is also WAV and AVI
        return "webp"
    return None


def decode_base64(text: str, *, param: str, max_bytes: int) -> bytes:
    """Strict base64 -> bytes. The length is checked before decoding; junk, whitespace and data after
    padding are errors, never silently dropped."""
    if len(text) > 4 * math.ceil(max_bytes / 3):
        raise ImageRejected(
            f"The image in '{param}' is larger than {max_bytes} bytes.", param=param, code="image_too_large"
        )
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ImageRejected(f"'{param}' is not valid base64.", param=param, code="invalid_base64") from None
    if not data:
        raise ImageRejected(f"'{param}' is empty.", param=param, code="invalid_base64")
    # binascii's strict mode still accepts padding after a complete group ("AAAA=", "AAAA===="): the text
    # must be exactly the length of the bytes' one padded encoding.
    if len(text) != 4 * math.ceil(len(data) / 3):
        raise ImageRejected(f"'{param}' is not valid base64.", param=param, code="invalid_base64")
    return data


def parse_data_url(url: str, *, param: str, max_bytes: int) -> tuple[str | None, bytes]:
    """``data:<type>;base64,<data>`` -> (declared media type, bytes); only base64 data URLs are accepted."""
    match = _DATA_URL.match(url, 0, 256)
    if match is None:
        raise ImageRejected(
            f"'{param}' must be a base64 data URL (data:image/png;base64,...).", param=param, code="invalid_image_url"
        )
    declared = match.group("type").lower() if match.group("type") else None
    return declared, decode_base64(url[match.end() :], param=param, max_bytes=max_bytes)


def read_header(data: bytes, *, param: str, limits: IntakeLimits, declared_type: str | None = None) -> ImageHeader:
    """Every check that needs no pixels, then the pixels charged to :func:`request_budget`; raises
    :class:`ImageRejected` for anything unsafe or unsupported. :meth:`ImageHeader.decode` decodes."""
    if len(data) > limits.max_image_bytes:
        raise ImageRejected(
            f"The image in '{param}' is larger than {limits.max_image_bytes} bytes.",
            param=param,
            code="image_too_large",
        )
    found = sniff(data[:16])
    if found is None or found not in limits.formats:
        allowed = ", ".join(sorted(limits.formats))
        raise ImageRejected(
            f"The image in '{param}' is not a supported format ({allowed}).",
            param=param,
            code="unsupported_image_format",
        )
    if declared_type and declared_type not in MEDIA_TYPES[found] and declared_type != "application/octet-stream":
        raise ImageRejected(
            f"The image in '{param}' is declared as {declared_type[:40]} but is {found}.",
            param=param,
            code="invalid_image",
        )
    reason = decode_work.too_complex(data, found)  # before Pillow: its own header parsing is part of the work
    if reason:
        raise ImageRejected(f"The image in '{param}' has {reason}; re-encode it.", param=param, code="invalid_image")
    canvas = decode_work.webp_canvas(data) if found == "webp" else None  # libwebp allocates it at open
    if canvas:
        _check_size(*canvas, param=param, limits=limits)
    source = io.BytesIO(data)  # shares ``data``: no copy
    with _pillow_errors(param):
        image = Image.open(source, formats=[PILLOW_FORMATS[found]])
        _check_size(*image.size, param=param, limits=limits)
        if getattr(image, "is_animated", False):
            raise ImageRejected(
                f"The image in '{param}' is animated; send a still image.", param=param, code="invalid_image"
            )
    request_budget().charge(image.size[0] * image.size[1], param=param)
    return ImageHeader(image, found, len(data), param, source)


def open_image(data: bytes, *, param: str, limits: IntakeLimits, declared_type: str | None = None) -> IntakeImage:
    """Validate and decode one image (:func:`read_header`, then decode); raises :class:`ImageRejected`."""
    return read_header(data, param=param, limits=limits, declared_type=declared_type).decode()


def _check_size(width: int, height: int, *, param: str, limits: IntakeLimits) -> None:
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise ImageRejected(
            f"The image in '{param}' is {width}x{height}; the limit is {limits.max_pixels} pixels "
            f"and {limits.max_side} pixels a side.",
            param=param,
            code="image_too_large",
        )


@contextmanager
def _pillow_errors(param: str) -> Iterator[None]:
    """Pillow's failures as 400s: a bomb warning is an error, and truncated, corrupt, or bytes that only
    look like the format get one answer for all."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except ImageRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRejected(
                f"The image in '{param}' declares too many pixels.", param=param, code="image_too_large"
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError):
            raise ImageRejected(
                f"The image in '{param}' could not be decoded.", param=param, code="invalid_image"
            ) from None


class FileReader(Protocol):
    def read(self, tenant_id: str, file_id: str, *, param: str) -> bytes:
        """The stored file's bytes; raises NotFound (404) naming ``param`` when the tenant has no such file."""
        ...


def read_reference(
    ref: object,
    *,
    param: str,
    tenant_id: str,
    files: FileReader | None,
    limits: IntakeLimits,
    fetcher: Callable[[str, str], bytes] | None = None,
) -> ImageHeader:
    """The header of an image reference from a JSON body: ``{"image_url": "data:..."}`` or
    ``{"file_id": "file-..."}`` (:func:`read_header`; the caller decodes once every header is read).

    An http(s) ``image_url`` is fetched only when a ``fetcher`` ``(url, param) -> bytes`` is given
    (:func:`darkroom.fetch.fetcher_from_settings`, bounded by ``limits.max_image_bytes``); otherwise it
    is refused as ``unsupported_image_url``. The fetched bytes decide the format, never the server."""
    if not isinstance(ref, dict) or len(ref) != 1 or not ({"image_url", "file_id"} & ref.keys()):
        raise ImageRejected(
            f"'{param}' must be an object with exactly one of 'image_url' or 'file_id'.",
            param=param,
            code="invalid_value",
        )
    if "file_id" in ref:
        file_id = ref["file_id"]
        if not isinstance(file_id, str) or files is None:
            raise ImageRejected(f"'{param}.file_id' must be a file id.", param=f"{param}.file_id", code="invalid_value")
        return read_header(
            files.read(tenant_id, file_id, param=f"{param}.file_id"), param=f"{param}.file_id", limits=limits
        )
    url = ref["image_url"]
    if not isinstance(url, str):
        raise ImageRejected(f"'{param}.image_url' must be a string.", param=f"{param}.image_url", code="invalid_value")
    if url[:8].lower().startswith(("http://", "https://")):
        if fetcher is not None:
            return read_header(fetcher(url, f"{param}.image_url"), param=f"{param}.image_url", limits=limits)
        raise ImageRejected(
            "Image URLs are not fetched yet; send a data URL or a file_id.",
            param=f"{param}.image_url",
            code="unsupported_image_url",
        )
    declared, data = parse_data_url(url, param=f"{param}.image_url", max_bytes=limits.max_image_bytes)
    return read_header(data, param=f"{param}.image_url", limits=limits, declared_type=declared)


def check_totals(images: Iterable[IntakeImage | ImageHeader], *, param: str, limits: IntakeLimits) -> None:
    """The per-request bounds across all images (count and total bytes; pixels: :class:`DecodeBudget`)."""
    images = list(images)
    if len(images) > limits.max_images:
        raise ImageRejected(f"At most {limits.max_images} images can be sent.", param=param, code="too_many_images")
    if sum(i.byte_size for i in images) > limits.max_total_bytes:
        raise ImageRejected(
            f"The images together exceed {limits.max_total_bytes} bytes.", param=param, code="image_too_large"
        )


def edit_mask(mask: IntakeImage, first: IntakeImage) -> Image.Image:
    """The mask's alpha channel ("L"): 0 marks the pixels to edit. A PNG with alpha, the first image's size."""
    if mask.format != "png":
        raise ImageRejected("The mask must be a PNG.", param="mask", code="invalid_mask")
    if mask.size != first.size:
        raise ImageRejected(
            f"The mask is {mask.size[0]}x{mask.size[1]} but the first image is {first.size[0]}x{first.size[1]}; "
            "they must be the same size.",
            param="mask",
            code="invalid_mask",
        )
    if not mask.has_alpha:
        raise ImageRejected(
            "The mask must have an alpha channel (transparent pixels mark the area to edit).",
            param="mask",
            code="invalid_mask",
        )
    return mask.image.getchannel("A")
