"""ConsoleFunction in-process, from the committed event: public pages, their assets, headers, and nothing else.

No fixture here creates AWS resources or a tenant: the console must answer without a key and without
touching the service graph (tables, bucket, key lookups), which the autouse fixture turns into a failure.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re

import pytest

from darkroom.local.template import Stack
from lambda_harness import ROOT, invoke, load_event

CONSOLE = ROOT / "functions" / "console"
# sha256 of swagger-ui-bundle.js in npm's swagger-ui-dist@5.31.0: the PyPI package must ship the same bytes.
SWAGGER_UI_BUNDLE_SHA256 = "93b7b0862a80e2786f85b560be7693c2344354ffa7e7e224f850a54349724c31"
SWAGGER_UI_PIN = "swagger-ui-bundle-v2==5.31.0"


@pytest.fixture(autouse=True)
def no_services(monkeypatch):
    """Any use of the service graph or a boto3 client fails the test."""
    from darkroom import config, services
    from darkroom.api import resolver

    def refuse(*args, **kwargs):
        raise AssertionError("ConsoleFunction must not use AWS or the service graph")

    monkeypatch.setattr(services, "services", refuse)
    monkeypatch.setattr(resolver, "services", refuse)
    monkeypatch.setattr(config, "client", refuse)


def get(path: str, headers: dict[str, str] | None = None, resource: str | None = None, **path_parameters):
    """(status, headers, body text) of GET ``path`` without an Authorization header (unless given)."""
    event = load_event("console-playground")
    sent = {k: v for k, v in event["headers"].items() if k != "authorization"} | {"accept": "*/*"} | (headers or {})
    event.update(
        path=path,
        resource=resource or path,
        headers=sent,
        multiValueHeaders={k: [v] for k, v in sent.items()},
        pathParameters=path_parameters or None,
    )
    event["requestContext"].update(path=f"/prod{path}", resourcePath=resource or path)
    return invoke("console", event, raw=True)


def get_asset(name: str, headers: dict[str, str] | None = None):
    return get(f"/console/{name}", headers, resource="/console/{asset}", asset=name)


def assert_security_headers(headers: dict[str, str]) -> None:
    policy = headers["content-security-policy"]
    directives = {d.split()[0]: d.split()[1:] for d in (p.strip() for p in policy.split(";")) if d}
    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == ["'self'"], "scripts from this origin only: no inline, no eval, no CDN"
    assert directives["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy and "http" not in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-request-id"]


def test_playground_page_is_public_html_with_security_headers():
    status, headers, body = get("/playground")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert_security_headers(headers)
    assert '<script src="console/playground.js"></script>' in body
    assert '<link rel="stylesheet" href="console/playground.css">' in body
    for panel in ("api-key", "gen-form", "edit-overlay", "ask-form", "limits", "usage-load"):
        assert f'id="{panel}"' in body


def test_docs_page_loads_swagger_ui_from_this_origin():
    status, headers, body = get("/docs")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert_security_headers(headers)
    scripts = re.findall(r"<script[^>]*>", body)
    assert scripts == ['<script src="console/swagger-ui-bundle.js">', '<script src="console/docs.js">']
    assert 'href="console/swagger-ui.css"' in body


@pytest.mark.parametrize("page", ["playground.html", "docs.html"])
def test_pages_have_nothing_the_policy_would_block(page):
    """No inline script, event-handler attribute, style attribute or element, or off-origin URL."""
    html = (CONSOLE / "static" / page).read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE), "event-handler attribute"
    assert not re.search(r"\sstyle\s*=|<style", html, re.IGNORECASE), "inline style"
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "off-origin resource"


def test_playground_script_keeps_the_key_out_of_urls_and_html():
    script = (CONSOLE / "static" / "playground.js").read_text()
    for forbidden in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "localStorage",
        "new Function",
    ):
        assert forbidden not in script, forbidden
    # The key goes in one place: the Authorization header of fetches to this origin's API.
    assert script.count("Authorization: ") == 1 and 'Authorization: "Bearer " + key' in script
    assert 'window.location.origin + path.slice(0, path.lastIndexOf("/playground")) + "/v1"' in script


def test_no_key_is_needed_and_a_bad_one_is_ignored():
    assert get("/playground", {"authorization": "Bearer nope"})[0] == 200
    assert get("/docs")[0] == 200


def test_openapi_json_is_the_committed_spec():
    status, headers, body = get("/openapi.json")
    assert status == 200 and headers["content-type"] == "application/json"
    assert_security_headers(headers)
    committed = (ROOT / "docs" / "openapi.json").read_text()
    assert body == committed
    assert "/v1/images/generations" in json.loads(body)["paths"]
    # One spec: the function's copy is a link that `sam build` resolves into the artifact.
    assert (CONSOLE / "openapi.json").is_symlink()
    assert (CONSOLE / "openapi.json").resolve() == (ROOT / "docs" / "openapi.json").resolve()


def test_console_routes_stay_out_of_the_api_spec():
    paths = json.loads((ROOT / "docs" / "openapi.json").read_text())["paths"]
    assert not {"/docs", "/playground", "/openapi.json", "/console/{asset}"} & set(paths)


@pytest.mark.parametrize(
    "name,content_type",
    [
        ("playground.js", "text/javascript; charset=utf-8"),
        ("playground.css", "text/css; charset=utf-8"),
        ("docs.js", "text/javascript; charset=utf-8"),
        ("docs.css", "text/css; charset=utf-8"),
        ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("swagger-ui.css", "text/css; charset=utf-8"),
    ],
)
def test_assets_have_their_content_types(name, content_type):
    status, headers, body = get_asset(name)
    assert status == 200 and body
    assert headers["content-type"] == content_type
    assert headers["cache-control"] == "no-cache" and headers["etag"].startswith('"')
    assert_security_headers(headers)


def test_swagger_ui_is_the_npm_release_and_pinned_in_one_version():
    _, _, body = get_asset("swagger-ui-bundle.js")
    assert hashlib.sha256(body.encode()).hexdigest() == SWAGGER_UI_BUNDLE_SHA256
    name, _, version = SWAGGER_UI_PIN.partition("==")
    assert importlib.metadata.version(name) == version
    assert SWAGGER_UI_PIN in (CONSOLE / "requirements.txt").read_text().split()
    assert f'"{SWAGGER_UI_PIN}"' in (ROOT / "pyproject.toml").read_text()


def test_a_matching_etag_gets_304_without_a_body():
    _, headers, _ = get_asset("playground.js")
    status, again, body = get_asset("playground.js", {"if-none-match": headers["etag"]})
    assert status == 304 and body == "" and again["etag"] == headers["etag"]
    assert_security_headers(again)
    assert get_asset("playground.js", {"if-none-match": '"stale"'})[0] == 200


@pytest.mark.parametrize(
    "name",
    [
        "nope.js",
        "app.py",
        "requirements.txt",
        "openapi.json",
        "playground.html",
        "..",
        "..%2Fapp.py",
        "%2e%2e%2fapp.py",
        "..\\app.py",
        "swagger-ui-bundle.js.map",
        "index.html",
        "PLAYGROUND.JS",
    ],
)
def test_unknown_assets_are_404_in_the_openai_envelope(name):
    status, headers, body = get_asset(name)
    assert status == 404 and headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error == {"message": error["message"], "type": "invalid_request_error", "param": None, "code": "not_found"}
    # Not in the table ("Unknown console asset.") or not even a path segment the route matches ("Unknown route.").
    assert error["message"] in ("Unknown console asset.", "Unknown route.")
    assert_security_headers(headers)


@pytest.mark.parametrize(
    "path",
    ["/console/../app.py", "/console/static/playground.js", "/console/", "/docs/x", "/console/%2e%2e/requirements.txt"],
)
def test_paths_outside_the_table_are_404(path):
    status, headers, body = get(path, resource="/console/{asset}")
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"
    assert "app.py" not in body and "swagger" not in body
    assert_security_headers(headers)


def test_console_function_has_no_data_access():
    stack = Stack()
    props = stack.resources["ConsoleFunction"]["Properties"]
    assert props["Policies"] == []
    assert props["MemorySize"] == 256 and props["Timeout"] == 10
    routes = {(r.method, r.path) for r in stack.routes() if r.function == "ConsoleFunction"}
    assert routes == {("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/playground"), ("GET", "/console/{asset}")}
