"""``analyze`` on the tiny LLaVA-style model, through the same code as production."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from darkroom_endpoint.contract import AnalyzeTask, ContractError
from darkroom_endpoint.vision import DEFAULT_MAX_NEW_TOKENS, VisionModel, build_conversation


def picture(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


@pytest.fixture
def vision(sdxl_models) -> VisionModel:
    return sdxl_models.vision


@pytest.fixture
def generate_calls(vision, monkeypatch):
    """Every model.generate call's inputs and new-token count, recorded."""
    seen = []
    real = vision.model.generate

    def recorded(**inputs):
        output = real(**inputs)
        seen.append({**inputs, "new_tokens": output.shape[1] - inputs["input_ids"].shape[1]})
        return output

    monkeypatch.setattr(vision.model, "generate", recorded)
    return seen


def test_analyze_answers_text_with_and_without_images(sdxl_models, generate_calls):
    with_images = AnalyzeTask(
        messages=(("user", "What is in these pictures?"),),
        images=(picture(1), picture(2)),
        instructions="Answer briefly.",
    )
    text_only = AnalyzeTask(messages=(("user", "Say something."),))
    for task, image_count in ((with_images, 2), (text_only, 0)):
        answer = sdxl_models.run(task)
        assert isinstance(answer, str)
        pixel_values = generate_calls[-1].get("pixel_values")
        assert (0 if pixel_values is None else pixel_values.shape[0]) == image_count
        assert generate_calls[-1]["do_sample"] is False
    assert sdxl_models.run(with_images) == sdxl_models.run(with_images)  # greedy: the same answer every time


def test_the_conversation_has_instructions_first_and_images_on_the_last_user_turn(vision):
    task = AnalyzeTask(
        messages=(("developer", "Be terse."), ("user", "first"), ("assistant", "ok"), ("user", "second")),
        images=(picture(1), picture(2)),
        instructions="You look.",
    )
    conversation = build_conversation(task)
    assert [turn["role"] for turn in conversation] == ["system", "system", "user", "assistant", "user"]
    assert conversation[0]["content"] == [{"type": "text", "text": "You look."}]
    assert conversation[-1]["content"] == [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "second"}]
    assert all(part["type"] == "text" for turn in conversation[:-1] for part in turn["content"])
    prompt = vision.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert prompt == (
        "<|system|>\nYou look.</s>\n<|system|>\nBe terse.</s>\n<|user|>\nfirst</s>\n"
        "<|assistant|>\nok</s>\n<|user|>\n<image><image>second</s>\n<|assistant|>\n"
    )


def test_only_the_new_tokens_are_decoded(vision, generate_calls):
    task = AnalyzeTask(messages=(("user", "zebra quartz"),), instructions="violet harbour")
    answer = vision.run(task)
    assert "zebra quartz" not in answer and "violet harbour" not in answer and "<|assistant|>" not in answer
    new_tokens = generate_calls[-1]["new_tokens"]
    assert 1 <= new_tokens <= vision.max_new_tokens


def test_max_new_tokens_comes_from_the_loader_then_the_generation_config(tiny_models, generate_calls, vision):
    assert vision.max_new_tokens == 16  # the tiny model's generation_config.max_new_tokens
    vision.run(AnalyzeTask(messages=(("user", "hi"),)))
    assert generate_calls[-1]["max_new_tokens"] == 16
    capped = VisionModel.load(tiny_models["sdxl"] / "vlm", torch.device("cpu"), max_new_tokens=3)
    assert capped.max_new_tokens == 3
    assert capped.model.dtype == torch.float32  # fp32 on the CPU
    seen = []
    real = capped.model.generate

    def recorded(**inputs):
        output = real(**inputs)
        seen.append(output.shape[1] - inputs["input_ids"].shape[1])
        return output

    capped.model.generate = recorded
    capped.run(AnalyzeTask(messages=(("user", "hi"),)))
    assert 1 <= seen[0] <= 3
    assert DEFAULT_MAX_NEW_TOKENS == 256


def test_a_conversation_without_a_user_message_is_refused(sdxl_models, generate_calls):
    task = AnalyzeTask(messages=(("system", "Be kind."), ("assistant", "Hello.")), images=(picture(1),))
    for attempt in (sdxl_models.check, sdxl_models.run):
        with pytest.raises(ContractError) as refused:
            attempt(task)
        assert refused.value.status == 400 and refused.value.param == "messages"
    assert generate_calls == []


def test_the_tiny_vlm_answers_printable_text(sdxl_models):
    # Its weights are random; its generation config keeps the answer to printable ASCII (tiny.py).
    answers = [
        sdxl_models.run(AnalyzeTask(messages=(("user", f"Describe picture {seed}."),), images=(picture(seed),)))
        for seed in range(3)
    ]
    assert all(answer and answer.isascii() and answer.isprintable() for answer in answers)
