"""Content Credentials as a user meets them: images from `darkroom serve` through the openai SDK (generate in each
format, a stream's partials, a Responses image), an edit sent as multipart by httpx (as curl sends it), each read
back with c2pa-python's reader and with `darkroom verify`, against the development root the stack made."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx
import pytest

from darkroom.content_credentials import verify
from darkroom.image_xmp import EDITED, GENERATED

pytestmark = pytest.mark.e2e

MODEL = "local-image"


@pytest.fixture(scope="module")
def root(stack) -> str:
    return Path(os.environ["DARKROOM_DEV_CREDENTIALS_DIR"], "root.pem").read_text()


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_sdk_images_are_signed_as_generated_by_the_model(client, root, output_format):
    answer = client.images.generate(model=MODEL, prompt="a lighthouse", size="256x256", output_format=output_format)
    seen = verify(base64.b64decode(answer.data[0].b64_json), output_format, trust_anchors=root)
    assert seen["state"] == "Trusted"
    (action,) = seen["manifest"]["actions"]
    assert action["action"] == "c2pa.created" and action["digitalSourceType"] == GENERATED
    assert MODEL in action["softwareAgent"]["name"]


def test_every_partial_of_a_stream_is_signed_too(client, root):
    events = list(client.images.generate(model=MODEL, prompt="a boat", size="256x256", stream=True, partial_images=2))
    assert [e.type for e in events].count("image_generation.partial_image") == 2
    for event in events:
        assert verify(base64.b64decode(event.b64_json), "png", trust_anchors=root)["state"] == "Trusted"


def test_a_multipart_edit_names_its_input_as_ingredient(client, make_tenant, base_url, root):
    source = base64.b64decode(client.images.generate(model=MODEL, prompt="a hill", size="256x256").data[0].b64_json)
    tenant = make_tenant()
    sent = httpx.post(
        f"{base_url}/images/edits",
        headers={"Authorization": f"Bearer {tenant.key}"},
        files={"image": ("hill.png", source, "image/png")},
        data={"model": MODEL, "prompt": "add a moon", "output_format": "webp"},
        timeout=60,
    )
    assert sent.status_code == 200, sent.text
    edited = base64.b64decode(sent.json()["data"][0]["b64_json"])
    seen = verify(edited, "webp", trust_anchors=root)
    assert seen["state"] == "Trusted"
    assert [a["action"] for a in seen["manifest"]["actions"]] == ["c2pa.opened", "c2pa.edited"]
    assert seen["manifest"]["actions"][1]["digitalSourceType"] == EDITED
    (ingredient,) = seen["manifest"]["ingredients"]
    assert ingredient["relationship"] == "parentOf" and ingredient.get("active_manifest")  # the input's own, kept


def test_a_responses_image_is_signed(client, root):
    response = client.responses.create(model="local-text", input="draw a cat", tools=[{"type": "image_generation"}])
    (call,) = [item for item in response.output if item.type == "image_generation_call"]
    assert verify(base64.b64decode(call.result), "png", trust_anchors=root)["state"] == "Trusted"


def test_darkroom_verify_prints_what_a_validator_sees_and_fails_a_changed_file(client, cli, tmp_path, stack):
    saved = tmp_path / "lighthouse.png"
    answer = client.images.generate(model=MODEL, prompt="x", size="256x256")
    saved.write_bytes(base64.b64decode(answer.data[0].b64_json))
    root = Path(os.environ["DARKROOM_DEV_CREDENTIALS_DIR"], "root.pem")
    done = cli("verify", saved, "--trust", root)
    assert "state: Trusted" in done.stdout and "c2pa.created" in done.stdout and GENERATED in done.stdout
    untrusted = cli("verify", saved)  # no --trust: signed and intact, by an issuer validators do not know
    assert "state: Valid" in untrusted.stdout and "signingCredential.untrusted" in untrusted.stdout
    changed = bytearray(saved.read_bytes())
    changed[changed.find(b"IDAT") + 12] ^= 0x01
    saved.write_bytes(bytes(changed))
    failed = cli("verify", saved, check=False)
    assert failed.returncode == 1 and "state: Invalid" in failed.stdout
