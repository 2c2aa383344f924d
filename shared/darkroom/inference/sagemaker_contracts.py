"""The request bodies and answers of each SageMaker ``contract`` (``SageMakerEndpoint.contract``).

* ``darkroom``: darkroom's own JSON contract (:mod:`darkroom.inference.sagemaker` defines it); the catalog's
  ``content_type``/``accept`` are sent. Unchanged by the other two.

* ``jumpstart-sd``: SageMaker JumpStart's Stable Diffusion containers. Sources: aws/amazon-sagemaker-examples at
  commit 2d519b52c3a2c2361f2b87f0d3de46fd6c0232a5, ``generative_ai/sm-jumpstart_stable_diffusion_text_to_image.ipynb``
  (text to image: "Supported Inference parameters" prompt, width, height ("divisible by 8"),
  num_inference_steps, guidance_scale, negative_prompt, num_images_per_prompt, seed ("must be an integer");
  ``ContentType: application/json``; ``Accept: application/json;jpeg`` answers
  ``{"generated_images": ["<base64 JPEG>", ...], "prompt": ...}``, where plain ``application/json`` would answer
  nested RGB arrays) and ``archived/Amazon_JumpStart_Inpainting.ipynb`` (inpainting models: ``ContentType:
  application/json;jpeg`` with ``image`` and ``mask_image`` as base64 JPEG; "Mask is an image where the part to
  be replaced is all white and the part which is constant is all black"; no width/height parameters). generate
  and edit (with a mask: an inpainting endpoint) are sent as those notebooks show; images go as JPEG, as there.

* ``hf-diffusers``: the Hugging Face inference toolkit's default handler for a diffusers model (HF_TASK
  ``text-to-image``). Source: aws/sagemaker-huggingface-inference-toolkit at commit
  69bc5ef978e1acce63386c10aa2fdb97c92c977e (v2.6.0): ``handler_service.py`` ``predict`` calls
  ``model(inputs, **parameters)`` on ``{"inputs": prompt, "parameters": {...}}``; ``diffusers_utils.py``
  (``SMDiffusionPipelineForText2Image``, the only diffusers task) pops ``num_images_per_prompt``, calls the
  pipeline with 1 and returns ``out.images[0]``; ``decoder_encoder.py`` encodes that PIL image for ``Accept:
  application/json`` as a JSON *string*, the base64 of a PNG. So: generate only, one image per invocation (darkroom
  makes ``n`` invocations in real time), and the parameters are the pipeline's own keyword arguments (width,
  height, num_inference_steps, guidance_scale, negative_prompt). A seed cannot travel: the pipeline takes a
  ``generator``, which JSON cannot carry, so ``seed`` is refused rather than silently ignored.

Both off-the-shelf containers run in the Hugging Face container (the JumpStart notebook: "This is the base
HuggingFace container image"), whose ``handle`` turns *every* exception into a 400 ``PredictionException``: a 4xx
from them is not a deliberate refusal (:func:`darkroom.inference.sagemaker.SageMakerBackend._client_error`). That
is also why their pass-through values are checked here, against the types the sources document, before a call.

The catalog's ``content_type``/``accept`` apply to the darkroom contract only: the other two always send the
headers their sources show (plain ``application/json`` to JumpStart would answer nested RGB arrays, not images).

Their answers are checked like darkroom's (byte cap, every image through the intake), and must keep the job's
aspect ratio: an image of another size but the same shape is resized (the JumpStart inpainting notebook documents
no width/height, so an endpoint may answer at its native size); another shape is a 502, never a crop.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from darkroom.catalog import ModelEntry
from darkroom.catalog_endpoints import SageMakerEndpoint
from darkroom.inference import EditJob, GeneratedImage, GenerateJob, TextJob
from darkroom.inference.aws_runtime import (
    b64png,
    decode_images,
    invalid_response,
    json_object,
    png_bytes,
    refuse,
    repaint_mask,
)
from darkroom.inference.resilience import Outcome
from darkroom.inference.sagemaker_async import Answer, Task

Job = GenerateJob | EditJob | TextJob

JSON = "application/json"
JUMPSTART_JPEG = "application/json;jpeg"  # JumpStart: base64 JPEGs in JSON (requests and answers)
# How far an answer's aspect ratio may stray from the job's (SD sizes round to multiples of 8) and still be resized.
ASPECT_TOLERANCE = 0.02


@dataclass(frozen=True)
class ContractCall:
    """One request to send (``repeat`` times: hf-diffusers answers one image per call) and what must come back."""

    body: dict[str, Any]
    content_type: str
    accept: str
    expect: dict[str, Any]
    repeat: int = 1


# -- darkroom's own contract ----------------------------------------------------------------------


def generate_request(job: GenerateJob) -> dict[str, Any]:
    return _image_request("generate", job)


def edit_request(job: EditJob) -> dict[str, Any]:
    body = _image_request("edit", job)
    body["image"] = b64png(job.images[0])
    if len(job.images) > 1:
        body["reference_images"] = [b64png(image) for image in job.images[1:]]
    if job.mask is not None:
        body["mask"] = base64.b64encode(png_bytes(repaint_mask(job.mask))).decode("ascii")
    return body


def analyze_request(job: TextJob) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "analyze",
        "messages": [{"role": role, "content": text} for role, text in job.messages],
        "images": [b64png(picture.image) for picture in job.images],
    }
    if job.instructions:
        body["instructions"] = job.instructions
    return body


def _image_request(task: Literal["generate", "edit"], job: GenerateJob | EditJob) -> dict[str, Any]:
    # Pass-through first (negative_prompt, steps, seed, ...): the contract's own keys always win.
    body: dict[str, Any] = {
        **job.options,
        "task": task,
        "prompt": job.prompt,
        "width": job.width,
        "height": job.height,
        "num_images": job.n,
        "quality": job.quality,
    }
    if job.transparent:
        body["background"] = "transparent"
    return body


def expectation(task: Task, body: Mapping[str, Any]) -> dict[str, Any]:
    """What a valid answer to a darkroom ``body`` must hold, as plain JSON: an async handle carries it between
    invocations, and both paths parse with it, so an async answer is checked exactly like a real-time one."""
    if task == "analyze":
        return {}
    return {
        "n": body["num_images"],
        "width": body["width"],
        "height": body["height"],
        "transparent": body.get("background") == "transparent",
    }


# -- every contract -----------------------------------------------------------------------------------


def prepare(model: ModelEntry, task: Task, job: Job) -> ContractCall:
    """The call for ``job`` in the model's contract; raises the client's 400 for what the contract cannot do."""
    endpoint = model.endpoint_as(SageMakerEndpoint)
    if endpoint.contract == "darkroom":
        if isinstance(job, TextJob):
            body = analyze_request(job)
        else:
            body = generate_request(job) if isinstance(job, GenerateJob) else edit_request(job)
        return ContractCall(body, endpoint.content_type, endpoint.accept, expectation(task, body))
    if isinstance(job, TextJob):
        raise refuse(f"{model.id} generates images; it cannot answer in text.", "model")
    if job.transparent:
        raise refuse(f"{model.id} cannot produce a transparent background.", "background")
    if job.width % 8 or job.height % 8:
        raise refuse(f"{model.id} draws sizes whose sides are multiples of 8.", "size")
    expect = {"contract": endpoint.contract, "n": job.n, "width": job.width, "height": job.height}
    params = _options(model, endpoint.contract, job.options)
    if endpoint.contract == "hf-diffusers":
        if isinstance(job, EditJob):
            raise refuse(f"{model.id} only generates images (the toolkit's diffusers task is text-to-image).", "model")
        body = {"inputs": job.prompt, "parameters": {"width": job.width, "height": job.height, **params}}
        return ContractCall(body, JSON, JSON, {**expect, "n": 1}, repeat=job.n)
    # jumpstart-sd
    body = {"prompt": job.prompt, **params, "num_images_per_prompt": job.n}
    if isinstance(job, GenerateJob):
        return ContractCall({**body, "width": job.width, "height": job.height}, JSON, JUMPSTART_JPEG, expect)
    if job.mask is None:
        raise refuse(f"{model.id} edits with a mask (an inpainting model); send one.", "mask")
    if len(job.images) > 1:
        raise refuse(f"{model.id} edits one image with a mask; send a single image.", "image")
    mask = repaint_mask(job.mask)  # JumpStart: white = replace, black = keep
    body |= {"image": _b64jpeg(job.images[0]), "mask_image": _b64jpeg(mask)}
    return ContractCall(body, JUMPSTART_JPEG, JUMPSTART_JPEG, expect)


# darkroom's pass-through names (and the containers' own) -> the container's key and the JSON type documented.
_NUMBER = (int, float)
_JUMPSTART_OPTIONS: dict[str, tuple[str, tuple[type, ...]]] = {
    "seed": ("seed", (int,)),
    "negative_prompt": ("negative_prompt", (str,)),
    "steps": ("num_inference_steps", (int,)),
    "num_inference_steps": ("num_inference_steps", (int,)),
    "guidance": ("guidance_scale", _NUMBER),
    "guidance_scale": ("guidance_scale", _NUMBER),
}
_HF_OPTIONS = {name: rule for name, rule in _JUMPSTART_OPTIONS.items() if name != "seed"}


def _options(model: ModelEntry, contract: str, options: Mapping[str, Any]) -> dict[str, Any]:
    table = _HF_OPTIONS if contract == "hf-diffusers" else _JUMPSTART_OPTIONS
    params: dict[str, Any] = {}
    for name, value in options.items():
        if name not in table:
            raise refuse(f"{model.id} cannot take '{name}'.", name, "unsupported_value")
        key, types = table[name]
        if value is None:
            continue
        wrong = isinstance(value, bool) or not isinstance(value, types)
        if wrong or (key == "num_inference_steps" and value < 1):
            raise refuse(f"Invalid value for '{name}': {model.id} cannot take it.", name)
        params[key] = value
    return params


def _b64jpeg(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=95)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# -- answers --------------------------------------------------------------------------------------------


def parse_answer(task: str, expect: Mapping[str, Any], data: bytes) -> Answer:
    """The container's (untrusted) answer body -> validated images or text; anything else is an ``Outcome``."""
    contract = expect.get("contract", "darkroom")
    if contract == "hf-diffusers":
        try:
            image = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise Outcome(invalid_response(), unhealthy=True) from None
        return _same_shape([image], expect, "image")
    document = json_object(data)
    if contract == "jumpstart-sd":
        images = document.get("generated_images")
        return _same_shape(images, expect, "generated_images")
    if task == "analyze":
        text = document.get("text")
        if not isinstance(text, str):
            raise Outcome(invalid_response(), unhealthy=True)
        return text
    return decode_images(document.get("images"), expect["n"], expect["width"], expect["height"], expect["transparent"])


def _same_shape(encoded: object, expect: Mapping[str, Any], param: str) -> list[GeneratedImage]:
    """The off-the-shelf containers' images: of the job's aspect ratio (resized where needed), else a 502."""
    width, height = expect["width"], expect["height"]
    return decode_images(encoded, expect["n"], width, height, False, param, aspect_tolerance=ASPECT_TOLERANCE)
