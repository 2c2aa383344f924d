"""Regenerate events/*.json: API Gateway REST proxy events for each route, as the local bridge builds them.

`sam local invoke GenerateFunction -e events/generate.json` and the tests replay the same bytes.
The key inside is a fixed example key (tests seed a tenant with it); it grants nothing anywhere else.
"""

import json
import sys
import zlib
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "shared"))
sys.path.insert(0, str(ROOT / "tests"))

from darkroom.local.bridge import LocalApi, _route_pattern  # noqa: E402
from darkroom.local.template import Stack  # noqa: E402
from lambda_harness import EVENT_KEY  # noqa: E402

EVENTS = {
    "generate": ("POST", "/v1/images/generations",
                 {"model": "local-image", "prompt": "a lighthouse at dusk, oil on canvas", "size": "512x512", "n": 1}),
    "models-list": ("GET", "/v1/models", None),
    "models-retrieve": ("GET", "/v1/models/local-image", None),
}


def main() -> None:
    stack = Stack(ROOT / "template.yaml")
    api = LocalApi(stack, {}, stage="prod")
    for name, (method, path, body) in EVENTS.items():
        route = next(r for r in stack.routes() if r.method == method and _route_pattern(r.path).match(path))
        params = _route_pattern(route.path).match(path).groupdict()
        headers = [("accept", "application/json"), ("authorization", f"Bearer {EVENT_KEY}"),
                   ("host", "example.execute-api.us-east-1.amazonaws.com"), ("user-agent", "OpenAI/Python 3.54.0")]
        raw = b""
        if body is not None:
            raw = json.dumps(body).encode()
            headers.append(("content-type", "application/json"))
        event = api._event(method, urlsplit(path), route, params, headers, raw, "198.51.100.7")
        event["requestContext"]["requestId"] = f"00000000-0000-4000-8000-{zlib.crc32(name.encode()):012d}"
        event["requestContext"]["requestTimeEpoch"] = 1795000000000
        event["requestContext"]["requestTime"] = "19/Nov/2026:09:46:40 +0000"
        (ROOT / "events" / f"{name}.json").write_text(json.dumps(event, indent=2) + "\n")


if __name__ == "__main__":
    main()
