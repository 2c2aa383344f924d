"""Images for the ``openai`` backend: what goes up (edit forms per route, masks in the route's convention) and
what comes back (``b64_json``, or a URL on base_url's own origin where the catalog allows fetching it).

Masks (darkroom's is mode ``L``, 0 = edit here):

* ``alpha`` (OpenAI's ``/images/edits``): an RGBA PNG whose alpha is darkroom's mask (0 = edit here). Its RGB
  is constant black, not the image, so only the mask's own detail is encoded and the PNG stays small;
* ``white`` (LocalAI's ``/images/inpainting``, diffusers): a greyscale PNG, 255 where to repaint, 0 elsewhere
  (darkroom's mask inverted, so soft edges stay soft).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import httpx
from PIL import Image, ImageOps

from darkroom.api.errors import ApiError, InvalidRequest, UpstreamError, UpstreamTimeout
from darkroom.catalog_endpoints import OpenAIEndpoint
from darkroom.fetch import FetchPolicy, fetch_image
from darkroom.inference import EditJob
from darkroom.inference.resilience import TIMEOUT_MESSAGE, Deadline, Outcome
from darkroom.intake import UPSTREAM_LIMITS, decode_base64
from darkroom.observability import logger

MAX_RESPONSE_BYTES = UPSTREAM_LIMITS.max_total_bytes
# OpenAI's mask rule for /images/edits: "Must be a valid PNG file, less than 4MB, and have the same dimensions
# as `image`" (openai-python, src/openai/types/image_edit_params.py, ``mask``). "4MB" is read as 4,000,000
# bytes, the stricter reading.
OPENAI_MASK_MAX_BYTES = 4_000_000
INVALID_RESPONSE = "The model's backend returned an invalid response."

Files = list[tuple[str, tuple[str, bytes, str]]]


def invalid() -> Outcome:
    """An answer that breaks the wire format: the endpoint's fault (it counts against the breaker)."""
    return Outcome(UpstreamError(INVALID_RESPONSE, code="upstream_invalid_response"), unhealthy=True)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _fitted(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    mask = mask.convert("L")
    return mask if mask.size == size else mask.resize(size, Image.Resampling.NEAREST)


def alpha_mask_png(mask: Image.Image, size: tuple[int, int]) -> bytes:
    """OpenAI's convention: RGBA, alpha = darkroom's mask (0 = edit here), RGB constant black."""
    rgba = Image.new("RGBA", size, (0, 0, 0, 255))
    rgba.putalpha(_fitted(mask, size))
    return png(rgba)


def white_mask_png(mask: Image.Image, size: tuple[int, int]) -> bytes:
    """The inpainting convention: greyscale, 255 where to repaint, 0 where to keep."""
    return png(ImageOps.invert(_fitted(mask, size)))


def mask_png(endpoint: OpenAIEndpoint, job: EditJob) -> bytes:
    """The job's mask in the route's convention, at the first image's size. A job without a mask on the
    inpainting route (whose mask is required) repaints everything, as LocalAI's backends do without one."""
    size = job.images[0].size
    mask = job.mask if job.mask is not None else Image.new("L", size, 0)
    if endpoint.route_mask_convention == "white":
        return white_mask_png(mask, size)
    encoded = alpha_mask_png(mask, size)
    if endpoint.edit_route == "edits" and len(encoded) >= OPENAI_MASK_MAX_BYTES:
        raise InvalidRequest(
            "The mask is too detailed for this model: encoded as PNG it must be under 4 MB. Use a simpler mask.",
            param="mask",
            code="mask_too_large",
        )
    return encoded


def edit_form(endpoint: OpenAIEndpoint, job: EditJob, model: str) -> tuple[str, dict[str, Any]]:
    """(path, httpx content) of an edit on the endpoint's route."""
    if endpoint.edit_route == "inpainting":
        return "/images/inpainting", _inpainting_form(endpoint, job, model)
    fields = {
        **{k: str(v) for k, v in job.options.items()},
        "model": model,
        "prompt": job.prompt,
        "n": str(job.n),
        "size": f"{job.width}x{job.height}",
        "quality": job.quality,
    }
    if endpoint.send_response_format:
        fields["response_format"] = "b64_json"
    if job.input_fidelity:
        fields["input_fidelity"] = job.input_fidelity
    if job.transparent:
        fields["background"] = "transparent"
    files: Files = [("image[]", (f"image_{i}.png", png(image), "image/png")) for i, image in enumerate(job.images)]
    if job.mask is not None:
        files.append(("mask", ("mask.png", mask_png(endpoint, job), "image/png")))
    return "/images/edits", {"data": fields, "files": files}


def _inpainting_form(endpoint: OpenAIEndpoint, job: EditJob, model: str) -> dict[str, Any]:
    """LocalAI's ``POST /v1/images/inpainting`` (core/http/endpoints/openai/inpainting.go): form values ``model``,
    ``prompt`` and ``steps`` (optional; a passthrough option), files ``image`` and ``mask`` (both required). It
    reads nothing else (no ``n``, ``size`` or ``response_format``) and answers with one image, as a URL."""
    if len(job.images) > 1:
        raise InvalidRequest("This model edits one image at a time: send a single 'image'.", param="image")
    if job.n != 1:
        raise InvalidRequest("This model makes one edited image per request: 'n' must be 1.", param="n")
    fields = {**{k: str(v) for k, v in job.options.items()}, "model": model, "prompt": job.prompt}
    files: Files = [
        ("image", ("image.png", png(job.images[0]), "image/png")),
        ("mask", ("mask.png", mask_png(endpoint, job), "image/png")),
    ]
    return {"data": fields, "files": files}


# -- answers ----------------------------------------------------------------------------------------------


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    port = url.port if url.port is not None else (443 if url.scheme == "https" else 80)
    return url.scheme, url.host.lower(), port


def answer_image(
    item: Mapping[str, Any], index: int, *, endpoint: OpenAIEndpoint, base_url: str, deadline: Deadline
) -> tuple[str, bytes]:
    """(param, encoded image) of one ``data[]`` item: its ``b64_json`` decoded strictly, or, when the catalog
    allows it, the image its ``url`` points at on base_url's own origin (scheme, host and port), fetched through
    darkroom's SSRF-safe fetcher within the call's deadline. Any other URL is a 502 and is never fetched."""
    encoded = item.get("b64_json")
    if isinstance(encoded, str):
        param = f"data[{index}].b64_json"
        try:
            return param, decode_base64(encoded, param=param, max_bytes=UPSTREAM_LIMITS.max_image_bytes)
        except ApiError:
            raise invalid() from None
    url = item.get("url")
    if not isinstance(url, str) or not endpoint.fetch_answer_urls:
        raise invalid()
    try:
        same_origin = _origin(httpx.URL(url)) == _origin(httpx.URL(base_url))
    except (httpx.InvalidURL, UnicodeError, ValueError, TypeError):
        same_origin = False
    if not same_origin:
        logger.warning("upstream answered with an image URL on another origin: not fetched")
        raise invalid()
    left = deadline.remaining()
    if left <= 0:
        raise Outcome(UpstreamTimeout(TIMEOUT_MESSAGE), unhealthy=True)
    policy = FetchPolicy.origin_only(base_url, max_bytes=UPSTREAM_LIMITS.max_image_bytes, deadline_seconds=left)
    param = f"data[{index}].url"
    try:
        body, _ = fetch_image(url, param=param, policy=policy)
    except ApiError:
        if deadline.remaining() <= 0:
            raise Outcome(UpstreamTimeout(TIMEOUT_MESSAGE), unhealthy=True) from None
        raise invalid() from None
    return param, body
