"""The ``bedrock`` backend: Amazon Bedrock foundation models through ``bedrock-runtime``.

* generate -> ``InvokeModel`` with the Nova Canvas / Titan Image Generator ``TEXT_IMAGE`` task;
* edit with a mask -> ``INPAINTING`` (one input image); edit without a mask -> ``IMAGE_VARIATION``
  (1-5 input images guide a new picture);
* respond -> the ``Converse`` API (text, and PNG images for models that see).

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
4,194,304 pixels, aspect ratio within 1:4..4:1; Titan Image Generator takes a fixed list of sizes;
both return 1-5 images. An inpainting edit keeps the input's size (Bedrock answers at the input image's size),
which must be within the same side and pixel bounds (multiples of 16 are not needed for inputs); a
variation (no mask) is drawn at the job's size, which must be a size the model can produce.
Which family a model is comes from its catalog entry (``endpoint.family``: ``nova-canvas``, ``titan-image``, or
``converse`` for text and vision), never from its model id: an inference profile or a new version need not
look like the family it belongs to.

**Errors.** ``ThrottlingException``, ``ServiceUnavailableException``, ``ModelNotReadyException``,
``InternalServerException``, ``ServiceQuotaExceededException`` -> 503 + ``retry-after``;
``ValidationException`` saying the content filters blocked the request (or an image answer with an
``error`` field) -> 400 ``content_policy_violation`` with a neutral message; any other
``ValidationException``, ``AccessDeniedException``, ``ResourceNotFoundException``,
``ModelErrorException`` -> 502 ``upstream_error``; ``ModelTimeoutException`` and botocore read/connect
timeouts -> 504; a malformed answer -> 502 ``upstream_invalid_response``. No message names the model
ARN or repeats what Bedrock said. Images in answers pass through :mod:`darkroom.intake`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from PIL import Image

from darkroom.api.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.inference import EditJob, GeneratedImage, GenerateJob, TextJob
from darkroom.inference.aws_runtime import (
    CONFIG_MESSAGE,
    FAILED_MESSAGE,
    TIMEOUT_MESSAGE,
    AwsBackend,
    Outcome,
    b64png,
    decode_images,
    error_code,
    error_message,
    guarded,
    invalid_response,
    json_object,
    png_bytes,
    read_body,
    throttled,
    transport_outcome,
)
from darkroom.observability import logger

CONTENT_POLICY_MESSAGE = "The request was rejected by the model's content filters."
_UNAVAILABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ServiceUnavailableException",
        "ModelNotReadyException",
        "InternalServerException",
        "ServiceQuotaExceededException",
    }
)
_CONFIG_CODES = frozenset(
    {"AccessDeniedException", "ResourceNotFoundException", "UnrecognizedClientException", "ExpiredTokenException"}
)
# What Bedrock says when its filters block a prompt, an input image or a generated image.
_CONTENT_FILTERED = re.compile(
    r"content filter|blocked by our|content moderation|responsible ai|"
    r"violates? (?:our|the) (?:content|acceptable use)|\baup\b",
    re.IGNORECASE,
)
_PASSTHROUGH = frozenset({"negative_prompt", "seed", "cfg_scale"})
_QUALITY = {"low": "standard", "medium": "standard", "high": "premium"}
_ROLES = {"user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class ImageRules:
    """What one Bedrock image model family accepts (checked before calling AWS)."""

    name: str
    min_side: int = 320
    max_side: int = 4096
    multiple: int = 16
    max_pixels: int = 4_194_304
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


def rules_for(model: ModelEntry) -> ImageRules:
    """The image rules of the model's declared family (the catalog refuses image capabilities without one)."""
    rules = _RULES.get(model.endpoint.family)
    if rules is None:
        raise _refuse(f"The model '{model.id}' does not draw images.", "model", "model_not_supported")
    return rules


def mask_png(mask: Image.Image) -> bytes:
    """darkroom's mask ("L", 0 = edit here) -> Bedrock's: RGB, black (0,0,0) = change, white = keep."""
    return png_bytes(mask.convert("L").point(lambda alpha: 0 if alpha == 0 else 255).convert("RGB"))


def _refuse(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def check_output_size(rules: ImageRules, width: int, height: int) -> None:
    if rules.sizes is not None:
        if (width, height) not in rules.sizes:
            allowed = ", ".join(f"{w}x{h}" for w, h in sorted(rules.sizes))
            raise _refuse(f"{rules.name} cannot produce {width}x{height}; supported sizes: {allowed}.", "size")
        return
    if width % rules.multiple or height % rules.multiple:
        raise _refuse(
            f"{rules.name} needs a width and height that are multiples of {rules.multiple}; {width}x{height} is not.",
            "size",
        )
    _check_bounds(rules, width, height, "size", "sizes")


def _check_bounds(rules: ImageRules, width: int, height: int, param: str, what: str) -> None:
    if not (rules.min_side <= width <= rules.max_side and rules.min_side <= height <= rules.max_side):
        raise _refuse(
            f"{rules.name} {what} must be between {rules.min_side} and {rules.max_side} pixels a side; "
            f"{width}x{height} is not.",
            param,
        )
    if width * height > rules.max_pixels:
        raise _refuse(
            f"{rules.name} {what} must be at most {rules.max_pixels} pixels; {width}x{height} is {width * height}.",
            param,
        )
    if max(width, height) > rules.max_aspect * min(width, height):
        raise _refuse(
            f"{rules.name} {what} must have an aspect ratio between 1:{rules.max_aspect:g} and "
            f"{rules.max_aspect:g}:1; {width}x{height} does not.",
            param,
        )


def check_common(rules: ImageRules, prompt: str, n: int, options: Mapping[str, Any]) -> None:
    if not 1 <= n <= rules.max_n:
        raise _refuse(f"{rules.name} returns between 1 and {rules.max_n} images per request; 'n' was {n}.", "n")
    if not prompt:
        raise _refuse(f"{rules.name} needs a non-empty prompt.", "prompt")
    if len(prompt) > rules.max_prompt_chars:
        raise _refuse(
            f"'prompt' is too long: {rules.name} accepts at most {rules.max_prompt_chars} characters.",
            "prompt",
            "string_above_max_length",
        )
    for name in options:
        if name not in _PASSTHROUGH:
            raise _refuse(f"'{name[:64]}' is not supported by this model.", name[:64], "unsupported_parameter")
    negative = options.get("negative_prompt")
    if negative is not None and (not isinstance(negative, str) or not 1 <= len(negative) <= rules.max_prompt_chars):
        raise _refuse(
            f"'negative_prompt' must be a string of 1 to {rules.max_prompt_chars} characters.", "negative_prompt"
        )
    seed = options.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= rules.max_seed):
        raise _refuse(f"'seed' must be an integer between 0 and {rules.max_seed}.", "seed")
    cfg = options.get("cfg_scale")
    if cfg is not None and (isinstance(cfg, bool) or not isinstance(cfg, int | float) or not 1.1 <= cfg <= 10):
        raise _refuse("'cfg_scale' must be a number between 1.1 and 10.", "cfg_scale")


class BedrockBackend(AwsBackend):
    """The ``Backend`` port over Amazon Bedrock (image models via InvokeModel, text via Converse)."""

    SERVICE = "bedrock-runtime"

    # -- the port -------------------------------------------------------------------------------

    def generate(self, model: ModelEntry, job: GenerateJob) -> list[GeneratedImage]:
        rules = rules_for(model)
        self._check_transparency(rules, job.transparent)
        check_common(rules, job.prompt, job.n, job.options)
        check_output_size(rules, job.width, job.height)
        params: dict[str, Any] = {"text": job.prompt}
        if job.options.get("negative_prompt"):
            params["negativeText"] = job.options["negative_prompt"]
        body = {
            "taskType": "TEXT_IMAGE",
            "textToImageParams": params,
            "imageGenerationConfig": {
                "numberOfImages": job.n,
                "width": job.width,
                "height": job.height,
                **self._config(job.quality, job.options),
            },
        }
        return self._images(model, "generate", body, job.n, job.width, job.height, job.deadline_seconds)

    def edit(self, model: ModelEntry, job: EditJob) -> list[GeneratedImage]:
        rules = rules_for(model)
        self._check_transparency(rules, job.transparent)
        check_common(rules, job.prompt, job.n, job.options)
        for index, image in enumerate(job.images):
            _check_bounds(rules, *image.size, f"image[{index}]" if len(job.images) > 1 else "image", "input images")
        params: dict[str, Any] = {"text": job.prompt}
        if job.options.get("negative_prompt"):
            params["negativeText"] = job.options["negative_prompt"]
        if job.mask is not None:
            if len(job.images) > 1:
                raise _refuse(f"{rules.name} edits one image with a mask; send a single image.", "image")
            params["image"] = b64png(job.images[0].convert("RGB"))
            params["maskImage"] = base64.b64encode(mask_png(job.mask)).decode("ascii")
            body = {"taskType": "INPAINTING", "inPaintingParams": params}
        else:
            if len(job.images) > rules.max_variation_images:
                raise _refuse(
                    f"{rules.name} takes at most {rules.max_variation_images} images without a mask.", "image"
                )
            check_output_size(rules, job.width, job.height)  # a variation is drawn at the configured size
            params["images"] = [b64png(image.convert("RGB")) for image in job.images]
            body = {"taskType": "IMAGE_VARIATION", "imageVariationParams": params}
        size = {} if job.mask is not None else {"width": job.width, "height": job.height}
        body["imageGenerationConfig"] = {"numberOfImages": job.n, **size, **self._config(job.quality, job.options)}
        return self._images(model, "edit", body, job.n, job.width, job.height, job.deadline_seconds)

    def respond(self, model: ModelEntry, job: TextJob) -> str:
        system = [{"text": job.instructions}] if job.instructions else []
        messages: list[dict] = []
        for role, text in job.messages:
            if role in ("system", "developer"):
                system.append({"text": text})
                continue
            self._append(messages, _ROLES.get(role, "user"), [{"text": text}])
        if job.images:
            blocks = [
                {"image": {"format": "png", "source": {"bytes": png_bytes(picture.image)}}} for picture in job.images
            ]
            self._append(messages, "user", blocks)
        if not messages:
            raise _refuse("The conversation has no message for the model to answer.", "input")
        if messages[0]["role"] != "user":  # Converse starts with the user
            messages.insert(0, {"role": "user", "content": [{"text": "(conversation continues)"}]})
        request: dict[str, Any] = {"modelId": model.endpoint.model_id, "messages": messages}
        if system:
            request["system"] = system

        def call() -> str:
            try:
                response = self.client.converse(**request)
            except ClientError as exc:
                raise self._client_error(model, exc) from None
            except BotoCoreError as exc:
                raise transport_outcome(exc) from None
            return self._text(response)

        return guarded(
            self.breaker,
            model.id,
            "converse",
            call,
            backend=model.backend,
            deadline=self.deadline(model, job.deadline_seconds),
            resilience=self.resilience,
        )

    # -- requests -------------------------------------------------------------------------------

    @staticmethod
    def _check_transparency(rules: ImageRules, transparent: bool) -> None:
        if transparent:
            raise _refuse(f"{rules.name} cannot produce a transparent background.", "background")

    @staticmethod
    def _config(quality: str, options: Mapping[str, Any]) -> dict[str, Any]:
        config: dict[str, Any] = {"quality": _QUALITY.get(quality, "standard")}
        if options.get("seed") is not None:
            config["seed"] = options["seed"]
        if options.get("cfg_scale") is not None:
            config["cfgScale"] = options["cfg_scale"]
        return config

    @staticmethod
    def _append(messages: list[dict], role: str, content: list[dict]) -> None:
        """Converse wants alternating roles: consecutive turns of one role become one message."""
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(content)
        else:
            messages.append({"role": role, "content": list(content)})

    # -- answers --------------------------------------------------------------------------------

    def _images(
        self, model: ModelEntry, operation: str, body: dict, n: int, width: int, height: int, deadline_seconds: float
    ) -> list[GeneratedImage]:
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")

        def call() -> list[GeneratedImage]:
            try:
                response = self.client.invoke_model(
                    modelId=model.endpoint.model_id,
                    body=payload,
                    contentType="application/json",
                    accept="application/json",
                )
            except ClientError as exc:
                raise self._client_error(model, exc) from None
            except BotoCoreError as exc:
                raise transport_outcome(exc) from None
            document = json_object(read_body(response.get("body")))
            if document.get("error"):  # Bedrock's filters removed what it drew
                raise Outcome(InvalidRequest(CONTENT_POLICY_MESSAGE, code="content_policy_violation"), unhealthy=False)
            return decode_images(document.get("images"), n, width, height, transparent=False)

        return guarded(
            self.breaker,
            model.id,
            operation,
            call,
            backend=model.backend,
            deadline=self.deadline(model, deadline_seconds),
            resilience=self.resilience,
        )

    @staticmethod
    def _text(response: Mapping[str, Any]) -> str:
        if response.get("stopReason") in ("content_filtered", "guardrail_intervened"):
            raise Outcome(InvalidRequest(CONTENT_POLICY_MESSAGE, code="content_policy_violation"), unhealthy=False)
        output = response.get("output")
        message = output.get("message") if isinstance(output, Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            raise Outcome(invalid_response(), unhealthy=True)
        texts = [
            block["text"] for block in content if isinstance(block, Mapping) and isinstance(block.get("text"), str)
        ]
        if not texts:
            raise Outcome(invalid_response(), unhealthy=True)
        return "".join(texts)

    @staticmethod
    def _client_error(model: ModelEntry, exc: ClientError) -> Outcome:
        code = error_code(exc)
        if code in _UNAVAILABLE_CODES:
            return throttled()
        if code == "ModelTimeoutException":
            return Outcome(UpstreamTimeout(TIMEOUT_MESSAGE), unhealthy=True)
        if code == "ValidationException" and _CONTENT_FILTERED.search(error_message(exc)):
            return Outcome(InvalidRequest(CONTENT_POLICY_MESSAGE, code="content_policy_violation"), unhealthy=False)
        if code in _CONFIG_CODES or code == "ValidationException":
            logger.error("bedrock rejected darkroom's request", extra={"model": model.id, "code": code})
            return Outcome(UpstreamError(CONFIG_MESSAGE, code="upstream_error"), unhealthy=False)
        logger.error("bedrock call failed", extra={"model": model.id, "code": code[:64]})
        return Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_error"), unhealthy=code == "ModelErrorException")
