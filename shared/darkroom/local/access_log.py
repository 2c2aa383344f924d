"""The API's access log, locally: one line per request, rendered from template.yaml's own ``AccessLogSetting``
``Format``, so the test of that format covers the local line and the deployed one alike.

API Gateway fills ``$context`` variables; :class:`GatewayRequest` holds the ones the local gateway knows, and a
variable it does not know (or one without a value) is ``-``, as API Gateway writes a missing value
(https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-variables-for-access-logging.html).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

_VARIABLE = re.compile(r"\$context\.([A-Za-z0-9_.]+)")
MISSING = "-"


def render(format_: str, variables: Mapping[str, object]) -> str:
    """``format_`` with each ``$context.NAME`` replaced by ``variables[NAME]`` (``-`` when absent or empty),
    escaped as JSON string content: the Format quotes its values, so a value cannot break the line's JSON."""

    def value(match: re.Match[str]) -> str:
        found = variables.get(match.group(1))
        text = MISSING if found is None or found == "" else str(found)
        return json.dumps(text)[1:-1]

    return _VARIABLE.sub(value, format_)


@dataclass
class GatewayRequest:
    """What the local gateway learns about one request as it handles it: the access log's ``$context``."""

    http_method: str
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    resource_path: str | None = None  # the matched route's resource path; None: no route matched
    authorizer: dict[str, object] = field(default_factory=dict)  # principalId and the authorizer's context
    caller: str | None = None  # an AWS_IAM route's authenticated IAM principal (``identity.userArn``)
    integration_latency_ms: int | None = None  # None: the function was never invoked
    started: float = field(default_factory=time.monotonic)

    def variables(self, status: int, response_length: int) -> dict[str, object]:
        """The ``$context`` variables of this request once answered with ``status`` and a body of that length."""
        variables: dict[str, object] = {
            "extendedRequestId": self.request_id,
            "httpMethod": self.http_method,
            "resourcePath": self.resource_path,
            "status": status,
            "responseLength": response_length,
            "responseLatency": round((time.monotonic() - self.started) * 1000),
            "integrationLatency": self.integration_latency_ms,
            "identity.userArn": self.caller,
        }
        variables.update({f"authorizer.{name}": value for name, value in self.authorizer.items()})
        return variables
