"""OpenAI schema conformance: every darkroom answer the e2e suite sees, checked against tests/schemas/openai.

The schemas are darkroom's transcription of the constraints in OpenAI's published OpenAPI spec (their
``$comment`` names the commit and license). A body is matched to its schema by method, route and status:
a 2xx JSON body by route, a ``text/event-stream`` body event by event (each ``data:`` line against
``ResponseStreamEvent``), and every 4xx/5xx body against the error envelope. Routes OpenAI does not have
(``/v1/usage``, the console) are counted and skipped. A violation is reported as method, path, the JSON
pointer inside the body (or ``event[i]``) and the validator's message; ``DEVIATIONS`` (deviations.json)
lists, with a reason each, the only places where darkroom knowingly differs, and nothing else is ignored.

``install()`` wraps ``httpx.Client.send`` and ``httpx2.Client.send`` (the openai SDK's HTTP client), so SDK
calls and plain httpx calls are both seen; the body is read in full before it is handed back, which the
SDK's SSE reader tolerates (httpx iterates the read content). Only URLs under a ``watch()``-ed base URL
are checked.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
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
]
STREAM_EVENT = "responses.json#/$defs/ResponseStreamEvent"
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


def _deviation(schema: str, pointer: str, value: Any) -> dict | None:
    """The DEVIATIONS entry that allows ``value`` at ``pointer`` of a ``schema`` body, if any (``*``: any index)."""
    for entry in DEVIATIONS:
        pattern = "^" + re.escape(entry["path"]).replace(r"\*", r"[^/]+") + "$"
        if (
            entry["schema"] == schema
            and re.match(pattern, pointer)
            and Draft202012Validator(entry["allow"]).is_valid(value)
        ):
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

    found = [item for error in validator(schema).iter_errors(body) for item in resolve(error)]
    seen, unique = set(), []
    for item in found:
        if (item.pointer, item.message) not in seen:
            seen.add((item.pointer, item.message))
            unique.append(item)
    return unique


def sse_events(text: str) -> list[Any]:
    """The JSON of each ``data:`` field of a ``text/event-stream`` body (``[DONE]`` excluded)."""
    events = []
    for block in re.split(r"\r?\n\r?\n", text):
        data = [line[5:].removeprefix(" ") for line in re.split(r"\r?\n", block) if line.startswith("data:")]
        if data and "\n".join(data) != "[DONE]":
            events.append(json.loads("\n".join(data)))
    return events


def _route(method: str, path: str) -> str | None:
    for route_method, pattern, schema in ROUTES:
        if method == route_method and re.fullmatch(pattern, path):
            return schema
    return None


def check(
    method: str, path: str, status: int, content_type: str, body: bytes, stats: Counter | None = None
) -> list[Violation]:
    """Check one answer: ``path`` is under the API base (``/responses/resp_1``), ``body`` its bytes."""
    stats = stats if stats is not None else Counter()
    where = f"{method} /v1{path} -> {status}"
    schema = ERROR if status >= 400 else _route(method, path) if 200 <= status < 300 else None
    if schema is None:
        stats["not covered by the spec"] += 1
        return []
    text = body.decode("utf-8", errors="replace")
    if status < 300 and content_type.startswith("text/event-stream"):
        try:
            events = sse_events(text)
        except json.JSONDecodeError as exc:
            return [Violation(where, STREAM_EVENT, "", f"a data: line is not JSON ({exc})")]
        stats["streams"] += 1
        stats["stream events"] += len(events)
        found = []
        for index, event in enumerate(events):
            kind = event.get("type") if isinstance(event, dict) else None
            found += violations(STREAM_EVENT, event, where, f"event[{index}] {kind} ", stats)
        return found
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

    def seen(self, method: str, url: str, status: int, content_type: str, body: bytes) -> None:
        base = next((b for b in self.bases if url == b or url.startswith(b + "/") or url.startswith(b + "?")), None)
        if base is None:
            return
        path = urlsplit(url[len(base) :] or "/").path or "/"
        with self.lock:
            self.pending += check(method, path, status, content_type, body, self.stats)

    def take(self) -> list[Violation]:
        with self.lock:
            taken, self.pending = self.pending, []
        return taken


RECORDER = Recorder()


def install() -> list[tuple[type, Any]]:
    """Wrap ``send`` of ``httpx.Client`` and ``httpx2.Client``; returns what ``uninstall`` restores."""
    import httpx

    classes = [httpx.Client]
    try:
        import httpx2

        classes.append(httpx2.Client)
    except ImportError:  # an openai SDK before 3.x uses httpx itself
        pass
    saved = []
    for cls in classes:
        original = cls.send

        def send(self, request, *args, _original=original, **kwargs):
            response = _original(self, request, *args, **kwargs)
            url = str(request.url)
            if any(url.startswith(base) for base in RECORDER.bases):
                body = response.read()  # a stream too: darkroom sends it whole; iter_bytes replays the content
                RECORDER.seen(request.method, url, response.status_code, response.headers.get("content-type", ""), body)
            return response

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
