"""template.yaml's optional model server (darkroom's own endpoint on SageMaker), as CloudFormation would deploy it.

cfn-lint and the SAM transform check the template's shape; these tests render it for a set of parameters
(conditions evaluated, intrinsic functions resolved, resources whose condition is false left out) and check
what would exist: nothing by default, the endpoint and its least-privilege role when asked for, async scaling
to zero only in async mode, and a catalog entry every function can load.
"""

from __future__ import annotations

import json
import re
from functools import cache

import pytest

from darkroom.catalog import BUNDLED_CATALOG, Capability, parse_catalog
from darkroom.inference import sagemaker_async
from darkroom.local.template import Stack

ACCOUNT, REGION, PARTITION, STACK = "123456789012", "eu-west-1", "aws", "darkroom-prod"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/darkroom-endpoint:1.4.0"
ARCHIVE = "s3://acme-models/sdxl/model.tar.gz"
PREFIX = "s3://acme-models/flux/v2/"
BUCKET = "darkroom-prod-imagesbucket-1a2b3c"  # what Ref ImagesBucket gives
ENDPOINT_NAME = "ModelServerEndpoint-Q1w2E3r4"  # what GetAtt ModelServerEndpoint.EndpointName gives
API_FUNCTIONS = ("GenerateFunction", "EditFunction", "ResponsesFunction", "WorkerFunction")
NO_VALUE = object()


@cache
def _template() -> dict:
    return Stack().template


class Rendered:
    """The template as deployed with ``parameters``: what a stack with them would hold."""

    def __init__(self, **parameters: str) -> None:
        self.template = _template()
        declared = self.template["Parameters"]
        unknown = set(parameters) - set(declared)
        assert not unknown, f"not template parameters: {unknown}"
        self.parameters = {name: str(parameters.get(name, spec.get("Default", ""))) for name, spec in declared.items()}
        self._stack = Stack(parameters=self.parameters)  # conditions: the local stack's own evaluator

    # -- conditions and intrinsic functions ---------------------------------------------------------------

    def condition(self, name: str) -> bool:
        return self._stack.condition(name)

    def ref(self, name: str):
        pseudo = {
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": REGION,
            "AWS::Partition": PARTITION,
            "AWS::StackName": STACK,
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            if self.template["Parameters"][name]["Type"] == "CommaDelimitedList":
                return self.parameters[name].split(",")
            return self.parameters[name]
        if name.endswith(".Alias"):  # SAM's AutoPublishAlias: the function's alias ARN
            return f"{STACK}-{name}"
        kind = self.template["Resources"][name]["Type"]
        return {
            "AWS::S3::Bucket": BUCKET,
            "AWS::SageMaker::Endpoint": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{ENDPOINT_NAME.lower()}",
            "AWS::ApplicationAutoScaling::ScalingPolicy": (
                f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:scalingPolicy:{name}"
            ),
        }.get(kind, f"{STACK}-{name}")

    def get_att(self, name: str, attribute: str) -> str:
        if (name, attribute) == ("ModelServerEndpoint", "EndpointName"):
            return ENDPOINT_NAME
        if (name, attribute) == ("ImagesBucket", "Arn"):
            return f"arn:aws:s3:::{BUCKET}"
        return f"{STACK}-{name}-{attribute}"

    def sub(self, text: str, variables: dict) -> str:
        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return self.get_att(*name.split(".", 1))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def value(self, expression):
        if isinstance(expression, list):
            return [item for item in (self.value(e) for e in expression) if item is not NO_VALUE]
        if not isinstance(expression, dict):
            return expression
        if len(expression) == 1:
            ((function, argument),) = expression.items()
            if function == "Ref":
                return self.ref(argument)
            if function == "Fn::If":
                name, when_true, when_false = argument
                return self.value(when_true if self.condition(name) else when_false)
            if function == "Fn::Join":
                return argument[0].join(self.value(argument[1]))
            if function == "Fn::Split":
                return self.value(argument[1]).split(argument[0])
            if function == "Fn::Select":
                return self.value(argument[1])[int(argument[0])]
            if function == "Fn::GetAtt":
                name, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self.get_att(name, attribute)
            if function == "Fn::Sub":
                text, variables = (argument, {}) if isinstance(argument, str) else argument
                return self.sub(text, {k: self.value(v) for k, v in variables.items()})
        evaluated = {key: self.value(item) for key, item in expression.items()}
        return {key: item for key, item in evaluated.items() if item is not NO_VALUE}

    # -- what the stack holds -----------------------------------------------------------------------------

    @property
    def resources(self) -> dict[str, dict]:
        return {
            name: {"Type": resource["Type"], "Properties": self.value(resource.get("Properties", {}))}
            for name, resource in self.template["Resources"].items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }

    def of_type(self, kind: str) -> dict[str, dict]:
        return {name: r["Properties"] for name, r in self.resources.items() if r["Type"] == kind}

    def function_environment(self, function: str) -> dict[str, str]:
        variables = dict(self.template["Globals"]["Function"]["Environment"]["Variables"])
        own = self.template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
        return self.value({**variables, **own})

    def function_policy_statements(self, function: str) -> list[dict]:
        """Every statement of the function's inline policies and of the managed policies it references."""
        statements, managed = [], self.of_type("AWS::IAM::ManagedPolicy")
        for policy in self.value(self.template["Resources"][function]["Properties"]["Policies"]):
            if isinstance(policy, dict):
                statements += policy["Statement"]
            elif policy in {self.ref(name) for name in managed}:
                name = next(n for n in managed if self.ref(n) == policy)
                statements += managed[name]["PolicyDocument"]["Statement"]
        return statements

    def failed_rules(self) -> list[str]:
        failed = []
        for name, rule in self.template.get("Rules", {}).items():
            if "RuleCondition" in rule and not self._stack.holds(rule["RuleCondition"]):
                continue
            failed += [name for assertion in rule["Assertions"] if not self._stack.holds(assertion["Assert"])]
        return failed

    @property
    def outputs(self) -> dict[str, str]:
        return {
            name: self.value(output["Value"])
            for name, output in self.template["Outputs"].items()
            if "Condition" not in output or self.condition(output["Condition"])
        }


def _statements(role: dict) -> list[dict]:
    return [statement for policy in role["Policies"] for statement in policy["PolicyDocument"]["Statement"]]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _model_server(mode: str = "realtime", data: str = ARCHIVE, **more: str) -> Rendered:
    return Rendered(ModelServerImageUri=IMAGE, ModelServerModelDataUrl=data, ModelServerMode=mode, **more)


SAGEMAKER_KINDS = (
    "AWS::SageMaker::Model",
    "AWS::SageMaker::EndpointConfig",
    "AWS::SageMaker::Endpoint",
    "AWS::ApplicationAutoScaling::ScalableTarget",
    "AWS::ApplicationAutoScaling::ScalingPolicy",
)


# -- nothing unless asked for ---------------------------------------------------------------------------------


def test_default_parameters_create_no_model_server_and_set_no_catalog_extra():
    stack = Rendered()
    kinds = {resource["Type"] for resource in stack.resources.values()}
    assert not kinds & set(SAGEMAKER_KINDS)
    assert not [name for name in stack.resources if name.startswith("ModelServer")]
    for function in stack.of_type("AWS::Serverless::Function"):
        assert "DARKROOM_CATALOG_EXTRA" not in stack.function_environment(function)
    assert "InferenceAccessPolicy" not in stack.resources  # as before: no remote backend, no policy
    assert not {"ModelServerEndpointName", "ModelServerModelId"} & set(stack.outputs)
    assert stack.failed_rules() == []


@pytest.mark.parametrize("parameters", [{"ModelServerImageUri": IMAGE}, {"ModelServerModelDataUrl": ARCHIVE}])
def test_an_image_without_model_data_or_the_reverse_is_refused_not_ignored(parameters):
    stack = Rendered(**parameters)
    assert stack.failed_rules()
    assert not {r["Type"] for r in stack.resources.values()} & set(SAGEMAKER_KINDS)


# -- real-time ------------------------------------------------------------------------------------------------


def test_realtime_creates_model_config_endpoint_and_role_without_async_or_scaling():
    stack = _model_server("realtime")
    for kind in SAGEMAKER_KINDS[:3]:
        assert len(stack.of_type(kind)) == 1, kind
    assert not stack.of_type("AWS::ApplicationAutoScaling::ScalableTarget")
    assert not stack.of_type("AWS::ApplicationAutoScaling::ScalingPolicy")
    assert "ModelServerBacklogWithoutCapacityAlarm" not in stack.resources

    (model,) = stack.of_type("AWS::SageMaker::Model").values()
    assert model["PrimaryContainer"]["Image"] == IMAGE
    assert model["ExecutionRoleArn"] == stack.get_att("ModelServerRole", "Arn")
    assert model["EnableNetworkIsolation"] is True  # weights come from /opt/ml/model only

    (config,) = stack.of_type("AWS::SageMaker::EndpointConfig").values()
    assert "AsyncInferenceConfig" not in config
    (variant,) = config["ProductionVariants"]
    assert variant["ModelName"] == stack.get_att("ModelServerModel", "ModelName")
    assert variant["InstanceType"] == "ml.g5.xlarge" and variant["InitialInstanceCount"] == 1
    # /ping waits for load and warm-up: both timeouts are raised within SageMaker's 60..3600
    for timeout in ("ContainerStartupHealthCheckTimeoutInSeconds", "ModelDataDownloadTimeoutInSeconds"):
        assert 600 <= variant[timeout] <= 3600

    (endpoint,) = stack.of_type("AWS::SageMaker::Endpoint").values()
    assert endpoint["EndpointConfigName"] == stack.get_att("ModelServerEndpointConfig", "EndpointConfigName")
    assert stack.outputs["ModelServerEndpointName"] == ENDPOINT_NAME
    assert stack.outputs["ModelServerModelId"] == "darkroom-diffusion"


@pytest.mark.parametrize("data,kind,compression", [(ARCHIVE, "S3Object", "Gzip"), (PREFIX, "S3Prefix", "None")])
def test_model_data_is_a_tarball_or_an_uncompressed_prefix(data, kind, compression):
    (model,) = _model_server(data=data).of_type("AWS::SageMaker::Model").values()
    source = model["PrimaryContainer"]["ModelDataSource"]["S3DataSource"]
    assert source == {"S3Uri": data, "S3DataType": kind, "CompressionType": compression}


# -- async ----------------------------------------------------------------------------------------------------


def test_async_writes_where_darkroom_reads_one_job_at_a_time():
    stack = _model_server("async")
    (config,) = stack.of_type("AWS::SageMaker::EndpointConfig").values()
    output = config["AsyncInferenceConfig"]["OutputConfig"]
    # exactly the prefixes darkroom.inference.sagemaker_async accepts, in the stack's images bucket
    assert output["S3OutputPath"] == f"s3://{BUCKET}/{sagemaker_async.PREFIX}output/"
    assert output["S3FailurePath"] == f"s3://{BUCKET}/{sagemaker_async.PREFIX}failure/"
    assert config["AsyncInferenceConfig"]["ClientConfig"] == {"MaxConcurrentInvocationsPerInstance": 1}


def test_async_scales_to_zero_and_back_from_zero_on_backlog_without_capacity():
    stack = _model_server("async", ModelServerMaxInstances="3")
    ((target_name, target),) = stack.of_type("AWS::ApplicationAutoScaling::ScalableTarget").items()
    (config,) = stack.of_type("AWS::SageMaker::EndpointConfig").values()
    (variant,) = config["ProductionVariants"]
    assert target["ServiceNamespace"] == "sagemaker"
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert target["ResourceId"] == f"endpoint/{ENDPOINT_NAME}/variant/{variant['VariantName']}"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, "3")

    policies = stack.of_type("AWS::ApplicationAutoScaling::ScalingPolicy")
    assert {p["ScalingTargetId"] for p in policies.values()} == {stack.ref(target_name)}
    (tracking,) = [p for p in policies.values() if p["PolicyType"] == "TargetTrackingScaling"]
    metric = tracking["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]
    assert (metric["Namespace"], metric["MetricName"]) == ("AWS/SageMaker", "ApproximateBacklogSizePerInstance")
    assert metric["Dimensions"] == [{"Name": "EndpointName", "Value": ENDPOINT_NAME}]

    ((step_name, step),) = [(n, p) for n, p in policies.items() if p["PolicyType"] == "StepScaling"]
    configuration = step["StepScalingPolicyConfiguration"]
    assert configuration["AdjustmentType"] == "ChangeInCapacity"
    assert configuration["StepAdjustments"] == [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]

    alarms = [
        a
        for a in stack.of_type("AWS::CloudWatch::Alarm").values()
        if a.get("MetricName") == "HasBacklogWithoutCapacity"
    ]
    assert len(alarms) == 1
    (alarm,) = alarms
    assert alarm["Namespace"] == "AWS/SageMaker"
    assert alarm["Dimensions"] == [{"Name": "EndpointName", "Value": ENDPOINT_NAME}]
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1
    assert alarm["AlarmActions"] == [stack.ref(step_name)]  # the alarm is what starts the first instance


# -- the SageMaker execution role -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["realtime", "async"])
@pytest.mark.parametrize("data", [ARCHIVE, PREFIX])
def test_execution_role_is_least_privilege(mode, data):
    stack = _model_server(mode, data=data)
    role = stack.resources["ModelServerRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"} and trust["Action"] == "sts:AssumeRole"

    statements = _statements(role)
    assert all(s["Effect"] == "Allow" for s in statements)
    by_action: dict[str, set[str]] = {}
    for statement in statements:
        for action in _as_list(statement["Action"]):
            assert "*" not in action, action
            by_action.setdefault(action, set()).update(_as_list(statement["Resource"]))
    # "*" only where the action has no resource-level permissions
    assert {a for a, resources in by_action.items() if "*" in resources} == {
        "ecr:GetAuthorizationToken",
        "cloudwatch:PutMetricData",
    }
    assert by_action["ecr:GetAuthorizationToken"] == {"*"}

    repository = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/darkroom-endpoint"
    for action in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"):
        assert by_action[action] == {repository, repository + "/*"}
    logs = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/*"
    assert {a for a in by_action if a.startswith("logs:")} == {
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:DescribeLogStreams",
    }
    assert all(by_action[a] == {logs} for a in by_action if a.startswith("logs:"))

    # S3: the model data, and in async mode exactly darkroom's request and answer prefixes
    model_data = {f"arn:aws:s3:::{data.removeprefix('s3://')}" + ("" if data == ARCHIVE else "*")}
    images = f"arn:aws:s3:::{BUCKET}/{sagemaker_async.PREFIX}"
    s3 = {a for a in by_action if a.startswith("s3:")}
    if mode == "async":
        assert by_action["s3:GetObject"] == model_data | {images + "input/*"}
        assert by_action["s3:PutObject"] == {images + "output/*", images + "failure/*"}
    else:
        assert by_action["s3:GetObject"] == model_data
        assert "s3:PutObject" not in s3
    if data == PREFIX:  # SageMaker lists the prefix to copy it; a tarball is one object
        assert by_action["s3:ListBucket"] == {"arn:aws:s3:::acme-models"}
    else:
        assert "s3:ListBucket" not in s3
    assert s3 <= {"s3:GetObject", "s3:PutObject", "s3:ListBucket"}


@pytest.mark.parametrize(
    "image,repository",
    [
        (
            f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/darkroom:latest",
            f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/darkroom",
        ),
        (
            f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/darkroom@sha256:{'a' * 64}",
            f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/darkroom",
        ),
        (
            f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/team/darkroom:2",
            f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/team",
        ),
    ],
)
def test_image_pull_is_limited_to_the_images_repository(image, repository):
    stack = Rendered(ModelServerImageUri=image, ModelServerModelDataUrl=ARCHIVE)
    pull = next(
        s
        for s in _statements(stack.resources["ModelServerRole"]["Properties"])
        if "ecr:BatchGetImage" in _as_list(s["Action"])
    )
    assert set(pull["Resource"]) == {repository, repository + "/*"}  # team/* covers team/darkroom
    assert re.match(stack.template["Parameters"]["ModelServerImageUri"]["AllowedPattern"], image)


# -- what darkroom's functions may call -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode,action", [("realtime", "sagemaker:InvokeEndpoint"), ("async", "sagemaker:InvokeEndpointAsync")]
)
def test_functions_may_invoke_the_new_endpoint_and_only_async_gets_the_s3_prefix(mode, action):
    stack = _model_server(mode)
    endpoint_arn = stack.ref("ModelServerEndpoint")
    for function in API_FUNCTIONS:
        statements = stack.function_policy_statements(function)
        invoke = [s for s in statements if endpoint_arn in _as_list(s["Resource"])]
        assert [_as_list(s["Action"]) for s in invoke] == [[action]], function
        async_objects = [s for s in statements if any("async-inference" in str(r) for r in _as_list(s["Resource"]))]
        assert bool(async_objects) == (mode == "async"), function
    for function in ("ModelsFunction", "UsageFunction", "ConsoleFunction", "FilesFunction"):  # no inference
        assert not any(endpoint_arn in _as_list(s["Resource"]) for s in stack.function_policy_statements(function))


def test_existing_sagemaker_endpoint_arns_still_get_their_grants_next_to_the_model_server():
    other = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/sdxl-inpaint"
    stack = _model_server("realtime", SageMakerEndpointArns=other)
    statements = stack.function_policy_statements("GenerateFunction")
    assert any(other in _as_list(s["Resource"]) for s in statements)
    assert any(stack.ref("ModelServerEndpoint") in _as_list(s["Resource"]) for s in statements)
    assert any("async-inference" in str(s["Resource"]) for s in statements)  # as before for listed endpoints


# -- the catalog entry reaches every function -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["realtime", "async"])
def test_catalog_extra_is_one_valid_entry_routed_to_the_sagemaker_backend(mode):
    from darkroom.inference import backend_for

    stack = _model_server(
        mode,
        ModelServerModelId="acme-sdxl",
        ModelServerSizes="1024x1024,768x1344",
        ModelServerMaxImages="2",
        ModelServerCapabilities="generate,edit,analyze",
    )
    values = {
        stack.function_environment(f)["DARKROOM_CATALOG_EXTRA"] for f in stack.of_type("AWS::Serverless::Function")
    }
    assert len(values) == 1  # the same entry for every function
    (extra,) = values
    assert list(json.loads(extra)) == ["acme-sdxl"]

    catalog = parse_catalog(BUNDLED_CATALOG.read_text(encoding="utf-8"), extra)
    entry = catalog.models["acme-sdxl"]
    assert set(catalog.models) == {"acme-sdxl", *json.loads(BUNDLED_CATALOG.read_text())["models"]}
    assert entry.backend == "sagemaker" and type(backend_for(entry)).__name__ == "SageMakerBackend"
    assert entry.endpoint.endpoint_name == ENDPOINT_NAME
    assert entry.endpoint.async_inference is (mode == "async")
    assert entry.capabilities == {Capability.GENERATE, Capability.EDIT, Capability.ANALYZE}
    assert entry.sizes == ("1024x1024", "768x1344") and entry.default_size == "1024x1024"
    assert entry.max_n == 2
    assert catalog.resolve("acme-sdxl", Capability.GENERATE) is entry


def test_catalog_extra_with_default_parameters_is_a_valid_image_model():
    stack = _model_server()
    extra = stack.function_environment("GenerateFunction")["DARKROOM_CATALOG_EXTRA"]
    entry = parse_catalog(BUNDLED_CATALOG.read_text(encoding="utf-8"), extra).models["darkroom-diffusion"]
    assert entry.capabilities == {Capability.GENERATE, Capability.EDIT}
    assert entry.default_size == "1024x1024" and entry.max_n == 4
    assert set(entry.passthrough) <= {"negative_prompt", "steps", "guidance", "seed"}  # the contract's keys


def test_a_measured_seconds_per_image_reaches_the_catalog_and_refuses_long_synchronous_requests():
    stack = _model_server(ModelServerSecondsPerImage="5,8.5,13")
    extra = stack.function_environment("GenerateFunction")["DARKROOM_CATALOG_EXTRA"]
    entry = parse_catalog(BUNDLED_CATALOG.read_text(encoding="utf-8"), extra).models["darkroom-diffusion"]
    assert entry.seconds_per_image == {"low": 5, "medium": 8.5, "high": 13}
    assert entry.expected_seconds("medium", 1024, 1024, 4) == 34  # over the synchronous budget: background mode
    assert (
        "seconds_per_image"
        not in json.loads(_model_server().function_environment("GenerateFunction")["DARKROOM_CATALOG_EXTRA"])[
            "darkroom-diffusion"
        ]
    )


@pytest.mark.parametrize(
    "parameter,accepted,refused",
    [
        ("ModelServerSecondsPerImage", ["", "5,8,13", "0.5,1.25,2"], ["05,8,13", "5,8", "5;8;13", "1e3,1,1"]),
        ("ModelServerSizes", ["1024x1024", "1024x1024,768x1344"], ["", "1024", "1024x1024,", "1024*1024"]),
        ("ModelServerCapabilities", ["generate", "generate,edit,analyze,text"], ["", "draw", "generate,"]),
        ("ModelServerModelId", ["darkroom-diffusion", "acme.sdxl_2"], ["", "Darkroom", 'a"b', "-x"]),
        (
            "ModelServerModelDataUrl",
            ["", ARCHIVE, PREFIX],
            ["s3://acme-models/", "s3://acme-models/flux", "https://x/"],
        ),
    ],
)
def test_parameter_patterns_admit_only_values_the_catalog_json_and_sagemaker_can_take(parameter, accepted, refused):
    pattern = re.compile(_template()["Parameters"][parameter]["AllowedPattern"])
    assert all(pattern.fullmatch(value) for value in accepted)
    assert not any(pattern.fullmatch(value) for value in refused)
