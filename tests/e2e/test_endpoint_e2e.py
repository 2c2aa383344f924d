"""darkroom with its own model server, end to end: ``darkroom serve --model-server`` on loopback, the real
openai SDK against it, and real diffusers/transformers compute on tiny randomly initialised models.

One stack for the module (``python -m darkroom.cli serve --model-server --port 0``, as ``make run-endpoint``
starts it): darkroom's production ``sagemaker`` adapter reaches the model server's emulated SageMaker
Runtime through ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``, and the async model's requests and answers pass
through the stack's S3. The model server refuses prompts on a blocklist this module writes, which is how a
content-policy refusal is produced on both paths.

Without the model server's environment (``endpoint/.venv``: ``make run-endpoint`` or ``make test-endpoint``
builds it) the tests are skipped, except under CI (``CI`` set), where its absence is a failure.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.request
from pathlib import Path

import boto3
import openai
import pytest
from PIL import Image, ImageChops, ImageDraw

import docs_blocks
import openai_conformance
from local_stack_process import REPO, clean_environment, serve

ENDPOINT_PYTHON = Path(os.environ.get("DARKROOM_ENDPOINT_PYTHON") or REPO / "endpoint" / ".venv" / "bin" / "python")
if not ENDPOINT_PYTHON.is_absolute():
    ENDPOINT_PYTHON = REPO / ENDPOINT_PYTHON
MISSING = (
    None
    if os.access(ENDPOINT_PYTHON, os.X_OK)
    else (f"the model server's environment is missing ({ENDPOINT_PYTHON}; make test-endpoint builds it)")
)
# Past the model server's own limits (darkroom.local.model_server: 300 s to write the tiny models on a first
# run, 180 s to become ready), so a slow start is reported by serve itself, with the server's output.
STARTUP_SECONDS = 540
POLL_SECONDS = 180
BLOCKED_TERM = "forbiddenword"
SIZE = (256, 256)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(MISSING) and not os.environ.get("CI"), reason=f"model server test skipped: {MISSING}"),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if MISSING:
        pytest.fail(f"CI must run the model server's end-to-end tests: {MISSING}", pytrace=False)
    blocklist = tmp_path_factory.mktemp("model-server") / "blocklist.txt"
    blocklist.write_text(BLOCKED_TERM + "\n")
    # The model server gets the blocklist (the function containers ignore it: not one of darkroom's settings).
    env = {"DARKROOM_ENDPOINT_PYTHON": str(ENDPOINT_PYTHON), "DARKROOM_PROMPT_BLOCKLIST": str(blocklist)}
    started = time.monotonic()
    with serve(env, args=("--model-server",), startup_seconds=STARTUP_SECONDS) as exported:
        runtime = exported["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"]
        assert runtime.startswith("http://127.0.0.1:") and runtime != exported["AWS_ENDPOINT_URL"]
        with urllib.request.urlopen(f"{runtime}/ping", timeout=5) as ping:
            assert ping.status == 200  # serve prints its exports only once the models are loaded and warm
        assert set(json.loads(exported["DARKROOM_CATALOG_EXTRA"])) == {
            "tiny-diffusion",
            "tiny-diffusion-async",
            "tiny-vlm",
        }
        print(f"\nstack with model server up in {time.monotonic() - started:.1f}s")
        openai_conformance.RECORDER.watch(exported["OPENAI_BASE_URL"])
        yield exported


@pytest.fixture(scope="module")
def client(stack):
    return openai.OpenAI(base_url=stack["OPENAI_BASE_URL"], api_key=stack["OPENAI_API_KEY"], max_retries=0, timeout=120)


def _image(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def _timed(label: str, call):
    started = time.monotonic()
    result = call()
    print(f"{label}: {time.monotonic() - started:.2f}s")
    return result


def _poll(client, response):
    deadline = time.monotonic() + POLL_SECONDS
    while response.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.25)
        response = client.responses.retrieve(response.id)
    return response


def _input_picture() -> Image.Image:
    """A picture with structure everywhere, so a repainted pixel almost surely differs."""
    picture = Image.linear_gradient("L").resize(SIZE).convert("RGB")
    draw = ImageDraw.Draw(picture)
    for i in range(0, SIZE[0], 16):
        draw.line([(i, 0), (SIZE[0] - i, SIZE[1])], fill=(200, 40 + i // 2, 90), width=3)
    return picture


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- generate -----------------------------------------------------------------------------------------


def test_generate_returns_distinct_real_images_of_the_size_asked(client):
    result = _timed(
        "generate n=2 256x256",
        lambda: client.images.generate(model="tiny-diffusion", prompt="a lighthouse at dusk", n=2, size="256x256"),
    )
    first, second = (_image(item.b64_json) for item in result.data)
    assert first.size == second.size == SIZE
    assert ImageChops.difference(first.convert("RGB"), second.convert("RGB")).getbbox() is not None  # not identical

    stand_in = client.images.generate(model="local-image", prompt="a lighthouse at dusk", n=1, size="256x256")
    assert _image(stand_in.data[0].b64_json).tobytes() != first.tobytes()  # the model server drew it


def test_a_seed_makes_generation_repeatable(client):
    def draw() -> bytes:
        return base64.b64decode(
            client.images.generate(
                model="tiny-diffusion", prompt="a red fox", n=1, size="256x256", extra_body={"seed": 1234}
            )
            .data[0]
            .b64_json
        )

    once, again = _timed("generate n=1 with seed", draw), draw()
    # The same pixels; not the same bytes: each image's Content Credentials are signed afresh, with their own ids.
    assert _image(base64.b64encode(once)).tobytes() == _image(base64.b64encode(again)).tobytes()
    other = (
        client.images.generate(
            model="tiny-diffusion", prompt="a red fox", n=1, size="256x256", extra_body={"seed": 4321}
        )
        .data[0]
        .b64_json
    )
    assert base64.b64decode(other) != once


# -- edit -----------------------------------------------------------------------------------------------


def test_an_edit_repaints_only_the_transparent_part_of_the_mask(client):
    picture = _input_picture()
    mask = Image.new("RGBA", SIZE, (0, 0, 0, 255))
    box = (64, 64, 192, 192)
    mask.paste((0, 0, 0, 0), box)  # OpenAI's convention: transparent = edit here
    result = _timed(
        "edit 256x256",
        lambda: client.images.edit(
            model="tiny-diffusion",
            prompt="a moon in the middle",
            image=("picture.png", _png(picture), "image/png"),
            mask=("mask.png", _png(mask), "image/png"),
            size="256x256",
        ),
    )
    (item,) = result.data
    edited = _image(item.b64_json).convert("RGB")
    assert edited.size == SIZE

    outside = ImageChops.difference(edited, picture)
    outside.paste((0, 0, 0), box)
    assert outside.getbbox() is None, "a pixel outside the mask changed"
    inside = ImageChops.difference(edited.crop(box), picture.crop(box))
    assert inside.getbbox() is not None, "nothing inside the mask changed"


# -- responses ------------------------------------------------------------------------------------------


def test_the_image_generation_tool_runs_on_the_model_server(client):
    response = _timed(
        "responses image_generation",
        lambda: client.responses.create(
            model="tiny-diffusion",
            input="a harbour at night",
            tools=[{"type": "image_generation", "size": "256x256", "quality": "low"}],
        ),
    )
    assert response.status == "completed"
    (call,) = response.output
    assert call.type == "image_generation_call" and _image(call.result).size == SIZE


def test_an_analyze_turn_on_the_vlm_answers_text(client):
    data_url = "data:image/png;base64," + base64.b64encode(_png(_input_picture())).decode()
    response = _timed(
        "responses analyze tiny-vlm",
        lambda: client.responses.create(
            model="tiny-vlm",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is in this picture?"},
                        {"type": "input_image", "image_url": data_url},
                    ],
                }
            ],
        ),
    )
    assert response.status == "completed"
    assert isinstance(response.output_text, str) and response.output_text.strip()


# -- background mode through the local S3 ----------------------------------------------------------------


def test_background_mode_on_the_async_model_completes_through_s3(client, stack):
    started = time.monotonic()
    queued = client.responses.create(
        model="tiny-diffusion-async",
        input="a castle in fog",
        background=True,
        tools=[{"type": "image_generation", "size": "256x256"}],
    )
    assert queued.status == "queued"
    done = _poll(client, queued)
    print(f"background async generate: {time.monotonic() - started:.2f}s")
    assert done.status == "completed", done
    (call,) = done.output
    assert _image(call.result).size == SIZE

    s3 = boto3.client(
        "s3",
        endpoint_url=stack["AWS_ENDPOINT_URL"],
        region_name=stack["AWS_DEFAULT_REGION"],
        aws_access_key_id=stack["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack["AWS_SECRET_ACCESS_KEY"],
    )
    bucket = stack["DARKROOM_IMAGES_BUCKET"]

    def keys(prefix: str) -> list[str]:
        return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]

    assert [key for key in keys("async-inference/output/") if key.endswith(".out")]  # the emulator's answer
    assert keys("async-inference/input/") == []  # darkroom deleted its request once the job was over


def test_the_synchronous_api_sends_the_async_model_to_background_mode(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="tiny-diffusion-async", prompt="a castle", size="256x256")
    assert caught.value.body["code"] == "use_background_mode"


# -- content-policy refusals ------------------------------------------------------------------------------


def test_a_refused_prompt_is_a_400_content_policy_violation_in_neutral_words(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="tiny-diffusion", prompt=f"a {BLOCKED_TERM} picture", size="256x256")
    error = caught.value.body
    assert error["code"] == "content_policy_violation"
    assert error["message"] == "The request was rejected by the model's content filters."
    assert BLOCKED_TERM not in str(error) and "tiny-diffusion" not in error["message"]


def test_a_refused_prompt_in_background_mode_fails_the_job_with_content_policy_violation(client):
    queued = client.responses.create(
        model="tiny-diffusion-async",
        input=f"a {BLOCKED_TERM} castle",
        background=True,
        tools=[{"type": "image_generation", "size": "256x256"}],
    )
    done = _poll(client, queued)
    assert done.status == "failed", done
    assert done.error.code == "invalid_prompt"  # the spec's ResponseErrorCode for darkroom's content_policy_violation
    assert BLOCKED_TERM not in done.error.message


@pytest.mark.parametrize(("name", "value"), [("seed", "not a number"), ("steps", 10_000), ("guidance", -1)])
def test_a_passthrough_value_the_model_refuses_is_the_clients_400_for_that_parameter(client, name, value):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="tiny-diffusion", prompt="a lighthouse", size="256x256", extra_body={name: value})
    error = caught.value.body
    assert (error["code"], error["param"]) == ("invalid_value", name)
    assert str(value) not in error["message"]


# -- the docs' examples for the model server -------------------------------------------------------------

MODEL_SERVER_BLOCKS = [block for block in docs_blocks.all_blocks() if block.directive == "model-server"]


@pytest.mark.parametrize("block", MODEL_SERVER_BLOCKS, ids=[block.id for block in MODEL_SERVER_BLOCKS])
def test_the_docs_examples_for_the_model_server_run_as_written(stack, block, tmp_path):
    """Blocks marked ``<!-- docs-test: model-server -->`` (tests/e2e/docs_blocks.py), with a fresh tenant's key."""
    assert block.problem() is None, block.problem()
    docs_blocks.write_inputs(tmp_path)
    env = clean_environment() | stack
    key = docs_blocks.issue_key(env, "docs-model-server")
    ran = docs_blocks.run(block, docs_blocks.environment(clean_environment(), stack, key, tmp_path), tmp_path)
    assert ran.returncode == 0, docs_blocks.failure(block, ran)


def test_tiny_diffusion_streams_its_own_partials_long_before_the_end(client):
    """The model server's latents, decoded as the pipeline runs, through the sagemaker adapter's
    InvokeEndpointWithResponseStream (the emulator frames them as SageMaker does) and darkroom's stream."""
    models = {model.id: model.model_extra.get("partial_images") for model in client.models.list().data}
    assert models["tiny-diffusion"] is True and models["tiny-diffusion-async"] is False
    # The first streamed request pays one-time costs (the preview decoder's first run), seconds on a busy 2-CPU
    # machine: one short stream first, so what is timed is a stream, not a warm-up.
    list(
        client.images.generate(
            model="tiny-diffusion",
            prompt="warm",
            size=f"{SIZE[0]}x{SIZE[1]}",
            stream=True,
            partial_images=1,
            extra_body={"steps": 2},
        )
    )
    started = time.monotonic()
    arrivals = []
    for event in client.images.generate(
        model="tiny-diffusion",
        prompt="a lighthouse",
        size=f"{SIZE[0]}x{SIZE[1]}",
        stream=True,
        partial_images=2,
        extra_body={"steps": 60, "seed": 7},  # about 3 s of denoising on a CPU
    ):
        arrivals.append((time.monotonic() - started, event))
    total = arrivals[-1][0]
    assert [event.type for _, event in arrivals] == ["image_generation.partial_image"] * 2 + [
        "image_generation.completed"
    ]
    assert total >= 2 and arrivals[0][0] < total / 2, [round(t, 2) for t, _ in arrivals]
    frames = [Image.open(io.BytesIO(base64.b64decode(event.b64_json))).convert("RGB") for _, event in arrivals]
    assert all(frame.size == SIZE for frame in frames)
    # Intermediate states of the denoising, not the final image again.
    assert all(ImageChops.difference(frame, frames[-1]).getbbox() for frame in frames[:-1])
