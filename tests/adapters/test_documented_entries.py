"""The catalog entries docs/deploying-backends.md shows, one per backend and request shape, each run through its
adapter exactly as written (only a server's address is swapped for a loopback one): Stubber with AWS's
documented answers for Bedrock and SageMaker, and the LocalAI and vLLM-Omni mimics of test_openai_servers.py
for OpenAI-compatible servers. An example that no longer works fails here, not in a reader's deployment."""

from __future__ import annotations

import base64
import io
import json
import os

import boto3
import httpx
import pytest
import test_openai_servers as servers
from botocore.response import StreamingBody
from e2e import docs_blocks
from PIL import Image
from test_bedrock_backend import image_reply

from backend_stubs import b64, no_wait, png_of, stubbed
from darkroom.api.errors import InvalidRequest
from darkroom.api.http import HttpRequest
from darkroom.catalog import BUNDLED_CATALOG, Capability, Catalog, ModelEntry
from darkroom.editing import edit_images, read_edit_request
from darkroom.inference import EditJob, GenerateJob
from darkroom.inference.bedrock import BedrockBackend
from darkroom.inference.resilience import CircuitBreaker
from darkroom.inference.sagemaker import SageMakerBackend
from darkroom.ports import ImageSources, RequestContext
from darkroom.tenancy import Limits, Tenant
from fakes import NoFiles, image_ports, no_fetching

DOC = docs_blocks.REPO / "docs" / "deploying-backends.md"


def documented() -> dict[str, dict]:
    blocks, _ = docs_blocks.parse(DOC)
    entries: dict[str, dict] = {}
    for block in blocks:
        if block.language == "json":
            entries.update(docs_blocks.catalog_entries(docs_blocks.json_document(block)))
    return entries


ENTRIES = documented()


def shape(entry: dict) -> str:
    endpoint = entry.get("endpoint", {})
    if entry["backend"] == "bedrock":
        return f"bedrock:{endpoint['family']}"
    if entry["backend"] == "sagemaker":
        kind = "async" if endpoint.get("async_inference") else "real-time"
        return f"sagemaker:{endpoint.get('contract', 'darkroom')}:{kind}"
    route = endpoint.get("edit_route", "edits")
    return f"openai:{route}" + (":composited" if entry.get("honours_mask") is False else "")


def model(model_id: str, **endpoint: object) -> ModelEntry:
    entry = ENTRIES[model_id]
    return ModelEntry.model_validate({**entry, "id": model_id, "endpoint": {**entry["endpoint"], **endpoint}})


def test_the_guide_shows_an_entry_for_every_backend_and_request_shape():
    shapes = {shape(entry) for entry in ENTRIES.values()}
    assert shapes >= {
        "openai:edits",
        "openai:inpainting",
        "openai:edits:composited",
        "sagemaker:darkroom:real-time",
        "sagemaker:darkroom:async",
        "sagemaker:jumpstart-sd:real-time",
        "sagemaker:hf-diffusers:real-time",
        "bedrock:stability-image",
        "bedrock:stability-inpaint",
        "bedrock:nova-canvas",
        "bedrock:converse",
    }


# -- Bedrock: the answers are AWS's documented shapes ({"seeds", "finish_reasons", "images"}) -----------------


@pytest.fixture
def bedrock():
    client = boto3.client("bedrock-runtime", region_name="us-west-2", aws_access_key_id="x", aws_secret_access_key="x")
    with stubbed(client) as stub:
        yield client, stub


def test_sd35_large_as_documented_draws_a_16_9_image(bedrock):
    client, stub = bedrock
    entry = model("sd3.5-large")
    answer = {"seeds": [2130420379], "finish_reasons": [None], "images": [b64(png_of(1344, 768))]}
    stub.add_response("invoke_model", image_reply(answer))
    job = GenerateJob("a lighthouse", 1344, 768, 1, "medium", False, 20.0, {})
    (image,) = BedrockBackend(entry, client=client, resilience=no_wait()).generate(entry, job)
    assert image.image.size == (1344, 768)


def test_stable_image_inpaint_as_documented_edits_at_the_inputs_size(bedrock):
    client, stub = bedrock
    entry = model("stable-image-inpaint")
    stub.add_response(
        "invoke_model", image_reply({"seeds": [7], "finish_reasons": [None], "images": [b64(png_of(640, 480))]})
    )
    mask = Image.new("L", (640, 480), 255)
    mask.paste(0, (0, 0, 320, 480))
    job = EditJob(
        "a red door", [Image.new("RGB", (640, 480), "white")], mask, 640, 480, 1, "medium", False, "low", 20.0
    )
    (image,) = BedrockBackend(entry, client=client, resilience=no_wait()).edit(entry, job)
    assert image.image.size == (640, 480)


def test_nova_canvas_as_documented_is_refused_after_its_end_of_life():
    document = json.loads(BUNDLED_CATALOG.read_text())
    document["models"]["nova-canvas"] = ENTRIES["nova-canvas"]
    catalog = Catalog.model_validate(document)
    with pytest.raises(InvalidRequest) as refused:
        catalog.resolve("nova-canvas", Capability.GENERATE)
    assert refused.value.code == "model_end_of_life" and "2026-09-30" in refused.value.message


# -- SageMaker: JumpStart's and the HF toolkit's answers --------------------------------------------------------


@pytest.fixture
def sagemaker():
    client = boto3.client(
        "sagemaker-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with stubbed(client) as stub:
        yield client, stub


def _reply(raw: bytes) -> dict:
    return {"Body": StreamingBody(io.BytesIO(raw), len(raw)), "ContentType": "application/json"}


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_jumpstart_sd_as_documented_returns_its_generated_images(sagemaker):
    client, stub = sagemaker
    entry = model("sd21-jumpstart")
    answer = {"generated_images": [b64(_jpeg(512, 512))] * 2, "prompt": "a lighthouse"}
    stub.add_response("invoke_endpoint", _reply(json.dumps(answer).encode()))
    backend = SageMakerBackend(entry, client=client, breaker=CircuitBreaker(threshold=100), resilience=no_wait())
    images = backend.generate(entry, GenerateJob("a lighthouse", 512, 512, 2, "medium", False, 20.0, {"seed": 3}))
    assert [i.image.size for i in images] == [(512, 512)] * 2


def test_hf_diffusers_as_documented_reads_one_bare_base64_image(sagemaker):
    client, stub = sagemaker
    entry = model("sdxl-hf")
    stub.add_response("invoke_endpoint", _reply(json.dumps(b64(png_of(1024, 1024))).encode()))
    backend = SageMakerBackend(entry, client=client, breaker=CircuitBreaker(threshold=100), resilience=no_wait())
    (image,) = backend.generate(entry, GenerateJob("a lighthouse", 1024, 1024, 1, "medium", False, 20.0, {}))
    assert image.image.size == (1024, 1024)


# -- OpenAI-compatible servers: the mimics answer as LocalAI and vLLM-Omni do -----------------------------------


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch):
    from aws_lambda_powertools.utilities import parameters

    monkeypatch.setattr(parameters, "get_secret", lambda *a, **k: pytest.fail("no key is configured"))


def test_localai_as_documented_inpaints_and_its_url_answer_is_fetched():
    server = servers.LocalAI()
    try:
        entry = model("localai-sd", base_url=f"{server.origin}/v1")
        mask = Image.new("L", (512, 512), 255)
        mask.paste(0, (0, 0, 256, 512))
        job = EditJob(
            "a red door", [Image.new("RGB", (512, 512), "white")], mask, 512, 512, 1, "medium", False, "low", 10.0
        )
        (image,) = servers.backend(f"{server.origin}/v1").edit(entry, job)
        assert image.image.size == (512, 512)
        paths = [request["path"] for request in server.requests]
        assert paths[0] == "/v1/images/inpainting" and paths[1].startswith("/generated-images/")
    finally:
        server.close()


def _multipart(data: bytes, mask: bytes, model_id: str) -> HttpRequest:
    files = [("image", ("in.png", data, "image/png")), ("mask", ("m.png", mask, "image/png"))]
    sent = httpx.Request("POST", "http://x/v1/images/edits", files=files, data={"prompt": "a hat", "model": model_id})
    body = sent.read()
    event = {"headers": {"Content-Type": sent.headers["content-type"]}, "isBase64Encoded": True}
    return HttpRequest.from_event({**event, "body": base64.b64encode(body).decode()})


def test_vllm_omni_as_documented_keeps_the_input_outside_the_mask(monkeypatch):
    monkeypatch.setattr(servers, "SERVED", ENTRIES["qwen-image-edit"]["endpoint"]["upstream_model"])
    server = servers.VllmOmni()
    try:
        url = f"{server.origin}/v1"
        document = json.loads(BUNDLED_CATALOG.read_text())
        document["models"]["qwen-image-edit"] = {
            **ENTRIES["qwen-image-edit"],
            "endpoint": {**ENTRIES["qwen-image-edit"]["endpoint"], "base_url": url},
        }
        ports = image_ports(catalog=Catalog.model_validate(document), backends=lambda _model: servers.backend(url))
        picture = Image.frombytes("RGB", (64, 48), os.urandom(64 * 48 * 3))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        mask = Image.new("RGBA", (64, 48), (0, 0, 0, 255))
        mask.paste((0, 0, 0, 0), (0, 0, 32, 48))  # edit the left half only
        mask_bytes = io.BytesIO()
        mask.save(mask_bytes, format="PNG")
        tenant = Tenant("tnt_0123456789abcdef", "acme", "active", Limits(images_per_minute=20))
        request = read_edit_request(
            _multipart(buffer.getvalue(), mask_bytes.getvalue(), "qwen-image-edit"),
            tenant.tenant_id,
            ports.settings,
            ImageSources(NoFiles(), no_fetching),
        )
        result = edit_images(RequestContext(tenant, "req-doc"), request, ports)
        out = Image.open(io.BytesIO(ports.store.get(result.keys[0]))).convert("RGB")
        assert out.crop((32, 0, 64, 48)).tobytes() == picture.crop((32, 0, 64, 48)).tobytes()
        assert out.crop((0, 0, 32, 48)).getcolors() == [(32 * 48, (200, 30, 30))]  # the server's drawing
        assert "mask" not in server.requests[0]["files"]  # vLLM-Omni would ignore it: darkroom does not send it
    finally:
        server.close()
