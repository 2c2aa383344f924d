"""`darkroom serve` started again in a shell that sourced an earlier run's `export` lines, that run stopped."""

from __future__ import annotations

import json
import socket
import time

import openai
import pytest

from darkroom.local import model_server
from local_stack_process import serve

pytestmark = pytest.mark.e2e


def _dead_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_a_restart_with_the_earlier_runs_exports_starts_afresh_and_background_jobs_reach_its_queue():
    old = _dead_endpoint()  # the earlier run's moto, and its model server: stopped with it
    earlier = {
        "AWS_ENDPOINT_URL": old,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "DARKROOM_TENANTS_TABLE": "darkroom-local-tenantstable",
        "DARKROOM_JOBS_QUEUE_URL": f"{old}/123456789012/darkroom-local-jobsqueue",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": _dead_endpoint(),
        "DARKROOM_CATALOG_EXTRA": json.dumps(model_server.endpoint_models()),
    }
    with serve(earlier) as exported:
        assert exported["AWS_ENDPOINT_URL"] != old
        assert exported["DARKROOM_JOBS_QUEUE_URL"].startswith(exported["AWS_ENDPOINT_URL"] + "/")
        assert "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME" not in exported
        client = openai.OpenAI(base_url=exported["OPENAI_BASE_URL"], api_key=exported["OPENAI_API_KEY"])
        assert not any(m.id.startswith("tiny-") for m in client.models.list())  # no model server runs now
        response = client.responses.create(
            model="local-image",
            input="a lighthouse",
            background=True,
            tools=[{"type": "image_generation", "size": "256x256"}],
        )
        deadline = time.monotonic() + 60
        while response.status in ("queued", "in_progress") and time.monotonic() < deadline:
            time.sleep(0.2)
            response = client.responses.retrieve(response.id)
        assert response.status == "completed"  # the job went through this run's queue, to this run's worker
