"""The local gateway runs the API's REQUEST authorizer as API Gateway does, and writes each request's access-log
line from the template's Format (darkroom.local.authorizer, darkroom.local.access_log)."""

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
      AccessLogSetting:
        DestinationArn: arn:aws:logs:us-east-1:123456789012:log-group:access
        Format: '%(format)s'
      Auth:
        DefaultAuthorizer: Label
        Authorizers:
          Label:
            FunctionArn: !GetAtt LabelFunction.Arn
            FunctionPayloadType: REQUEST
            Identity: {Headers: [Authorization], ReauthorizeEvery: 60}
      GatewayResponses:
        DEFAULT_4XX:
          ResponseTemplates:
            application/json: '{"error":{"message":"refused","type":"x","param":null,"code":"gateway_error"}}'
        DEFAULT_5XX:
          ResponseTemplates:
            application/json: '{"error":{"message":"failed","type":"server_error","param":null,"code":"gateway_error"}}'
        UNAUTHORIZED:
          StatusCode: "401"
          ResponseTemplates:
            application/json: '{"error":{"message":"no key","type":"x","param":null,"code":"invalid_api_key"}}'
  LabelFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: label/
      Handler: app.handler
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: echo/
      Handler: app.handler
      Events:
        Thing:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: "/v1/things/{thing}", Method: POST}
        Other:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: "/v1/other", Method: GET}
        Public:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: /public, Method: GET, Auth: {Authorizer: NONE}}
        Admin:
          Type: Api
          Properties:
            {RestApiId: !Ref Api, Path: /admin/v1/things, Method: POST, Auth: {Authorizer: AWS_IAM, InvokeRole: NONE}}
"""

# The authorizer: its answer depends on the key; every call is counted in a file (the containers are processes).
LABEL = """
import os

def handler(event, context):
    with open(os.path.join(os.environ["CALLS_DIR"], "calls"), "a") as calls:
        calls.write(event["type"] + " " + event["methodArn"] + "\\n")
    headers = {name.lower(): value for name, value in event["headers"].items()}  # as sent: any case
    key = headers["authorization"].split()[-1]
    if key == "crash":
        raise RuntimeError("boom")
    api, stage = event["methodArn"].split("/")[:2]
    resource = event["methodArn"] if key == "narrow" else f"{api}/{stage}/*/*"
    effect = "Deny" if key == "deny" else "Allow"
    return {"principalId": "tnt_" + key, "context": {"tenant": "tnt_" + key},
            "policyDocument": {"Version": "2012-10-17",
                               "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}]}}
"""

ECHO = """
import json

def handler(event, context):
    context = event["requestContext"]
    return {"statusCode": 201, "body": json.dumps({"authorizer": context.get("authorizer"),
                                                   "caller": context["identity"].get("userArn")})}
"""


@pytest.fixture(scope="module")
def stack_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    access_format = Stack().access_log_format()  # the deployed template's own Format
    (root / "template.yaml").write_text(textwrap.dedent(TEMPLATE) % {"format": access_format})
    for name, code in (("label", LABEL), ("echo", ECHO)):
        (root / name).mkdir()
        (root / name / "app.py").write_text(code)
    return root


@pytest.fixture
def api(stack_root, tmp_path):
    environment = {"CALLS_DIR": str(tmp_path), "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
    local = LocalApi(Stack(stack_root / "template.yaml"), environment, containers_per_function=2)
    local.calls = lambda: (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    yield local
    local.stop()


def _request(api, method, path, key=None):
    headers = [("content-type", "application/json")] + ([("Authorization", f"Bearer {key}")] if key else [])
    response = api.handle(method, path, headers, b"{}" if method == "POST" else b"")
    return response, json.loads(response.body), json.loads(response.access_log)


def test_the_label_reaches_the_function_and_the_access_log(api):
    response, body, line = _request(api, "POST", "/v1/things/secret-id?token=hidden", "acme")
    assert response.status == 201
    assert body["authorizer"]["principalId"] == "tnt_acme" and body["authorizer"]["tenant"] == "tnt_acme"
    assert set(line) == {
        "requestId",
        "tenant",
        "caller",
        "route",
        "status",
        "responseLatency",
        "integrationLatency",
        "responseLength",
    }
    assert line["tenant"] == "tnt_acme" and line["route"] == "POST /v1/things/{thing}" and line["status"] == "201"
    assert line["caller"] == "-" and body["caller"] is None  # an IAM principal only on AWS_IAM routes
    assert line["responseLength"] == str(len(response.body)) and int(line["integrationLatency"]) >= 0
    assert int(line["responseLatency"]) >= int(line["integrationLatency"])
    assert "secret-id" not in response.access_log and "hidden" not in response.access_log
    assert "acme" not in response.access_log.replace("tnt_acme", "")  # the key itself is never in the line
    (call,) = api.calls()
    assert call == "REQUEST arn:aws:execute-api:us-east-1:000000000000:local/local/POST/v1/things/secret-id"


def test_a_request_without_the_identity_header_is_401_without_calling_the_authorizer(api):
    response, body, line = _request(api, "POST", "/v1/things/t")
    assert response.status == 401 and body["error"]["code"] == "invalid_api_key"
    assert api.calls() == []
    assert line["tenant"] == "-" and line["integrationLatency"] == "-" and line["status"] == "401"


def test_the_result_is_cached_per_key_and_serves_every_route(api):
    for path, method in (("/v1/things/a", "POST"), ("/v1/other", "GET"), ("/v1/things/b", "POST")):
        assert _request(api, method, path, "acme")[0].status == 201
    assert len(api.calls()) == 1
    assert _request(api, "GET", "/v1/other", "globex")[2]["tenant"] == "tnt_globex"
    assert len(api.calls()) == 2


def test_a_cached_policy_for_one_method_refuses_the_next_route(api):
    # The pitfall the deployed authorizer avoids by allowing stage/*/*: API Gateway reuses the cached policy.
    assert _request(api, "POST", "/v1/things/a", "narrow")[0].status == 201
    response, _, line = _request(api, "GET", "/v1/other", "narrow")
    assert response.status == 403 and line["tenant"] == "tnt_narrow"


def test_deny_is_403_and_a_crashed_authorizer_is_a_gateway_500(api):
    assert _request(api, "POST", "/v1/things/a", "deny")[0].status == 403
    response, body, _ = _request(api, "POST", "/v1/things/a", "crash")
    assert response.status == 500 and body["error"]["type"] == "server_error"


def test_routes_with_authorizer_none_skip_it(api):
    response, body, line = _request(api, "GET", "/public")
    assert response.status == 201 and body["authorizer"] is None and api.calls() == []
    assert line["route"] == "GET /public" and line["tenant"] == "-"


def test_unknown_routes_are_logged_without_a_route(api):
    response, _, line = _request(api, "GET", "/v1/nowhere/123", "acme")
    # MISSING_AUTHENTICATION_TOKEN keeps API Gateway's 403 where the template sets no status of its own (the real
    # template answers 404 not_found).
    assert response.status == 403 and line["route"] == "GET -" and "123" not in response.access_log


def _signed(secret: str) -> list[tuple[str, str]]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:3000/admin/v1/things",
        data=b"{}",
        headers={"content-type": "application/json"},
    )
    SigV4Auth(Credentials("local", secret), "execute-api", "us-east-1").add_auth(request)
    return [("Host", "127.0.0.1:3000"), *request.headers.items()]


def test_an_iam_route_takes_a_signature_not_the_authorizer_and_logs_its_caller(api):
    from darkroom.local.sigv4 import LOCAL_PRINCIPAL

    response = api.handle("POST", "/admin/v1/things", _signed("local"), b"{}")
    line = json.loads(response.access_log)
    assert response.status == 201 and json.loads(response.body)["caller"] == LOCAL_PRINCIPAL
    assert line["caller"] == LOCAL_PRINCIPAL and line["tenant"] == "-"
    assert api.calls() == []  # the REQUEST authorizer never runs on an AWS_IAM route
    for headers in (_signed("wrong"), [("content-type", "application/json"), ("Authorization", "Bearer acme")]):
        refused = api.handle("POST", "/admin/v1/things", headers, b"{}")
        assert refused.status == 403 and json.loads(refused.access_log)["caller"] == "-"
    assert api.calls() == []
