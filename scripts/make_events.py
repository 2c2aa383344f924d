"""Regenerate events/*.json: API Gateway REST proxy events for each route, as the local bridge builds them.

`sam local invoke GenerateFunction -e events/generate.json` and the tests replay the same bytes.
The key inside is a fixed example key (tests seed a tenant with it); it grants nothing anywhere else.
"""

import hashlib
import io
import json
import sys
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "shared"))
sys.path.insert(0, str(ROOT / "tests"))

from darkroom.local.authorizer import authorizer_event  # noqa: E402
from darkroom.local.bridge import LocalApi, _route_pattern  # noqa: E402
from darkroom.local.template import Stack  # noqa: E402
from lambda_harness import EVENT_FILE_ID, EVENT_KEY, EVENT_UPLOAD_ID  # noqa: E402

EVENTS = {
    "generate": (
        "POST",
        "/v1/images/generations",
        {"model": "local-image", "prompt": "a lighthouse at dusk, oil on canvas", "size": "512x512", "n": 1},
    ),
    "edit": ("POST", "/v1/images/edits", "edit-multipart"),
    "models-list": ("GET", "/v1/models", None),
    "models-retrieve": ("GET", "/v1/models/local-image", None),
    "files-create": ("POST", "/v1/files", "files-multipart"),
    "files-list": ("GET", "/v1/files", None),
    "files-retrieve": ("GET", f"/v1/files/{EVENT_FILE_ID}", None),
    "files-delete": ("DELETE", f"/v1/files/{EVENT_FILE_ID}", None),
    "uploads-create": (
        "POST",
        "/v1/uploads",
        {"filename": "lighthouse.png", "purpose": "vision", "bytes": 2048, "mime_type": "image/png"},
    ),
    "uploads-complete": ("POST", f"/v1/uploads/{EVENT_UPLOAD_ID}/complete", {"part_ids": []}),
    "responses-create": ("POST", "/v1/responses", {"model": "local-text", "input": "Say something about lighthouses."}),
    "responses-retrieve": ("GET", "/v1/responses/resp_00000000000000000000000000000000", None),
    "responses-create-background": (
        "POST",
        "/v1/responses",
        {
            "model": "local-image",
            "input": "a lighthouse at dusk",
            "background": True,
            "tools": [{"type": "image_generation", "size": "1024x1024", "quality": "high"}],
        },
    ),
    "responses-cancel": ("POST", "/v1/responses/resp_00000000000000000000000000000000/cancel", None),
    "console-playground": ("GET", "/playground", None),
    "usage": ("GET", "/v1/usage?start_date=2026-11-01&end_date=2026-11-30", None),
}
# The worker's SQS event (`sam local invoke WorkerFunction -e events/worker-job.json`): one job message.
EVENT_RESPONSE_ID = "resp_00000000000000000000000000000000"


def _files_multipart() -> tuple[str, bytes]:
    """``client.files.create(file=..., purpose="vision")`` as the openai SDK sends it: a 32x32 PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 60, 40)).save(buffer, format="PNG")
    content_type = "multipart/form-data; boundary=darkroom-event-boundary"
    request = httpx.Request(
        "POST",
        "http://example/v1/files",
        headers={"content-type": content_type},
        files=[("file", ("swatch.png", buffer.getvalue(), "image/png"))],
        data={"purpose": "vision"},
    )
    return content_type, request.read()


def _edit_multipart() -> tuple[str, bytes]:
    """An edit as the openai SDK sends it: a 64x64 PNG, a mask with a transparent centre, a prompt."""
    image = Image.new("RGB", (64, 64), (30, 90, 160))
    ImageDraw.Draw(image).ellipse((8, 8, 56, 56), fill=(240, 200, 40))
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (16, 16, 48, 48))
    files = []
    for name, picture in (("image", image), ("mask", mask)):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        files.append((name, (f"{name}.png", buffer.getvalue(), "image/png")))
    content_type = "multipart/form-data; boundary=darkroom-event-boundary"
    request = httpx.Request(
        "POST",
        "http://example/v1/images/edits",
        files=files,
        headers={"content-type": content_type},
        data={"prompt": "put a red hat on it", "model": "local-image", "size": "auto"},
    )
    return content_type, request.read()


def main() -> None:
    stack = Stack(ROOT / "template.yaml")
    api = LocalApi(stack, {}, stage="prod")
    for name, (method, path, body) in EVENTS.items():
        route_path = urlsplit(path).path  # without the query string
        route = next(r for r in stack.routes() if r.method == method and _route_pattern(r.path).match(route_path))
        params = _route_pattern(route.path).match(route_path).groupdict()
        headers = [
            ("accept", "application/json"),
            ("authorization", f"Bearer {EVENT_KEY}"),
            ("host", "example.execute-api.us-east-1.amazonaws.com"),
            ("user-agent", "OpenAI/Python 3.54.0"),
        ]
        raw = b""
        if body == "edit-multipart":
            content_type, raw = _edit_multipart()
            headers.append(("content-type", content_type))
        elif body == "files-multipart":
            content_type, raw = _files_multipart()
            headers.append(("content-type", content_type))
        elif body is not None:
            raw = json.dumps(body).encode()
            headers.append(("content-type", "application/json"))
        event = api._event(method, urlsplit(path), route, params, headers, raw, "198.51.100.7")
        event["requestContext"]["requestId"] = f"00000000-0000-4000-8000-{zlib.crc32(name.encode()):012d}"
        event["requestContext"]["requestTimeEpoch"] = 1795000000000
        event["requestContext"]["requestTime"] = "19/Nov/2026:09:46:40 +0000"
        (ROOT / "events" / f"{name}.json").write_text(json.dumps(event, indent=2) + "\n")
        if name == "models-list":
            # The API's REQUEST authorizer (`sam local invoke AuthorizerFunction -e events/authorizer.json`), as
            # API Gateway calls it before this route: the request without its body, and the method ARN.
            (ROOT / "events" / "authorizer.json").write_text(
                json.dumps(authorizer_event(stack.region, event), indent=2) + "\n"
            )
    (ROOT / "events" / "worker-job.json").write_text(json.dumps(_job_event(), indent=2) + "\n")
    (ROOT / "events" / "admin-create-tenant.json").write_text(json.dumps(_admin_event(stack, api), indent=2) + "\n")


def _admin_event(stack: Stack, api: LocalApi) -> dict:
    """POST /admin/v1/tenants as API Gateway hands it over after AWS_IAM authorization: a SigV4 Authorization
    header (an example: the function never sees a key) and the authenticated IAM caller in requestContext.identity
    (`sam local invoke AdminFunction -e events/admin-create-tenant.json`)."""
    route = next(r for r in stack.routes() if (r.method, r.path) == ("POST", "/admin/v1/tenants"))
    body = json.dumps({"name": "acme", "images_per_minute": 10, "monthly_budget_usd": 25}).encode()
    headers = [
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLEOPERATOR1/20261119/us-east-1/execute-api/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date, Signature=" + "0" * 64,
        ),
        ("content-type", "application/json"),
        ("host", "example.execute-api.us-east-1.amazonaws.com"),
        ("user-agent", "Boto3/1.40.0"),
        ("x-amz-date", "20261119T094640Z"),
    ]
    event = api._event("POST", urlsplit(route.path), route, {}, headers, body, "198.51.100.7")
    context = event["requestContext"]
    context.update(requestId="00000000-0000-4000-8000-0000000ad001", requestTimeEpoch=1795000000000)
    context.update(requestTime="19/Nov/2026:09:46:40 +0000", extendedRequestId="AdminCreate1=")
    context["identity"].update(
        accountId="123456789012",
        caller="AROAEXAMPLEOPERATOR:billing-sync",
        accessKey="AKIAEXAMPLEOPERATOR1",
        userArn="arn:aws:sts::123456789012:assumed-role/darkroom-operator/billing-sync",
    )
    return event


def _job_event() -> dict:
    body = json.dumps({"tenant_id": "tnt_0000000000000000", "response_id": EVENT_RESPONSE_ID}, separators=(",", ":"))
    return {
        "Records": [
            {
                "messageId": "00000000-0000-4000-8000-000000000001",
                "receiptHandle": "AQEB-example-receipt-handle",
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1795000000000",
                    "SenderId": "AROAEXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "1795000000001",
                },
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:darkroom-JobsQueue",
                "awsRegion": "us-east-1",
            }
        ]
    }


if __name__ == "__main__":
    main()
