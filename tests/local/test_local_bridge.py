"""The local API Gateway bridge: routing, events, and the gateway's own limits and failures."""

import json
import textwrap

import pytest

from darkroom.local.bridge import LocalApi
from darkroom.local.template import Stack

TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.12
    Timeout: 2
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: prod
      GatewayResponses:
        DEFAULT_4XX:
          ResponseTemplates:
            application/json: '{"error":{"message":$context.error.messageString,"type":"invalid_request_error","param":null,"code":"gateway_error"}}'
        DEFAULT_5XX:
          ResponseTemplates:
            application/json: '{"error":{"message":"failed","type":"server_error","param":null,"code":"gateway_error"}}'
        REQUEST_TOO_LARGE:
          StatusCode: "413"
          ResponseTemplates:
            application/json: '{"error":{"message":"too large","type":"invalid_request_error","param":null,"code":"request_too_large"}}'
        INTEGRATION_TIMEOUT:
          StatusCode: "504"
          ResponseTemplates:
            application/json: '{"error":{"message":"slow","type":"server_error","param":null,"code":"timeout"}}'
        INTEGRATION_FAILURE:
          StatusCode: "502"
          ResponseTemplates:
            application/json: '{"error":{"message":"broken","type":"server_error","param":null,"code":"integration_failure"}}'
        MISSING_AUTHENTICATION_TOKEN:
          StatusCode: "404"
          ResponseTemplates:
            application/json: '{"error":{"message":"Unknown route.","type":"invalid_request_error","param":null,"code":"not_found"}}'
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
      Events:
        Echo:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: "/v1/things/{thing}", Method: POST}
"""

APP = """
import json, os, time

def handler(event, context):
    body = json.loads(event["body"] or "{}")
    if body.get("sleep"):
        time.sleep(body["sleep"])
    if body.get("crash"):
        raise RuntimeError("boom")
    if body.get("big"):
        return {"statusCode": 200, "body": "x" * (7 * 1024 * 1024)}
    return {"statusCode": 201, "multiValueHeaders": {"x-pid": [str(os.getpid())]},
            "body": json.dumps({"thing": event["pathParameters"]["thing"], "resource": event["resource"],
                                "stage": event["requestContext"]["stage"], "query": event["queryStringParameters"],
                                "request_id": event["requestContext"]["requestId"]})}
"""


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    (root / "template.yaml").write_text(textwrap.dedent(TEMPLATE))
    (root / "fn").mkdir()
    (root / "fn" / "app.py").write_text(APP)
    local = LocalApi(Stack(root / "template.yaml"), {}, containers_per_function=2)
    yield local
    local.stop()


def _post(api, path, body: dict | bytes):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = api.handle("POST", path, [("content-type", "application/json")], raw)
    return response.status, dict(response.headers), json.loads(response.body)


def test_routes_become_rest_proxy_events(api):
    status, headers, body = _post(api, "/v1/things/t-1?x=1", {})
    assert status == 201
    assert body["thing"] == "t-1" and body["resource"] == "/v1/things/{thing}" and body["query"] == {"x": "1"}
    assert body["stage"] == "local" and len(body["request_id"]) == 36
    assert headers["x-pid"]


def test_unknown_routes_and_methods_get_the_gateway_404(api):
    assert _post(api, "/v1/nothing", {})[0] == 404
    response = api.handle("GET", "/v1/things/t-1", [], b"")
    assert response.status == 404 and json.loads(response.body)["error"]["code"] == "not_found"


def test_oversized_requests_get_413_without_reaching_the_function(api):
    status, _, body = _post(api, "/v1/things/t", b"{" + b" " * (10 * 1024 * 1024) + b"}")
    assert status == 413 and body["error"]["code"] == "request_too_large"
    status, _, body = _post(api, "/v1/things/t", b'{"pad":"' + b"a" * (6 * 1024 * 1024) + b'"}')
    assert status == 413  # under API Gateway's 10 MB but over Lambda's 6 MB event limit


def test_crashes_oversized_results_and_timeouts_are_gateway_errors(api):
    assert _post(api, "/v1/things/t", {"crash": True})[0] == 502
    status, _, body = _post(api, "/v1/things/t", {"big": True})
    assert status == 502 and body["error"]["code"] == "integration_failure"
    status, _, body = _post(api, "/v1/things/t", {"sleep": 5})
    assert status == 504 and body["error"]["code"] == "timeout"
    assert _post(api, "/v1/things/t", {})[0] == 201  # a fresh container replaces the timed-out one


def test_concurrent_requests_run_in_separate_containers(api):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: _post(api, "/v1/things/t", {"sleep": 0.5}), range(2)))
    assert {r[0] for r in results} == {201}
    # Both answered; the pool is capped at two containers, so at most two processes served them.
    assert len({r[1]["x-pid"] for r in results}) == 2
