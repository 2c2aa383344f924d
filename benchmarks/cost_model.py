"""Cost model: AWS cost per 1,000 images from bench_overhead.py's measured figures and stated assumptions.

Inputs: the handler medians and AWS call counts of ``bench_overhead.py --json`` (measured), the functions'
MemorySize from template.yaml (configured), and the prices and assumptions below (NOT measured: prices as
published for us-east-1 as remembered, without internet access; verify before relying on them).

    /tmp/dv/bin/python benchmarks/bench_overhead.py --json benchmarks/results/overhead.json
    /tmp/dv/bin/python benchmarks/cost_model.py [--input benchmarks/results/overhead.json] [--inference-seconds 5]
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Prices, us-east-1, public price lists as remembered (no internet here); verify before relying on them.
LAMBDA_GB_SECOND = 0.0000166667  # x86_64, first 6 billion GB-s a month
LAMBDA_REQUEST = 0.20 / 1e6
APIGW_REST_REQUEST = 3.50 / 1e6  # REST API, first 333 million a month
DYNAMODB_WRU = 0.625 / 1e6  # on-demand write request unit (after the November 2024 price cut)
S3_PUT = 0.005 / 1000  # S3 Standard PUT/COPY/POST/LIST
S3_GET = 0.0004 / 1000
S3_GB_MONTH = 0.023  # S3 Standard, first 50 TB
DATA_OUT_GB = 0.09  # data transfer out to the internet, first 10 TB a month
SAGEMAKER_G5_XLARGE_HOUR = 1.408  # real-time inference hosting, ml.g5.xlarge (1x A10G)

# Assumptions (stated, not measured).
STORED_IMAGE_BYTES = 1_000_000  # one 1024x1024 output as a real model would return it (PNG/JPEG of a photo)
RETENTION_DAYS = 7  # template.yaml ImageRetentionDays default
CLIENT_FETCHES_URL = 0.5  # share of images fetched once through the presigned URL (the rest use b64_json)
UTILISATIONS = (1.0, 0.5, 0.25)  # GPU endpoint busy share

ROUTES = {  # route in bench_overhead.py -> template resource
    "generate 1024x1024 jpeg": "GenerateFunction",
    "edit 256x256 png in, jpeg out": "EditFunction",
    "responses, image tool 1024x1024 jpeg": "ResponsesFunction",
}


def memory_mb(template: str) -> dict[str, int]:
    """MemorySize per function resource (the Globals default where a function sets none)."""
    sizes, current, default = {}, None, 128
    for line in template.splitlines():
        resource = re.match(r"^  (\w+):\s*$", line)
        if resource:
            current = resource.group(1)
        size = re.match(r"^\s+MemorySize:\s*(\d+)", line)
        if size and current:
            if current == "Function":  # Globals: Function:
                default = int(size.group(1))
            else:
                sizes[current] = int(size.group(1))
    return {name: sizes.get(name, default) for name in ROUTES.values()}


def wru(route: dict) -> int:
    """Write request units per request: 1 per KB for PutItem/UpdateItem, 2 per KB for each item in a transaction.
    Rate-limit counters (UpdateItem) and each usage-transaction item are taken as under 1 KB (the whole
    transaction request measured about 1.3 KB for two items); a PutItem (stored response) as the largest
    DynamoDB request body measured, rounded up to whole KB (an upper bound)."""
    calls = route["calls"]
    put_kb = math.ceil(route["largest_dynamodb_request_bytes"] / 1024)
    return calls.get("dynamodb.UpdateItem", 0) + calls.get("dynamodb.PutItem", 0) * put_kb + 2 * route["transact_items"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", type=Path, default=ROOT / "benchmarks" / "results" / "overhead.json")
    parser.add_argument(
        "--inference-seconds",
        type=float,
        default=5.0,
        help="assumed model time per 1024x1024 image on one ml.g5.xlarge (not measured)",
    )
    args = parser.parse_args()
    measured = json.loads(args.input.read_text())["routes"]
    memory = memory_mb((ROOT / "template.yaml").read_text())
    infer = args.inference_seconds
    per_k = 1000
    print(
        f"Per 1,000 images (n=1), us-east-1, USD. Lambda waits synchronously for inference: assumed {infer:g} s "
        f"per image; darkroom's own time = bench_overhead handler median.\n"
    )
    print("| item | " + " | ".join(ROUTES) + " |")
    print("|---|" + "---:|" * len(ROUTES))
    rows: dict[str, list[float]] = {}
    notes: dict[str, list[str]] = {}
    for route, function in ROUTES.items():
        r = measured[route]
        gb = memory[function] / 1024
        own = r["median_ms"] / 1000
        response_gb = STORED_IMAGE_BYTES * 4 / 3 / 1e9  # the image as base64 in the JSON response
        items = {
            "Lambda, darkroom's own time": own * gb * LAMBDA_GB_SECOND * per_k,
            "Lambda, waiting for inference": infer * gb * LAMBDA_GB_SECOND * per_k,
            "Lambda requests": LAMBDA_REQUEST * per_k,
            "API Gateway REST requests": APIGW_REST_REQUEST * per_k,
            "DynamoDB on-demand writes": wru(r) * DYNAMODB_WRU * per_k,
            "S3 PUT (+ GET for URL fetches)": (r["calls"].get("s3.PutObject", 0) * S3_PUT + CLIENT_FETCHES_URL * S3_GET)
            * per_k,
            f"S3 storage, {RETENTION_DAYS} days": STORED_IMAGE_BYTES / 1e9 * S3_GB_MONTH * RETENTION_DAYS / 30 * per_k,
            "data transfer out (b64 response)": response_gb * DATA_OUT_GB * per_k,
        }
        for name, value in items.items():
            rows.setdefault(name, []).append(value)
        notes.setdefault("memory", []).append(f"{memory[function]} MB")
        notes.setdefault("own", []).append(f"{r['median_ms']:.1f} ms")
        notes.setdefault("wru", []).append(str(wru(r)))
    print("| configured memory (template.yaml) | " + " | ".join(notes["memory"]) + " |")
    print("| darkroom's own time (measured, median) | " + " | ".join(notes["own"]) + " |")
    print("| WRUs per request (from counted calls) | " + " | ".join(notes["wru"]) + " |")
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    totals = [sum(values) for values in zip(*rows.values(), strict=True)]
    print("| **AWS around the model, total** | " + " | ".join(f"**{t:.4f}**" for t in totals) + " |")
    print(
        f"\nInference on a SageMaker real-time endpoint, ml.g5.xlarge at ${SAGEMAKER_G5_XLARGE_HOUR}/hour, "
        f"{infer:g} s per image (one at a time = {3600 / infer:.0f} images/hour at full use):\n"
    )
    print(
        "| GPU utilisation | images/hour | inference per 1,000 images | AWS around the model / inference (generate) |"
    )
    print("|---:|---:|---:|---:|")
    for share in UTILISATIONS:
        per_hour = 3600 / infer * share
        cost = SAGEMAKER_G5_XLARGE_HOUR / per_hour * per_k
        print(f"| {share:.0%} | {per_hour:.0f} | {cost:.2f} | {totals[0] / cost:.3f} |")


if __name__ == "__main__":
    main()
