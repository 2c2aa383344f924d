"""No request data in the logs: one full in-process flow, everything logged at INFO captured.

generate (b64_json) -> edit with a mask -> responses with an input image and the image tool (and a
retrieve, which presigns again) -> files create. Then nothing that was sent or returned may appear in
what was logged: no image's base64, no API key, no prompt, no presigned URL signature, no filename.

What is captured: pytest's capsys and caplog (root logger at INFO), and a handler with the
Powertools formatter attached to darkroom's own logger (Powertools binds its stream at import time,
so capsys alone could miss its JSON lines). Functions run with POWERTOOLS_LOG_LEVEL=INFO semantics.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from emf_capture import powertools_log_stream
from lambda_harness import EVENT_KEY, invoke, load_event, multipart_event

pytestmark = pytest.mark.reliability

PROMPTS = {
    "generate": "a quokka juggling tangerines on Wednesday",
    "edit": "paint a violet kite above the harbour",
    "responses": "imagine a brass owl reading a timetable",
}
FILENAMES = ("holiday-secret-photo.png", "confidential-mask-layer.png", "private-scan-0042.png")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _json(name: str, body: dict) -> dict:
    event = load_event(name)
    event["body"], event["isBase64Encoded"] = json.dumps(body), False
    return event


def _b64_probes(encoded: str) -> list[str]:
    """Distinctive pieces of a base64 string (its first bytes are the format's magic, shared by every PNG)."""
    middle = len(encoded) // 2
    return [piece for piece in (encoded[64:128], encoded[middle : middle + 64], encoded[-96:-32]) if len(piece) >= 32]


def _signatures(url: str) -> list[str]:
    query = parse_qs(urlsplit(url).query)
    found = query.get("X-Amz-Signature", []) + query.get("Signature", [])
    assert found, "a presigned URL without a signature"
    return [*found, url]


@pytest.fixture
def captured(caplog):
    """Everything darkroom's Powertools logger emits, as formatted, at INFO."""
    caplog.set_level(logging.INFO)
    with powertools_log_stream() as stream:
        yield stream


def test_a_full_flow_logs_no_request_data(tenant, svc, captured, capsys, caplog):
    secrets: dict[str, list[str]] = {"api key": [EVENT_KEY, EVENT_KEY.removeprefix("dk-")]}
    secrets["prompts"] = list(PROMPTS.values())
    secrets["filenames"] = [*FILENAMES, *(name.removesuffix(".png") for name in FILENAMES)]
    b64: list[str] = []
    urls: list[str] = []

    # generate
    status, _, body = invoke(
        "generate",
        _json(
            "generate",
            {
                "model": "local-image",
                "prompt": PROMPTS["generate"],
                "size": "256x256",
                "n": 2,
                "response_format": "b64_json",
            },
        ),
    )
    assert status == 200, body
    b64 += [item["b64_json"] for item in body["data"]]
    urls += [item["url"] for item in body["data"]]

    # edit with a mask
    photo = Image.effect_noise((128, 128), 50).convert("RGB")
    mask = Image.new("RGBA", (128, 128), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (32, 32, 96, 96))
    photo_png, mask_png = _png(photo), _png(mask)
    b64 += [base64.b64encode(photo_png).decode(), base64.b64encode(mask_png).decode()]
    status, _, body = invoke(
        "edit",
        multipart_event(
            "edit",
            [("image", (FILENAMES[0], photo_png, "image/png")), ("mask", (FILENAMES[1], mask_png, "image/png"))],
            {"prompt": PROMPTS["edit"], "model": "local-image", "response_format": "b64_json"},
        ),
    )
    assert status == 200, body
    b64 += [item["b64_json"] for item in body["data"]]
    urls += [item["url"] for item in body["data"]]

    # responses: an input image and the image tool, then a retrieve (fresh presigned URLs)
    red = _png(Image.effect_noise((64, 48), 80).convert("RGB"))
    b64.append(base64.b64encode(red).decode())
    status, _, body = invoke(
        "responses",
        _json(
            "responses-create",
            {
                "model": "local-text",
                "tools": [{"type": "image_generation", "size": "256x256"}],
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": PROMPTS["responses"]},
                            {"type": "input_image", "image_url": "data:image/png;base64," + b64[-1]},
                        ],
                    }
                ],
            },
        ),
    )
    assert status == 200, body
    calls = [item for item in body["output"] if item["type"] == "image_generation_call"]
    assert calls, body["output"]
    b64 += [call["result"] for call in calls]
    urls += [call["url"] for call in calls if call.get("url")]
    response_id = body["id"]
    status, _, body = invoke(
        "responses",
        load_event(
            "responses-retrieve", path=f"/v1/responses/{response_id}", pathParameters={"response_id": response_id}
        ),
    )
    assert status == 200, body
    urls += [item["url"] for item in body["output"] if item.get("url")]

    # files create
    scan = _png(Image.effect_noise((40, 40), 90).convert("RGB"))
    b64.append(base64.b64encode(scan).decode())
    status, _, body = invoke(
        "files", multipart_event("files-create", [("file", (FILENAMES[2], scan, "image/png"))], {"purpose": "vision"})
    )
    assert status == 200, body
    assert body["filename"] == FILENAMES[2]

    secrets["base64"] = [piece for encoded in b64 for piece in _b64_probes(encoded)]
    secrets["presigned urls"] = [piece for url in urls for piece in _signatures(url)]
    assert len(secrets["base64"]) >= 3 * 8 and len(urls) >= 5

    out, err = capsys.readouterr()
    logged = "\n".join(
        [
            captured.getvalue(),
            out,
            err,
            caplog.text,
            *(json.dumps(record.__dict__, default=str) for record in caplog.records),
        ]
    )
    assert "images produced" in logged, "the capture saw none of darkroom's own log lines"
    leaks = {kind: [value[:40] for value in values if value in logged] for kind, values in secrets.items()}
    assert not any(leaks.values()), f"request data in the logs: {leaks}"

    # Every line darkroom logged is correlated: the request id of the invocation that wrote it.
    request_ids = {
        load_event(name)["requestContext"]["requestId"]
        for name in ("generate", "edit", "responses-create", "responses-retrieve", "files-create")
    }
    lines = [json.loads(line) for line in captured.getvalue().splitlines() if line.startswith("{")]
    assert lines and {line.get("correlation_id") for line in lines} <= request_ids
    # Metrics (EMF on stdout) carry no tenant, key or request as a dimension.
    documents = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]
    assert documents, "no EMF metrics were written"
    dimensions = {
        (name, document[name])
        for document in documents
        for directive in document["_aws"]["CloudWatchMetrics"]
        for dimension_set in directive["Dimensions"]
        for name in dimension_set
    }
    assert {name for name, _ in dimensions} <= {"service", "Backend", "Window", "Code"}, dimensions
    assert not {value for _, value in dimensions} & {tenant.tenant_id, EVENT_KEY, *request_ids}
