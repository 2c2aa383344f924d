"""The ``openai`` backend: any OpenAI-compatible server (OpenAI, vLLM(-Omni), SGLang, LocalAI, hosted providers).

* generate -> ``POST {base_url}/images/generations`` (JSON; ``response_format: b64_json`` only when the entry
  sets ``send_response_format``: OpenAI's GPT image models refuse it, LocalAI answers with URLs without it);
* edit, by the entry's ``edit_route``:
  ``edits`` -> ``POST {base_url}/images/edits`` (multipart ``image[]`` PNGs, optional ``mask`` PNG), or
  ``inpainting`` -> ``POST {base_url}/images/inpainting`` (LocalAI: ``model``, ``prompt``, one ``image``, a
  required ``mask``; more images or ``n`` > 1 are a 400);
* the mask in the entry's ``mask_convention`` (default: the route's): ``alpha``, an RGBA PNG whose alpha 0
  marks what to change (OpenAI; refused with a 400 before any request when it reaches OpenAI's 4 MB limit),
  or ``white``, a greyscale PNG, 255 where to repaint (LocalAI, diffusers). :mod:`.openai_images` builds both;
* respond -> ``POST {base_url}/chat/completions`` (images as PNG data URLs in ``image_url`` parts); a job with a
  ``TextSink`` (a streamed request) adds ``"stream": true`` and reads the answer's pieces as they arrive
  (:mod:`.openai_stream`).

The upstream is untrusted like any client: bodies are read with a byte cap inside the call's deadline,
images are decoded strictly and validated by :mod:`darkroom.intake`. An image offered only as a URL is a 502,
unless the entry sets ``fetch_answer_urls``: then a URL on base_url's own origin (scheme, host, port) is
fetched through :mod:`darkroom.fetch` (pinned to that origin, no redirects, within the call's deadline, capped
like a b64 answer) and decoded the same way; a URL anywhere else is a 502 and never fetched. The API key comes
from Secrets Manager or an SSM SecureString (Powertools parameters, cached), never from the catalog, never
logged. Errors the client sees are neutral: never the upstream's body, URL, headers or base_url.
Faults (deadline, retries, circuit breaker, metrics) are :mod:`darkroom.inference.resilience`'s: every call goes
through :meth:`Resilience.run` (HTTP replies into :meth:`Resilience.call`, the wrapper every adapter shares); a
streamed chat completion goes through :meth:`Resilience.call` with the same ``http_reply`` mapping.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from aws_lambda_powertools.utilities import parameters
from botocore.exceptions import BotoCoreError, ClientError
from PIL import Image, ImageOps

from darkroom.api.errors import ApiError, InvalidRequest, UpstreamError
from darkroom.catalog import ModelEntry
from darkroom.catalog_endpoints import OpenAIEndpoint
from darkroom.inference import EditJob, GeneratedImage, GenerateJob, TextJob, TextSink
from darkroom.inference.openai_images import MAX_RESPONSE_BYTES, answer_image, edit_form, png
from darkroom.inference.openai_images import invalid as _invalid
from darkroom.inference.openai_stream import DeadlineReached, TextStream
from darkroom.inference.resilience import CircuitBreaker, Deadline, Reply, Resilience, http_reply
from darkroom.intake import UPSTREAM_LIMITS, read_header
from darkroom.observability import logger

KEY_MAX_AGE_SECONDS = 300
CONTENT_POLICY_CODES = frozenset({"moderation_blocked", "content_policy_violation", "content_filter"})
CONTENT_POLICY_TYPES = frozenset({"image_generation_user_error"})
CLIENT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
CLIENT_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=10, keepalive_expiry=30.0)

T = TypeVar("T")


def api_key(endpoint: OpenAIEndpoint, model_id: str) -> str | None:
    """The upstream key from Secrets Manager or SSM (cached ``KEY_MAX_AGE_SECONDS``); None when none is named.

    A secret may hold the bare key or JSON with an ``api_key`` field."""
    value: object
    try:
        if endpoint.api_key_secret:
            value = parameters.get_secret(endpoint.api_key_secret, max_age=KEY_MAX_AGE_SECONDS)
        elif endpoint.api_key_parameter:
            value = parameters.get_parameter(endpoint.api_key_parameter, decrypt=True, max_age=KEY_MAX_AGE_SECONDS)
        else:
            return None
    except (parameters.GetParameterError, parameters.TransformParameterError, ClientError, BotoCoreError):
        logger.error("upstream API key unavailable", extra={"model": model_id})
        raise UpstreamError("The model's backend is not configured correctly.", code="upstream_auth") from None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value).get("api_key")
        except (ValueError, AttributeError):
            value = None
    if not isinstance(value, str) or not value.strip():
        logger.error("upstream API key unavailable", extra={"model": model_id})
        raise UpstreamError("The model's backend is not configured correctly.", code="upstream_auth")
    return value.strip()


class Upstream:
    """One base_url: its HTTP client (built once per container) and its circuit breaker."""

    def __init__(
        self, base_url: str, *, client: httpx.Client | None = None, breaker: CircuitBreaker | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # No proxies or .netrc from the environment, no redirects: the catalog names exactly where to go.
        self.client = client or httpx.Client(
            timeout=CLIENT_TIMEOUT, limits=CLIENT_LIMITS, trust_env=False, follow_redirects=False
        )
        self.breaker = breaker or CircuitBreaker()


_upstreams: dict[str, Upstream] = {}
_registry_lock = threading.Lock()


def upstream_for(base_url: str) -> Upstream:
    key = base_url.rstrip("/")
    with _registry_lock:
        upstream = _upstreams.get(key)
        if upstream is None:
            upstream = _upstreams[key] = Upstream(key)
        return upstream


def _error_fields(body: bytes) -> tuple[str, str]:
    """(code, type) of an OpenAI error envelope, lower-cased; empty strings when absent or unreadable."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return "", ""
    if not isinstance(error, dict):
        return "", ""
    code, type_ = error.get("code"), error.get("type")
    return (code.lower() if isinstance(code, str) else ""), (type_.lower() if isinstance(type_, str) else "")


class OpenAIBackend:
    """The ``Backend`` port over an OpenAI-compatible HTTP API."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        resilience: Resilience | None = None,
        key: Callable[[OpenAIEndpoint, str], str | None] = api_key,
    ) -> None:
        self.upstream = upstream
        self.resilience = resilience or Resilience()
        self._key = key

    # -- the port -------------------------------------------------------------------------------

    def generate(self, model: ModelEntry, job: GenerateJob) -> list[GeneratedImage]:
        body = {
            **job.options,
            "model": self._upstream_model(model),
            "prompt": job.prompt,
            "n": job.n,
            "size": f"{job.width}x{job.height}",
            "quality": job.quality,
        }
        if model.endpoint_as(OpenAIEndpoint).send_response_format:
            body["response_format"] = "b64_json"
        if job.transparent:
            body["background"] = "transparent"
        return self._call(
            model,
            job.deadline_seconds,
            "/images/generations",
            {"json": body},
            lambda reply, deadline: self._images(model, reply, deadline, job.n, job.width, job.height, job.transparent),
        )

    def edit(self, model: ModelEntry, job: EditJob) -> list[GeneratedImage]:
        path, content = edit_form(model.endpoint_as(OpenAIEndpoint), job, self._upstream_model(model))
        return self._call(
            model,
            job.deadline_seconds,
            path,
            content,
            lambda reply, deadline: self._images(model, reply, deadline, job.n, job.width, job.height, job.transparent),
        )

    def respond(self, model: ModelEntry, job: TextJob) -> str:
        messages: list[dict[str, Any]] = []
        if job.instructions:
            messages.append({"role": "system", "content": job.instructions})
        for role, text in job.messages:
            messages.append({"role": "system" if role == "developer" else role, "content": text})
        if job.images:
            parts = [
                {
                    "type": "image_url",
                    "image_url": {
                        "url": "data:image/png;base64," + base64.b64encode(png(picture.image)).decode("ascii"),
                        "detail": picture.detail,
                    },
                }
                for picture in job.images
            ]
            if messages and messages[-1]["role"] == "user":
                last = messages.pop()
                parts = [{"type": "text", "text": last["content"]}, *parts]
            messages.append({"role": "user", "content": parts})
        body = {"model": self._upstream_model(model), "messages": messages}
        if job.deltas is not None:
            return self._stream_text(model, job.deadline_seconds, {**body, "stream": True}, job.deltas)
        return self._call(model, job.deadline_seconds, "/chat/completions", {"json": body}, lambda r, _: self._text(r))

    # -- one call -------------------------------------------------------------------------------

    @staticmethod
    def _upstream_model(model: ModelEntry) -> str:
        return model.endpoint_as(OpenAIEndpoint).upstream_model or model.id

    def _prepare(
        self, model: ModelEntry, deadline_seconds: float, path: str, content: dict[str, Any]
    ) -> tuple[Deadline, httpx.Request]:
        endpoint = model.endpoint_as(OpenAIEndpoint)
        deadline = self.resilience.deadline(min(deadline_seconds, endpoint.timeout_seconds))
        # The same headers for a streamed chat completion: openai-python sends ``Accept: application/json`` with
        # ``stream: true`` too (src/openai/_base_client.py, default_headers), and identity keeps pieces unbuffered.
        headers = {"accept": "application/json", "accept-encoding": "identity", "user-agent": "darkroom"}
        key = self._key(endpoint, model.id)
        if key:
            headers["authorization"] = f"Bearer {key}"
        request = self.upstream.client.build_request("POST", self.upstream.base_url + path, headers=headers, **content)
        return deadline, request

    def _call(
        self,
        model: ModelEntry,
        deadline_seconds: float,
        path: str,
        content: dict[str, Any],
        parse: Callable[[Reply, Deadline], T],
    ) -> T:
        deadline, request = self._prepare(model, deadline_seconds, path, content)

        def send(remaining: float) -> Reply:
            return self._send(request, remaining, deadline)

        return self.resilience.run(
            label=model.id,
            breaker=self.upstream.breaker,
            deadline=deadline,
            send=send,
            handle=lambda reply: self._answer(model, reply, lambda ok: parse(ok, deadline)),
            backend=model.backend,
            operation=path,
        )

    def _stream_text(self, model: ModelEntry, deadline_seconds: float, body: dict[str, Any], sink: TextSink) -> str:
        """A chat completion read as it is written (:mod:`.openai_stream`), through the same wrapper as any call."""
        path = "/chat/completions"
        deadline, request = self._prepare(model, deadline_seconds, path, {"json": body})
        stream = TextStream(
            sink, deadline, model.id, lambda remaining: self._open(request, remaining), lambda r: _read(r, deadline)
        )

        def attempt(remaining: float) -> str:  # a reply that is not a stream is mapped and parsed as today's
            reply = http_reply(stream.send, remaining)
            return self._answer(model, reply, lambda ok: stream.text if stream.text is not None else self._text(ok))

        return self.resilience.call(
            stream.guarded(attempt),
            breaker=self.upstream.breaker,
            deadline=deadline,
            backend=model.backend,
            model=model.id,
            operation=path,
        )

    def _open(self, request: httpx.Request, remaining: float) -> httpx.Response:
        timeout = httpx.Timeout(remaining, connect=min(remaining, 5.0), pool=min(remaining, 1.0))
        request.extensions["timeout"] = timeout.as_dict()
        return self.upstream.client.send(request, stream=True)

    def _send(self, request: httpx.Request, remaining: float, deadline: Deadline) -> Reply:
        response = self._open(request, remaining)
        try:
            return _read(response, deadline)
        finally:
            response.close()

    def _answer(self, model: ModelEntry, reply: Reply, parse: Callable[[Reply], T]) -> T:
        status = reply.status
        if 200 <= status < 300:
            return parse(reply)
        if status in (401, 403):
            logger.error("upstream refused darkroom's credentials", extra={"model": model.id, "status": status})
            raise UpstreamError("The model's backend is not configured correctly.", code="upstream_auth")
        if status == 400:
            code, type_ = _error_fields(reply.body)
            if code in CONTENT_POLICY_CODES or type_ in CONTENT_POLICY_TYPES:
                raise InvalidRequest(
                    "The request was rejected by the model's content policy.", code="content_policy_violation"
                )
        raise UpstreamError("The model's backend refused the request.", code="upstream_error")

    # -- answers --------------------------------------------------------------------------------

    @staticmethod
    def _json(reply: Reply) -> dict[str, Any]:
        try:
            document = json.loads(reply.body)
        except (ValueError, UnicodeDecodeError):
            raise _invalid() from None
        if not isinstance(document, dict):
            raise _invalid()
        return document

    def _images(
        self, model: ModelEntry, reply: Reply, deadline: Deadline, n: int, width: int, height: int, transparent: bool
    ) -> list[GeneratedImage]:
        data = self._json(reply).get("data")
        if not isinstance(data, list) or len(data) != n or not all(isinstance(item, dict) for item in data):
            raise _invalid()
        endpoint = model.endpoint_as(OpenAIEndpoint)
        headers, raws = [], []  # every header read (and charged to the decode budget) before any decoding
        for index, item in enumerate(data):
            param, raw = answer_image(
                item, index, endpoint=endpoint, base_url=self.upstream.base_url, deadline=deadline
            )
            try:
                headers.append(read_header(raw, param=param, limits=UPSTREAM_LIMITS))
            except ApiError:
                raise _invalid() from None
            raws.append(raw)
        images = []
        for item, header, raw in zip(data, headers, raws, strict=True):
            try:
                image = header.decode().image
            except ApiError:
                raise _invalid() from None
            upstream: bytes | None = raw  # validated and decoded above: may be stored as it is
            if image.size != (width, height):  # the contract is exactly width x height: cover, then crop
                image, upstream = ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS), None
            if transparent and image.mode != "RGBA":
                image = image.convert("RGBA")
            revised = item.get("revised_prompt")
            images.append(GeneratedImage(image, revised if isinstance(revised, str) else None, upstream=upstream))
        return images

    def _text(self, reply: Reply) -> str:
        choices = self._json(reply).get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise _invalid()
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # some servers answer with content parts
            texts = [part.get("text") for part in content if isinstance(part, dict)]
            content = "".join(t for t in texts if isinstance(t, str)) if texts else None
        if not isinstance(content, str):
            raise _invalid()
        return content


def _read(response: httpx.Response, deadline: Deadline) -> Reply:
    """The whole answer, read with a byte cap inside the call's deadline (the caller closes the response)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise _invalid()
    chunks, size = [], 0
    for chunk in response.iter_bytes():  # decoded (we ask for identity); counted as it arrives
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise _invalid()
        if deadline.remaining() <= 0:
            raise DeadlineReached("deadline")
        chunks.append(chunk)
    return Reply(status=response.status_code, headers=response.headers, body=b"".join(chunks))
