"""Bedrock's image families (Nova Canvas, Titan Image Generator): what each accepts, checked before AWS is called,
and the ``InvokeModel`` bodies darkroom sends them (:mod:`darkroom.inference.bedrock` makes the calls).

Request shapes (``imageGenerationConfig`` is shared by every image task)::

    {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": prompt, "negativeText"?},
     "imageGenerationConfig": {"numberOfImages": n, "width": w, "height": h,
                               "quality": "standard" | "premium", "seed"?, "cfgScale"?}}
    {"taskType": "INPAINTING", "inPaintingParams": {"text", "negativeText"?, "image": b64 PNG,
                                                    "maskImage": b64 PNG},
     "imageGenerationConfig": {"numberOfImages": n, "quality", "seed"?, "cfgScale"?}}
    {"taskType": "IMAGE_VARIATION", "imageVariationParams": {"text", "negativeText"?, "images": [b64 PNG]},
     "imageGenerationConfig": {"numberOfImages": n, "width": w, "height": h, "quality", "seed"?, "cfgScale"?}}

darkroom's qualities map to Bedrock's two: ``low``/``medium`` -> ``standard``, ``high`` -> ``premium``.
Pass-through options the catalog may allow: ``negative_prompt`` -> ``negativeText``, ``seed``,
``cfg_scale`` -> ``cfgScale``; any other pass-through is refused (400) rather than silently dropped.

**Masks.** darkroom's mask follows OpenAI (alpha 0 = edit here). Bedrock's ``maskImage`` is an RGB PNG
the size of the image in which pure BLACK (0, 0, 0) marks the pixels to change and pure WHITE
(255, 255, 255) the pixels to keep (the Nova Canvas and Titan inference-parameter pages); darkroom
converts: alpha 0 -> black, anything else -> white.

**What a model can do is checked before AWS is called** (400 ``invalid_value`` naming ``size``, ``n``,
``image``, ``prompt``, ``seed``...): Nova Canvas sides are multiples of 16 in [320, 4096], at most
4,194,303 pixels (fewer than 4,194,304, so not 2048x2048), aspect ratio within 1:4..4:1; Titan Image
Generator takes a fixed list of sizes; both return 1-5 images. An inpainting edit keeps the input's size
(Bedrock answers at the input image's size),
which must be within the same side and pixel bounds (multiples of 16 are not needed for inputs); a
variation (no mask) is drawn at the job's size, which must be a size the model can produce.
Which family a model is comes from its catalog entry (``endpoint.family``), never from its model id.

:class:`ImageCalls` is what every Bedrock image family's planner returns to :mod:`darkroom.inference.bedrock`:
the ``InvokeModel`` bodies to send (Nova Canvas and Titan: one body for all ``n`` images; Stability's models:
one call per image, :mod:`darkroom.inference.bedrock_stability`) and how to read each answer.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from PIL import Image

from darkroom.catalog import ModelEntry
from darkroom.catalog_endpoints import BedrockEndpoint
from darkroom.inference import EditJob, GeneratedImage, GenerateJob
from darkroom.inference.aws_runtime import b64png, content_policy, decode_images, png_bytes, refuse

_PASSTHROUGH = frozenset({"negative_prompt", "seed", "cfg_scale"})
_QUALITY = {"low": "standard", "medium": "standard", "high": "premium"}


@dataclass(frozen=True)
class ImageCalls:
    """What one generate or edit sends to a Bedrock image model: an ``InvokeModel`` body per call (sent in
    order, within the one deadline), and ``read``, which turns one answer into its images or raises an
    :class:`Outcome` (content filters, the model's own failure, a malformed answer)."""

    bodies: tuple[dict[str, Any], ...]
    read: Callable[[dict[str, Any]], list[GeneratedImage]]


@dataclass(frozen=True)
class ImageRules:
    """What one Bedrock image model family accepts (checked before calling AWS)."""

    name: str
    min_side: int = 320
    max_side: int = 4096
    multiple: int = 16
    # Nova Canvas: "The total pixel count must be less than 4,194,304" (image-gen-access.html; AWS Labs' Nova
    # Canvas MCP server enforces `total_pixels >= 4194304` as an error): so 2048x2048 is refused.
    max_pixels: int = 4_194_303
    max_aspect: float = 4.0
    sizes: frozenset[tuple[int, int]] | None = None  # a fixed list replaces the rules above for outputs
    max_n: int = 5
    max_prompt_chars: int = 1024
    max_seed: int = 858_993_459
    max_variation_images: int = 5


NOVA_CANVAS = ImageRules("Nova Canvas")
TITAN_IMAGE = ImageRules(
    "Titan Image Generator",
    max_side=1408,
    max_prompt_chars=512,
    max_seed=2_147_483_646,
    sizes=frozenset(
        {
            (1024, 1024),
            (768, 768),
            (512, 512),
            (768, 1152),
            (384, 576),
            (1152, 768),
            (576, 384),
            (768, 1280),
            (384, 640),
            (1280, 768),
            (640, 384),
            (896, 1152),
            (448, 576),
            (1152, 896),
            (576, 448),
            (768, 1408),
            (384, 704),
            (1408, 768),
            (704, 384),
            (640, 1408),
            (320, 704),
            (1408, 640),
            (704, 320),
            (1152, 640),
            (1173, 640),
        }
    ),
)


_RULES = {"nova-canvas": NOVA_CANVAS, "titan-image": TITAN_IMAGE}


def amazon_generate(model: ModelEntry, job: GenerateJob) -> ImageCalls:
    """Nova Canvas / Titan: one ``TEXT_IMAGE`` call returns all ``job.n`` images."""
    body = generate_body(rules_for(model), job)
    return ImageCalls((body,), partial(read_amazon, n=job.n, width=job.width, height=job.height))


def amazon_edit(model: ModelEntry, job: EditJob) -> ImageCalls:
    """Nova Canvas / Titan: one ``INPAINTING`` or ``IMAGE_VARIATION`` call returns all ``job.n`` images."""
    body = edit_body(rules_for(model), job)
    return ImageCalls((body,), partial(read_amazon, n=job.n, width=job.width, height=job.height))


def read_amazon(document: dict[str, Any], *, n: int, width: int, height: int) -> list[GeneratedImage]:
    """``{"images": [b64...], "error"?}``: an ``error`` means Bedrock's filters removed what the model drew."""
    if document.get("error"):
        raise content_policy()
    return decode_images(document.get("images"), n, width, height, transparent=False)


def rules_for(model: ModelEntry) -> ImageRules:
    """The image rules of the model's declared family (the catalog refuses image capabilities without one)."""
    rules = _RULES.get(model.endpoint_as(BedrockEndpoint).family)
    if rules is None:
        raise refuse(f"The model '{model.id}' does not draw images.", "model", "model_not_supported")
    return rules


def mask_png(mask: Image.Image) -> bytes:
    """darkroom's mask ("L", 0 = edit here) -> Bedrock's: RGB, black (0,0,0) = change, white = keep."""
    return png_bytes(mask.convert("L").point(lambda alpha: 0 if alpha == 0 else 255).convert("RGB"))


def check_output_size(rules: ImageRules, width: int, height: int) -> None:
    if rules.sizes is not None:
        if (width, height) not in rules.sizes:
            allowed = ", ".join(f"{w}x{h}" for w, h in sorted(rules.sizes))
            raise refuse(f"{rules.name} cannot produce {width}x{height}; supported sizes: {allowed}.", "size")
        return
    if width % rules.multiple or height % rules.multiple:
        raise refuse(
            f"{rules.name} needs a width and height that are multiples of {rules.multiple}; {width}x{height} is not.",
            "size",
        )
    check_bounds(rules, width, height, "size", "sizes")


def check_bounds(rules: ImageRules, width: int, height: int, param: str, what: str) -> None:
    if not (rules.min_side <= width <= rules.max_side and rules.min_side <= height <= rules.max_side):
        raise refuse(
            f"{rules.name} {what} must be between {rules.min_side} and {rules.max_side} pixels a side; "
            f"{width}x{height} is not.",
            param,
        )
    if width * height > rules.max_pixels:
        raise refuse(
            f"{rules.name} {what} must be at most {rules.max_pixels} pixels; {width}x{height} is {width * height}.",
            param,
        )
    if max(width, height) > rules.max_aspect * min(width, height):
        raise refuse(
            f"{rules.name} {what} must have an aspect ratio between 1:{rules.max_aspect:g} and "
            f"{rules.max_aspect:g}:1; {width}x{height} does not.",
            param,
        )


def check_request(
    name: str,
    prompt: str,
    n: int,
    options: Mapping[str, Any],
    *,
    max_n: int,
    max_prompt_chars: int,
    max_seed: int,
    allowed: frozenset[str],
) -> None:
    """What every Bedrock image family checks before AWS is called: ``n``, the prompt, which pass-through options
    it takes, and the ``negative_prompt`` and ``seed`` it shares (400s naming each)."""
    if not 1 <= n <= max_n:
        raise refuse(f"{name} returns between 1 and {max_n} images per request; 'n' was {n}.", "n")
    if not prompt:
        raise refuse(f"{name} needs a non-empty prompt.", "prompt")
    if len(prompt) > max_prompt_chars:
        raise refuse(
            f"'prompt' is too long: {name} accepts at most {max_prompt_chars} characters.",
            "prompt",
            "string_above_max_length",
        )
    for option in options:
        if option not in allowed:
            raise refuse(f"'{option[:64]}' is not supported by this model.", option[:64], "unsupported_parameter")
    negative = options.get("negative_prompt")
    if negative is not None and (not isinstance(negative, str) or not 1 <= len(negative) <= max_prompt_chars):
        raise refuse(f"'negative_prompt' must be a string of 1 to {max_prompt_chars} characters.", "negative_prompt")
    seed = options.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= max_seed):
        raise refuse(f"'seed' must be an integer between 0 and {max_seed}.", "seed")


def check_common(rules: ImageRules, prompt: str, n: int, options: Mapping[str, Any]) -> None:
    check_request(
        rules.name,
        prompt,
        n,
        options,
        max_n=rules.max_n,
        max_prompt_chars=rules.max_prompt_chars,
        max_seed=rules.max_seed,
        allowed=_PASSTHROUGH,
    )
    cfg = options.get("cfg_scale")
    if cfg is not None and (isinstance(cfg, bool) or not isinstance(cfg, int | float) or not 1.1 <= cfg <= 10):
        raise refuse("'cfg_scale' must be a number between 1.1 and 10.", "cfg_scale")


def generate_body(rules: ImageRules, job: GenerateJob) -> dict[str, Any]:
    """The ``TEXT_IMAGE`` body for ``job``, once the model's rules allow it (else a 400 naming the parameter)."""
    _check_transparency(rules, job.transparent)
    check_common(rules, job.prompt, job.n, job.options)
    check_output_size(rules, job.width, job.height)
    return {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": _texts(job.prompt, job.options),
        "imageGenerationConfig": {
            "numberOfImages": job.n,
            "width": job.width,
            "height": job.height,
            **_config(job.quality, job.options),
        },
    }


def edit_body(rules: ImageRules, job: EditJob) -> dict[str, Any]:
    """``INPAINTING`` with a mask (one image, answered at its size), ``IMAGE_VARIATION`` without one (1-5
    images guide a new picture at the job's size)."""
    _check_transparency(rules, job.transparent)
    check_common(rules, job.prompt, job.n, job.options)
    for index, image in enumerate(job.images):
        check_bounds(rules, *image.size, f"image[{index}]" if len(job.images) > 1 else "image", "input images")
    params = _texts(job.prompt, job.options)
    body: dict[str, Any]
    if job.mask is not None:
        if len(job.images) > 1:
            raise refuse(f"{rules.name} edits one image with a mask; send a single image.", "image")
        params["image"] = b64png(job.images[0].convert("RGB"))
        params["maskImage"] = base64.b64encode(mask_png(job.mask)).decode("ascii")
        body = {"taskType": "INPAINTING", "inPaintingParams": params}
    else:
        if len(job.images) > rules.max_variation_images:
            raise refuse(f"{rules.name} takes at most {rules.max_variation_images} images without a mask.", "image")
        check_output_size(rules, job.width, job.height)  # a variation is drawn at the configured size
        params["images"] = [b64png(image.convert("RGB")) for image in job.images]
        body = {"taskType": "IMAGE_VARIATION", "imageVariationParams": params}
    size = {} if job.mask is not None else {"width": job.width, "height": job.height}
    body["imageGenerationConfig"] = {"numberOfImages": job.n, **size, **_config(job.quality, job.options)}
    return body


def _texts(prompt: str, options: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"text": prompt}
    if options.get("negative_prompt"):
        params["negativeText"] = options["negative_prompt"]
    return params


def _check_transparency(rules: ImageRules, transparent: bool) -> None:
    if transparent:
        raise refuse(f"{rules.name} cannot produce a transparent background.", "background")


def _config(quality: str, options: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {"quality": _QUALITY.get(quality, "standard")}
    if options.get("seed") is not None:
        config["seed"] = options["seed"]
    if options.get("cfg_scale") is not None:
        config["cfgScale"] = options["cfg_scale"]
    return config
