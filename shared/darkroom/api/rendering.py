"""The wire shapes of a domain :class:`~darkroom.generation.ImagesResult`, rendered at the edge only.

The use cases return stored images with their facts; the Images API answer (``ImagesResponse`` plus its
headers) is built here, so a replay (:mod:`darkroom.idempotency`) and a first answer render through the same
code. The Responses API's ``image_generation_call`` is built in :mod:`darkroom.responses.rendering`, so the
image functions never load the Responses models.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from darkroom.api.images import ImageData, ImagesResponse, ImagesUsage, InputTokensDetails

if TYPE_CHECKING:
    from darkroom.generation import ImagesResult

B64_OMITTED_HEADER = "x-darkroom-b64-omitted"  # b64_json was asked for; every image still has its url


def images_response(result: ImagesResult) -> ImagesResponse:
    """``ImagesResponse``: each image's URL, its base64 when the result carries its bytes, the tokens."""
    input_tokens = result.input_text_tokens + result.input_image_tokens
    return ImagesResponse(
        created=result.created,
        data=[
            ImageData(url=image.url, revised_prompt=image.revised_prompt, b64_json=b64_or_none(image.data))
            for image in result.images
        ],
        size=result.size,
        quality=result.quality,
        output_format=result.output_format,
        background=result.background,
        usage=ImagesUsage(
            input_tokens=input_tokens,
            output_tokens=result.output_tokens,
            total_tokens=input_tokens + result.output_tokens,
            input_tokens_details=InputTokensDetails(
                text_tokens=result.input_text_tokens, image_tokens=result.input_image_tokens
            ),
        ),
    )


def images_headers(result: ImagesResult) -> dict[str, str]:
    """The answer's headers: the tenant's rate-limit windows, and why ``b64_json`` is absent if it is."""
    headers = result.admission.headers() if result.admission is not None else {}
    if result.inline_omitted:
        headers[B64_OMITTED_HEADER] = "response-size-limit"  # Lambda cannot return more than 6 MB
    return headers


def b64_or_none(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None
