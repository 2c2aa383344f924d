"""Security and platform properties of template.yaml that cfn-lint and the SAM transform cannot judge."""

import json
import re

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


@pytest.mark.parametrize(
    "kind,status",
    [
        ("REQUEST_TOO_LARGE", 413),
        ("INTEGRATION_TIMEOUT", 504),
        ("DEFAULT_4XX", 400),
        ("DEFAULT_5XX", 500),
        ("THROTTLED", 429),
    ],
)
def test_gateway_errors_use_the_openai_envelope(stack, kind, status):
    got_status, body = stack.gateway_response(kind)
    assert got_status == status
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}


# -- observability: alarms, dashboard, WAF, default limits ---------------------------------------------------

_SUB = re.compile(r"\$\{([^}!]+)\}")


def _alarms(stack) -> dict[str, dict]:
    """The notification alarms: an alarm whose action is a scaling policy (the model server's scale-from-zero)
    notifies nobody and is not on the dashboard (tests/unit/test_template_sagemaker.py covers it)."""
    policies = set(stack.of_type("AWS::ApplicationAutoScaling::ScalingPolicy"))

    def scales(alarm: dict) -> bool:
        actions = alarm.get("AlarmActions")
        return isinstance(actions, list) and any(isinstance(a, dict) and a.get("Ref") in policies for a in actions)

    return {name: alarm for name, alarm in stack.of_type("AWS::CloudWatch::Alarm").items() if not scales(alarm)}


def _watched(alarm: dict) -> list[tuple[str, str, dict]]:
    """(namespace, metric name, dimensions) of every metric an alarm reads."""
    if "MetricName" in alarm:
        return [(alarm["Namespace"], alarm["MetricName"], {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])})]
    metrics = [query["MetricStat"]["Metric"] for query in alarm["Metrics"] if "MetricStat" in query]
    return [
        (m["Namespace"], m["MetricName"], {d["Name"]: d["Value"] for d in m.get("Dimensions", [])}) for m in metrics
    ]


def _alarm_watching(stack, namespace: str, metric: str) -> dict:
    found = [a for a in _alarms(stack).values() if any(w[:2] == (namespace, metric) for w in _watched(a))]
    assert len(found) == 1, f"one alarm on {namespace} {metric}, found {len(found)}"
    return found[0]


def _expression(alarm: dict) -> str:
    (returned,) = [query for query in alarm["Metrics"] if query.get("ReturnData")]
    return returned["Expression"]


def test_alarms_cover_5xx_rate_upstream_error_rate_throttles_and_dead_letters(stack):
    api = _alarm_watching(stack, "AWS/ApiGateway", "5XXError")
    assert {w[1] for w in _watched(api)} == {"5XXError", "Count"} and "/" in _expression(api)
    assert api["Threshold"] == {"Ref": "Api5xxAlarmPercent"}
    for _, _, dimensions in _watched(api):  # the REST API's CloudWatch name is the stack's (SAM's default title)
        assert dimensions == {"ApiName": {"Ref": "AWS::StackName"}, "Stage": {"Ref": "StageName"}}

    upstream = _alarm_watching(stack, "darkroom", "UpstreamErrors")
    assert {w[1] for w in _watched(upstream)} == {"UpstreamErrors", "UpstreamCalls"} and "/" in _expression(upstream)
    assert upstream["Threshold"] == {"Ref": "UpstreamErrorAlarmPercent"}

    # Every function's throttles, in alarms of at most 10 metrics (a metric math alarm's limit).
    throttles = [a for a in _alarms(stack).values() if any(w[:2] == ("AWS/Lambda", "Throttles") for w in _watched(a))]
    watched = [w[2]["FunctionName"]["Ref"] for alarm in throttles for w in _watched(alarm)]
    functions = set(stack.of_type("AWS::Serverless::Function"))
    assert set(watched) == functions, f"add {functions - set(watched)} to a throttles alarm and the dashboard"
    assert len(watched) == len(functions) and all(len(_watched(alarm)) <= 10 for alarm in throttles)

    dead = _alarm_watching(stack, "AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert _watched(dead)[0][2] == {"QueueName": {"Fn::GetAtt": ["JobsDeadLetterQueue", "QueueName"]}}
    assert dead["Threshold"] == 0 and dead["ComparisonOperator"] == "GreaterThanThreshold"


def test_alarms_notify_the_topic_only_when_an_email_is_given(stack):
    assert stack.template["Parameters"]["AlarmEmail"]["Default"] == ""
    for kind in ("AWS::SNS::Topic", "AWS::SNS::Subscription"):
        assert {stack.resources[name].get("Condition") for name in stack.of_type(kind)} == {"HasAlarmEmail"}
    notify = {"Fn::If": ["HasAlarmEmail", [{"Ref": "AlarmTopic"}], {"Ref": "AWS::NoValue"}]}
    for name, alarm in _alarms(stack).items():
        assert alarm["AlarmActions"] == notify and alarm["OKActions"] == notify, name
        assert alarm["TreatMissingData"] == "notBreaching", name


def test_darkroom_metrics_in_alarms_are_ones_the_code_emits(stack):
    from darkroom.observability import METRIC_NAMES

    variables = stack.template["Globals"]["Function"]["Environment"]["Variables"]
    for alarm in _alarms(stack).values():
        for namespace, metric, dimensions in _watched(alarm):
            if namespace == variables["POWERTOOLS_METRICS_NAMESPACE"]:
                assert metric in METRIC_NAMES
                assert dimensions == {"service": variables["POWERTOOLS_SERVICE_NAME"]}  # the aggregate set


def _dashboard(stack) -> tuple[dict, set[str]]:
    """The dashboard body as JSON (with ${...} replaced) and the names its ${...} refer to."""
    body = stack.resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    names = set(_SUB.findall(body))
    return json.loads(_SUB.sub(lambda m: "sub-" + m.group(1).replace(":", "-").replace(".", "-"), body)), names


def test_dashboard_is_json_naming_existing_resources_and_metrics(stack):
    from darkroom.observability import BACKENDS, METRIC_NAMES, WINDOWS

    body, names = _dashboard(stack)
    for name in names:
        target = name.split(".")[0]
        assert target.startswith("AWS::") or target in stack.resources or target in stack.template["Parameters"], name
    rows = [row for widget in body["widgets"] if widget["type"] == "metric" for row in widget["properties"]["metrics"]]
    assert rows
    darkroom, expressions, lambdas = set(), [], {}
    for row in rows:
        if isinstance(row[0], dict):
            expressions.append(row[0]["expression"])
            continue
        fields = [f for f in row if not isinstance(f, dict)]
        namespace, metric, dimensions = fields[0], fields[1], dict(zip(fields[2::2], fields[3::2], strict=True))
        if namespace == "darkroom":
            darkroom.add(metric)
            assert set(dimensions) <= {"service", "Backend", "Window", "Code"} and dimensions["service"] == "darkroom"
            assert dimensions.get("Backend", "local") in BACKENDS and dimensions.get("Window", "images") in WINDOWS
        if namespace == "AWS/Lambda":
            lambdas.setdefault(metric, set()).add(dimensions["FunctionName"].removeprefix("sub-"))
    for expression in expressions:
        darkroom |= set(re.findall(r'MetricName="(\w+)"', expression))
    assert darkroom <= METRIC_NAMES
    assert {"ImagesGenerated", "ImagesEdited", "InferenceLatency", "RateLimited", "UpstreamErrors"} <= darkroom
    functions = set(stack.of_type("AWS::Serverless::Function"))
    assert lambdas == {"Errors": functions, "Throttles": functions}
    alarms = next(w for w in body["widgets"] if w["type"] == "alarm")["properties"]["alarms"]
    assert {a.removeprefix("sub-").removesuffix("-Arn") for a in alarms} == set(_alarms(stack))


def test_waf_is_optional_and_guards_the_api_stage(stack):
    parameters = stack.template["Parameters"]
    assert parameters["EnableWaf"]["Default"] == "false" and set(parameters["EnableWaf"]["AllowedValues"]) == {
        "true",
        "false",
    }
    assert stack.template["Conditions"]["WafEnabled"] == {"Fn::Equals": [{"Ref": "EnableWaf"}, "true"]}
    waf = {
        name: stack.resources[name]
        for kind in ("AWS::WAFv2::WebACL", "AWS::WAFv2::WebACLAssociation")
        for name in stack.of_type(kind)
    }
    assert len(waf) == 2 and {r.get("Condition") for r in waf.values()} == {"WafEnabled"}
    acl = next(r["Properties"] for r in waf.values() if r["Type"] == "AWS::WAFv2::WebACL")
    statements = [rule["Statement"] for rule in acl["Rules"]]
    assert any(s.get("ManagedRuleGroupStatement", {}).get("Name") == "AWSManagedRulesCommonRuleSet" for s in statements)
    (rate,) = [s["RateBasedStatement"] for s in statements if "RateBasedStatement" in s]
    assert rate["Limit"] == {"Ref": "WafRateLimit"} and rate["AggregateKeyType"] == "IP"
    association = next(r["Properties"] for r in waf.values() if r["Type"] == "AWS::WAFv2::WebACLAssociation")
    assert "/restapis/${Api}/stages/${Api.Stage}" in association["ResourceArn"]["Fn::Sub"]


def test_default_limits_reach_every_function_as_settings():
    from darkroom.config import Settings
    from darkroom.tenancy import Limits

    stack = Stack()
    variables = stack.template["Globals"]["Function"]["Environment"]["Variables"]
    defaults = Limits()
    for field in ("images_per_minute", "images_per_day", "requests_per_minute"):
        parameter = "Default" + "".join(part.capitalize() for part in field.split("_"))
        assert variables[f"DARKROOM_DEFAULT_{field.upper()}"] == {"Ref": parameter}
        assert stack.template["Parameters"][parameter]["Default"] == getattr(defaults, field)
        assert Settings.model_fields[f"default_{field}"].default == getattr(defaults, field)


def test_content_credentials_sign_through_kms_and_only_image_functions_may(stack):
    """The key is an ES256 signing key; exactly the functions that make images may sign with it and read the chain,
    and nothing else; with the parameter off, no key, no policy and signing off in every function."""
    key = stack.resources["ContentCredentialsKey"]["Properties"]
    assert (key["KeySpec"], key["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
    statements = stack.resources["ContentCredentialsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert sorted(s["Action"] for s in statements) == ["kms:Sign", "ssm:GetParameter"]
    signers = {
        name
        for name, function in stack.of_type("AWS::Serverless::Function").items()
        if any(
            p == {"Fn::If": ["ContentCredentialsOn", {"Ref": "ContentCredentialsPolicy"}, {"Ref": "AWS::NoValue"}]}
            for p in function.get("Policies", [])
        )
    }
    assert signers == {"GenerateFunction", "EditFunction", "ResponsesFunction", "WorkerFunction"}
    on = stack.environment("GenerateFunction")
    assert on["DARKROOM_CONTENT_CREDENTIALS"] == "true" and on["DARKROOM_CONTENT_CREDENTIALS_KMS_KEY_ID"]
    off = Stack(parameters={"ContentCredentials": "false"})
    assert not off.condition("ContentCredentialsOn") and not off.condition("CreatesContentCredentialsKey")
    assert off.environment("GenerateFunction")["DARKROOM_CONTENT_CREDENTIALS"] == "false"
    assert "DARKROOM_CONTENT_CREDENTIALS_KMS_KEY_ID" not in off.environment("GenerateFunction")


def test_admin_routes_are_iam_only_and_served_by_the_admin_function_alone(stack):
    """Every /admin route is AWS_IAM (no darkroom key can reach it), invoked with API Gateway's own permission
    (InvokeRole NONE, not the caller's credentials), and only AdminFunction serves one; it alone may write
    tenants and keys."""
    admin_routes = [route for route in stack.routes() if route.path.startswith("/admin/")]
    assert {route.function for route in admin_routes} == {"AdminFunction"}
    assert {route.authorizer for route in admin_routes} == {"AWS_IAM"}
    served = {(route.method, route.path) for route in stack.routes() if route.function == "AdminFunction"}
    assert served == {(route.method, route.path) for route in admin_routes}
    assert {
        ("POST", "/admin/v1/tenants"),
        ("GET", "/admin/v1/usage"),
        ("POST", "/admin/v1/keys/{key_id}/revoke"),
    } <= served
    events = stack.resources["AdminFunction"]["Properties"]["Events"].values()
    assert all(event["Properties"]["Auth"]["InvokeRole"] == "NONE" for event in events)
    writers = {
        name
        for name, function in stack.of_type("AWS::Serverless::Function").items()
        for policy in function.get("Policies", [])
        if isinstance(policy, dict)
        for statement in policy.get("Statement", [])
        if {"dynamodb:PutItem", "dynamodb:UpdateItem"} & set(_as_list(statement.get("Action")))
        and "TenantsTable" in json.dumps(statement.get("Resource"))
    }
    assert writers == {"AdminFunction"}


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]
