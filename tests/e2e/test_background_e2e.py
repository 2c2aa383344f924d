"""Background responses through the real openai SDK against `darkroom serve`: the SQS worker, polling, cancel."""

from __future__ import annotations

import base64
import io
import time

import openai
import pytest
from PIL import Image

from darkroom.content_credentials import verify

pytestmark = pytest.mark.e2e

POLL_SECONDS = 60


def _poll(client, response):
    """What an SDK user writes: retrieve until the status is final."""
    seen = [response.status]
    deadline = time.monotonic() + POLL_SECONDS
    while response.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.2)
        response = client.responses.retrieve(response.id)
        seen.append(response.status)
    return response, seen


def test_background_generation_polls_to_completion_with_the_image(make_tenant):
    client = make_tenant().client()
    queued = client.responses.create(
        model="local-image",
        input="a lighthouse at dusk",
        background=True,
        tools=[{"type": "image_generation", "size": "512x512", "quality": "high"}],
    )
    assert queued.status == "queued" and queued.background is True and queued.output == []
    done, seen = _poll(client, queued)
    assert done.status == "completed", seen
    assert set(seen) <= {"queued", "in_progress", "completed"}
    (call,) = done.output
    image = Image.open(io.BytesIO(base64.b64decode(call.result)))
    assert image.size == (512, 512) and done.usage.output_tokens > 0
    # The worker's image carries its Content Credentials like any other (darkroom.content_credentials).
    assert verify(base64.b64decode(call.result), "png")["state"] == "Valid"
    # Threading from a background response works like any other.
    follow = client.responses.create(
        model="local-image",
        input="now make it blue",
        previous_response_id=done.id,
        tools=[{"type": "image_generation"}],
    )
    assert follow.output[0].action == "edit"
    # The edit names the background response's image, manifest and all, as its parent.
    edited = verify(base64.b64decode(follow.output[0].result), "png")
    assert [a["action"] for a in edited["manifest"]["actions"]] == ["c2pa.opened", "c2pa.edited"]
    assert edited["manifest"]["ingredients"][0].get("active_manifest")


def test_cancel_through_the_sdk(make_tenant):
    tenant = make_tenant(images_per_minute=1)
    client = tenant.client()
    queued = client.responses.create(model="local-image", input="a cat", background=True)
    cancelled = client.responses.cancel(queued.id)
    done, _ = _poll(client, cancelled)
    # Cancelled before the worker took it, or (rarely) finished first: both are final, never overwritten.
    assert done.status in ("cancelled", "completed")
    if done.status == "cancelled":
        # The admission came back: the one image a minute this tenant has is free again.
        assert client.images.generate(model="local-image", prompt="a dog", size="256x256").data


def test_images_api_refuses_what_would_time_out_and_points_to_background_mode(make_tenant):
    client = make_tenant().client()
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(model="local-image", prompt="a harbour", n=4, size="1536x1024", quality="high")
    error = refused.value.body
    assert error["code"] == "use_background_mode" and error["param"] == "n"
    assert "background" in error["message"]


def test_a_synchronous_response_cannot_be_cancelled(make_tenant):
    client = make_tenant().client()
    done = client.responses.create(model="local-text", input="hello")
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.cancel(done.id)
    assert refused.value.body["code"] == "not_cancellable"


def test_an_sdk_retry_with_the_same_idempotency_key_gets_the_same_job(make_tenant):
    client = make_tenant().client()
    headers = {"Idempotency-Key": "night-harbour-1"}
    first = client.responses.create(
        model="local-image", input="a harbour at night", background=True, extra_headers=headers
    )
    again = client.responses.create(
        model="local-image", input="a harbour at night", background=True, extra_headers=headers
    )
    assert again.id == first.id
    done, _ = _poll(client, again)
    assert done.status == "completed"
