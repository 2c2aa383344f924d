"""template.yaml's access log and the authorizer that names tenants in it (README, "Access log").

The Format is the one source of the line, deployed and local (darkroom.local.access_log renders the same string),
so these tests pin both.
"""

import json
import re

import pytest

from darkroom.local.access_log import render
from darkroom.local.template import Stack

FIELDS = {
    "requestId": "$context.extendedRequestId",
    "tenant": "$context.authorizer.principalId",
    "caller": "$context.identity.userArn",
    "route": "$context.httpMethod $context.resourcePath",
    "status": "$context.status",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integrationLatency",
    "responseLength": "$context.responseLength",
}
PUBLIC_PATHS = {"/docs", "/openapi.json", "/playground", "/console/{asset}"}


@pytest.fixture(scope="module")
def stack():
    return Stack()


@pytest.fixture(scope="module")
def api(stack):
    return stack.resources["Api"]["Properties"]


def test_the_format_is_json_with_exactly_the_operator_fields(stack):
    assert json.loads(stack.access_log_format()) == FIELDS


def test_the_format_names_no_key_body_query_or_raw_path(stack):
    variables = set(re.findall(r"\$context\.([A-Za-z0-9_.]+)", stack.access_log_format()))
    assert variables == {
        "extendedRequestId",
        "authorizer.principalId",
        "identity.userArn",
        "httpMethod",
        "resourcePath",
        "status",
        "responseLatency",
        "integrationLatency",
        "responseLength",
    }
    # Of the caller's identity, only an IAM principal's ARN (admin routes): never its address, agent or access key.
    lowered = stack.access_log_format().lower().replace("$context.identity.userarn", "")
    for forbidden in (
        "$context.path",
        "querystring",
        "authorization",
        "apikey",
        "identity.",
        "body",
        "$input",
        "requestoverride",
        "error.message",
    ):
        assert forbidden not in lowered


def test_a_rendered_line_stays_json_whatever_the_values(stack):
    line = render(stack.access_log_format(), {"extendedRequestId": 'a"b\\c\n', "status": 200, "resourcePath": None})
    parsed = json.loads(line)
    assert parsed["requestId"] == 'a"b\\c\n' and parsed["status"] == "200"
    assert parsed["tenant"] == "-" and parsed["route"] == "- -"  # no value: "-", as API Gateway writes it


def test_the_log_goes_to_its_own_group_with_the_retention_parameter(stack, api):
    destination = api["AccessLogSetting"]["DestinationArn"]["Fn::Sub"]
    assert destination.endswith(":log-group:${ApiAccessLogGroup}")
    group = stack.resources["ApiAccessLogGroup"]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "AccessLogRetentionDays"}
    parameter = stack.template["Parameters"]["AccessLogRetentionDays"]
    assert parameter["Default"] in parameter["AllowedValues"]


def test_api_gateway_gets_the_account_cloudwatch_role_before_the_stage(stack, api):
    role, account = stack.resources["ApiGatewayCloudWatchRole"], stack.resources["ApiGatewayAccount"]
    for resource in (role, account):
        # Account-wide: set when asked for, and never undone by deleting this stack (other APIs may rely on it).
        assert resource["Condition"] == "CreatesApiGatewayAccountRole" and resource["DeletionPolicy"] == "Retain"
    assert account["Properties"]["CloudWatchRoleArn"] == {"Fn::GetAtt": ["ApiGatewayCloudWatchRole", "Arn"]}
    (policy,) = role["Properties"]["ManagedPolicyArns"]
    assert policy["Fn::Sub"].endswith(":iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs")
    assert stack.template["Parameters"]["ApiGatewayAccountRole"]["Default"] == "create"
    # The stage refers to the account setting (DependsOn cannot name a conditional resource).
    (ordering,) = api["Tags"].values()
    assert ordering == {"Fn::If": ["CreatesApiGatewayAccountRole", {"Ref": "ApiGatewayAccount"}, "existing"]}


def test_every_api_route_but_the_public_pages_runs_the_label_authorizer(stack, api):
    (authorizer,) = stack.authorizers().values()
    assert api["Auth"]["DefaultAuthorizer"] == authorizer.name
    assert authorizer.function == "AuthorizerFunction" and authorizer.identity_headers == ("Authorization",)
    # Cached as long as a function caches a key lookup: the label lags a revocation no more than the handler does.
    assert api["Auth"]["Authorizers"][authorizer.name]["Identity"]["ReauthorizeEvery"] == {"Ref": "KeyCacheSeconds"}
    routes = stack.routes()
    assert {r.path for r in routes if r.authorizer is None} == PUBLIC_PATHS
    tenant_routes = [r for r in routes if r.path not in PUBLIC_PATHS and not r.path.startswith("/admin/")]
    assert {r.authorizer for r in tenant_routes} == {authorizer.name}
    # The admin API is IAM-authenticated (tests/unit/test_template.py): its access lines carry no tenant label.
    assert {r.authorizer for r in routes if r.path.startswith("/admin/")} == {"AWS_IAM"}


def test_the_authorizer_reads_key_hashes_only(stack):
    function = stack.resources["AuthorizerFunction"]["Properties"]
    (policy,) = function["Policies"]
    (statement,) = policy["Statement"]
    assert statement["Action"] == "dynamodb:GetItem"
    assert statement["Resource"] == {"Fn::GetAtt": ["TenantsTable", "Arn"]}
    assert "Events" not in function  # not a route: API Gateway calls it as the authorizer


def test_a_missing_key_gets_the_handlers_own_401_from_the_gateway(stack):
    from darkroom.api.errors import InvalidApiKey

    status, body = stack.gateway_response("UNAUTHORIZED")
    assert status == 401 and json.loads(body) == InvalidApiKey().envelope()
