"""OpenAI schema conformance: every darkroom answer the e2e suite sees, checked against tests/schemas/openai.

The schemas are darkroom's transcription of the constraints in OpenAI's published OpenAPI spec (their
``$comment`` names the commit and license). A body is matched to its schema by method, route and status:
a 2xx JSON body by route, a 2xx ``text/event-stream`` body event by event (each ``data:`` line against its
route's stream union: ``ImageGenStreamEvent`` / ``ImageEditStreamEvent`` for the Images API,
``ResponseStreamEvent`` for the Responses API; an ``event:`` name, where sent, must equal the data's
``type``; an Images stream read to its end must end in its ``*.completed`` or an ``error`` event), and every
4xx/5xx body against the error envelope. Routes OpenAI does not have (``/v1/usage``, the console) are counted
and skipped. A violation is reported as method, path, the JSON pointer inside the body (or ``event[i]``) and
the validator's message; ``DEVIATIONS`` (deviations.json) lists, with a reason each, the only places where
darkroom knowingly differs, and nothing else is ignored.

``install()`` wraps ``httpx.Client.send`` and ``httpx2.Client.send`` (the openai SDK's HTTP client), so SDK
calls and plain httpx calls are both seen; only URLs under a ``watch()``-ed base URL are checked. A body that
is not a stream is read in full before it is handed back. A ``text/event-stream`` body sent unread
(``send(stream=True)``: the SDK's ``stream=True``, ``httpx.stream``) stays a stream: the response's byte stream
is wrapped (:class:`_Recording`) so the caller gets each chunk as it arrives while a copy is kept, and the copy
is checked once, when the response is closed (read to its end, or closed early). A stream closed early is
checked for the events that arrived whole; its missing end is no violation.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMAS = Path(__file__).parent / "schemas" / "openai"
_BASE = "https://darkroom.invalid/schemas/openai/"


def _load(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


REGISTRY = Registry().with_resources(
    (_BASE + path.name, Resource.from_contents(_load(path.name)))
    for path in sorted(SCHEMAS.glob("*.json"))
    if path.name != "deviations.json"
)
DEVIATIONS: list[dict] = _load("deviations.json")["deviations"]

# (method, path under /v1 as a regular expression, the schema of its 2xx JSON body); the first match wins.
ROUTES: list[tuple[str, str, str]] = [
    ("POST", r"/images/(generations|edits)", "images.json#/$defs/ImagesResponse"),
    ("POST", r"/responses", "responses.json#/$defs/Response"),
    ("GET", r"/responses/[^/]+", "responses.json#/$defs/Response"),
    ("POST", r"/responses/[^/]+/cancel", "responses.json#/$defs/Response"),
    ("DELETE", r"/responses/[^/]+", "responses.json#/$defs/ResponseDeleted"),
    ("GET", r"/models", "models.json#/$defs/ListModelsResponse"),
    ("GET", r"/models/[^/]+", "models.json#/$defs/Model"),
    ("POST", r"/files", "files.json#/$defs/OpenAIFile"),
    ("GET", r"/files", "files.json#/$defs/ListFilesResponse"),
    ("GET", r"/files/[^/]+", "files.json#/$defs/OpenAIFile"),
    ("DELETE", r"/files/[^/]+", "files.json#/$defs/DeleteFileResponse"),
    ("POST", r"/uploads", "files.json#/$defs/Upload"),
    ("POST", r"/uploads/[^/]+/complete", "files.json#/$defs/Upload"),
    ("GET", r"/organization/usage/images", "usage.json#/$defs/UsageImagesResponse"),
    ("GET", r"/organization/costs", "usage.json#/$defs/UsageCostsResponse"),
]
STREAM_EVENT = "responses.json#/$defs/ResponseStreamEvent"
# (method, path under /v1, the schema of each event of its 2xx text/event-stream body, the event types one that
# was read to its end must end with, or None: not checked); the first match wins.
STREAMS: list[tuple[str, str, str, frozenset[str] | None]] = [
    (
        "POST",
        r"/images/generations",
        "images.json#/$defs/ImageGenStreamEvent",
        frozenset({"image_generation.completed", "error"}),
    ),
    ("POST", r"/images/edits", "images.json#/$defs/ImageEditStreamEvent", frozenset({"image_edit.completed", "error"})),
    ("POST", r"/responses", STREAM_EVENT, None),
    ("GET", r"/responses/[^/]+", STREAM_EVENT, None),
]
ERROR = "errors.json#/$defs/ErrorResponse"


def validator(schema: str) -> Draft202012Validator:
    """A validator for ``schema`` (``"file.json#/$defs/Name"``), resolving references through the registry."""
    return Draft202012Validator({"$ref": _BASE + schema}, registry=REGISTRY)


@dataclass(frozen=True)
class Violation:
    where: str  # "POST /v1/responses -> 200"
    schema: str
    pointer: str  # JSON pointer inside the body; "event[3] response.created" prefixes stream events
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.schema} at {self.pointer or '/'}: {self.message}"


def _pointer(path) -> str:
    return "".join(f"/{part}" for part in path)


def _allows(entry: dict, value: Any) -> bool:
    # deviations.json sits beside the schema files: a $ref in "allow" ("errors.json#/$defs/Error") resolves there
    schema = {"$id": _BASE + "deviations.json", "allOf": [entry["allow"]]}
    return Draft202012Validator(schema, registry=REGISTRY).is_valid(value)


def _deviation(schema: str, pointer: str, value: Any) -> dict | None:
    """The DEVIATIONS entry that allows ``value`` at ``pointer`` of a ``schema`` body, if any (``*``: any index;
    the empty pointer: the whole body or event)."""
    for entry in DEVIATIONS:
        pattern = "^" + re.escape(entry["path"]).replace(r"\*", r"[^/]+") + "$"
        if entry["schema"] == schema and re.match(pattern, pointer) and _allows(entry, value):
            return entry
    return None


def violations(
    schema: str, body: Any, where: str = "", prefix: str = "", stats: Counter | None = None
) -> list[Violation]:
    """Every way ``body`` breaks ``schema`` that no deviation allows, at the most precise place known."""

    def resolve(error) -> list[Violation]:
        if error.validator in ("anyOf", "oneOf") and error.context:
            # Alternatives: one that holds (deviations allowed) satisfies the whole; otherwise report the one
            # that got furthest into the body, which is the variant the body was meant to be.
            branches: dict[int, list[Violation]] = {}
            for sub in error.context:
                branches.setdefault(sub.relative_schema_path[0], []).extend(resolve(sub))
            if len(branches) < len(error.validator_value) or any(not found for found in branches.values()):
                return []
            return max(branches.values(), key=lambda found: (max(len(v.pointer) for v in found), -len(found)))
        pointer = _pointer(error.absolute_path)
        entry = _deviation(schema, pointer, error.instance)
        if entry is not None:
            if stats is not None:
                stats[f"deviation {entry['schema']} {entry['path']}"] += 1
            return []
        return [Violation(where, schema, prefix + pointer, error.message[:300])]

    errors = list(validator(schema).iter_errors(body))
    whole = _deviation(schema, "", body) if errors else None
    if whole is not None:  # the whole body or event is another shape the deviation allows
        if stats is not None:
            stats[f"deviation {whole['schema']} {whole['path'] or '(whole)'}"] += 1
        return []
    found = [item for error in errors for item in resolve(error)]
    seen, unique = set(), []
    for item in found:
        if (item.pointer, item.message) not in seen:
            seen.add((item.pointer, item.message))
            unique.append(item)
    return unique


def sse_messages(text: str) -> list[tuple[str | None, Any]]:
    """``(event name or None, JSON of the data)`` of each message of a ``text/event-stream`` body (``[DONE]`` and
    blocks without data, such as ``: keep-alive`` comments, excluded)."""
    messages = []
    for block in re.split(r"\r?\n\r?\n", text):
        lines = re.split(r"\r?\n", block)
        data = [line[5:].removeprefix(" ") for line in lines if line.startswith("data:")]
        names = [line[6:].removeprefix(" ") for line in lines if line.startswith("event:")]
        if data and "\n".join(data) != "[DONE]":
            messages.append((names[-1] if names else None, json.loads("\n".join(data))))
    return messages


def sse_events(text: str) -> list[Any]:
    """The JSON of each ``data:`` field of a ``text/event-stream`` body (``[DONE]`` excluded)."""
    return [data for _, data in sse_messages(text)]


def _whole_messages(text: str) -> str:
    """``text`` up to its last complete message (one followed by a blank line): what a stream closed early
    delivered whole."""
    ends = list(re.finditer(r"\r?\n\r?\n", text))
    return text[: ends[-1].end()] if ends else ""


def _route(method: str, path: str) -> str | None:
    for route_method, pattern, schema in ROUTES:
        if method == route_method and re.fullmatch(pattern, path):
            return schema
    return None


def _stream(method: str, path: str) -> tuple[str, frozenset[str] | None] | None:
    for route_method, pattern, schema, terminal in STREAMS:
        if method == route_method and re.fullmatch(pattern, path):
            return schema, terminal
    return None


def check_stream(
    method: str, path: str, status: int, text: str, stats: Counter, complete: bool = True
) -> list[Violation]:
    """Check a 2xx ``text/event-stream`` body event by event; ``complete``: it was read to its end (otherwise only
    the messages that arrived whole are checked, and its end is not)."""
    where = f"{method} /v1{path} -> {status}"
    stream = _stream(method, path)
    if stream is None:
        return [Violation(where, "", "", "a text/event-stream answer on a route that does not stream in the spec")]
    schema, terminal = stream
    if not complete:
        text = _whole_messages(text)
    try:
        messages = sse_messages(text)
    except json.JSONDecodeError as exc:
        return [Violation(where, schema, "", f"a data: line is not JSON ({exc})")]
    stats["streams"] += 1
    stats["stream events"] += len(messages)
    if not complete:
        stats["streams closed early"] += 1
    found = []
    for index, (name, event) in enumerate(messages):
        kind = event.get("type") if isinstance(event, dict) else None
        prefix = f"event[{index}] {kind} "
        if name is not None and kind is not None and name != kind:
            found.append(Violation(where, schema, prefix, f"event: {name!r} names another type than the data's"))
        found += violations(schema, event, where, prefix, stats)
    if complete and terminal is not None:
        last = messages[-1][1] if messages else None
        kind = last.get("type") if isinstance(last, dict) else None
        if kind not in terminal:
            found.append(
                Violation(
                    where,
                    schema,
                    f"event[{len(messages)}]",
                    f"the stream ended after {kind!r}, not with one of {sorted(terminal)}",
                )
            )
    return found


def check(
    method: str,
    path: str,
    status: int,
    content_type: str,
    body: bytes,
    stats: Counter | None = None,
    complete: bool = True,
) -> list[Violation]:
    """Check one answer: ``path`` is under the API base (``/responses/resp_1``), ``body`` its bytes; ``complete``:
    False for a stream closed before its end."""
    stats = stats if stats is not None else Counter()
    where = f"{method} /v1{path} -> {status}"
    schema = ERROR if status >= 400 else _route(method, path) if 200 <= status < 300 else None
    if schema is None:
        stats["not covered by the spec"] += 1
        return []
    text = body.decode("utf-8", errors="replace")
    if status < 300 and content_type.startswith("text/event-stream"):
        return check_stream(method, path, status, text, stats, complete)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return [Violation(where, schema, "", f"the body is not JSON ({content_type or 'no content-type'})")]
    stats["bodies"] += 1
    return violations(schema, parsed, where, "", stats)


@dataclass
class Recorder:
    """What the wrapped clients saw: counts for the summary, violations until a test takes them."""

    bases: set[str] = field(default_factory=set)
    stats: Counter = field(default_factory=Counter)
    pending: list[Violation] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def watch(self, base_url: str) -> None:
        """Check every answer from under ``base_url`` (the stack's ``OPENAI_BASE_URL``, ending in ``/v1``)."""
        self.bases.add(base_url.rstrip("/"))

    def watched(self, url: str) -> str | None:
        """The watched base ``url`` is under, if any."""
        return next((b for b in self.bases if url == b or url.startswith(b + "/") or url.startswith(b + "?")), None)

    def seen(self, method: str, url: str, status: int, content_type: str, body: bytes, complete: bool = True) -> None:
        base = self.watched(url)
        if base is None:
            return
        path = urlsplit(url[len(base) :] or "/").path or "/"
        counts: Counter = Counter()
        found = check(method, path, status, content_type, body, counts, complete)
        with self.lock:
            self.stats.update(counts)
            self.pending += found

    def take(self) -> list[Violation]:
        with self.lock:
            taken, self.pending = self.pending, []
        return taken


RECORDER = Recorder()


class _Recording:
    """Wraps a response's byte stream: each chunk is handed on as it arrives and kept; ``close()`` (httpx calls it
    once the stream is read to its end, and on ``Response.close()``) has the copy checked, once. Mixed into the
    client library's own ``SyncByteStream``, which the response insists on (:func:`_recording`)."""

    def __init__(self, inner: Any, on_close: Callable[[bytes, bool], None]) -> None:
        self._inner = inner
        self._on_close = on_close
        self._chunks: list[bytes] = []
        self._complete = False  # the inner stream ran out: the answer arrived whole
        self._checked = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._chunks.append(chunk)
            yield chunk
        self._complete = True

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            if not self._checked:
                self._checked = True
                self._on_close(b"".join(self._chunks), self._complete)


def _recording(byte_stream: type) -> type:
    return type("_Recording", (_Recording, byte_stream), {})


def install() -> list[tuple[type, Any]]:
    """Wrap ``send`` of ``httpx.Client`` and ``httpx2.Client``; returns what ``uninstall`` restores."""
    import httpx

    modules = [httpx]
    try:
        import httpx2

        modules.append(httpx2)
    except ImportError:  # an openai SDK before 3.x uses httpx itself
        pass
    saved = []
    for module in modules:
        cls, original, recording = module.Client, module.Client.send, _recording(module.SyncByteStream)
        if getattr(original, "_conformance", False):  # installed already (the e2e session's): one wrapper only
            continue

        def send(self, request, *args, _original=original, _recording=recording, **kwargs):
            response = _original(self, request, *args, **kwargs)
            url = str(request.url)
            if RECORDER.watched(url) is None:
                return response
            content_type = response.headers.get("content-type", "")
            seen = functools.partial(RECORDER.seen, request.method, url, response.status_code, content_type)
            if content_type.startswith("text/event-stream") and not (response.is_stream_consumed or response.is_closed):
                response.stream = _recording(response.stream, seen)  # sent with stream=True: stays a stream
            else:
                seen(response.read())
            return response

        send._conformance = True  # type: ignore[attr-defined]
        saved.append((cls, original))
        cls.send = send
    return saved


def uninstall(saved: list[tuple[type, Any]]) -> None:
    for cls, original in saved:
        cls.send = original


def report(found: list[Violation]) -> str:
    lines = [f"{len(found)} OpenAI schema violation(s) (tests/schemas/openai; deviations.json lists the allowed):"]
    return "\n".join(
        [
            *lines,
            *(f"  {item}" for item in found[:40]),
            *([f"  ... and {len(found) - 40} more"] if len(found) > 40 else []),
        ]
    )
