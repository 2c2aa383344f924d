"""Image tasks on real diffusers pipelines: text-to-image, inpainting and image-to-image on one copy of the weights.

Choices, and why:

* **Family from the model itself.** The family is read from the model directory's own ``model_index.json``
  (``_class_name``), never from a directory or model name: ``StableDiffusionPipeline`` ("sd"),
  ``StableDiffusionXLPipeline`` ("sdxl"), ``StableDiffusion3Pipeline`` ("sd3") and ``FluxPipeline`` ("flux").
  Any other class is refused at load, so a wrong artifact fails the container's start, not a request.
* **One copy of the weights.** ``AutoPipelineForText2Image.from_pretrained`` loads the model;
  ``AutoPipelineForInpainting.from_pipe`` and ``AutoPipelineForImage2Image.from_pipe`` wrap the same modules.
  For the UNet families that needs the 4-channel base UNet (a 9-channel inpaint UNet breaks text-to-image),
  which load checks.
* **Precision.** On CUDA, fp16 for the UNet families (the SDXL VAE's ``force_upcast`` config makes diffusers
  decode in fp32, which avoids its fp16 overflow) and bf16 for FLUX and SD3 (their transformers overflow in
  fp16). On CPU, fp32: half precision there is slow or unsupported.
* **Memory.** Attention is diffusers' default, PyTorch's scaled-dot-product attention (flash or
  memory-efficient kernels on CUDA). VAE slicing is always on: the VAE decodes a batch one image at a time,
  which costs nothing measurable and bounds the decode's peak. VAE tiling is switched on per call above
  1024x1024 (it would change smaller images, which fit anyway). A request for many large images runs in
  several pipeline calls of at most 4 megapixels each, on the same seeded generator.
* **Quality.** ``quality`` picks steps, guidance and the edit strengths per family from a JSON file the
  operator can replace (``Settings.quality_config``; the bundled default is ``quality.json`` beside this file).
  Its schema, validated at load: ``{family: {"min_side": int, "max_side": int, "low"|"medium"|"high":
  {"steps": int, "guidance": float, "strength": float, "inpaint_strength": float[, "true_cfg_scale": float]}}}``.
  ``strength`` is image-to-image's, ``inpaint_strength`` inpainting's; ``true_cfg_scale`` (required for FLUX)
  is FLUX's real classifier-free guidance, used only when a ``negative_prompt`` is sent (it doubles the work).
  A request's ``steps`` and ``guidance`` override the quality's. An edit runs about ``steps x strength`` of its
  steps (diffusers' convention; each pipeline rounds its own way), and never none.
* **Edits.** Inpainting re-encodes the whole image through the VAE, so the pixels outside the mask drift; the
  input is composited back after decoding, and every pixel the mask keeps (0) comes back exactly as sent.
"""

from __future__ import annotations

import inspect
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from darkroom_endpoint.contract import QUALITIES, ContentPolicyViolation, ContractError, ImageTask, Unsupported
from darkroom_endpoint.previews import StepCallback
from darkroom_endpoint.streaming import StreamCancelled, StreamSink

log = logging.getLogger(__name__)

FAMILIES = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
}
_CUDA_DTYPES = {"sd": torch.float16, "sdxl": torch.float16, "sd3": torch.bfloat16, "flux": torch.bfloat16}
TILING_ABOVE_PIXELS = 1024 * 1024
MAX_PIXELS_PER_CALL = 4 * 1024 * 1024
_PRESET_NUMBERS = {
    "steps": (1, 150),
    "guidance": (0, 50),
    "strength": (0.01, 1),
    "inpaint_strength": (0.01, 1),
    "true_cfg_scale": (1, 50),
}


class QualityConfigError(ValueError):
    """The operator's quality file is missing, unreadable or does not follow the schema."""


@dataclass(frozen=True)
class QualityPreset:
    """What one quality means for one family."""

    steps: int
    guidance: float
    strength: float
    inpaint_strength: float
    true_cfg_scale: float | None = None


@dataclass(frozen=True)
class FamilyQuality:
    """A family's size limits and its three presets."""

    min_side: int
    max_side: int
    presets: dict[str, QualityPreset]


def read_quality_config(path: Path, family: str) -> FamilyQuality:
    """Read and validate the whole quality file; return ``family``'s section (it must be there)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise QualityConfigError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(document, dict) or family not in document:
        raise QualityConfigError(f"{path}: no section for the loaded model's family '{family}'")
    unknown = set(document) - set(FAMILIES.values())
    if unknown:
        raise QualityConfigError(f"{path}: unknown families {sorted(unknown)}; known: {sorted(FAMILIES.values())}")
    # Every section, not only the loaded one: a typo elsewhere would otherwise surface only with another model.
    sections = {name: _family_quality(section, f"{path}: '{name}'", name) for name, section in document.items()}
    return sections[family]


def _family_quality(section: Any, where: str, family: str) -> FamilyQuality:
    if not isinstance(section, dict) or set(section) != {"min_side", "max_side", *QUALITIES}:
        raise QualityConfigError(f"{where} must have exactly min_side, max_side, low, medium and high")
    sides = [section["min_side"], section["max_side"]]
    if any(isinstance(side, bool) or not isinstance(side, int) for side in sides) or not 8 <= sides[0] <= sides[1]:
        raise QualityConfigError(f"{where}: min_side and max_side must be integers, 8 <= min_side <= max_side")
    presets = {quality: _preset(section[quality], f"{where}.{quality}", family) for quality in QUALITIES}
    return FamilyQuality(min_side=sides[0], max_side=sides[1], presets=presets)


def _preset(entry: Any, where: str, family: str) -> QualityPreset:
    required = {"steps", "guidance", "strength", "inpaint_strength"}
    if family == "flux":
        required.add("true_cfg_scale")  # without it FLUX would silently ignore a negative prompt
    if not isinstance(entry, dict) or not required <= set(entry) <= set(_PRESET_NUMBERS):
        raise QualityConfigError(f"{where} must have the keys {sorted(required)} (and optionally true_cfg_scale)")
    for key, value in entry.items():
        low, high = _PRESET_NUMBERS[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise QualityConfigError(f"{where}.{key} must be a number from {low} to {high}")
    if not isinstance(entry["steps"], int):
        raise QualityConfigError(f"{where}.steps must be an integer")
    return QualityPreset(**entry)


def diffusion_family(directory: Path) -> str:
    """The family named by ``directory/model_index.json``'s ``_class_name``; a clear error for any other."""
    index = Path(directory) / "model_index.json"
    try:
        class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"{index}: not a diffusers pipeline directory ({error})") from None
    if not isinstance(class_name, str) or class_name not in FAMILIES:
        raise ValueError(
            f"{index}: pipeline class {class_name!r} is not supported; this server runs {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[class_name]


def _accepted(pipeline: Any) -> frozenset[str]:
    return frozenset(inspect.signature(pipeline.__call__).parameters)


class DiffusionModel:
    """One loaded diffusion model serving ``generate`` and ``edit``; not thread-safe (one worker calls it)."""

    def __init__(
        self, family: str, text2image: Any, inpaint: Any, image2image: Any, quality: FamilyQuality, device: torch.device
    ) -> None:
        self.family = family
        self.quality = quality
        self.device = device
        self.text2image, self.inpaint, self.image2image = text2image, inpaint, image2image
        self.vae = text2image.vae  # shared by the three pipelines
        # Read once: a pipeline's parameters do not change, and tests may wrap a pipeline in a plain callable.
        self._parameters = {name: _accepted(pipeline) for name, pipeline in self._pipelines().items()}
        vae_scale = text2image.vae_scale_factor
        if family == "flux":
            self.multiple = vae_scale * 2  # latents are packed 2x2 into the transformer's tokens
        elif family == "sd3":
            self.multiple = vae_scale * text2image.transformer.config.patch_size
        else:
            self.multiple = vae_scale
        if -(-quality.min_side // self.multiple) * self.multiple > quality.max_side:
            raise QualityConfigError(f"no side from min_side to max_side is a multiple of {self.multiple} for {family}")

    @classmethod
    def load(cls, directory: Path, quality_config: Path, device: torch.device) -> DiffusionModel:
        """Load the pipeline in ``directory`` onto ``device`` with the family's quality section."""
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

        family = diffusion_family(directory)
        quality = read_quality_config(quality_config, family)
        dtype = _CUDA_DTYPES[family] if device.type == "cuda" else torch.float32
        text2image = AutoPipelineForText2Image.from_pretrained(str(directory), dtype=dtype)
        expected = next(name for name, value in FAMILIES.items() if value == family)
        if type(text2image).__name__ != expected:
            raise ValueError(f"{directory}: loaded {type(text2image).__name__}, expected {expected}")
        unet = getattr(text2image, "unet", None)
        if unet is not None and unet.config.in_channels != 4:
            raise ValueError(
                f"{directory}: the UNet has {unet.config.in_channels} input channels; one set of weights "
                "serves text-to-image and inpainting only with the 4-channel base UNet"
            )
        text2image.to(device)
        text2image.vae.enable_slicing()
        inpaint = AutoPipelineForInpainting.from_pipe(text2image)
        image2image = AutoPipelineForImage2Image.from_pipe(text2image)
        for pipeline in (text2image, inpaint, image2image):
            pipeline.set_progress_bar_config(disable=True)
        log.info("loaded %s pipeline (%s) on %s in %s", family, expected, device, dtype)
        return cls(family, text2image, inpaint, image2image, quality, device)

    def _pipelines(self) -> dict[str, Any]:
        return {"text2image": self.text2image, "inpaint": self.inpaint, "image2image": self.image2image}

    def _kind(self, task: ImageTask) -> str:
        if task.task == "generate":
            return "text2image"
        return "inpaint" if task.mask is not None else "image2image"

    def check(self, task: ImageTask) -> None:
        """Refuse, cheaply, what this model cannot make: sizes, transparency, references, a negative prompt."""
        if task.transparent:
            raise Unsupported(
                "A transparent background is not supported: diffusion models paint every pixel.", param="background"
            )
        if task.reference_images:
            raise Unsupported(
                "reference_images are not supported: this model has no image-prompt adapter loaded.",
                param="reference_images",
            )
        for name, side in (("width", task.width), ("height", task.height)):
            if side % self.multiple:
                raise Unsupported(f"width and height must be multiples of {self.multiple} for this model.", param=name)
            if not self.quality.min_side <= side <= self.quality.max_side:
                raise Unsupported(
                    f"width and height must be from {self.quality.min_side} to "
                    f"{self.quality.max_side} pixels for this model.",
                    param=name,
                )
        if task.negative_prompt is not None and "negative_prompt" not in self._parameters[self._kind(task)]:
            raise Unsupported("negative_prompt is not supported by this model.", param="negative_prompt")
        if task.task == "edit" and task.image is None:
            raise ContractError("An edit needs an image.", param="image")

    def planned_steps(self, task: ImageTask) -> int:
        """About how many denoising steps ``task`` runs over all its pipeline calls (an edit's steps x strength;
        each pipeline rounds its own way): a streamed request's first progress lines, before the pipeline says."""
        preset = self.quality.presets[task.quality]
        steps = task.steps if task.steps is not None else preset.steps
        if task.task == "edit":
            steps = max(1, int(steps * (preset.inpaint_strength if task.mask is not None else preset.strength)))
        return steps * -(-task.num_images // max(1, MAX_PIXELS_PER_CALL // (task.width * task.height)))

    def run(self, task: ImageTask, sink: StreamSink | None = None) -> list[Image.Image]:
        """Exactly ``task.num_images`` RGB images of ``task.width`` x ``task.height``; with ``sink`` (a streamed
        request), progress and partial images as the pipeline runs (:mod:`darkroom_endpoint.previews`)."""
        self.check(task)
        kind = self._kind(task)
        pipeline, accepted = self._pipelines()[kind], self._parameters[kind]
        preset = self.quality.presets[task.quality]
        arguments: dict[str, Any] = {
            "prompt": task.prompt,
            "num_inference_steps": task.steps if task.steps is not None else preset.steps,
            "guidance_scale": task.guidance if task.guidance is not None else preset.guidance,
            "output_type": "pil",
        }
        # FLUX's img2img would otherwise make its default size, not the input's.
        arguments.update(
            {key: value for key, value in (("width", task.width), ("height", task.height)) if key in accepted}
        )
        if task.negative_prompt is not None:
            arguments["negative_prompt"] = task.negative_prompt
            if "true_cfg_scale" in accepted and preset.true_cfg_scale is not None:
                arguments["true_cfg_scale"] = preset.true_cfg_scale
        if kind != "text2image":
            arguments["image"] = task.image
            arguments["strength"] = preset.inpaint_strength if kind == "inpaint" else preset.strength
            # SDXL's edits run int(steps x strength) steps: never let that be zero.
            while int(arguments["num_inference_steps"] * arguments["strength"]) < 1:
                arguments["num_inference_steps"] += 1
        if kind == "inpaint":
            arguments["mask_image"] = task.mask
        seed = task.seed if task.seed is not None else secrets.randbits(63)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        finish = _composite(task) if kind == "inpaint" else _same
        stream = (sink, finish) if sink is not None and "callback_on_step_end" in accepted else None
        images = self._call(pipeline, arguments, task, generator, stream)
        if len(images) != task.num_images or any(image.size != (task.width, task.height) for image in images):
            raise RuntimeError(f"the {self.family} pipeline returned {len(images)} images of the wrong count or size")
        return [finish(image) for image in images]

    def _call(
        self,
        pipeline: Any,
        arguments: dict[str, Any],
        task: ImageTask,
        generator: torch.Generator,
        stream: tuple[StreamSink, Callable[[Image.Image], Image.Image]] | None,
    ) -> list[Image.Image]:
        count, pixels = task.num_images, task.width * task.height
        if pixels > TILING_ABOVE_PIXELS:
            self.vae.enable_tiling()
        else:
            self.vae.disable_tiling()
        per_call = max(1, MAX_PIXELS_PER_CALL // pixels)
        images: list[Image.Image] = []
        calls = -(-count // per_call)
        while len(images) < count:
            batch = min(per_call, count - len(images))
            extra: dict[str, Any] = {}
            if stream is not None:
                if stream[0].cancelled:
                    raise StreamCancelled()
                call = len(images) // per_call
                size = (task.width, task.height)
                extra["callback_on_step_end"] = StepCallback(self.family, stream[0], size, call, calls, stream[1])
            output = pipeline(**arguments, num_images_per_prompt=batch, generator=generator, **extra)
            flagged = getattr(output, "nsfw_content_detected", None)
            if flagged is not None and any(bool(flag) for flag in flagged):
                # The safety checker blacks the flagged images out; none of the batch is returned.
                raise ContentPolicyViolation()
            images.extend(image.convert("RGB") for image in output.images)
        return images

    def warm_up(self) -> None:
        """One small real run of each of the three pipelines (1 step, 1 image, the smallest size allowed)."""
        side = -(-self.quality.min_side // self.multiple) * self.multiple
        base = ImageTask(
            task="generate", prompt="warm-up", width=side, height=side, num_images=1, quality="low", steps=1, seed=0
        )
        image = self.run(base)[0]
        mask = Image.new("L", image.size, 0)
        mask.paste(255, (0, 0, side // 2, side // 2))
        self.run(replace(base, task="edit", image=image))
        self.run(replace(base, task="edit", image=image, mask=mask))


def _same(image: Image.Image) -> Image.Image:
    return image


def _composite(task: ImageTask) -> Callable[[Image.Image], Image.Image]:
    """Inpainting's last touch: the contract's mask is 255 = repaint, so the generated pixel there, the client's
    pixel elsewhere (for the final images and the partial ones alike)."""
    return lambda image: Image.composite(image, task.image, task.mask)
