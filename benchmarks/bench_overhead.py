"""Benchmark: darkroom's own per-request time and AWS API calls per route, with inference taken out.

In-process against moto (like bench_generate.py). The inference backend is replaced by a stub whose
``generate``/``edit``/``respond`` return images rendered once before timing starts (and a fixed string), so
what is left is darkroom's work: routing, validation, auth (key cache warm), rate-limit updates, intake,
encoding, S3 put + presign, usage records, response storage, JSON. Each route: one warm-up request, then the
median of ``--rounds`` warm requests, the routes interleaved round by round. Baseline, same run: the
models-list handler (the cheapest route).

A botocore hook on every client darkroom holds counts AWS API calls per request (``before-call``) and the
time spent inside them (``before-call`` to ``after-call``: botocore + moto in this process, a network round
trip in AWS). ``--json PATH`` also writes the figures (the cost model in docs/benchmarks.md uses them).

    /tmp/dv/bin/python benchmarks/bench_overhead.py [--rounds 25] [--json PATH]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import statistics
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
from botocore.client import BaseClient  # noqa: E402
from PIL import Image  # noqa: E402

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")  # before Powertools' loggers are built
import conftest  # noqa: E402, F401  (sets test credentials and Powertools switches before imports)
import lambda_harness  # noqa: E402
from darkroom import services  # noqa: E402
from darkroom.inference import GeneratedImage, GenerateJob  # noqa: E402
from darkroom.inference.local import render  # noqa: E402
from darkroom.local.stack import in_process_aws  # noqa: E402
from darkroom.tenancy import Limits  # noqa: E402


class InstantBackend:
    """Returns images prepared before timing (one per size); the cost of inference is zero."""

    def __init__(self):
        self._images: dict[tuple[int, int], Image.Image] = {}

    def prepared(self, width: int, height: int) -> Image.Image:
        if (width, height) not in self._images:
            self._images[(width, height)] = render(
                GenerateJob("a lighthouse at dusk", width, height, 1, "medium", False, 20), 0
            )
        return self._images[(width, height)]

    def generate(self, model, job):
        return [GeneratedImage(self.prepared(job.width, job.height)) for _ in range(job.n)]

    def edit(self, model, job):
        return [GeneratedImage(self.prepared(job.width, job.height)) for _ in range(job.n)]

    def respond(self, model, job):
        return "A stub answer of a fixed length, standing in for a model's reply."


class CallCounter:
    """Counts and times AWS API calls made through the clients it is attached to."""

    def __init__(self):
        self.calls: Counter[str] = Counter()
        self.seconds = 0.0
        self.transact_items = 0  # items inside TransactWriteItems calls (each costs 2 WRUs per KB)
        self.dynamodb_request_bytes: list[int] = []  # serialized request bodies, an upper bound on item size
        self._started: list[float] = []

    def attach(self, client: BaseClient) -> None:
        client.meta.events.register("before-call", self._before)
        client.meta.events.register("after-call", self._after)

    def _before(self, event_name: str, params: dict, **_):
        _, service, operation = event_name.split(".", 2)
        self.calls[f"{service}.{operation}"] += 1
        if service == "dynamodb":
            body = params.get("body") or b""
            self.dynamodb_request_bytes.append(len(body))
            if operation == "TransactWriteItems":
                self.transact_items += len(json.loads(body)["TransactItems"])
        self._started.append(time.perf_counter())

    def _after(self, **_):
        self.seconds += time.perf_counter() - self._started.pop()

    def reset(self) -> None:
        self.calls.clear()
        self.seconds = 0.0
        self.transact_items = 0
        self.dynamodb_request_bytes = []


def _clients(svc) -> list[BaseClient]:
    found = {}
    for component in vars(svc).values():
        for value in getattr(component, "__dict__", {}).values():
            if isinstance(value, BaseClient):
                found[id(value)] = value
    return list(found.values())


def _png(side: int) -> bytes:
    buffer = io.BytesIO()
    render(GenerateJob("an input photo", side, side, 1, "medium", False, 20), 0).save(buffer, format="PNG")
    return buffer.getvalue()


def _events() -> dict[str, tuple[str, dict]]:
    """route -> (function, API Gateway event)."""
    generate = lambda_harness.load_event("generate")
    generate["body"] = json.dumps(
        {"model": "local-image", "prompt": "a lighthouse at dusk", "size": "1024x1024", "output_format": "jpeg"}
    )
    small = _png(256)
    request = httpx.Request(
        "POST",
        "http://x/v1/images/edits",
        files=[("image", ("a.png", small, "image/png"))],
        data={"prompt": "put a hat on it", "model": "local-image", "size": "auto", "output_format": "jpeg"},
    )
    edit = lambda_harness.load_event("edit")
    edit["headers"] = dict(edit["headers"], **{"content-type": request.headers["content-type"]})
    edit["multiValueHeaders"] = dict(
        edit.get("multiValueHeaders") or {}, **{"content-type": [request.headers["content-type"]]}
    )
    edit["body"] = base64.b64encode(request.read()).decode()
    edit["isBase64Encoded"] = True
    text = lambda_harness.load_event("responses-create")
    text["body"] = json.dumps({"model": "local-text", "input": "Say something about lighthouses."})
    tool = lambda_harness.load_event("responses-create")
    tool["body"] = json.dumps(
        {
            "model": "local-text",
            "input": "a lighthouse at dusk",
            "tools": [{"type": "image_generation", "size": "1024x1024", "output_format": "jpeg"}],
        }
    )
    return {
        "models list (baseline)": ("models", lambda_harness.load_event("models-list")),
        "generate 1024x1024 jpeg": ("generate", generate),
        "edit 256x256 png in, jpeg out": ("edit", edit),
        "responses, text": ("responses", text),
        "responses, image tool 1024x1024 jpeg": ("responses", tool),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    stub = InstantBackend()
    os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    with in_process_aws("bench"):
        svc = services.services()
        svc.backends = lambda model: stub  # every use case's backend lookup
        _ = (svc.images, svc.response_ports)  # built on first use: build the clients now
        tenant = svc.directory.create_tenant("bench", Limits(10**6, 10**6, 10**6))
        svc.directory.issue_key(tenant.tenant_id, secret=lambda_harness.EVENT_KEY)
        counter = CallCounter()
        for client in _clients(svc):
            counter.attach(client)
        stub.prepared(1024, 1024)
        stub.prepared(256, 256)
        results, sink = {}, io.StringIO()
        routes = {
            route: (lambda_harness.load_handler(function), function, event)
            for route, (function, event) in _events().items()
        }
        samples = {route: [] for route in routes}
        aws_ms = {route: [] for route in routes}
        calls: dict[str, dict] = {}
        transact = dict.fromkeys(routes, 0)
        largest = dict.fromkeys(routes, 0)
        last_body = {}
        for round_number in range(args.rounds + 1):  # round 0 warms up: imports, clients, key cache
            for route, (handler, _, event) in routes.items():  # interleaved, so noise hits every route alike
                counter.reset()
                with contextlib.redirect_stdout(sink):  # EMF metrics print to stdout
                    start = time.perf_counter()
                    result = handler(event, lambda_harness.Context())
                    elapsed = (time.perf_counter() - start) * 1000
                assert result["statusCode"] == 200, (route, result["body"][:300])
                if round_number == 0:
                    continue
                samples[route].append(elapsed)
                aws_ms[route].append(counter.seconds * 1000)
                calls.setdefault(route, dict(counter.calls))
                assert dict(counter.calls) == calls[route], (route, calls[route], counter.calls)  # requests alike
                transact[route] = max(transact[route], counter.transact_items)
                largest[route] = max([largest[route], *counter.dynamodb_request_bytes])
                last_body[route] = result["body"]
        for route, (_, function, _) in routes.items():
            results[route] = {
                "function": function,
                "median_ms": statistics.median(samples[route]),
                "aws_ms": statistics.median(aws_ms[route]),
                "calls": calls[route],
                "transact_items": transact[route],
                "largest_dynamodb_request_bytes": largest[route],
                "response_bytes": len(last_body[route]),
            }
    base = results["models list (baseline)"]["median_ms"]
    print(
        f"Median of {args.rounds} warm requests per route; inference stubbed out (instant); "
        "ratio = route / models list.\n"
    )
    print(
        "| route | handler median (ms) | ratio to models list | in AWS calls, botocore + moto (ms) "
        "| handler minus AWS calls (ms) | AWS calls / request | response (bytes) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for route, r in results.items():
        print(
            f"| {route} | {r['median_ms']:.1f} | {r['median_ms'] / base:.2f} | {r['aws_ms']:.1f} "
            f"| {r['median_ms'] - r['aws_ms']:.1f} | {sum(r['calls'].values())} | {r['response_bytes']:,} |"
        )
    print("\nAWS API calls per warm request, by service.operation:\n")
    operations = sorted({op for r in results.values() for op in r["calls"]})
    print("| route | " + " | ".join(operations) + " | items in TransactWriteItems | largest DynamoDB request (bytes) |")
    print("|---|" + "---:|" * (len(operations) + 2))
    for route, r in results.items():
        print(
            f"| {route} | "
            + " | ".join(str(r["calls"].get(op, 0)) for op in operations)
            + f" | {r['transact_items']} | {r['largest_dynamodb_request_bytes']:,} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rounds": args.rounds, "routes": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
