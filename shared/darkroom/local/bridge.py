"""HTTP requests -> API Gateway REST proxy events -> the template's Lambda handlers, in worker processes.

Each function gets a pool of "containers" (worker processes that imported its handler), one request
at a time each, as Lambda runs them; concurrent requests get concurrent containers. The
gateway's own limits are applied the way API Gateway and Lambda apply them: 10 MB request bodies,
6 MB Lambda payloads each way, answered with the template's gateway responses. The HTTP/1.1 server in
front of it is :mod:`darkroom.local.http_server`.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import multiprocessing
import os
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

from darkroom.local.template import Function, QueueSource, Stack

API_GATEWAY_MAX_BODY = 10 * 1024 * 1024
LAMBDA_MAX_PAYLOAD = 6 * 1024 * 1024
logger = logging.getLogger("darkroom.local")
# Containers start clean (spawn, not fork): no inherited threads, locks or moto state.
_SPAWN = multiprocessing.get_context("spawn")
_READY = "ready"
# Lambda gives the init phase 10 s; a loaded development machine (or coverage) may need more.
INIT_TIMEOUT_SECONDS = 30


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class _Container:
    """One Lambda execution environment: a process that imported the handler and runs one event at a time.

    Processes, not threads: Powertools keeps the current event in class state, and Lambda itself
    never runs two events in one environment.
    """

    def __init__(self, function: Function, environment: dict[str, str]) -> None:
        parent, child = _SPAWN.Pipe()
        self._conn = parent
        self.process = _SPAWN.Process(
            target=_container_main, args=(function, environment, child), daemon=True,
            name=f"darkroom-{function.logical_id}",
        )
        self.process.start()
        child.close()
        self._ready = False

    def invoke(self, event: dict, timeout: float) -> dict | None:
        """The handler's result; None when it crashed; raises TimeoutError past ``timeout``.

        As on Lambda, the function timeout counts from the invocation, not from the cold start's
        imports (the init phase, which gets ``INIT_TIMEOUT_SECONDS`` of its own).
        """
        if not self._ready:
            try:
                if not self._conn.poll(INIT_TIMEOUT_SECONDS) or self._conn.recv() != _READY:
                    self.stop()
                    return None
            except (EOFError, OSError):  # the handler module failed to import
                self.stop()
                return None
            self._ready = True
        self._conn.send(event)
        if not self._conn.poll(timeout):
            self.stop()  # a timed-out environment is discarded, as Lambda does
            raise TimeoutError
        try:
            return self._conn.recv()
        except (EOFError, OSError):  # the process died mid-invocation
            self.stop()
            return None

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)


def _container_main(function: Function, environment: dict[str, str], conn) -> None:
    # As Lambda's runtime does: the function's MemorySize (darkroom.intake sizes its decode budget from it).
    os.environ.update({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb), **environment})
    sys.path.insert(0, str(function.code_dir))
    spec = importlib.util.spec_from_file_location(function.module, function.code_dir / f"{function.module}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = getattr(module, function.attribute)
    conn.send(_READY)
    while True:
        try:
            event = conn.recv()
        except EOFError:
            return
        context = SimpleNamespace(
            function_name=function.logical_id, memory_limit_in_mb=function.memory_mb,
            invoked_function_arn=f"arn:aws:lambda:local:000000000000:function:{function.logical_id}",
            aws_request_id=str(uuid.uuid4()), function_version="$LATEST",
            log_group_name=f"/aws/lambda/{function.logical_id}", log_stream_name="local",
            get_remaining_time_in_millis=lambda: function.timeout_seconds * 1000,
        )
        try:
            result = handler(event, context)
        except Exception:  # noqa: BLE001 - a crashed invocation is a 502 from the gateway, as on AWS
            logger.exception("function invocation failed", extra={"function": function.logical_id})
            result = None
        conn.send(result)


class _Pool:
    """Idle containers of one function; a busy function gets new ones, up to ``limit``."""

    def __init__(self, function: Function, environment: dict[str, str], limit: int) -> None:
        self.function = function
        self._environment = environment
        self._idle: list[_Container] = []
        self._all: list[_Container] = []
        self._limit = limit
        self._cond = threading.Condition()

    def acquire(self) -> _Container:
        with self._cond:
            while True:
                while self._idle:
                    container = self._idle.pop()
                    if container.alive:
                        return container
                    self._all.remove(container)
                if len(self._all) < self._limit:
                    container = _Container(self.function, self._environment)
                    self._all.append(container)
                    return container
                self._cond.wait()

    def release(self, container: _Container) -> None:
        with self._cond:
            if container.alive:
                self._idle.append(container)
            else:
                self._all.remove(container)
            self._cond.notify()

    def warm(self) -> None:
        self.release(self.acquire())

    def stop(self) -> None:
        with self._cond:
            for container in self._all:
                container.stop()
            self._all.clear()
            self._idle.clear()


def _route_pattern(path: str) -> re.Pattern:
    parts = re.split(r"(\{[^}]+\})", path)
    regex = "".join(
        f"(?P<{p[1:-1].rstrip('+')}>.+)" if p.endswith("+}") else f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{")
        else re.escape(p)
        for p in parts
    )
    return re.compile(f"^{regex}$")


class LocalApi:
    """Dispatches HTTP requests to the stack's functions as API Gateway would, and SQS messages to the
    functions with queue event sources as Lambda's event source mappings would."""

    def __init__(self, stack: Stack, environment: dict[str, str], stage: str = "local",
                 containers_per_function: int = 4) -> None:
        self.stack = stack
        self.stage = stage
        self._routes = [(r, _route_pattern(r.path)) for r in stack.routes()]
        self._pools = {f.logical_id: _Pool(f, environment, containers_per_function) for f in stack.functions()}
        self._binary_types = stack.binary_media_types()
        self._containers_per_function = containers_per_function
        self._stopping = threading.Event()
        self._pollers: list[threading.Thread] = []

    def start_queue_pollers(self, sqs) -> None:
        """One thread per SQS event source: receive, invoke the function, delete what it did not report failed."""
        for source in self.stack.queue_sources():
            url = self.stack.queue_url(source.queue)
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            thread = threading.Thread(target=self._poll, args=(sqs, source, url, arn), daemon=True,
                                      name=f"darkroom-sqs-{source.queue}")
            thread.start()
            self._pollers.append(thread)

    def _poll(self, sqs, source: QueueSource, url: str, arn: str) -> None:
        slots = threading.Semaphore(self._containers_per_function)
        while not self._stopping.is_set():
            if not slots.acquire(timeout=0.5):
                continue
            try:
                # No long polling: the embedded moto serializes every call, so a waiting receive would stall all.
                messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=source.batch_size,
                                               AttributeNames=["All"]).get("Messages", [])
            except Exception:  # noqa: BLE001 - the stack is stopping, or moto hiccuped: try again
                messages = []
            if not messages:
                slots.release()
                self._stopping.wait(0.2)
                continue

            def deliver(batch: list[dict]) -> None:
                try:
                    self._deliver(sqs, source, url, arn, batch)
                finally:
                    slots.release()

            threading.Thread(target=deliver, args=(messages,), daemon=True).start()

    def _deliver(self, sqs, source: QueueSource, url: str, arn: str, messages: list[dict]) -> None:
        event = {"Records": [{
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m.get("MD5OfBody", ""),
            "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": self.stack.region,
        } for m in messages]}
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

    def gateway_response(self, kind: str) -> HttpResponse:
        """The template's gateway response of ``kind`` (e.g. ``REQUEST_TOO_LARGE``), as API Gateway sends it."""
        status, body = self.stack.gateway_response(kind)
        return HttpResponse(status, [("content-type", "application/json")], body.encode())

    def handle(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
               source_ip: str = "127.0.0.1") -> HttpResponse:
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
        event = self._event(method, url, route, path_parameters, headers, body, source_ip)
        if len(json.dumps(event)) > LAMBDA_MAX_PAYLOAD:
            return self.gateway_response("REQUEST_TOO_LARGE")
        try:
            result = self._invoke(route.function, event)
        except TimeoutError:
            return self.gateway_response("INTEGRATION_TIMEOUT")
        if result is None or len(json.dumps(result)) > LAMBDA_MAX_PAYLOAD:
            return self.gateway_response("INTEGRATION_FAILURE")
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
        container = pool.acquire()
        try:
            return container.invoke(event, timeout=pool.function.timeout_seconds)
        finally:
            pool.release(container)

    def warm(self) -> None:
        """Start one container per function now, so the first request does not pay the imports."""
        threads = [threading.Thread(target=pool.warm) for pool in self._pools.values()]
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
    def _response(result: dict) -> HttpResponse:
        headers: list[tuple[str, str]] = []
        for name, value in (result.get("headers") or {}).items():
            headers.append((name, str(value)))
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers.extend((name, str(v)) for v in values)
        body = result.get("body") or ""
        raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
        return HttpResponse(int(result.get("statusCode", 200)), headers, raw)
