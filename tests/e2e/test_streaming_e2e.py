"""``stream: true`` against `darkroom serve`, through the openai SDK's stream helpers and raw httpx: events leave as
they are made (the first partial well before the end), a client that disconnects stops the work and is billed
nothing, and usage counts each completed stream once.

The local stand-in spends ``step_seconds`` (a pass-through of the local models) on each shape it draws; high
quality draws 18, so ``step_seconds: 0.2`` makes a generation take about 3.6 s, with partials after shapes 4, 9
and 13 (partial_images 3)."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

MODEL = "local-image"
STEP = 0.2  # seconds a shape; 18 shapes at high quality


def _png(size=(256, 256), rgba=False) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGBA" if rgba else "RGB", size, (10, 120, 200, 255) if rgba else (10, 120, 200))
    if rgba:
        image.paste((0, 0, 0, 0), (64, 64, 192, 192))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_generate_partials_arrive_before_half_the_total_time(client):
    started = time.monotonic()
    arrivals = []
    for event in client.images.generate(
        model=MODEL,
        prompt="a lighthouse",
        size="512x512",
        quality="high",
        stream=True,
        partial_images=3,
        extra_body={"step_seconds": STEP},
    ):
        arrivals.append((time.monotonic() - started, event))
    total = arrivals[-1][0]
    types = [event.type for _, event in arrivals]
    assert types == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]
    assert total >= 18 * STEP  # the work really took its time
    assert arrivals[0][0] < total / 2, f"first partial at {arrivals[0][0]:.2f} s of {total:.2f} s"
    # They came one by one, not in one burst at the end.
    assert arrivals[1][0] - arrivals[0][0] > 2 * STEP and arrivals[2][0] - arrivals[1][0] > 2 * STEP
    image = Image.open(io.BytesIO(base64.b64decode(arrivals[-1][1].b64_json)))
    assert image.size == (512, 512)


@pytest.mark.parametrize("partials", [0, 1, 2, 3])
def test_the_number_of_partials_is_the_number_asked(client, partials):
    events = list(client.images.generate(model=MODEL, prompt="x", size="256x256", stream=True, partial_images=partials))
    assert [e.type for e in events].count("image_generation.partial_image") == partials
    assert events[-1].type == "image_generation.completed"


def test_edit_streams_through_the_sdk(client):
    events = list(
        client.images.edit(
            image=("a.png", _png(), "image/png"),
            mask=("m.png", _png(rgba=True), "image/png"),
            prompt="paint a door",
            model=MODEL,
            stream=True,
            partial_images=2,
            extra_body={"step_seconds": 0.05},
        )
    )
    assert [e.type for e in events] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]


def test_responses_stream_helper_gets_partials_as_they_are_made(client):
    tool = {"type": "image_generation", "partial_images": 2, "size": "256x256"}
    started = time.monotonic()
    first_partial = None
    with client.responses.stream(model=MODEL, input="a brass owl", tools=[tool]) as stream:
        for event in stream:
            if event.type == "response.image_generation_call.partial_image" and first_partial is None:
                first_partial = time.monotonic() - started
        final = stream.get_final_response()
    total = time.monotonic() - started
    assert final.status == "completed" and final.output[0].type == "image_generation_call"
    assert first_partial is not None and first_partial <= total


def test_a_client_that_disconnects_is_billed_nothing(tenant, usage_totals):
    before = usage_totals(tenant.tenant_id)
    body = {"model": MODEL, "prompt": "x", "size": "256x256", "stream": True, "partial_images": 3, "step_seconds": 0.5}
    with httpx.stream(
        "POST", f"{tenant.base_url}/images/generations", json=body, headers=tenant.headers(), timeout=60
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["type"] == "image_generation.partial_image":
                break  # leave after the first partial: the shape-by-shape work is far from done
    time.sleep(2)  # the stand-in notices at its next shape and gives the admission back
    complete = list(httpx_events(tenant, {**body, "step_seconds": 0}))
    assert complete[-1]["type"] == "image_generation.completed"
    after = usage_totals(tenant.tenant_id)
    assert after.get("images", 0) - before.get("images", 0) == 1  # only the stream that completed


def httpx_events(tenant, body):
    with httpx.stream(
        "POST", f"{tenant.base_url}/images/generations", json=body, headers=tenant.headers(), timeout=60
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                yield json.loads(line[6:])


def test_a_refusal_before_the_work_is_a_plain_http_error(tenant):
    response = httpx.post(
        f"{tenant.base_url}/images/generations",
        json={"model": MODEL, "prompt": "x", "size": "7x7", "stream": True},
        headers=tenant.headers(),
        timeout=30,
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "size"
