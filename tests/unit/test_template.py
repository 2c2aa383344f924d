"""Security and platform properties of template.yaml that cfn-lint and the SAM transform cannot judge."""

import json

import pytest

from darkroom.local.template import Stack


@pytest.fixture(scope="module")
def stack():
    return Stack()


def test_functions_run_python_312_or_newer(stack):
    runtime = stack.template["Globals"]["Function"]["Runtime"]
    assert runtime.startswith("python3.") and int(runtime.split(".")[1]) >= 12


def test_events_are_never_logged(stack):
    variables = stack.template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables.get("POWERTOOLS_LOGGER_LOG_EVENT", "false") == "false"
    assert variables["POWERTOOLS_SERVICE_NAME"] and variables["POWERTOOLS_LOG_LEVEL"]


def test_bucket_is_private_encrypted_and_expires_images(stack):
    bucket = stack.resources["ImagesBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    expiry = next(r for r in bucket["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in r)
    assert expiry["ExpirationInDays"] == {"Ref": "ImageRetentionDays"}


def test_tables_are_on_demand_and_rate_windows_expire(stack):
    tables = stack.of_type("AWS::DynamoDB::Table")
    assert {t["BillingMode"] for t in tables.values()} == {"PAY_PER_REQUEST"}
    assert tables["RateLimitsTable"]["TimeToLiveSpecification"]["Enabled"] is True


def test_function_policies_name_actions_and_resources(stack):
    for name, function in stack.of_type("AWS::Serverless::Function").items():
        text = json.dumps(function["Policies"])
        assert '"*"' not in text and ":*" not in text, name  # no wildcard actions or resources
        assert "DynamoDBCrudPolicy" not in text and "S3CrudPolicy" not in text, name


@pytest.mark.parametrize("kind,status", [("REQUEST_TOO_LARGE", 413), ("INTEGRATION_TIMEOUT", 504),
                                         ("DEFAULT_4XX", 400), ("DEFAULT_5XX", 500), ("THROTTLED", 429)])
def test_gateway_errors_use_the_openai_envelope(stack, kind, status):
    got_status, body = stack.gateway_response(kind)
    assert got_status == status
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
