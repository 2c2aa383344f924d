"""``analyze`` on a transformers vision-language model: images and a conversation in, text out.

The model directory (``Settings.vlm_dir``) loads with ``AutoProcessor`` and ``AutoModelForImageTextToText``;
the processor's own chat template turns the conversation into the model's prompt. The conversation is built
from the task in the structured form every multimodal chat template reads (``{"type": "text"|"image"}``
parts): the instructions as a first system turn, the messages oldest first (``developer`` spoken as
``system``, which chat templates know), and the images, in order, on the last user turn. Decoding is greedy,
so the same request gives the same text; only the new tokens are decoded. On CUDA the model runs in bf16
(fp16 where the GPU has no bf16), on CPU in fp32. ``max_new_tokens``: the loader's argument, else the model's
``generation_config.max_new_tokens``, else 256.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from darkroom_endpoint.contract import AnalyzeTask, ContractError

log = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 256
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def build_conversation(task: AnalyzeTask) -> list[dict[str, Any]]:
    """The chat for the processor's template; the images ride on the last user turn."""
    last_user = max((index for index, (role, _) in enumerate(task.messages) if role == "user"), default=None)
    if last_user is None:
        raise ContractError("'messages' must include a user message.", param="messages")
    conversation: list[dict[str, Any]] = []
    if task.instructions:
        conversation.append({"role": "system", "content": [{"type": "text", "text": task.instructions}]})
    for index, (role, content) in enumerate(task.messages):
        parts: list[dict[str, Any]] = [{"type": "image"} for _ in task.images] if index == last_user else []
        parts.append({"type": "text", "text": content})
        conversation.append({"role": _ROLES[role], "content": parts})
    return conversation


def _cuda_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class VisionModel:
    """One loaded vision-language model; not thread-safe (one worker calls it)."""

    def __init__(self, processor: Any, model: Any, device: torch.device, max_new_tokens: int) -> None:
        self.processor = processor
        self.model = model
        self.device = device
        self.max_new_tokens = max_new_tokens

    @classmethod
    def load(cls, directory: Path, device: torch.device, max_new_tokens: int | None = None) -> VisionModel:
        """Load processor and model from ``directory`` onto ``device``."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        dtype = _cuda_dtype() if device.type == "cuda" else torch.float32
        processor = AutoProcessor.from_pretrained(str(directory))
        if getattr(processor, "chat_template", None) is None:
            raise ValueError(f"{directory}: the processor has no chat template")
        model = AutoModelForImageTextToText.from_pretrained(str(directory), dtype=dtype).to(device).eval()
        if max_new_tokens is None:
            max_new_tokens = getattr(model.generation_config, "max_new_tokens", None) or DEFAULT_MAX_NEW_TOKENS
        log.info("loaded %s on %s in %s (max_new_tokens %d)", type(model).__name__, device, dtype, max_new_tokens)
        return cls(processor, model, device, max_new_tokens)

    def check(self, task: AnalyzeTask) -> None:
        """Refuse, cheaply, a conversation this model cannot answer."""
        build_conversation(task)

    def run(self, task: AnalyzeTask) -> str:
        """The model's answer to the conversation, as text."""
        prompt = self.processor.apply_chat_template(
            build_conversation(task), add_generation_prompt=True, tokenize=False
        )
        images = [image.convert("RGB") for image in task.images] or None
        inputs = self.processor(text=prompt, images=images, return_tensors="pt")
        # Only the floating tensors (pixel values) take the model's dtype; token ids stay integers.
        inputs = inputs.to(self.device).to(self.model.dtype)
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()

    def warm_up(self) -> None:
        """One small real run, with an image so the vision tower runs too."""
        task = AnalyzeTask(messages=(("user", "Describe the image."),), images=(Image.new("RGB", (64, 64)),))
        self.run(task)
