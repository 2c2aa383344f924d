"""The hostile corpus against each route family, in-process with moto: edit (multipart ``image[]``),
Responses (``input_image`` data URL) and file upload. Every refusal is a 400 naming the image,
before any pixel is decoded, with each function's memory as template.yaml configures it."""

from __future__ import annotations

import base64
import json

import pytest

import hostile_images as hostile
from darkroom import config, intake
from darkroom.local.template import Stack
from lambda_harness import invoke, load_event, multipart_event
from memory_probe import peak_growth

MIB = 1024 * 1024
MEMORY = {function.logical_id: function.memory_mb for function in Stack().functions()}


@pytest.fixture
def memory_of(monkeypatch):
    """Run as ``function`` runs on Lambda: its MemorySize in AWS_LAMBDA_FUNCTION_MEMORY_SIZE."""

    def run_as(function: str) -> int:
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", str(MEMORY[function]))
        config.function_memory_mb.cache_clear()
        return MEMORY[function]

    yield run_as
    config.function_memory_mb.cache_clear()


@pytest.fixture
def decoded(monkeypatch) -> list:
    """Every image the intake decodes during the test."""
    seen: list = []
    decode = intake.ImageHeader.decode
    monkeypatch.setattr(intake.ImageHeader, "decode", lambda header: seen.append(header.param) or decode(header))
    return seen


def _measured(function: str, event: dict) -> tuple[int, dict, int]:
    """(status, body, peak resident growth) of one invocation (its time: benchmarks/bench_decode_limits.py)."""
    result: list = []
    growth = peak_growth(lambda: result.append(invoke(function, event)))
    status, _, body = result[0]
    return status, body, growth


def _error(body: dict) -> tuple[str, str]:
    """(code, param); a decode-work refusal says so (the bound, and to re-encode), unlike a corrupt file."""
    error = body["error"]
    if error["code"] == "invalid_image":
        assert "re-encode it" in error["message"], error
    return error["code"], error["param"]


def test_sixteen_40_mpx_pngs_in_one_edit_are_refused_before_any_is_decoded(tenant, memory_of, decoded):
    """Sixteen 155 KB all-zero 6324 x 6324 RGBA PNGs peaked at 2,775 MB when decoded (EditFunction has 1,024 MB)."""
    assert memory_of("EditFunction") == 1024
    png = hostile.zero_rgba_png()
    event = multipart_event("edit", [("image[]", (f"{i}.png", png, "image/png")) for i in range(16)], {"prompt": "x"})
    status, body, growth = _measured("edit", event)
    assert status == 400 and _error(body) == ("images_too_large", "image[1]"), body  # 2 x 40 M > 44.7 M pixels
    assert decoded == [] and growth < 64 * MIB


def test_an_edit_whose_outputs_would_not_fit_is_refused_naming_n(tenant, memory_of, decoded):
    memory_of("EditFunction")
    event = multipart_event(
        "edit",
        [("image", ("a.png", hostile.zero_rgba_png(), "image/png"))],
        {"prompt": "x", "n": "3", "quality": "low"},
    )  # size auto: three more 40 M pixel images
    status, body, _ = _measured("edit", event)
    assert status == 400 and _error(body) == ("images_too_large", "n") and decoded == []


def test_the_5000_scan_jpeg_is_refused_by_the_edit(tenant, memory_of, decoded):
    memory_of("EditFunction")
    event = multipart_event(
        "edit", [("image", ("a.jpg", hostile.progressive_jpeg(2000, 5000), "image/jpeg"))], {"prompt": "x"}
    )
    status, body, growth = _measured("edit", event)
    assert status == 400 and _error(body) == ("invalid_image", "image") and decoded == []
    assert growth < 32 * MIB


def test_the_5000_scan_jpeg_is_refused_as_a_responses_input_image(tenant, memory_of, decoded):
    memory_of("ResponsesFunction")
    url = "data:image/jpeg;base64," + base64.b64encode(hostile.progressive_jpeg(2000, 5000)).decode()
    event = load_event("responses-create")
    event["body"] = json.dumps(
        {
            "model": "local-vision",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is this?"},
                        {"type": "input_image", "image_url": url},
                    ],
                }
            ],
        }
    )
    status, body, growth = _measured("responses", event)
    assert status == 400 and _error(body) == ("invalid_image", "input[0].content[1].image_url"), body
    assert decoded == [] and growth < 32 * MIB


@pytest.mark.parametrize("side,scans", [(2000, 5000), (6000, 20_000)])
def test_hostile_jpegs_are_refused_as_file_uploads(tenant, memory_of, decoded, side, scans):
    memory_of("FilesFunction")
    event = multipart_event(
        "files-create",
        [("file", ("a.jpg", hostile.progressive_jpeg(side, scans), "image/jpeg"))],
        {"purpose": "vision"},
    )
    status, body, growth = _measured("files", event)
    assert status == 400 and _error(body) == ("invalid_image", "file") and decoded == []
    assert growth < 32 * MIB


def test_a_largest_single_image_still_fits_every_image_function(tenant, memory_of):
    """40 M pixels, the per-image limit, is within the smallest image function's budget (FilesFunction)."""
    assert memory_of("FilesFunction") == 1024
    event = multipart_event(
        "files-create", [("file", ("a.png", hostile.zero_rgba_png(), "image/png"))], {"purpose": "vision"}
    )
    status, body, _ = _measured("files", event)
    assert status == 200 and (body["width"], body["height"]) == (6324, 6324), body
