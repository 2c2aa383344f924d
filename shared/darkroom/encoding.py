"""Encoding produced pixels into the requested output format.

Output is always re-encoded from pixels, with no metadata carried over.
"""

from __future__ import annotations

import io

from PIL import Image

# OpenAI's output_compression defaults to 100 (best quality); 95 is indistinguishable and far smaller.
DEFAULT_LOSSY_QUALITY = 95


def encode(image: Image.Image, output_format: str, compression: int | None, transparent: bool) -> bytes:
    """PNG/WebP keep alpha when ``transparent``; JPEG (no alpha) is flattened onto white.

    ``compression`` is OpenAI's ``output_compression``: 0-100, where 100 is the best quality. It applies
    to JPEG and WebP; PNG is lossless and ignores it.
    """
    buffer = io.BytesIO()
    quality = max(1, compression) if compression is not None else DEFAULT_LOSSY_QUALITY
    if output_format == "png":
        (image if transparent else _opaque(image)).save(buffer, format="PNG", compress_level=6)
    elif output_format == "webp":
        (image if transparent else _opaque(image)).save(buffer, format="WEBP", quality=quality)
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
