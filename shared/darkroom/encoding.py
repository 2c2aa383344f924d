"""The stored bytes of a produced image: the upstream's own, when they already are what was asked for,
otherwise pixels encoded once in the requested output format. Either way no metadata is carried over.
"""

from __future__ import annotations

import io

from PIL import Image

from darkroom.image_metadata import strip_metadata

# OpenAI's output_compression defaults to 100 (best quality); 95 is indistinguishable and far smaller.
DEFAULT_LOSSY_QUALITY = 95
# Chosen by measurement (benchmarks/bench_encode.py settings, 1024x1024; docs/benchmarks.md): zlib level 1 writes a
# photo-like image 7x faster than level 6 for 6 % more bytes (a flat drawing: 2.4x faster, 32 KiB against 19).
# WebP method 0 is 2-3x faster than method 4 for about 10 % more bytes at equal PSNR on the photo-like image.
PNG_COMPRESS_LEVEL = 1
WEBP_METHOD = 0


def encode(
    image: Image.Image,
    output_format: str,
    compression: int | None,
    transparent: bool,
    upstream: bytes | None = None,
) -> bytes:
    """PNG/WebP keep alpha when ``transparent``; JPEG (no alpha) is flattened onto white.

    ``compression`` is OpenAI's ``output_compression``: 0-100, where 100 is the best quality. It applies
    to JPEG and WebP; PNG is lossless and ignores it.

    ``upstream``: the model's own encoding of ``image``, as the intake validated and decoded it
    (:attr:`darkroom.inference.GeneratedImage.upstream`). When :func:`passed_through` accepts it, those
    bytes are returned without their metadata and nothing is encoded.
    """
    if upstream is not None:
        kept = passed_through(upstream, image, output_format, compression, transparent)
        if kept is not None:
            return kept
    buffer = io.BytesIO()
    quality = max(1, compression) if compression is not None else DEFAULT_LOSSY_QUALITY
    if output_format == "png":
        (image if transparent else _opaque(image)).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif output_format == "webp":
        (image if transparent else _opaque(image)).save(buffer, format="WEBP", quality=quality, method=WEBP_METHOD)
    elif output_format == "jpeg":
        _opaque(image).save(buffer, format="JPEG", quality=quality)
    else:  # the request model only admits the three formats above
        raise ValueError(f"unsupported output format {output_format!r}")
    return buffer.getvalue()


def _opaque(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    flat = Image.new("RGB", image.size, (255, 255, 255))
    flat.paste(image, mask=image.getchannel("A") if "A" in image.getbands() else None)
    return flat


def passed_through(
    upstream: bytes, image: Image.Image, output_format: str, compression: int | None, transparent: bool
) -> bytes | None:
    """``upstream`` stripped of its metadata (:mod:`darkroom.image_metadata`) when it already is what
    :func:`encode` would write: the requested format, ``image``'s size, and alpha exactly when
    ``transparent`` (RGBA) or none (RGB). JPEG and WebP pass only with no ``compression`` asked for: the
    upstream's quality is unknown, so an explicit one is honoured by encoding. None: encode instead."""
    if compression is not None and output_format != "png":
        return None
    if image.mode != ("RGBA" if transparent else "RGB"):
        return None
    stripped = strip_metadata(upstream, output_format)
    if stripped is None or stripped.format != output_format:
        return None
    if (stripped.width, stripped.height) != image.size or stripped.has_alpha != transparent:
        return None
    return stripped.data
