"""The local functions' init phase: Lambda's limits, its failures logged for the operator, and the gateway's
generic 5xx for the client (``darkroom.local.containers``)."""

from __future__ import annotations

import json
import logging
import textwrap
import time

import pytest

from darkroom.local import containers
from darkroom.local.bridge import LocalApi
from darkroom.local.template import Stack

TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.12
    Timeout: 20
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: prod
      GatewayResponses:
        INTEGRATION_TIMEOUT:
          StatusCode: "504"
          ResponseTemplates:
            application/json: '{"error":{"message":"slow","type":"server_error","param":null,"code":"timeout"}}'
        INTEGRATION_FAILURE:
          StatusCode: "502"
          ResponseTemplates:
            application/json: >-
              {"error":{"message":"failed","type":"server_error","param":null,"code":"integration_failure"}}
  ThingsFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
      Events:
        Things:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: /v1/things, Method: GET}
"""

HANDLER = """
def handler(event, context):
    return {"statusCode": 200, "body": '{"ok": true}'}
"""


def _api(tmp_path, module_code: str, timeout: int = 20) -> LocalApi:
    (tmp_path / "template.yaml").write_text(textwrap.dedent(TEMPLATE.replace("Timeout: 20", f"Timeout: {timeout}")))
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "app.py").write_text(textwrap.dedent(module_code) + HANDLER)
    return LocalApi(Stack(tmp_path / "template.yaml"), {}, containers_per_function=1)


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.WARNING, logger="darkroom.local")
    return caplog


def _messages(log) -> list[str]:
    return [r.getMessage() for r in log.records if r.name == "darkroom.local"]


def _get(api):
    response = api.handle("GET", "/v1/things", [], b"")
    return response.status, json.loads(response.body)


def test_the_init_limits_are_lambdas():
    assert containers.INIT_SECONDS == 10  # on demand; then retried within the function's timeout
    assert containers.PREPARED_INIT_SECONDS == 130  # provisioned concurrency, or the timeout if higher


def test_an_init_past_the_init_limit_continues_within_the_timeout_and_the_first_request_succeeds(
    tmp_path, monkeypatch, log
):
    # A loaded machine, scaled down: the imports take longer than the init phase's limit.
    monkeypatch.setattr(containers, "INIT_SECONDS", 0.2)
    api = _api(tmp_path, "import time\ntime.sleep(1.5)\n")
    try:
        assert _get(api) == (200, {"ok": True})
    finally:
        api.stop()
    (warning,) = _messages(log)
    assert "ThingsFunction: init is taking over 0.2s; it continues within the function's 20s timeout" in warning


def test_an_init_past_the_init_limit_and_the_function_timeout_is_the_gateways_504_with_the_reason_logged(
    tmp_path, monkeypatch, log
):
    monkeypatch.setattr(containers, "INIT_SECONDS", 0.2)
    api = _api(tmp_path, "import time\ntime.sleep(30)\n", timeout=1)
    try:
        status, body = _get(api)
    finally:
        api.stop()
    assert status == 504 and body["error"]["code"] == "timeout"
    assert any(
        "ThingsFunction timed out: its init did not finish within 0.2s + the function's 1s timeout" in m
        for m in _messages(log)
    )


def test_an_import_error_is_logged_with_its_reason_and_the_client_gets_the_generic_502(tmp_path, log):
    api = _api(tmp_path, "import darkroom_no_such_module\n")
    try:
        api.warm()  # at start-up: logged, and the stack still starts
        status, body = _get(api)  # each request tries a fresh container, as Lambda does
    finally:
        api.stop()
    assert status == 502
    # The template's gateway response, as sent: nothing of the reason reaches the client.
    assert body == {
        "error": {"message": "failed", "type": "server_error", "param": None, "code": "integration_failure"}
    }
    reason = "ModuleNotFoundError: No module named 'darkroom_no_such_module'"
    logged = _messages(log)
    assert len(logged) == 2 and all(m.startswith(f"darkroom: ThingsFunction did not start: {reason} (") for m in logged)
    assert logged[0].endswith("fn/app.py, line 1)")


def test_a_process_that_dies_during_init_is_a_502_with_its_exit_code_logged(tmp_path, log):
    api = _api(tmp_path, "import os\nos._exit(3)\n")
    try:
        assert _get(api)[0] == 502
    finally:
        api.stop()
    assert _messages(log) == [
        "darkroom: ThingsFunction did not start: its process exited during the init (exit code 3)"
    ]


def test_warm_waits_for_the_init_so_the_first_request_pays_none_of_it(tmp_path, monkeypatch, log):
    # Prepared ahead of traffic, as provisioned concurrency is: the 10 s on-demand limit does not apply.
    monkeypatch.setattr(containers, "INIT_SECONDS", 0.2)
    api = _api(tmp_path, "import time\ntime.sleep(1)\n")
    try:
        started = time.monotonic()
        api.warm()
        assert time.monotonic() - started >= 1
        assert _get(api) == (200, {"ok": True})
    finally:
        api.stop()
    assert _messages(log) == []  # no init was still running when the request came
