"""Stability AI's models on Amazon Bedrock: the ``InvokeModel`` bodies darkroom sends the ``stability-image`` and
``stability-inpaint`` families, what is checked before AWS is called (400 ``invalid_value`` naming the
parameter), and how their answers are read (:mod:`darkroom.inference.bedrock` makes the calls).

Sources (AWS's Bedrock user guide, as stored by the search tool when checked for issue 16; cited in the tests too):

* [SD35] https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-3-5-large.html
* [ULTRA] https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-stable-ultra-text-image-request-response.html
* [CORE] https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-stable-image-core-text-image-request-response.html
* [SERVICES] https://docs.aws.amazon.com/bedrock/latest/userguide/stable-image-services.html (section "Inpaint")

**stability-image** (SD3.5 Large ``stability.sd3-5-large-v1:0``, Stable Image Core
``stability.stable-image-core-v1:1``, Stable Image Ultra ``stability.stable-image-ultra-v1:1``)::

    generate: {"prompt", "aspect_ratio", "output_format": "png", "negative_prompt"?, "seed"?}
    edit:     {"prompt", "mode": "image-to-image", "image": b64 PNG, "strength", "output_format": "png",
               "negative_prompt"?, "seed"?}

``prompt`` and ``negative_prompt`` are at most 10,000 characters; ``aspect_ratio`` is one of 16:9 1:1 21:9 2:3
3:2 4:5 5:4 9:16 9:21; ``seed`` 0 means random, and darkroom takes 0..4,294,967,294 (SD3.5's range; Core's and
Ultra's pages say 4,294,967,295) [SD35][CORE][ULTRA]. ``output_format`` png is offered by all three.
Image-to-image: SD3.5 documents ``mode: image-to-image`` with ``image`` (at least 64 pixels a side) and
``strength`` in [0, 1] (0 keeps the input, 1 ignores it; AWS's example sends 0.7, darkroom's default) [SD35].
Ultra's page documents ``image`` and ``strength`` (default 0.35) but lists no image-to-image ``mode`` value
[ULTRA] (NOT CONFIRMED that Ultra accepts ``mode``); Core documents text-to-image only [CORE], so a catalog lists
``edit`` only for SD3.5 Large (and Ultra once confirmed). No model of this family takes a mask: an edit with one is
refused (``mask``); an entry with ``honours_mask: false`` gets darkroom's compositing instead and no mask here.

**Sizes.** These models draw at a fixed aspect ratio and pick their own pixels (~1 megapixel [SD35]). A job's
size is accepted when its ratio is within 3% of one of the nine ratios (so both exact sizes such as 1920x1080
and Stability's ~1 MP buckets such as 1344x768 for 16:9 map; the buckets' exact pixels are NOT CONFIRMED by
AWS's pages) and refused otherwise (``size``, listing the ratios). The answer is resampled to the job's size
(:func:`darkroom.inference.aws_runtime.decode_images`: LANCZOS cover, then a centre crop of at most that 3%).
An image-to-image answer keeps its input's aspect and is resampled to the job's size, the input's.

**stability-inpaint** (Stability AI Image Services' Inpaint, ``us.stability.stable-image-inpaint-v1:0``)::

    {"prompt", "image": b64 PNG, "mask": b64 PNG, "output_format": "png", "negative_prompt"?, "seed"?,
     "grow_mask"?, "style_preset"?}

The mask is "a black and white image": completely black pixels are not inpainted, completely white ones are at
full strength; without a mask the image's alpha is used [SERVICES]. darkroom's mask ("L", 0 = edit here)
becomes white (255) where 0 and black elsewhere, sent as a greyscale PNG; an inpaint edit without a mask is
refused. The image: at least 64 pixels a side, at most 9,437,184 pixels, aspect ratio between 1:2.5 and 2.5:1;
``grow_mask`` 0..20 (default 5); ``style_preset`` one of 17 names; ``seed`` 0..4,294,967,294 [SERVICES].
The answer is the edited image at the input's size.

**Answers** are ``{"seeds": [...], "finish_reasons": [null], "images": [b64]}``; a filtered one is
``{"finish_reasons": ["Filter reason: prompt"]}``. ``finish_reasons`` values: "Filter reason: prompt",
"Filter reason: output image", "Filter reason: input image", "Inference error", null [SD35][ULTRA][CORE]
[SERVICES]. A filter reason is a 400 ``content_policy_violation`` (not the endpoint's health); "Inference
error" (or any other non-null reason) a 502 ``upstream_error`` counted as unhealthy.

**One image per call.** Each ``InvokeModel`` answer holds one image (every example reads ``images[0]``), so
``n`` images are ``n`` calls, made one after another within the one deadline (``bedrock.py``); with a ``seed``,
call *i* uses ``seed + i`` (wrapping within 1..4,294,967,294) so the images differ and stay reproducible.

Pass-through options the catalog may allow: ``negative_prompt``, ``seed``, and ``strength`` (image-to-image edits
only) for stability-image; ``negative_prompt``, ``seed``, ``grow_mask``, ``style_preset`` for stability-inpaint.
Anything else is refused (400 ``unsupported_parameter``) rather than dropped. Transparency cannot be produced.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from functools import partial
from typing import Any

from PIL import Image

from darkroom.api.errors import UpstreamError
from darkroom.inference import EditJob, GeneratedImage, GenerateJob
from darkroom.inference.aws_runtime import (
    FAILED_MESSAGE,
    b64png,
    content_policy,
    decode_images,
    invalid_response,
    png_bytes,
    refuse,
    repaint_mask,
)
from darkroom.inference.bedrock_images import ImageCalls, check_request
from darkroom.inference.resilience import Outcome
from darkroom.observability import logger

ASPECT_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
RATIO_TOLERANCE = 0.03  # a size maps to a ratio when within 3% of it (the cover-crop is at most that)
MAX_PROMPT_CHARS = 10_000
MAX_SEED = 4_294_967_294
MIN_SIDE = 64
DEFAULT_STRENGTH = 0.7
INPAINT_MAX_PIXELS = 9_437_184
INPAINT_MAX_ASPECT = 2.5
MAX_GROW_MASK = 20
STYLE_PRESETS = frozenset(
    {
        "3d-model",
        "analog-film",
        "anime",
        "cinematic",
        "comic-book",
        "digital-art",
        "enhance",
        "fantasy-art",
        "isometric",
        "line-art",
        "low-poly",
        "modeling-compound",
        "neon-punk",
        "origami",
        "photographic",
        "pixel-art",
        "tile-texture",
    }
)
MAX_CALLS = 10  # n images are n calls; the catalog's max_n is at most 10 too
_GENERATE_OPTIONS = frozenset({"negative_prompt", "seed"})
_EDIT_OPTIONS = frozenset({"negative_prompt", "seed", "strength"})
_INPAINT_OPTIONS = frozenset({"negative_prompt", "seed", "grow_mask", "style_preset"})
_NAME = "This Stability AI model"


def generate_calls(job: GenerateJob) -> ImageCalls:
    """Text-to-image (``stability-image``): ``job.n`` calls at the aspect ratio of the job's size."""
    if "strength" in job.options:
        raise refuse("'strength' applies to image edits only.", "strength", "unsupported_parameter")
    _check_common(job.prompt, job.n, job.transparent, job.options, _GENERATE_OPTIONS)
    base = {"prompt": job.prompt, "aspect_ratio": aspect_ratio(job.width, job.height), "output_format": "png"}
    return ImageCalls(_bodies(base, job.n, job.options), partial(read_answer, width=job.width, height=job.height))


def edit_calls(job: EditJob) -> ImageCalls:
    """Image-to-image (``stability-image``): one input image, no mask; answered at the input's aspect."""
    _check_common(job.prompt, job.n, job.transparent, job.options, _EDIT_OPTIONS)
    if job.mask is not None:
        raise refuse(f"{_NAME} redraws the whole image and cannot use a mask; send the edit without one.", "mask")
    image = _one_image(job)
    strength = job.options.get("strength", DEFAULT_STRENGTH)
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0 <= strength <= 1:
        raise refuse("'strength' must be a number between 0 and 1.", "strength")
    base = {
        "prompt": job.prompt,
        "mode": "image-to-image",
        "image": b64png(image.convert("RGB")),
        "strength": strength,
        "output_format": "png",
    }
    return ImageCalls(_bodies(base, job.n, job.options), partial(read_answer, width=job.width, height=job.height))


def inpaint_calls(job: EditJob) -> ImageCalls:
    """Inpaint (``stability-inpaint``): one image and its mask; answered at the image's size."""
    _check_common(job.prompt, job.n, job.transparent, job.options, _INPAINT_OPTIONS)
    if job.mask is None:
        raise refuse(f"{_NAME} inpaints the area a mask marks; send a 'mask'.", "mask")
    image = _one_image(job)
    width, height = image.size
    if width * height > INPAINT_MAX_PIXELS or max(width, height) > INPAINT_MAX_ASPECT * min(width, height):
        raise refuse(
            f"{_NAME} inpaints images of at most {INPAINT_MAX_PIXELS} pixels with an aspect ratio between "
            f"1:{INPAINT_MAX_ASPECT:g} and {INPAINT_MAX_ASPECT:g}:1; {width}x{height} is not one.",
            "image",
        )
    grow = job.options.get("grow_mask")
    if grow is not None and (isinstance(grow, bool) or not isinstance(grow, int) or not 0 <= grow <= MAX_GROW_MASK):
        raise refuse(f"'grow_mask' must be an integer between 0 and {MAX_GROW_MASK}.", "grow_mask")
    style = job.options.get("style_preset")
    if style is not None and style not in STYLE_PRESETS:
        raise refuse(f"'style_preset' must be one of {', '.join(sorted(STYLE_PRESETS))}.", "style_preset")
    base: dict[str, Any] = {
        "prompt": job.prompt,
        "image": b64png(image.convert("RGB")),
        "mask": base64.b64encode(png_bytes(repaint_mask(job.mask))).decode("ascii"),
        "output_format": "png",
    }
    base.update({name: job.options[name] for name in ("grow_mask", "style_preset") if name in job.options})
    return ImageCalls(_bodies(base, job.n, job.options), partial(read_answer, width=job.width, height=job.height))


def aspect_ratio(width: int, height: int) -> str:
    """The ratio (of the nine) within 3% of ``width``:``height``, or a 400 naming ``size``."""
    for ratio in ASPECT_RATIOS:
        across, down = (int(part) for part in ratio.split(":"))
        if abs(math.log((width * down) / (height * across))) <= math.log1p(RATIO_TOLERANCE):
            return ratio
    raise refuse(
        f"{_NAME} draws at fixed aspect ratios and {width}x{height} is none of them; "
        f"choose a size with one of these ratios: {', '.join(ASPECT_RATIOS)}.",
        "size",
    )


def read_answer(document: dict[str, Any], *, width: int, height: int) -> list[GeneratedImage]:
    """One answer: its ``finish_reasons`` first (a filtered answer has no image), then its one image at
    ``width`` x ``height``."""
    reasons = document.get("finish_reasons")
    if reasons is not None and not isinstance(reasons, list):
        raise Outcome(invalid_response(), unhealthy=True)
    for reason in reasons or []:
        if reason is None:
            continue
        if isinstance(reason, str) and reason.startswith("Filter reason"):
            raise content_policy()
        logger.error("stability model failed", extra={"reason": str(reason)[:64]})
        raise Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_error"), unhealthy=True)
    return decode_images(document.get("images"), 1, width, height, transparent=False)


def call_seed(seed: int, index: int) -> int:
    """Call ``index``'s seed: 0 stays 0 (random each time); otherwise ``seed + index`` within 1..MAX_SEED."""
    return 0 if seed == 0 else (seed - 1 + index) % MAX_SEED + 1


# -- checks and bodies ---------------------------------------------------------------------------------


def _bodies(base: dict[str, Any], n: int, options: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    if options.get("negative_prompt") is not None:
        base["negative_prompt"] = options["negative_prompt"]
    seed = options.get("seed")
    if seed is None:
        return tuple(dict(base) for _ in range(n))
    return tuple({**base, "seed": call_seed(seed, index)} for index in range(n))


def _one_image(job: EditJob) -> Image.Image:
    if len(job.images) != 1:
        raise refuse(f"{_NAME} edits one image; send a single image.", "image")
    image = job.images[0]
    if min(image.size) < MIN_SIDE:
        raise refuse(
            f"{_NAME} needs input images at least {MIN_SIDE} pixels a side; {image.size[0]}x{image.size[1]} is not.",
            "image",
        )
    return image


def _check_common(prompt: str, n: int, transparent: bool, options: Mapping[str, Any], allowed: frozenset[str]) -> None:
    if transparent:
        raise refuse(f"{_NAME} cannot produce a transparent background.", "background")
    check_request(
        _NAME,
        prompt,
        n,
        options,
        max_n=MAX_CALLS,
        max_prompt_chars=MAX_PROMPT_CHARS,
        max_seed=MAX_SEED,
        allowed=allowed,
    )
