"""Shared fixtures: AWS from moto (in-process) with the template's own tables and bucket."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
# The key the committed events carry (events/*.json); tests seed a tenant with it.
EVENT_KEY = "dk-eventKEYeventKEYeventKEYeventKEYeventKEY012"

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "darkroom")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "darkroom")
for _name in ("AWS_ENDPOINT_URL",):
    os.environ.pop(_name, None)
os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1"})


@pytest.fixture
def aws(monkeypatch):
    """moto with the template's resources created; DARKROOM_* env pointing at them."""
    from moto import mock_aws

    from darkroom import config, services
    from darkroom.local.aws import _make_moto_linearizable, create_resources
    from darkroom.local.stack import function_environment
    from darkroom.local.template import Stack

    _make_moto_linearizable()
    with mock_aws():
        stack = Stack(prefix="test")
        for name, value in function_environment(stack).items():
            if name.startswith("DARKROOM_"):
                monkeypatch.setenv(name, value)
        monkeypatch.delenv("DARKROOM_CATALOG_PARAMETER", raising=False)
        services.reset()
        create_resources(stack, config.client("dynamodb"), config.client("s3"))
        yield stack
        services.reset()


@pytest.fixture
def svc(aws):
    from darkroom.services import services

    return services()


@pytest.fixture
def tenant(svc):
    """A tenant whose key is the one in events/*.json."""
    from darkroom.tenancy import Limits

    created = svc.directory.create_tenant("acme", Limits(images_per_minute=20, images_per_day=100,
                                                         requests_per_minute=30))
    svc.directory.issue_key(created.tenant_id, secret=EVENT_KEY)
    return created


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


class Context:
    function_name = "test"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:test"
    aws_request_id = "test-request"
    function_version = "$LATEST"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 29_000


def invoke(function: str, event: dict) -> tuple[int, dict, dict]:
    """(status, headers lower-cased, JSON body) of one handler invocation."""
    result = load_handler(function)(event, Context())
    headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[name.lower()] = values[-1]
    return result["statusCode"], headers, json.loads(result["body"]) if result.get("body") else {}
