"""Invoking the functions' handlers in-process, with the committed API Gateway events."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
# The key the committed events carry (events/*.json); tests seed a tenant with it. It grants nothing elsewhere.
EVENT_KEY = "dk-eventKEYeventKEYeventKEYeventKEYeventKEY012"
# The file and upload the files-*/uploads-* events name; handler tests create them under these ids.
EVENT_FILE_ID = "file-0e0e0e0e0e0e0e0e0e0e0e0e"
EVENT_UPLOAD_ID = "upload_0e0e0e0e0e0e0e0e0e0e0e0e"


def load_handler(function: str):
    """Import functions/<function>/app.py under a unique name and return its lambda_handler."""
    name = f"darkroom_test_fn_{function}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / function / "app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name].lambda_handler


def load_event(name: str, **changes) -> dict:
    event = json.loads((EVENTS / f"{name}.json").read_text())
    for key, value in changes.items():
        event[key] = value
    return event


def multipart_event(name: str, files, data: dict | None = None) -> dict:
    """The committed event ``name`` carrying a multipart body of ``files`` and ``data``, encoded by httpx as
    a client would and base64-encoded as API Gateway passes binary media types."""
    request = httpx.Request("POST", "http://x/", files=files, data=data or {})
    event = load_event(name)
    content_type = request.headers["content-type"]
    event["headers"]["content-type"] = content_type
    event["multiValueHeaders"]["content-type"] = [content_type]
    event["body"], event["isBase64Encoded"] = base64.b64encode(request.read()).decode(), True
    return event


class Context:
    function_name = "test"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:test"
    aws_request_id = "test-request"
    function_version = "$LATEST"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 29_000


class WorkerContext(Context):
    """The worker's context: Lambda's full 15 minutes."""

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 900_000


def invoke(function: str, event: dict, raw: bool = False) -> tuple[int, dict, dict | str]:
    """(status, headers lower-cased, JSON body, or the body text with ``raw``) of one handler invocation."""
    result = load_handler(function)(event, Context())
    headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[name.lower()] = values[-1]
    if raw:
        return result["statusCode"], headers, result.get("body") or ""
    return result["statusCode"], headers, json.loads(result["body"]) if result.get("body") else {}


def sqs_job_event(svc) -> tuple[dict, dict]:
    """(the worker's SQS event, the message) for the one job message waiting in the jobs queue, as
    Lambda's event source mapping delivers it."""
    sqs = svc.jobs._sqs
    (message,) = sqs.receive_message(QueueUrl=svc.settings.jobs_queue_url, AttributeNames=["All"])["Messages"]
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message["Attributes"],
        "messageAttributes": {},
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs",
        "awsRegion": "us-east-1",
    }
    return {"Records": [record]}, message
