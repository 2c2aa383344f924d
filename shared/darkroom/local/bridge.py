"""HTTP requests -> API Gateway REST proxy events -> the template's Lambda handlers, in worker processes.

Each function gets a pool of "containers" (worker processes that imported its handler, with Lambda's init
rules: :mod:`darkroom.local.containers`), one request at a time each, as Lambda runs them; concurrent requests
get concurrent containers. The
gateway's own limits are applied the way API Gateway and Lambda apply them: 10 MB request bodies,
6 MB Lambda payloads each way, answered with the template's gateway responses. The HTTP/1.1 server in
front of it is :mod:`darkroom.local.http_server`.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

from darkroom.local import sigv4
from darkroom.local.access_log import GatewayRequest, render
from darkroom.local.authorizer import LocalAuthorizer
from darkroom.local.containers import Container, Pool
from darkroom.local.events import Event, ProxyEvent, Result
from darkroom.local.template import IAM, QueueSource, Route, Stack

API_GATEWAY_MAX_BODY = 10 * 1024 * 1024
LAMBDA_MAX_PAYLOAD = 6 * 1024 * 1024
# A streamed answer's idle timeout at a regional endpoint: https://docs.aws.amazon.com/apigateway/latest/
# developerguide/response-transfer-mode.html
STREAM_IDLE_SECONDS = 300.0
logger = logging.getLogger("darkroom.local")


class StreamedBody:
    """The chunks of a STREAM route's answer, read from its container as the function makes them (``read``
    blocks: call it from a thread of its own). Its end gives the container back and sets the access-log line."""

    def __init__(self, container: Container, release: Callable[[], None], deadline: float) -> None:
        self._container = container
        self._release = release
        self._deadline = deadline  # the integration's timeout, on the monotonic clock
        self.length = 0
        self.on_end: Callable[[int], None] | None = None
        self._ended = False

    def read(self) -> bytes | None:
        """The next chunk; None at the end (the function's, the integration timeout's, or after :meth:`close`)."""
        if self._ended:
            return None
        try:
            chunk = self._container.next_chunk(min(STREAM_IDLE_SECONDS, self._deadline - time.monotonic()))
        except TimeoutError:  # the environment is discarded, as Lambda discards a timed-out one
            chunk = None
        if chunk is None:
            self._ended = True
            self._release()
            if self.on_end is not None:
                self.on_end(self.length)
        else:
            self.length += len(chunk)
        return chunk

    def close(self) -> None:
        """The client went away: the function's producer is closed before its next chunk (read on to the end)."""
        self._container.close_stream()


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    access_log: str = ""  # the request's line in the template's access log Format (set by LocalApi.handle)
    stream: StreamedBody | None = None  # a STREAM route's chunks, sent after the head (``body`` is empty then)


def _route_pattern(path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", path)
    regex = "".join(
        f"(?P<{p[1:-1].rstrip('+')}>.+)"
        if p.endswith("+}")
        else f"(?P<{p[1:-1]}>[^/]+)"
        if p.startswith("{")
        else re.escape(p)
        for p in parts
    )
    return re.compile(f"^{regex}$")


class LocalApi:
    """Dispatches HTTP requests to the stack's functions as API Gateway would, and SQS messages to the
    functions with queue event sources as Lambda's event source mappings would."""

    def __init__(
        self, stack: Stack, environment: dict[str, str], stage: str = "local", containers_per_function: int = 4
    ) -> None:
        self.stack = stack
        self.stage = stage
        self._routes = [(r, _route_pattern(r.path)) for r in stack.routes()]
        self._pools = {f.logical_id: Pool(f, environment, containers_per_function) for f in stack.functions()}
        self._binary_types = stack.binary_media_types()
        self._authorizers = {
            name: LocalAuthorizer(spec, self._invoke, stack.region) for name, spec in stack.authorizers().items()
        }
        self._access_log_format = stack.access_log_format()
        # AWS_IAM routes: the access keys whose signatures are accepted, and the region they sign for.
        credentials = {environment.get("AWS_ACCESS_KEY_ID", ""): environment.get("AWS_SECRET_ACCESS_KEY", "")}
        self._iam = ({k: v for k, v in credentials.items() if k and v}, stack.region)
        self._containers_per_function = containers_per_function
        self._stopping = threading.Event()
        self._pollers: list[threading.Thread] = []

    # ``sqs``: a boto3 SQS client (untyped: only boto3-stubs' base package is installed).
    def start_queue_pollers(self, sqs: Any) -> None:
        """One thread per SQS event source: receive, invoke the function, delete what it did not report failed."""
        for source in self.stack.queue_sources():
            url = self.stack.queue_url(source.queue)
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            thread = threading.Thread(
                target=self._poll, args=(sqs, source, url, arn), daemon=True, name=f"darkroom-sqs-{source.queue}"
            )
            thread.start()
            self._pollers.append(thread)

    def _poll(self, sqs: Any, source: QueueSource, url: str, arn: str) -> None:
        slots = threading.Semaphore(self._containers_per_function)
        while not self._stopping.is_set():
            if not slots.acquire(timeout=0.5):
                continue
            try:
                # No long polling: the embedded moto serializes every call, so a waiting receive would stall all.
                messages = sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=source.batch_size, AttributeNames=["All"]
                ).get("Messages", [])
            except Exception:  # noqa: BLE001 - the stack is stopping, or moto hiccuped: try again
                messages = []
            if not messages:
                slots.release()
                self._stopping.wait(0.2)
                continue

            def deliver(batch: list[dict[str, Any]]) -> None:
                try:
                    self._deliver(sqs, source, url, arn, batch)
                finally:
                    slots.release()

            threading.Thread(target=deliver, args=(messages,), daemon=True).start()

    def _deliver(self, sqs: Any, source: QueueSource, url: str, arn: str, messages: list[dict[str, Any]]) -> None:
        event = {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": {},
                    "md5OfBody": m.get("MD5OfBody", ""),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": self.stack.region,
                }
                for m in messages
            ]
        }
        try:
            result = self._invoke(source.function, event)
        except TimeoutError:
            result = None
        if result is None:  # crashed or timed out: every message comes back after its visibility timeout
            return
        failed = {f.get("itemIdentifier") for f in (result or {}).get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def gateway_response(self, kind: str, message: str = "Gateway error.") -> HttpResponse:
        """The template's gateway response of ``kind`` (e.g. ``REQUEST_TOO_LARGE``), as API Gateway sends it, with
        ``message`` as its ``$context.error.messageString``."""
        status, body = self.stack.gateway_response(kind, message)
        return HttpResponse(status, [("content-type", "application/json")], body.encode())

    def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str = "127.0.0.1"
    ) -> HttpResponse:
        """The request answered as API Gateway would, with its access-log line in the template's Format."""
        request = GatewayRequest(http_method=method)
        response = self._handle(method, target, headers, body, source_ip, request)
        log_format = self._access_log_format
        if log_format:

            def log(length: int) -> None:
                response.access_log = render(log_format, request.variables(response.status, length))

            if response.stream is None:
                log(len(response.body))
            else:  # once the stream has ended: its length is known then
                response.stream.on_end = log
        return response

    def _handle(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
        request: GatewayRequest,
    ) -> HttpResponse:
        url = urlsplit(target)
        if len(body) > API_GATEWAY_MAX_BODY:
            return self.gateway_response("REQUEST_TOO_LARGE")
        matched = None
        for route, pattern in self._routes:
            found = pattern.match(url.path)
            if found and route.method in (method, "ANY"):
                matched = (route, found.groupdict())
                break
        if matched is None:
            return self.gateway_response("MISSING_AUTHENTICATION_TOKEN")
        route, path_parameters = matched
        request.resource_path = route.path
        event = self._event(method, url, route, path_parameters, headers, body, source_ip)
        request.request_id = event["requestContext"]["extendedRequestId"]
        refused = self._authorize(route, event, target, headers, body, request)
        if refused is not None:
            return refused
        if len(json.dumps(event)) > LAMBDA_MAX_PAYLOAD:
            return self.gateway_response("REQUEST_TOO_LARGE")
        if route.streaming:
            return self._stream(route, event, request)
        started = time.monotonic()
        try:
            result = self._invoke(route.function, event, route.timeout_seconds)
        except TimeoutError:
            return self.gateway_response("INTEGRATION_TIMEOUT")
        finally:
            request.integration_latency_ms = round((time.monotonic() - started) * 1000)
        if result is None or len(json.dumps(result)) > LAMBDA_MAX_PAYLOAD:
            return self.gateway_response("INTEGRATION_FAILURE")
        return self._response(result)

    def _authorize(
        self,
        route: Route,
        event: ProxyEvent,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        request: GatewayRequest,
    ) -> HttpResponse | None:
        """The method's authorization, before its integration as API Gateway runs it: the gateway response that
        refuses the request, or None (the caller's identity or the authorizer's result then in ``event``)."""
        if route.authorizer == IAM:  # SigV4, checked against the local stack's credentials (darkroom.local.sigv4)
            try:
                identity = sigv4.verify(event["httpMethod"], target, headers, body, *self._iam)
            except sigv4.Refused as refused:
                return self.gateway_response(refused.kind, refused.message)
            caller = event["requestContext"]["identity"]
            request.caller = caller["userArn"] = identity["userArn"]
            caller["caller"] = identity["caller"]
            caller["accessKey"], caller["accountId"] = identity["accessKey"], identity["accountId"]
        elif route.authorizer:
            kind, request.authorizer = self._authorizers[route.authorizer].authorize(event)
            if kind:
                return self.gateway_response(kind)
            event["requestContext"]["authorizer"] = request.authorizer
        return None

    def _event(
        self,
        method: str,
        url: SplitResult,
        route: Route,
        path_parameters: dict[str, str],
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
    ) -> ProxyEvent:
        single: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        for name, value in headers:
            single[name] = value
            multi.setdefault(name, []).append(value)
        content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
        binary = any(content_type.startswith(t.replace("*", "")) for t in self._binary_types) if body else False
        query = parse_qs(url.query, keep_blank_values=True)
        now = time.time()
        return {
            "resource": route.path,
            "path": url.path,
            "httpMethod": method,
            "headers": single or None,
            "multiValueHeaders": multi or None,
            "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
            "multiValueQueryStringParameters": query or None,
            "pathParameters": path_parameters or None,
            "stageVariables": None,
            "requestContext": {
                "resourcePath": route.path,
                "httpMethod": method,
                "path": f"/{self.stage}{url.path}",
                "stage": self.stage,
                "requestId": str(uuid.uuid4()),
                "accountId": "000000000000",
                # API Gateway's own id, which a caller cannot set (darkroom.api.resolver.REQUEST_ID_PATH)
                "extendedRequestId": base64.b64encode(uuid.uuid4().bytes[:9]).decode(),
                "apiId": "local",
                "protocol": "HTTP/1.1",
                "domainName": "127.0.0.1",
                "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "requestTimeEpoch": int(now * 1000),
                "identity": {"sourceIp": source_ip, "userAgent": single.get("user-agent")},
            },
            "body": (base64.b64encode(body).decode() if binary else body.decode("utf-8", "replace")) if body else None,
            "isBase64Encoded": binary,
        }

    def _invoke(self, logical_id: str, event: Event, integration_timeout: float | None = None) -> Result | None:
        """The function's result; TimeoutError past its timeout, or the integration's when that is shorter."""
        pool = self._pools[logical_id]
        timeout = min(pool.function.timeout_seconds, integration_timeout or pool.function.timeout_seconds)
        container = pool.acquire()
        try:
            return container.invoke(event, timeout=timeout)
        finally:
            pool.release(container)

    def _stream(self, route: Route, event: ProxyEvent, request: GatewayRequest) -> HttpResponse:
        """A STREAM route (API Gateway's responseTransferMode STREAM): the head as soon as the function returns
        it, its chunks (:class:`StreamedBody`) as they are made; the container stays the request's until then."""
        pool = self._pools[route.function]
        timeout = min(pool.function.timeout_seconds, route.timeout_seconds)
        started = time.monotonic()
        container = pool.acquire()
        failure = "INTEGRATION_FAILURE"
        try:
            result, streamed = container.open_stream(event, timeout)
        except TimeoutError:
            result, streamed, failure = None, False, "INTEGRATION_TIMEOUT"
        finally:
            request.integration_latency_ms = round((time.monotonic() - started) * 1000)
        if not streamed:
            pool.release(container)
        if result is None:
            return self.gateway_response(failure)
        response = self._response(result)
        if streamed:
            response.stream = StreamedBody(container, lambda: pool.release(container), started + timeout)
        return response

    def warm(self) -> None:
        """Start one container per function now and wait for their inits (as provisioned concurrency does), so
        the first request does not pay the imports; a function that fails to start is logged, with its reason."""
        threads = [threading.Thread(target=pool.prepare) for pool in self._pools.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._pollers:
            thread.join(timeout=5)
        for pool in self._pools.values():
            pool.stop()

    @staticmethod
    def _response(result: Result) -> HttpResponse:
        headers: list[tuple[str, str]] = []
        for name, value in (result.get("headers") or {}).items():
            headers.append((name, str(value)))
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers.extend((name, str(v)) for v in values)
        body = result.get("body") or ""
        raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
        return HttpResponse(int(result.get("statusCode", 200)), headers, raw)
