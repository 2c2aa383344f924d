"""Reading ``template.yaml``: resources, functions, routes and their environment, for the local stack.

The local stack and the tests build everything from these definitions, so they cannot drift from the
deployed stack. Intrinsic-function tags are parsed by cfn-lint's CloudFormation YAML loader.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

# A node of the parsed template: mappings, lists and scalars as the YAML has them (cfn-lint's loader is untyped).
Node = Any
# What a condition expression evaluates to: a condition, a resolved value, or a list of them (Fn::Split).
ConditionValue = bool | str | list["ConditionValue"] | None

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_TEMPLATE = PROJECT_ROOT / "template.yaml"
LOCAL_ACCOUNT_ID = "123456789012"  # moto's default account
# Default statuses of the gateway response types the local stack answers with, where the template sets none.
_GATEWAY_STATUS = {
    "UNAUTHORIZED": 401,
    "ACCESS_DENIED": 403,
    "INVALID_SIGNATURE": 403,
    "MISSING_AUTHENTICATION_TOKEN": 403,
    "REQUEST_TOO_LARGE": 413,
    "THROTTLED": 429,
    "INTEGRATION_FAILURE": 504,
    "INTEGRATION_TIMEOUT": 504,
}
# API Gateway's default integration timeout (TimeoutInMillis), and its longest for a STREAM integration:
# https://docs.aws.amazon.com/apigateway/latest/developerguide/response-transfer-mode.html
INTEGRATION_TIMEOUT_SECONDS = 29.0
IAM = "AWS_IAM"  # a route's Auth.Authorizer for IAM authorization (SigV4): darkroom.local.sigv4
# A function whose Handler is a script (run.sh) runs under the Lambda Web Adapter; the script names the Python
# handler it serves (``python3 -m darkroom.api.lwa app.lambda_handler``), which the local stack runs directly.
_LWA_HANDLER = re.compile(r"-m\s+darkroom\.api\.lwa(?:\s+([\w.]+))?")


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # API Gateway resource path, e.g. /v1/models/{model}
    function: str  # logical id
    authorizer: str | None = None  # the name of the API's authorizer that runs first; None: Authorizer NONE
    # ResponseTransferMode: RESPONSE_STREAM (an integration with responseTransferMode STREAM): the answer is sent
    # as the function writes it (darkroom.api.event_stream)
    streaming: bool = False
    timeout_seconds: float = INTEGRATION_TIMEOUT_SECONDS  # the integration's TimeoutInMillis


@dataclass(frozen=True)
class Authorizer:
    """A Lambda REQUEST authorizer of the API (``Auth.Authorizers``): its function, identity headers, result TTL."""

    name: str
    function: str  # logical id
    identity_headers: tuple[str, ...]
    ttl_seconds: int  # Identity.ReauthorizeEvery; 0: no caching


@dataclass(frozen=True)
class QueueSource:
    """An SQS event source: ``function`` receives batches of up to ``batch_size`` messages from ``queue``."""

    function: str  # logical id
    queue: str  # logical id of the AWS::SQS::Queue
    batch_size: int


@dataclass(frozen=True)
class Function:
    logical_id: str
    code_dir: Path
    module: str
    attribute: str
    memory_mb: int
    timeout_seconds: int


class Stack:
    """A parsed template plus the physical names its resources get in one local deployment."""

    def __init__(
        self,
        path: Path = DEFAULT_TEMPLATE,
        prefix: str = "darkroom-local",
        parameters: dict[str, str] | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.path = path
        self.template: dict[str, Node] = cfn_yaml.load(str(path))
        self.prefix = prefix
        self.region = region
        self._parameters = parameters or {}

    @property
    def resources(self) -> dict[str, Node]:
        resources: dict[str, Node] = self.template["Resources"]
        return resources

    def of_type(self, kind: str) -> dict[str, dict[str, Node]]:
        return {name: r.get("Properties", {}) for name, r in self.resources.items() if r["Type"] == kind}

    def physical_name(self, logical_id: str) -> str:
        return f"{self.prefix}-{logical_id}".lower()

    def parameter(self, name: str) -> str:
        if name in self._parameters:
            return self._parameters[name]
        return str(self.template["Parameters"][name].get("Default", ""))

    def resolve(self, value: Node) -> str | None:
        """Resolve ``Ref`` to parameters and resource names, and ``Fn::If`` by its condition (``None`` for
        ``AWS::NoValue``); other intrinsics are not needed locally."""
        if isinstance(value, dict) and set(value) == {"Fn::If"}:
            name, when_true, when_false = value["Fn::If"]
            return self.resolve(when_true if self.condition(str(name)) else when_false)
        if isinstance(value, dict) and set(value) == {"Ref"}:
            name = value["Ref"]
            if name == "AWS::NoValue":
                return None
            if name == "AWS::Region":
                return self.region
            if name in self.template.get("Parameters", {}):
                return self.parameter(name)
            if name in self.resources:
                if self.resources[name]["Type"] == "AWS::SQS::Queue":
                    return self.queue_url(str(name))
                return self.physical_name(str(name))
            raise KeyError(f"unresolvable Ref {name!r} in {self.path.name}")
        if isinstance(value, dict):
            raise ValueError(f"the local stack cannot resolve {dict(value)!r}")
        return str(value)

    def condition(self, name: str) -> bool:
        """A template condition, evaluated with this stack's parameters."""
        return self.holds(self.template["Conditions"][name])

    def holds(self, expression: Node) -> bool:
        """A condition expression (a condition's body, a rule's ``RuleCondition`` or ``Assert``)."""
        return bool(self._condition_value(expression))

    def _condition_value(self, value: Node) -> ConditionValue:
        """The condition functions, and what they compare (``Ref``, ``Fn::Join``/``Split``/``Select``), with this
        stack's parameters."""
        if isinstance(value, dict) and len(value) == 1:
            ((function, argument),) = value.items()
            if function == "Condition":
                return self.condition(str(argument))
            if function == "Fn::Not":
                return not self._condition_value(argument[0])
            if function == "Fn::And":
                return all(self._condition_value(item) for item in argument)
            if function == "Fn::Or":
                return any(self._condition_value(item) for item in argument)
            if function == "Fn::Equals":
                left, right = (self._condition_value(item) for item in argument)
                return str(left) == str(right)
            if function == "Fn::Join":
                return str(argument[0]).join(map(str, _items(self._condition_value(argument[1]))))
            if function == "Fn::Split":
                return [*str(self._condition_value(argument[1])).split(str(argument[0]))]
            if function == "Fn::Select":
                return _items(self._condition_value(argument[1]))[int(argument[0])]
        if isinstance(value, list):
            return [self._condition_value(item) for item in value]
        return self.resolve(value)

    def queue_url(self, logical_id: str) -> str:
        """The queue's URL as the SQS API of this process's endpoint (moto's account) names it."""
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or f"https://sqs.{self.region}.amazonaws.com"
        return f"{endpoint.rstrip('/')}/{LOCAL_ACCOUNT_ID}/{self.physical_name(logical_id)}"

    def queue_sources(self) -> list[QueueSource]:
        sources = []
        for logical_id, props in self.of_type("AWS::Serverless::Function").items():
            for event in props.get("Events", {}).values():
                if event["Type"] == "SQS":
                    queue = event["Properties"]["Queue"]
                    attribute = queue["Fn::GetAtt"] if isinstance(queue, dict) else str(queue)
                    name = attribute[0] if isinstance(attribute, list) else str(attribute).split(".")[0]
                    sources.append(
                        QueueSource(str(logical_id), str(name), int(event["Properties"].get("BatchSize", 10)))
                    )
        return sources

    def _function_property(self, props: dict[str, Node], name: str, default: int) -> Node:
        globals_ = self.template.get("Globals", {}).get("Function", {})
        return props.get(name, globals_.get(name, default))

    def functions(self) -> list[Function]:
        functions = []
        for logical_id, props in self.of_type("AWS::Serverless::Function").items():
            code_dir = (self.path.parent / str(props["CodeUri"])).resolve()
            module, _, attribute = _python_handler(code_dir, str(props["Handler"])).rpartition(".")
            functions.append(
                Function(
                    logical_id=str(logical_id),
                    code_dir=code_dir,
                    module=str(module),
                    attribute=str(attribute),
                    memory_mb=int(self._function_property(props, "MemorySize", 128)),
                    timeout_seconds=int(self._function_property(props, "Timeout", 3)),
                )
            )
        return functions

    def routes(self) -> list[Route]:
        default = self._api().get("Auth", {}).get("DefaultAuthorizer")
        routes = []
        for logical_id, props in self.of_type("AWS::Serverless::Function").items():
            for event in props.get("Events", {}).values():
                if event["Type"] == "Api":
                    properties = event["Properties"]
                    authorizer = properties.get("Auth", {}).get("Authorizer", default)
                    timeout = properties.get("TimeoutInMillis")
                    routes.append(
                        Route(
                            str(properties["Method"]).upper(),
                            str(properties["Path"]),
                            str(logical_id),
                            None if authorizer in (None, "NONE") else str(authorizer),
                            streaming=properties.get("ResponseTransferMode") == "RESPONSE_STREAM",
                            timeout_seconds=INTEGRATION_TIMEOUT_SECONDS if timeout is None else int(timeout) / 1000,
                        )
                    )
        return routes

    def authorizers(self) -> dict[str, Authorizer]:
        """The API's Lambda REQUEST authorizers by name (``FunctionArn``: ``!Ref X.Alias``, the alias SAM publishes,
        or ``!GetAtt X.Arn``, names the function X)."""
        found = {}
        for name, spec in self._api().get("Auth", {}).get("Authorizers", {}).items():
            if spec.get("FunctionPayloadType") != "REQUEST":
                raise ValueError(f"the local stack runs REQUEST authorizers only, not {name}")
            identity = spec.get("Identity", {})
            ttl = self.resolve(identity.get("ReauthorizeEvery", 300))
            found[str(name)] = Authorizer(
                name=str(name),
                function=_function_of(spec["FunctionArn"]),
                identity_headers=tuple(str(h) for h in identity.get("Headers", [])),
                ttl_seconds=300 if ttl is None else int(ttl),  # AWS::NoValue: API Gateway's default
            )
        return found

    def access_log_format(self) -> str | None:
        """The stage's access log Format (``AccessLogSetting``), or None without one."""
        setting = self._api().get("AccessLogSetting")
        return str(setting["Format"]) if setting else None

    def _api(self) -> dict[str, Node]:
        return next(iter(self.of_type("AWS::Serverless::Api").values()))

    def environment(self, logical_id: str) -> dict[str, str]:
        """The function's environment variables (Globals merged with its own), resolved."""
        globals_ = self.template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        own = self.resources[logical_id].get("Properties", {}).get("Environment", {}).get("Variables", {})
        resolved = {str(name): self.resolve(value) for name, value in {**globals_, **own}.items()}
        return {name: value for name, value in resolved.items() if value is not None}  # AWS::NoValue: unset

    def gateway_response(self, kind: str, message: str = "Gateway error.") -> tuple[int, str]:
        """(status, JSON body) of the API's gateway response ``kind``, falling back to DEFAULT_4XX/5XX, with
        ``message`` as ``$context.error.messageString``."""
        responses = self._api().get("GatewayResponses", {})
        server_side = kind == "DEFAULT_5XX" or kind.startswith(("INTEGRATION", "AUTHORIZER"))
        configured = responses.get(kind) or responses["DEFAULT_5XX" if server_side else "DEFAULT_4XX"]
        # A type without a response of its own keeps its own status (API Gateway's defaults), with DEFAULT_*'s body.
        default = _GATEWAY_STATUS.get(kind, 500 if server_side else 400)
        status = int(configured.get("StatusCode", default) if kind in responses else default)
        body = configured["ResponseTemplates"]["application/json"]
        return status, body.replace("$context.error.messageString", json.dumps(message))

    def binary_media_types(self) -> list[str]:
        api = next(iter(self.of_type("AWS::Serverless::Api").values()))
        return [str(t) for t in api.get("BinaryMediaTypes", [])]


def _python_handler(code_dir: Path, handler: str) -> str:
    """The ``module.attribute`` a function runs: its Handler, or, for a Lambda Web Adapter script, the one the
    script serves."""
    if not handler.endswith(".sh"):
        return handler
    found = _LWA_HANDLER.search((code_dir / handler).read_text())
    if found is None:
        raise ValueError(f"{code_dir / handler} does not start darkroom.api.lwa")
    return found[1] or "app.lambda_handler"


def _items(value: ConditionValue) -> list[ConditionValue]:
    """A list operand: a list, or a CommaDelimitedList parameter (its comma-separated text here)."""
    if isinstance(value, str):
        return [*value.split(",")]
    if isinstance(value, list):
        return value
    raise ValueError(f"the local stack expected a list, not {value!r}")


def _function_of(arn: Node) -> str:
    """The function an ARN reference names: ``{"Ref": "X.Alias"}`` or ``{"Fn::GetAtt": ["X", "Arn"]}``."""
    if isinstance(arn, dict) and "Ref" in arn:
        return str(arn["Ref"]).split(".", 1)[0]
    if isinstance(arn, dict) and "Fn::GetAtt" in arn:
        return str(arn["Fn::GetAtt"][0])
    raise ValueError(f"an authorizer's FunctionArn must reference a function of the template, not {arn!r}")
