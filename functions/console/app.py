"""GET /docs, /openapi.json, /playground and /console/{asset}: the public pages, with no key and no AWS access.

Unlike every other function this one does not use :func:`darkroom.api.resolver.entrypoint`, which
authenticates before routing: these pages are public. They hold no secrets; the playground keeps the
key a person pastes in the browser and sends it only in the ``Authorization`` header to darkroom's own
API. Files are served from a fixed table (never a path built from the request), with a strict
Content-Security-Policy: scripts and styles from this origin only, no framing.

Swagger UI's files come from the ``swagger-ui-bundle-v2`` package (pinned in functions/console/requirements.txt;
the local stack has it through the ``local`` extra): byte for byte the npm ``swagger-ui-dist`` release of the
same version. This function's build (functions/console/Makefile) ships only the two files served below.
``openapi.json`` beside this file is the committed ``docs/openapi.json``, written and checked by
``scripts/openapi.py``.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from darkroom.api.errors import NotFound
from darkroom.api.resolver import REQUEST_ID_PATH, build_resolver, event_request_id
from darkroom.observability import capture_handler, logger

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
SPEC = HERE / "openapi.json"

HTML = "text/html; charset=utf-8"
JAVASCRIPT = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
JSON = "application/json"

# One policy for every answer: nothing but this origin's scripts, styles, images (plus data:/blob: for the
# images the API returns and the ones a person picks) and fetches; no plugins, no framing, no form posts.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
# Small files that change with each deployment: the browser revalidates (ETag) every time.
REVALIDATE = "no-cache"

_OWN_ASSETS = {
    "playground.js": JAVASCRIPT,
    "playground.css": CSS,
    "docs.js": JAVASCRIPT,
    "docs.css": CSS,
}
_SWAGGER_UI_ASSETS = {
    "swagger-ui-bundle.js": JAVASCRIPT,
    "swagger-ui.css": CSS,
}
_PAGES = {"docs": "docs.html", "playground": "playground.html"}


@functools.cache
def assets() -> dict[str, tuple[Path, str]]:
    """``/console/{asset}`` name -> (file, content type): the only files this function serves as assets."""
    table = {name: (STATIC / name, kind) for name, kind in _OWN_ASSETS.items()}
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # a packaging mistake: /docs then shows its own "could not load" message
        logger.warning("swagger-ui-bundle-v2 is not installed; /docs cannot render")
    else:
        table |= {name: (Path(str(swagger_ui_path)) / name, kind) for name, kind in _SWAGGER_UI_ASSETS.items()}
    return table


@functools.cache
def _read(path: Path) -> tuple[str, str]:
    """(text, strong ETag) of a served file, read once per container."""
    text = path.read_text(encoding="utf-8")
    return text, '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


app = build_resolver()


def _file(path: Path, content_type: str) -> Response:
    text, etag = _read(path)
    headers = {"ETag": etag, "Cache-Control": REVALIDATE}
    sent = app.current_event.headers.get("if-none-match") or ""
    if etag in (tag.strip() for tag in sent.split(",")):
        return Response(status_code=304, headers=headers, body="")
    return Response(status_code=200, content_type=content_type, body=text, headers=headers)


@app.get("/docs", include_in_schema=False)
def docs():
    return _file(STATIC / _PAGES["docs"], HTML)


@app.get("/playground", include_in_schema=False)
def playground():
    return _file(STATIC / _PAGES["playground"], HTML)


@app.get("/openapi.json", include_in_schema=False)
def openapi_spec():
    return _file(SPEC, JSON)


@app.get("/console/<asset>", include_in_schema=False)
def asset(asset: str):
    found = assets().get(asset)  # an exact name from the table, or nothing: no path is built from the request
    if found is None:
        raise NotFound("Unknown console asset.")
    return _file(*found)


@logger.inject_lambda_context(correlation_id_path=REQUEST_ID_PATH, clear_state=True)
@capture_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = app.resolve(event, context)
    headers = result.setdefault("multiValueHeaders", {})
    for name, value in SECURITY_HEADERS.items():
        headers[name] = [value]  # every answer, the 404 and 500 envelopes included
    request = event_request_id(event)
    if request:
        headers["x-request-id"] = [request]
    return result
