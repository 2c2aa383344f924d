"""The API's Lambda REQUEST authorizer, run the way API Gateway runs it.

- The identity source first: a request without one of its headers (or with an empty one) is answered
  ``UNAUTHORIZED`` and the authorizer is not called
  (https://docs.aws.amazon.com/apigateway/latest/api/API_CreateAuthorizer.html, ``identitySource``).
- Its result is cached per identity (the headers' values) for ``ReauthorizeEvery`` seconds, and a cached
  policy is evaluated against each later request's method ARN, whatever route that is: a policy for one
  method only would refuse the next route, as it does on AWS
  (https://repost.aws/knowledge-center/api-gateway-lambda-authorization-errors).
- A request the policy does not allow is ``ACCESS_DENIED``; an authorizer that crashes, times out or answers
  without a principal or policy is ``AUTHORIZER_FAILURE`` / ``AUTHORIZER_CONFIGURATION_ERROR``.
- What it returns reaches the function as ``requestContext.authorizer`` (``principalId``, the ``context`` keys,
  ``integrationLatency``) and the access log as ``$context.authorizer.*``.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable
from typing import Any

from darkroom.local.events import Event, ProxyEvent, Result
from darkroom.local.template import Authorizer

# (function logical id, event) -> its result, None when it failed; raises TimeoutError
Invoke = Callable[[str, Event], Result | None]


def method_arn(region: str, event: ProxyEvent) -> str:
    """``arn:aws:execute-api:region:account:api/stage/METHOD/path`` of a proxy event's request."""
    context = event["requestContext"]
    return (
        f"arn:aws:execute-api:{region}:{context['accountId']}:{context['apiId']}/{context['stage']}/"
        f"{event['httpMethod']}{event['path']}"
    )


def authorizer_event(region: str, event: ProxyEvent) -> dict[str, object]:
    """The REQUEST authorizer's event for a proxy event: its request without the body, and the method ARN."""
    request = {name: value for name, value in event.items() if name not in ("body", "isBase64Encoded")}
    return {"type": "REQUEST", "methodArn": method_arn(region, event), **request}


def _allows(policy: dict[str, Any], arn: str) -> bool:
    """IAM's rule, for the statements an authorizer returns: some Allow matches and no Deny does."""
    statements = policy.get("Statement", [])
    statements = [statements] if isinstance(statements, dict) else statements

    def matching(effect: str) -> bool:
        for statement in statements:
            if statement.get("Effect") != effect:
                continue
            resources = statement.get("Resource", [])
            for resource in [resources] if isinstance(resources, str) else resources:
                if fnmatch.fnmatchcase(arn, resource):
                    return True
        return False

    return matching("Allow") and not matching("Deny")


class LocalAuthorizer:
    """One authorizer of the API with API Gateway's result cache (one per authorizer, per identity)."""

    def __init__(
        self, spec: Authorizer, invoke: Invoke, region: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.spec = spec
        self._invoke = invoke
        self._region = region
        self._clock = clock
        self._cache: dict[tuple[str, ...], tuple[float, Result]] = {}
        self._lock = threading.Lock()

    def authorize(self, event: ProxyEvent) -> tuple[str | None, dict[str, object]]:
        """(the gateway response kind that refuses the request, or None; ``requestContext.authorizer``)."""
        headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
        identity = tuple(headers.get(name.lower(), "") for name in self.spec.identity_headers)
        if not all(value.strip() for value in identity):
            return "UNAUTHORIZED", {}
        now = self._clock()
        with self._lock:
            cached = self._cache.get(identity)
        latency = 0
        if cached and cached[0] > now:
            result = cached[1]
        else:
            started = time.monotonic()
            try:
                answer = self._invoke(self.spec.function, authorizer_event(self._region, event))
            except TimeoutError:
                answer = None
            latency = round((time.monotonic() - started) * 1000)
            if answer is None:
                return "AUTHORIZER_FAILURE", {}
            if not answer.get("principalId") or not isinstance(answer.get("policyDocument"), dict):
                return "AUTHORIZER_CONFIGURATION_ERROR", {}
            result = answer
            if self.spec.ttl_seconds > 0:
                with self._lock:
                    if len(self._cache) > 10_000:
                        self._cache.clear()
                    self._cache[identity] = (now + self.spec.ttl_seconds, result)
        context = {"principalId": result["principalId"], **(result.get("context") or {}), "integrationLatency": latency}
        if not _allows(result["policyDocument"], method_arn(self._region, event)):
            return "ACCESS_DENIED", context
        return None, context
