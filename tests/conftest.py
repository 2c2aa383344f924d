"""Shared fixtures: AWS from moto (in-process) with the template's own tables and bucket."""

from __future__ import annotations

import os
import tempfile

import pytest

from darkroom.local import dev_credentials
from lambda_harness import EVENT_KEY

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "darkroom")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "darkroom")
for _name in ("AWS_ENDPOINT_URL",):
    os.environ.pop(_name, None)
os.environ.update(
    {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
)
# Content Credentials sign with one development key per test run (made here, never in the user's home), as the
# local stack's own; use cases run on in-memory ports read the same settings.
os.environ.setdefault("DARKROOM_DEV_CREDENTIALS_DIR", tempfile.mkdtemp(prefix="darkroom-credentials-"))
os.environ.update(dev_credentials.environment())


@pytest.fixture
def aws(monkeypatch):
    """moto with the template's resources created; DARKROOM_* env pointing at them."""
    from darkroom.local.stack import in_process_aws

    monkeypatch.delenv("DARKROOM_CATALOG_PARAMETER", raising=False)
    with in_process_aws("test", set_env=monkeypatch.setenv) as stack:
        yield stack


@pytest.fixture
def svc(aws):
    from darkroom.services import services

    return services()


@pytest.fixture
def tenant(svc):
    """A tenant whose key is the one in events/*.json."""
    from darkroom.tenancy import Limits

    created = svc.directory.create_tenant(
        "acme", Limits(images_per_minute=20, images_per_day=100, requests_per_minute=30)
    )
    svc.directory.issue_key(created.tenant_id, secret=EVENT_KEY)
    return created
