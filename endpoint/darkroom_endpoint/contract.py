"""darkroom's container contract as the model server reads it (docs/deploying-backends.md, "The container
contract"): one JSON object in, validated into a typed task before any model sees it.

Errors are answered as ``{"error": {"code", "message", "param"}}`` with a 4xx status: darkroom's
``sagemaker`` adapter treats a 4xx as a deliberate refusal (not the endpoint's ill health), and reads
``code`` ``content_policy_violation`` as a safety refusal. A message names the rule that was broken,
never the value that broke it: nothing the client sent is echoed back.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any

from PIL import Image

TASKS = ("generate", "edit", "analyze")
QUALITIES = ("low", "medium", "high")
ROLES = ("user", "assistant", "system", "developer")
MAX_PROMPT_CHARS = 32_000
MAX_NUM_IMAGES = 10
MAX_SIDE = 4096
MAX_STEPS = 150
MAX_IMAGE_BYTES = 32 * 1024 * 1024
MAX_INPUT_PIXELS = 40_000_000
MAX_INPUT_IMAGES = 16
MAX_MESSAGES = 256
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")

_IMAGE_KEYS = {
    "task",
    "prompt",
    "width",
    "height",
    "num_images",
    "quality",
    "background",
    "negative_prompt",
    "steps",
    "guidance",
    "seed",
}
_EDIT_KEYS = _IMAGE_KEYS | {"image", "mask", "reference_images"}
_ANALYZE_KEYS = {"task", "images", "instructions", "messages"}


class ContractError(Exception):
    """A request the server refuses: answered with ``status`` and the error object, never a traceback."""

    status = 400
    code = "invalid_request"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or type(self).code
        self.status = status or type(self).status

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "param": self.param}}


class ContentPolicyViolation(ContractError):
    """The prompt matched the operator's blocklist, or a safety checker flagged an image: no image leaves."""

    code = "content_policy_violation"

    def __init__(self, message: str = "The request was refused by the model server's content policy.") -> None:
        super().__init__(message)


class Unsupported(ContractError):
    """A valid request this server's models cannot serve (a task without a model, reference images on a
    pipeline that cannot use them, a size the family cannot make)."""

    code = "unsupported"


@dataclass(frozen=True)
class ImageTask:
    """``generate`` (text-to-image) or ``edit`` (inpainting with ``mask``, image-to-image without)."""

    task: str
    prompt: str
    width: int
    height: int
    num_images: int
    quality: str
    transparent: bool = False
    negative_prompt: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    image: Image.Image | None = None  # edit: RGB, width x height
    mask: Image.Image | None = None  # edit: "L", width x height, 255 = repaint, 0 = keep (binarised)
    reference_images: tuple[Image.Image, ...] = ()


@dataclass(frozen=True)
class AnalyzeTask:
    """Images and a conversation in, text out."""

    messages: tuple[tuple[str, str], ...]
    images: tuple[Image.Image, ...] = ()
    instructions: str | None = None


def parse_task(document: object) -> ImageTask | AnalyzeTask:
    """The request body (already JSON-decoded) -> a typed task, or a :class:`ContractError`."""
    if not isinstance(document, dict):
        raise ContractError("The request body must be a JSON object.")
    task = document.get("task")
    if task not in TASKS:
        raise ContractError("'task' must be one of 'generate', 'edit' or 'analyze'.", param="task")
    if task == "analyze":
        _refuse_unknown(document, _ANALYZE_KEYS)
        return _analyze(document)
    _refuse_unknown(document, _EDIT_KEYS if task == "edit" else _IMAGE_KEYS)
    return _image_task(task, document)


def _refuse_unknown(document: dict, allowed: set[str]) -> None:
    for key in document:
        if key not in allowed:
            name = key if isinstance(key, str) and len(key) <= 64 else "(a long key)"
            raise ContractError(f"Unknown parameter for this task: '{name}'.", param=name)


def _image_task(task: str, document: dict) -> ImageTask:
    prompt = _string(document, "prompt", required=True, max_chars=MAX_PROMPT_CHARS)
    width = _integer(document, "width", 8, MAX_SIDE, required=True)
    height = _integer(document, "height", 8, MAX_SIDE, required=True)
    num_images = _integer(document, "num_images", 1, MAX_NUM_IMAGES, required=True)
    quality = document.get("quality", "medium")
    if quality not in QUALITIES:
        raise ContractError("'quality' must be 'low', 'medium' or 'high'.", param="quality")
    background = document.get("background")
    if background not in (None, "transparent"):
        raise ContractError("'background' may only be 'transparent'.", param="background")
    guidance = document.get("guidance")
    if guidance is not None and (
        isinstance(guidance, bool) or not isinstance(guidance, int | float) or not 0 <= guidance <= 50
    ):
        raise ContractError("'guidance' must be a number from 0 to 50.", param="guidance")
    image = mask = None
    references: tuple[Image.Image, ...] = ()
    if task == "edit":
        image = decode_image(document.get("image"), "image", (width, height)).convert("RGB")
        if "mask" in document:
            mask = decode_image(document["mask"], "mask", (width, height)).convert("L")
            mask = mask.point(lambda value: 255 if value >= 128 else 0)
        encoded = document.get("reference_images", [])
        if not isinstance(encoded, list) or len(encoded) > MAX_INPUT_IMAGES - 1:
            raise ContractError(
                f"'reference_images' must be a list of at most {MAX_INPUT_IMAGES - 1} images.", param="reference_images"
            )
        references = tuple(
            decode_image(item, f"reference_images[{index}]").convert("RGB") for index, item in enumerate(encoded)
        )
    return ImageTask(
        task=task,
        prompt=prompt,
        width=width,
        height=height,
        num_images=num_images,
        quality=quality,
        transparent=background == "transparent",
        negative_prompt=_string(document, "negative_prompt", max_chars=MAX_PROMPT_CHARS),
        steps=_integer(document, "steps", 1, MAX_STEPS),
        guidance=float(guidance) if guidance is not None else None,
        seed=_integer(document, "seed", 0, 2**63 - 1),
        image=image,
        mask=mask,
        reference_images=references,
    )


def _analyze(document: dict) -> AnalyzeTask:
    messages = document.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        raise ContractError(f"'messages' must be a list of 1 to {MAX_MESSAGES} messages.", param="messages")
    turns = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES or set(message) != {"role", "content"}:
            raise ContractError(
                f'\'{where}\' must be {{"role": user|assistant|system|developer, "content": text}}.', param=where
            )
        content = message["content"]
        if not isinstance(content, str) or len(content) > MAX_PROMPT_CHARS:
            raise ContractError(
                f"'{where}.content' must be text of at most {MAX_PROMPT_CHARS} characters.", param=f"{where}.content"
            )
        turns.append((message["role"], content))
    encoded = document.get("images", [])
    if not isinstance(encoded, list) or len(encoded) > MAX_INPUT_IMAGES:
        raise ContractError(f"'images' must be a list of at most {MAX_INPUT_IMAGES} images.", param="images")
    images = tuple(decode_image(item, f"images[{index}]").convert("RGB") for index, item in enumerate(encoded))
    return AnalyzeTask(
        messages=tuple(turns), images=images, instructions=_string(document, "instructions", max_chars=MAX_PROMPT_CHARS)
    )


def decode_image(encoded: object, param: str, size: tuple[int, int] | None = None) -> Image.Image:
    """Strict base64 -> a decoded PNG/JPEG/WebP, bounded in bytes and pixels before any pixel is decoded."""
    if not isinstance(encoded, str) or not encoded:
        raise ContractError(f"'{param}' must be a base64-encoded PNG, JPEG or WebP image.", param=param)
    if len(encoded) > (MAX_IMAGE_BYTES // 3 + 1) * 4:
        raise ContractError(f"'{param}' is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB.", param=param)
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ContractError(f"'{param}' is not valid base64.", param=param) from None
    if len(encoded) != 4 * -(-len(raw) // 3):  # validate=True still takes padding after a full group ("AAAA=")
        raise ContractError(f"'{param}' is not valid base64.", param=param)
    try:
        image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
        if image.width * image.height > MAX_INPUT_PIXELS:
            raise ContractError(f"'{param}' has more than {MAX_INPUT_PIXELS} pixels.", param=param)
        image.load()
    except ContractError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        raise ContractError(f"'{param}' is not a readable PNG, JPEG or WebP image.", param=param) from None
    if size is not None and image.size != size:
        raise ContractError(f"'{param}' must be exactly width x height pixels.", param=param)
    return image


def _string(document: dict, key: str, *, required: bool = False, max_chars: int) -> str | None:
    value = document.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > max_chars:
        raise ContractError(f"'{key}' must be non-empty text of at most {max_chars} characters.", param=key)
    return value


def _integer(document: dict, key: str, low: int, high: int, *, required: bool = False) -> int | None:
    value = document.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ContractError(f"'{key}' must be an integer from {low} to {high}.", param=key)
    return value


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """An error object for the server's own refusals (413, 429, 503, 500), in the same shape."""
    return ContractError(message, code=code, status=status).body()
