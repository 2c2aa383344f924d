"""HTTP on loopback -> API Gateway REST proxy events -> the template's Lambda handlers, in-process.

Each function gets a pool of "containers" (separately imported copies of its handler module), one
request at a time each, as Lambda runs them; concurrent requests get concurrent containers. The
gateway's own limits are applied the way API Gateway and Lambda apply them: 10 MB request bodies,
6 MB Lambda payloads each way, answered with the template's gateway responses.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import queue
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

from darkroom.local.template import Function, Stack

API_GATEWAY_MAX_BODY = 10 * 1024 * 1024
LAMBDA_MAX_PAYLOAD = 6 * 1024 * 1024
logger = logging.getLogger("darkroom.local")


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class _Pool:
    function: Function
    idle: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    created: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _load_handler(function: Function, serial: int):
    name = f"darkroom_local_{function.logical_id}_{serial}"
    spec = importlib.util.spec_from_file_location(name, function.code_dir / f"{function.module}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return getattr(module, function.attribute)


def _route_pattern(path: str) -> re.Pattern:
    parts = re.split(r"(\{[^}]+\})", path)
    regex = "".join(
        f"(?P<{p[1:-1].rstrip('+')}>.+)" if p.endswith("+}") else f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{")
        else re.escape(p)
        for p in parts
    )
    return re.compile(f"^{regex}$")


class LocalApi:
    """Dispatches HTTP requests to the stack's functions as API Gateway would."""

    def __init__(self, stack: Stack, stage: str = "local") -> None:
        self.stack = stack
        self.stage = stage
        self._functions = {f.logical_id: f for f in stack.functions()}
        self._routes = [(r, _route_pattern(r.path)) for r in stack.routes()]
        self._pools = {name: _Pool(f) for name, f in self._functions.items()}
        self._binary_types = stack.binary_media_types()

    def _gateway(self, kind: str) -> HttpResponse:
        status, body = self.stack.gateway_response(kind)
        return HttpResponse(status, [("content-type", "application/json")], body.encode())

    def handle(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
               source_ip: str = "127.0.0.1") -> HttpResponse:
        url = urlsplit(target)
        if len(body) > API_GATEWAY_MAX_BODY:
            return self._gateway("REQUEST_TOO_LARGE")
        matched = None
        for route, pattern in self._routes:
            found = pattern.match(url.path)
            if found and route.method in (method, "ANY"):
                matched = (route, found.groupdict())
                break
        if matched is None:
            return self._gateway("MISSING_AUTHENTICATION_TOKEN")
        route, path_parameters = matched
        event = self._event(method, url, route, path_parameters, headers, body, source_ip)
        if len(json.dumps(event)) > LAMBDA_MAX_PAYLOAD:
            return self._gateway("REQUEST_TOO_LARGE")
        result = self._invoke(route.function, event)
        if result is None or len(json.dumps(result)) > LAMBDA_MAX_PAYLOAD:
            return self._gateway("INTEGRATION_FAILURE")
        return self._response(result)

    def _event(self, method, url, route, path_parameters, headers, body, source_ip) -> dict:
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
                "resourcePath": route.path, "httpMethod": method, "path": f"/{self.stage}{url.path}",
                "stage": self.stage, "requestId": str(uuid.uuid4()), "accountId": "000000000000",
                "apiId": "local", "protocol": "HTTP/1.1", "domainName": "127.0.0.1",
                "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "requestTimeEpoch": int(now * 1000),
                "identity": {"sourceIp": source_ip, "userAgent": single.get("user-agent")},
            },
            "body": (base64.b64encode(body).decode() if binary else body.decode("utf-8", "replace")) if body else None,
            "isBase64Encoded": binary,
        }

    def _invoke(self, logical_id: str, event: dict) -> dict | None:
        pool = self._pools[logical_id]
        try:
            handler = pool.idle.get_nowait()
        except queue.Empty:
            with pool.lock:
                pool.created += 1
                serial = pool.created
            handler = _load_handler(pool.function, serial)
        context = SimpleNamespace(
            function_name=logical_id, memory_limit_in_mb=pool.function.memory_mb,
            invoked_function_arn=f"arn:aws:lambda:{self.stack.region}:000000000000:function:{logical_id}",
            aws_request_id=str(uuid.uuid4()), function_version="$LATEST",
            log_group_name=f"/aws/lambda/{logical_id}", log_stream_name="local",
            get_remaining_time_in_millis=lambda: pool.function.timeout_seconds * 1000,
        )
        try:
            return handler(event, context)
        except Exception:  # noqa: BLE001 - a crashed invocation is a 502 from the gateway, as on AWS
            logger.exception("function invocation failed", extra={"function": logical_id})
            return None
        finally:
            pool.idle.put(handler)

    @staticmethod
    def _response(result: dict) -> HttpResponse:
        headers: list[tuple[str, str]] = []
        for name, value in (result.get("headers") or {}).items():
            headers.append((name, str(value)))
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers.extend((name, str(v)) for v in values)
        body = result.get("body") or ""
        raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
        return HttpResponse(int(result.get("statusCode", 200)), headers, raw)


class _Handler(BaseHTTPRequestHandler):
    api: LocalApi
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > API_GATEWAY_MAX_BODY:
            # Refuse without reading 10+ MB into memory, then close.
            response = self.api._gateway("REQUEST_TOO_LARGE")
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            headers = [(k.lower(), v) for k, v in self.headers.items()]
            response = self.api.handle(self.command, self.path, headers, body, self.client_address[0])
        self.send_response(response.status, HTTPStatus(response.status).phrase if response.status in
                           HTTPStatus._value2member_map_ else "")
        names = set()
        for name, value in response.headers:
            if name.lower() in ("content-length", "connection", "transfer-encoding"):
                continue
            names.add(name.lower())
            self.send_header(name, value)
        if "content-type" not in names:
            self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        # Access lines carry method, path and status only (no query strings, headers or bodies).
        sys.stderr.write(f"{self.command} {urlsplit(self.path).path} {args[1] if len(args) > 1 else ''}\n")


def make_server(api: LocalApi, host: str = "127.0.0.1", port: int = 3000, quiet: bool = False) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"api": api})
    if quiet:
        handler.log_message = lambda self, *args: None
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
