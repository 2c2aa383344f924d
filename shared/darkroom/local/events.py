"""The shapes the local gateway hands to functions: API Gateway REST proxy events, and what a function answers.

The event is the one :class:`~darkroom.local.bridge.LocalApi` builds for each routed request (the fields of
API Gateway's Lambda proxy integration input format); an authorizer sees it too, before the function does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

# What a function is invoked with: a proxy event, an authorizer's event, a batch of SQS records.
Event = Mapping[str, object]
# What a handler returns, as JSON: a proxy response, an authorizer's policy, a batch's failures.
Result = dict[str, Any]


class Identity(TypedDict):
    sourceIp: str
    userAgent: str | None
    # An AWS_IAM route's caller (darkroom.local.sigv4.verify), as API Gateway passes an authenticated IAM caller.
    userArn: NotRequired[str]
    caller: NotRequired[str]
    accessKey: NotRequired[str]
    accountId: NotRequired[str]


class RequestContext(TypedDict):
    resourcePath: str
    httpMethod: str
    path: str
    stage: str
    requestId: str
    accountId: str
    extendedRequestId: str
    apiId: str
    protocol: str
    domainName: str
    requestTime: str
    requestTimeEpoch: int
    identity: Identity
    authorizer: NotRequired[dict[str, object]]  # principalId, the authorizer's context, integrationLatency


class ProxyEvent(TypedDict):
    resource: str
    path: str
    httpMethod: str
    headers: dict[str, str] | None
    multiValueHeaders: dict[str, list[str]] | None
    queryStringParameters: dict[str, str] | None
    multiValueQueryStringParameters: dict[str, list[str]] | None
    pathParameters: dict[str, str] | None
    stageVariables: None
    requestContext: RequestContext
    body: str | None
    isBase64Encoded: bool
