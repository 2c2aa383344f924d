"""Partial images for ``response.image_generation_call.partial_image`` events (the tool's ``partial_images``).

For a stream sent whole once the work is done (:mod:`darkroom.streaming`: a Responses stream with an
``Idempotency-Key``; live streams carry the model's own partials), these partials are made AFTER the final image
exists: partial
``k`` of ``n`` is the final image rendered coarse-to-fine, downsampled by ``2 ** (n - k + 1)`` and scaled
back up, at the final size and in the final format. A client's progressive display behaves as it does
with OpenAI (each partial sharper than the last, the final image sharper still), but no partial shows an
earlier stage of the model's own work.
"""

from __future__ import annotations

import base64
import io

from PIL import Image

from darkroom.content_credentials import Provenance, mark
from darkroom.encoding import encode

MAX_PARTIAL_IMAGES = 3  # the spec's ImageGenTool.partial_images: 0 to 3


def partial_images(result_b64: str, count: int, output_format: str | None, provenance: Provenance) -> list[str]:
    """``count`` base64 images, coarsest first, each the size of ``result_b64``'s and in ``output_format``, each with
    the Content Credentials ``provenance`` says (:mod:`darkroom.content_credentials`)."""
    if count <= 0:
        return []
    final: Image.Image = Image.open(io.BytesIO(base64.b64decode(result_b64)))
    final.load()
    transparent = "A" in final.getbands()
    final = final.convert("RGBA" if transparent else "RGB")
    partials: list[str] = []
    for index in range(count):
        factor = 2 ** (count - index + 1)
        coarse = final.resize((max(1, final.width // factor), max(1, final.height // factor)), Image.Resampling.BOX)
        frame = coarse.resize(final.size, Image.Resampling.BILINEAR)
        image_format = output_format or "png"
        data = mark(encode(frame, image_format, None, transparent), image_format, provenance)
        partials.append(base64.b64encode(data).decode("ascii"))
    return partials
