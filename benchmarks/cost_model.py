"""Cost model: AWS cost per 1,000 images from bench_overhead.py's measured figures and stated assumptions.

Inputs: the handler medians and AWS call counts of ``bench_overhead.py --json`` (measured), the functions'
MemorySize from template.yaml (configured), and the prices and assumptions below (NOT measured). Prices are
us-east-1 list prices checked on 2026-12-02 against stored copies of public pages; each constant names its
source. AWS's own pricing pages render most figures client-side, so many figures come from secondary pages and
are marked "secondary"; figures that could not be found are marked "NOT VERIFIED" and keep their old value.

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

# Prices, us-east-1, USD, checked 2026-12-02. "primary" = an AWS-owned page; "secondary" = a third-party page
# (AWS's pricing pages fill their tables in client-side, so their stored copies mostly lack the figures).
# Lambda duration, x86_64, first 6 billion GB-s a month: secondary, https://cloudchipr.com/blog/aws-lambda-pricing
# (checked 2026-12-02); AWS's own pages show it rounded to $0.00001667 (primary,
# https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html, checked 2026-12-02).
LAMBDA_GB_SECOND = 0.0000166667
# Lambda duration, arm64, first 7.5 billion GB-s a month: secondary, https://cloudchipr.com/blog/aws-lambda-pricing
# and https://app.unpkg.com/artillery@2.0.28/files/lib/platform/aws-lambda/prices.js (checked 2026-12-02).
LAMBDA_ARM_GB_SECOND = 0.0000133334
# Lambda requests, $0.20 per million (both architectures): primary,
# https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html and the worked example on
# https://aws.amazon.com/lambda/pricing/ (checked 2026-12-02).
LAMBDA_REQUEST = 0.20 / 1e6
# Lambda SnapStart (Python/.NET): cache charge per GB-second of cached snapshot, and restore charge per GB restored:
# secondary, https://awsnegotiations.com/lambda-snapstart-cost-impact.html and
# https://awsnegotiations.com/blog/lambda-snapstart-cost-impact/ (checked 2026-12-02; the second page calls the
# restore unit "GB-second", the first "GB restored"; not confirmed on an AWS page).
LAMBDA_SNAPSTART_CACHE_GB_SECOND = 0.0000015046
LAMBDA_SNAPSTART_RESTORE_GB = 0.0001397998
# API Gateway REST API, $3.50 per million for the first 333 million a month (then $2.80 for the next 667 million):
# primary, https://docs.aws.amazon.com/pt_br/whitepapers/latest/best-practices-api-gateway-private-apis-integration/cost-optimization.html
# (English text, Table 4; checked 2026-12-02).
APIGW_REST_REQUEST = 3.50 / 1e6
APIGW_REST_FIRST_TIER_REQUESTS = 333_000_000
# DynamoDB on-demand (Standard table class), after the November 2024 50% cut: $0.625 per million WRU, $0.125 per
# million RRU: secondary, https://airbyte.com/data-engineering-resources/dynamodb-pricing (checked 2026-12-02).
DYNAMODB_WRU = 0.625 / 1e6
DYNAMODB_RRU = 0.125 / 1e6
# S3 Standard requests, PUT/COPY/POST/LIST $0.005 and GET $0.0004 per 1,000: secondary,
# https://c3x.dev/blog/s3-request-fees-explained and https://awsi.click/en/articles/s3-request-pricing-get-put-difference/
# (checked 2026-12-02).
S3_PUT = 0.005 / 1000
S3_GET = 0.0004 / 1000
# S3 Standard storage, first 50 TB a month: secondary, https://deepeshsoni.com/archives/256 ("around $0.023")
# and https://www.cloudtoggle.com/?p=1823 ("around $23" per TB-month) (checked 2026-12-02).
S3_GB_MONTH = 0.023
# SQS standard queue, $0.40 per million requests after the 1 million free a month (first 100 billion): secondary,
# https://cloudburn.io/blog/amazon-sqs-pricing and https://unanswered.io/guide/aws-sqs-pricing-and-cost-optimization
# (checked 2026-12-02).
SQS_REQUEST = 0.40 / 1e6
# CloudWatch Logs ingestion (standard log class), $0.50 per GB: secondary,
# https://www.factualminds.com/blog/amazon-cloudwatch-pricing-metrics-logs-alarms-dashboards/ (checked 2026-12-02).
CLOUDWATCH_LOGS_INGEST_GB = 0.50
# CloudWatch custom metrics, first 10,000 metrics, $0.30 per metric-month: secondary,
# https://c3x.dev/blog/aws-cloudwatch-metrics-cost/ (checked 2026-12-02).
# EMF-embedded metrics are billed as custom metrics plus the log ingestion of the EMF lines (NOT VERIFIED: the
# billing rule was not found on a checked page; taken from the brief).
CLOUDWATCH_CUSTOM_METRIC_MONTH = 0.30
# Data transfer out to the internet, first 10 TB a month (after 100 GB free): secondary,
# https://wring.co/blog/aws-data-transfer-pricing-guide and https://www.egresscost.com/aws, consistent with a bill
# line "$0.090 per GB - first 10 TB / month data transfer out" quoted on
# https://repost.aws/questions/QUAT1NfOeZSAK5z8KXXO9jgA/do-amazon-aws-ec-2-free-tier-have-a-bandwidth-limit
# (checked 2026-12-02).
DATA_OUT_GB = 0.09
# SageMaker real-time inference, ml.g5.xlarge (1x A10G): NOT VERIFIED, old value kept: no AWS page with the figure
# was found; secondary pages disagree: "about $1.41/hour" (us-east-1, Oct 2025)
# https://zircon.tech/blog/the-real-cost-of-running-ai-models-on-aws-sagemaker-inference-deep-dive vs $1.21
# https://www.wring.co/blog/aws-sagemaker-inference-guide (checked 2026-12-02).
# ml.g6.xlarge: NOT VERIFIED, no figure found (checked 2026-12-02), so no constant.
SAGEMAKER_G5_XLARGE_HOUR = 1.408

# Amazon Bedrock on-demand, USD per generated image (model -> {description: usd}); None = NOT VERIFIED.
# Stability figures: secondary and weak: an unattributed public script (scripts/fetch-bedrock.py, search-index file
# 52006719581) whose overrides cite https://aws.amazon.com/bedrock/pricing/ (checked 2026-12-02); no AWS page with the
# figures was found. Another public script prices Stable Image Ultra at $0.08, so confirm before relying on them.
# Nova Canvas and Titan Image Generator v2 by resolution and quality: NOT VERIFIED (only flat or conflicting
# third-party figures: Nova Canvas $0.04 and $0.08 in different public scripts; Titan v2 $0.008 flat). Both are
# Legacy models: Titan Image Generator G1 v2 EOL 2026-06-30 (AWS model card,
# https://docs---aws.amazon.com.rproxy.govskope.ca/bedrock/latest/userguide/model-card-amazon-titan-image-generator-g1-v2.html),
# Nova Canvas EOL 2026-09-30 (secondary, https://www.skills.sh/calesthio/generative-media-skills/amazon-nova-canvas),
# both checked 2026-12-02, so both may no longer be callable on 2026-12-02.
# Stability AI Image Services (Inpaint and the other eight tools): NOT VERIFIED, no figure found.
BEDROCK_PER_IMAGE: dict[str, dict[str, float | None]] = {
    "stability.sd3-5-large-v1:0": {"SD3.5 Large, per image": 0.08},
    "stability.stable-image-core-v1:1": {"Stable Image Core, per image": 0.04},
    "stability.stable-image-ultra-v1:1": {"Stable Image Ultra, per image": 0.14},
    "stability.stable-image-inpaint-v1:0": {"Stability AI Image Services (Inpaint), per image": None},
    "amazon.nova-canvas-v1:0": {
        "up to 1024x1024, standard": None,
        "up to 1024x1024, premium": None,
        "up to 2048x2048, standard": None,
        "up to 2048x2048, premium": None,
    },
    "amazon.titan-image-generator-v2:0": {
        "up to 512x512, standard": None,
        "up to 512x512, premium": None,
        "larger than 512x512, standard": None,
        "larger than 512x512, premium": None,
    },
}

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
