"""The function's HTTP face under the AWS Lambda Web Adapter (LWA), for the routes that stream (``stream: true``).

The managed Python runtime cannot stream a response; LWA can
(https://docs.aws.amazon.com/lambda/latest/dg/configuration-response-streaming.html). A function that streams
runs LWA's layer with ``AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap``, which starts its ``run.sh`` instead of the Python
runtime; ``run.sh`` starts :func:`main` (``python3 -m darkroom.api.lwa app.lambda_handler``), which imports the
function's module and serves this ASGI app with uvicorn on ``127.0.0.1:$AWS_LWA_PORT``. With
``AWS_LWA_INVOKE_MODE=response_stream``, LWA turns each invocation (API Gateway's ``response-streaming-invocations``,
https://docs.aws.amazon.com/apigateway/latest/developerguide/response-transfer-mode-lambda.html) into one HTTP
request here and streams the answer back as it is written
(https://github.com/aws/aws-lambda-web-adapter, docs/guide/src/configuration/response-streaming.md).

Each request becomes the API Gateway REST proxy event the buffered integration would have sent, and the Lambda
context object the runtime would have passed, from what LWA forwards:

* ``x-amzn-request-context``: the event's ``requestContext`` as JSON (aws_lambda_events'
  ``ApiGatewayProxyRequestContext``, camelCase, its ``authorizer`` the flat map of ``principalId``, the authorizer's
  context and ``integrationLatency``: docs/guide/src/features/request-context.md);
* ``x-amzn-lambda-context``: lambda_runtime's ``Context`` as JSON: ``request_id``, ``deadline`` (epoch ms),
  ``invoked_function_arn``, ``xray_trace_id``, ``env_config`` (``function_name``, ``memory``, ``version``,
  ``log_stream``, ``log_group``). LWA overwrites both headers if a caller sent them (its 1.0 changelog, #286).

``module.lambda_handler(event, context)`` runs inside :class:`~darkroom.api.event_stream.StreamingTransport`: a
route that streams returns only the head, and its chunks are sent as they are made; anything else (an error, a
non-streamed answer) is passed through whole. One request at a time, as Lambda runs one event per environment.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import functools
import importlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qs

import uvicorn
from snapshot_restore_py import get_after_restore, get_before_snapshot

from darkroom.api.event_stream import StreamingTransport

logger = logging.getLogger("darkroom.lwa")
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
Message = dict[str, Any]
_T = TypeVar("_T")
# LWA's readiness check and SnapStart hooks (AWS_LWA_READINESS_CHECK_PATH, AWS_LWA_SNAPSTART_*_PATH in
# template.yaml): answered only to LWA itself, i.e. to a request without the x-amzn-request-context it adds to
# every invocation.
READY_PATH = "/_lwa/ready"
BEFORE_CHECKPOINT_PATH = "/_lwa/before-checkpoint"
AFTER_RESTORE_PATH = "/_lwa/after-restore"
# template.yaml's BinaryMediaTypes: bodies of these types reach a function base64-encoded (tests/unit/test_lwa.py).
BINARY_MEDIA_TYPES = ("multipart/form-data", "application/json")
_LWA_HEADERS = {"x-amzn-request-context", "x-amzn-lambda-context", "x-amz-tenant-id"}
_HOP_BY_HOP = {"content-length", "connection", "transfer-encoding", "keep-alive"}
# What API Gateway answers when a function fails (template.yaml's INTEGRATION_FAILURE gateway response).
_FAILED = (
    b'{"error":{"message":"The service could not complete the request.","type":"server_error","param":null,'
    b'"code":"integration_failure"}}'
)


class LambdaContext:
    """The context object the Python runtime would pass, from LWA's ``x-amzn-lambda-context``."""

    def __init__(self, data: dict[str, Any]) -> None:
        env = data.get("env_config") or {}
        self.aws_request_id = str(data.get("request_id") or "")
        self.invoked_function_arn = str(data.get("invoked_function_arn") or "")
        self.function_name = str(env.get("function_name") or os.environ.get("AWS_LAMBDA_FUNCTION_NAME", ""))
        self.function_version = str(env.get("version") or os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"))
        self.memory_limit_in_mb = int(env.get("memory") or os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or 128)
        self.log_group_name = str(env.get("log_group") or os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", ""))
        self.log_stream_name = str(env.get("log_stream") or os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", ""))
        self.xray_trace_id: str | None = data.get("xray_trace_id")
        self.client_context = data.get("client_context")
        self.identity = data.get("identity")
        self._deadline_ms = int(data.get("deadline") or 0)

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_ms - int(time.time() * 1000), 0)


def _path_parameters(resource: str, path: str) -> dict[str, str] | None:
    """The ``{name}`` (and greedy ``{name+}``) segments of ``resource`` as ``path`` fills them."""
    parts = re.split(r"(\{[^}]+\})", resource)
    if len(parts) == 1:
        return None
    pattern = "".join(
        (f"(?P<{p[1:-2]}>.+)" if p.endswith("+}") else f"(?P<{p[1:-1]}>[^/]+)") if p.startswith("{") else re.escape(p)
        for p in parts
    )
    found = re.fullmatch(pattern, path)
    return found.groupdict() if found else None


def build_event(scope: Message, body: bytes, request_context: dict[str, Any]) -> dict[str, Any]:
    """The API Gateway REST proxy (v1) event for this request, as the buffered integration sends it
    (https://docs.aws.amazon.com/apigateway/latest/developerguide/set-up-lambda-proxy-integrations.html)."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        if name.lower() in _LWA_HEADERS:
            continue
        single[name] = value
        multi.setdefault(name, []).append(value)
    query = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    content_type = next((v for k, v in single.items() if k.lower() == "content-type"), "").lower()
    binary = bool(body) and content_type.startswith(BINARY_MEDIA_TYPES)
    path = scope["path"]
    resource = str(request_context.get("resourcePath") or path)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": scope["method"],
        "headers": single or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": _path_parameters(resource, path),
        "stageVariables": None,
        "requestContext": request_context,
        "body": (base64.b64encode(body).decode() if binary else body.decode("utf-8", "replace")) if body else None,
        "isBase64Encoded": binary,
    }


def response_head(result: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of a proxy result, merged as API Gateway merges them: a name in
    ``multiValueHeaders`` takes its values from there only."""
    multi = {str(k): [str(v) for v in values] for k, values in (result.get("multiValueHeaders") or {}).items()}
    taken = {name.lower() for name in multi}
    pairs = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items() if str(k).lower() not in taken]
    pairs += [(name, value) for name, values in multi.items() for value in values]
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs if k.lower() not in _HOP_BY_HOP]
    body = result.get("body") or ""
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")
    return int(result.get("statusCode", 200)), headers, raw


def _next_chunk(stream: Iterator[bytes]) -> bytes | None:
    return next(stream, None)


class AdapterApp:
    """The ASGI app LWA forwards each invocation to; ``handler`` is the function's ``lambda_handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        # One worker: the handler call, each pull of its stream and the SnapStart hooks run one after another, in
        # one thread, as the runtime runs them; the lock keeps a second request out until the first is done.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="darkroom-lwa")
        self._lock = asyncio.Lock()

    async def __call__(self, scope: Message, receive: Callable[[], Any], send: Callable[[Message], Any]) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if "x-amzn-request-context" not in headers:
            await self._lwa_request(scope, send)
            return
        body = await _read_body(receive)
        if body is None:
            return
        event = build_event(scope, body, json.loads(headers["x-amzn-request-context"]))
        context = LambdaContext(json.loads(headers.get("x-amzn-lambda-context") or "{}"))
        async with self._lock:
            await self._invoke(event, context, receive, send)

    async def _invoke(self, event: dict[str, Any], context: LambdaContext, receive: Any, send: Any) -> None:
        # The handler and its stream's producer share one context, so context variables set in one reach the other.
        ctx = contextvars.copy_context()
        try:
            result, stream = await self._run(ctx.run, self._call, event, context)
            status, headers, body = response_head(result)
        except Exception:  # a failed invocation: the gateway's answer; the cause logged
            logger.exception("function invocation failed")
            await _send_whole(send, 502, [(b"content-type", b"application/json")], _FAILED)
            return
        if stream is None:
            await _send_whole(send, status, headers, body)
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await self._pump(ctx, stream, receive, send)

    def _call(self, event: dict[str, Any], context: LambdaContext) -> tuple[dict[str, Any], Iterator[bytes] | None]:
        # The runtime sets the invocation's trace id in the environment (the X-Ray SDK reads it there):
        # https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime
        if context.xray_trace_id:
            os.environ["_X_AMZN_TRACE_ID"] = context.xray_trace_id
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        with StreamingTransport() as transport:
            result = self.handler(event, context)
        return result, transport.stream

    async def _pump(self, ctx: contextvars.Context, stream: Iterator[bytes], receive: Any, send: Any) -> None:
        """Each chunk sent as the producer makes it; the producer closed as soon as the client goes away."""
        gone = asyncio.ensure_future(_disconnected(receive))
        finished = False
        try:
            while True:
                pull = asyncio.ensure_future(self._run(ctx.run, _next_chunk, stream))
                await asyncio.wait({pull, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not pull.done():  # the client went away while the producer works: close it once this pull ends
                    await asyncio.wait({pull})
                    pull.exception()  # retrieved: a failure of the last pull is of no one's interest now
                    break
                chunk = pull.result()
                if chunk is None:
                    finished = True
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    break
                if gone.done():
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception:  # the producer (or a send) failed mid-stream: it ends here
            logger.exception("the stream ended early")
        finally:
            gone.cancel()
            if not finished:
                await self._run(ctx.run, _close, stream)

    async def _lwa_request(self, scope: Message, send: Callable[[Message], Any]) -> None:
        """LWA's own requests: the readiness check, and SnapStart's hooks, run as the Python runtime would run
        the ones registered with ``snapshot_restore_py`` (darkroom.snapstart)."""
        hooks = {BEFORE_CHECKPOINT_PATH: get_before_snapshot, AFTER_RESTORE_PATH: get_after_restore}
        path = scope["path"]
        if path == READY_PATH:
            await _send_whole(send, 200, [(b"content-type", b"text/plain")], b"ready")
        elif path in hooks and scope["method"] == "POST":
            async with self._lock:
                for hook, args, kwargs in hooks[path]():
                    await self._run(functools.partial(hook, *args, **kwargs))
            await _send_whole(send, 204, [], b"")
        else:
            await _send_whole(send, 404, [(b"content-type", b"text/plain")], b"not found")

    async def _run(self, function: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)


def _close(stream: Iterator[bytes]) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


async def _read_body(receive: Callable[[], Any]) -> bytes | None:
    """The request's body; None when the client went away before sending all of it."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


async def _disconnected(receive: Callable[[], Any]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_whole(
    send: Callable[[Message], Any], status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def load_handler(spec: str, root: str | None = None) -> Handler:
    """The handler ``module.attribute`` names (Lambda's ``Handler`` syntax), imported from ``root``
    (``LAMBDA_TASK_ROOT``, where the function's code is)."""
    module_name, _, attribute = spec.rpartition(".")
    folder = root or os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    if folder not in sys.path:
        sys.path.insert(0, folder)
    handler: Handler = getattr(importlib.import_module(module_name), attribute)
    return handler


def config(handler: Handler, port: int, host: str = "127.0.0.1") -> uvicorn.Config:
    """uvicorn's settings: h11 (pure Python), no lifespan or websockets, LWA's port on loopback only."""
    return uvicorn.Config(
        AdapterApp(handler),
        host=host,
        port=port,
        http="h11",
        ws="none",
        lifespan="off",
        interface="asgi3",
        loop="asyncio",
        access_log=False,
        server_header=False,
        log_level="warning",
    )


def main(argv: list[str] | None = None) -> None:
    """``python3 -m darkroom.api.lwa [module.attribute]``: serve the handler (``app.lambda_handler`` by default)
    on ``127.0.0.1:$AWS_LWA_PORT`` (LWA's default port, 8080)."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    handler = load_handler(args[0] if args else "app.lambda_handler")  # the init: imported before LWA's check
    port = int(os.environ.get("AWS_LWA_PORT") or os.environ.get("PORT") or 8080)
    uvicorn.Server(config(handler, port)).run()


if __name__ == "__main__":
    main()
