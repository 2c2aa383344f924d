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
# CloudWatch alarms, standard resolution, $0.10 per alarm-month: secondary,
# https://c3x.dev/resources/aws/aws_cloudwatch_metric_alarm (checked 2026-12-02).
CLOUDWATCH_ALARM_MONTH = 0.10
# CloudWatch dashboards, $3.00 per dashboard-month beyond the free three: NOT VERIFIED (no checked page gave the
# figure on 2026-12-02); counted for the template's one dashboard as if the free ones were used elsewhere.
CLOUDWATCH_DASHBOARD_MONTH = 3.00

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
CLIENT_FETCHES_URL = 0.5  # share of images fetched once through the presigned URL
B64_SHARE = 1.0  # share of responses carrying the image as b64_json (gpt-image clients always ask for it)
COLD_SHARE = 0.01  # share of requests that start a new execution environment (a SnapStart restore)
LOG_BYTES_PER_REQUEST = 2048  # Lambda START/END/REPORT, darkroom's JSON lines and EMF, the API's access-log line
CUSTOM_METRICS = 20  # metric streams a one-backend deployment emits (darkroom.observability names x dimensions)
ENDPOINTS = 1  # GPU endpoints the fixed monthly costs are shared over
UTILISATIONS = (1.0, 0.5, 0.25)  # GPU endpoint busy share
HOURS_PER_MONTH = 730
TARGET = 0.02  # issue 17: AWS around the model <= 2% of the GPU cost at 50% GPU use

ROUTES = {  # route in bench_overhead.py -> template resource
    "generate 1024x1024 jpeg": "GenerateFunction",
    "edit 256x256 png in, jpeg out": "EditFunction",
    "responses, image tool 1024x1024 jpeg": "ResponsesFunction",
}


def functions(template: str) -> dict[str, int]:
    """MemorySize of every function resource (the Globals default where a function sets none)."""
    sizes: dict[str, int | None] = {}
    current, default = None, 128
    for line in template.splitlines():
        resource = re.match(r"^  (\w+):\s*$", line)
        if resource:
            current = resource.group(1)
        if current and re.match(r"^    Type: AWS::Serverless::Function\s*$", line):
            sizes.setdefault(current, None)
        size = re.match(r"^\s+MemorySize:\s*(\d+)", line)
        if size and current:
            if current == "Function":  # Globals: Function:
                default = int(size.group(1))
            else:
                sizes[current] = int(size.group(1))
    return {name: size or default for name, size in sizes.items()}


def arm64(template: str) -> bool:
    """Whether the Globals put every function on arm64."""
    return bool(re.search(r"^    Architectures: \[arm64\]", template, re.MULTILINE))


def snapstart(template: str) -> bool:
    """Whether the Globals turn SnapStart on for published versions."""
    return "ApplyOn: PublishedVersions" in template or "Default: PublishedVersions" in template


def wru(route: dict) -> int:
    """Write request units per request: 1 per KB for PutItem/UpdateItem, 2 per KB for each item in a transaction.
    Rate-limit counters (UpdateItem) and each usage-transaction item are taken as under 1 KB (the whole
    transaction request measured about 1.3 KB for two items); a PutItem (stored response) as the largest
    DynamoDB request body measured, rounded up to whole KB (an upper bound)."""
    calls = route["calls"]
    put_kb = math.ceil(route["largest_dynamodb_request_bytes"] / 1024)
    return calls.get("dynamodb.UpdateItem", 0) + calls.get("dynamodb.PutItem", 0) * put_kb + 2 * route["transact_items"]


def fixed_monthly(memory: dict[str, int], template: str) -> dict[str, float]:
    """The costs that do not grow with requests, per month."""
    alarms = template.count("Type: AWS::CloudWatch::Alarm")
    dashboards = template.count("Type: AWS::CloudWatch::Dashboard")
    cached_gb = sum(memory.values()) / 1024 if snapstart(template) else 0.0
    return {
        f"SnapStart snapshot cache ({len(memory)} functions, {sum(memory.values())} MB)": cached_gb
        * HOURS_PER_MONTH
        * 3600
        * LAMBDA_SNAPSTART_CACHE_GB_SECOND,
        f"CloudWatch custom metrics ({CUSTOM_METRICS})": CUSTOM_METRICS * CLOUDWATCH_CUSTOM_METRIC_MONTH,
        f"CloudWatch alarms ({alarms})": alarms * CLOUDWATCH_ALARM_MONTH,
        f"CloudWatch dashboard ({dashboards})": dashboards * CLOUDWATCH_DASHBOARD_MONTH,
    }


def per_request(route: dict, gb: float, infer: float, template: str) -> dict[str, float]:
    """USD per 1,000 images of one route (n=1), by item."""
    price = LAMBDA_ARM_GB_SECOND if arm64(template) else LAMBDA_GB_SECOND
    calls, per_k = route["calls"], 1000
    reads = calls.get("dynamodb.GetItem", 0) + calls.get("dynamodb.Query", 0)
    sqs = sum(count for name, count in calls.items() if name.startswith("sqs."))
    restores = COLD_SHARE * gb * LAMBDA_SNAPSTART_RESTORE_GB if snapstart(template) else 0.0
    return {
        "Lambda, darkroom's own time": route["median_ms"] / 1000 * gb * price * per_k,
        "Lambda, waiting for inference": infer * gb * price * per_k,
        "Lambda requests": LAMBDA_REQUEST * per_k,
        f"SnapStart restores ({COLD_SHARE:.0%} of requests)": restores * per_k,
        "API Gateway REST requests": APIGW_REST_REQUEST * per_k,
        "DynamoDB on-demand writes (+ reads)": (wru(route) * DYNAMODB_WRU + reads * DYNAMODB_RRU) * per_k,
        "S3 PUT (+ GET for URL fetches)": (calls.get("s3.PutObject", 0) * S3_PUT + CLIENT_FETCHES_URL * S3_GET) * per_k,
        f"S3 storage, {RETENTION_DAYS} days": STORED_IMAGE_BYTES / 1e9 * S3_GB_MONTH * RETENTION_DAYS / 30 * per_k,
        "SQS requests": sqs * SQS_REQUEST * per_k,
        "CloudWatch Logs ingestion": LOG_BYTES_PER_REQUEST / 1e9 * CLOUDWATCH_LOGS_INGEST_GB * per_k,
        "base64's third (darkroom's share of egress)": B64_SHARE * STORED_IMAGE_BYTES / 3 / 1e9 * DATA_OUT_GB * per_k,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", type=Path, default=ROOT / "benchmarks" / "results" / "overhead.json")
    parser.add_argument("--template", type=Path, default=ROOT / "template.yaml")
    parser.add_argument(
        "--inference-seconds",
        type=float,
        default=5.0,
        help="assumed model time per 1024x1024 image on one ml.g5.xlarge (not measured)",
    )
    args = parser.parse_args()
    measured = json.loads(args.input.read_text())["routes"]
    template = args.template.read_text()
    memory = functions(template)
    infer = args.inference_seconds
    print(
        f"Per 1,000 images (n=1), us-east-1, USD; {'arm64' if arm64(template) else 'x86_64'}, SnapStart "
        f"{'on' if snapstart(template) else 'off'}. Lambda waits for inference: assumed {infer:g} s per image; "
        "darkroom's own time = bench_overhead handler median.\n"
    )
    print("| item | " + " | ".join(ROUTES) + " |")
    print("|---|" + "---:|" * len(ROUTES))
    rows: dict[str, list[float]] = {}
    print("| configured memory (template.yaml) | " + " | ".join(f"{memory[f]} MB" for f in ROUTES.values()) + " |")
    print(
        "| darkroom's own time (measured, median) | "
        + " | ".join(f"{measured[r]['median_ms']:.1f} ms" for r in ROUTES)
        + " |"
    )
    for route, function in ROUTES.items():
        for name, value in per_request(measured[route], memory[function] / 1024, infer, template).items():
            rows.setdefault(name, []).append(value)
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    totals = [sum(values) for values in zip(*rows.values(), strict=True)]
    print("| **per request, total** | " + " | ".join(f"**{t:.4f}**" for t in totals) + " |")
    egress = STORED_IMAGE_BYTES / 1e9 * DATA_OUT_GB * 1000
    print("| *image bytes out (unavoidable, not counted)* | " + " | ".join(f"*{egress:.4f}*" for _ in ROUTES) + " |")

    fixed = fixed_monthly(memory, template)
    print("\nFixed monthly costs (USD a month, whatever the traffic):\n")
    print("| item | per month |\n|---|---:|")
    for name, value in fixed.items():
        print(f"| {name} | {value:.2f} |")
    monthly = sum(fixed.values())
    print(f"| **total** | **{monthly:.2f}** |")

    print(
        f"\nAgainst inference on {ENDPOINTS} SageMaker real-time endpoint(s), ml.g5.xlarge at "
        f"${SAGEMAKER_G5_XLARGE_HOUR}/hour, {infer:g} s per image; fixed costs spread over that month's images:\n"
    )
    print(
        "| GPU use | images/month | inference per 1,000 | fixed per 1,000 | "
        + " | ".join(f"{r} / inference" for r in ROUTES)
        + " |"
    )
    print("|---:|---:|---:|---:|" + "---:|" * len(ROUTES))
    for share in UTILISATIONS:
        images = 3600 / infer * share * HOURS_PER_MONTH * ENDPOINTS
        gpu = SAGEMAKER_G5_XLARGE_HOUR * HOURS_PER_MONTH * ENDPOINTS / images * 1000
        spread = monthly / images * 1000
        ratios = " | ".join(f"{(t + spread) / gpu:.2%} ({t / gpu:.2%} + {spread / gpu:.2%})" for t in totals)
        print(f"| {share:.0%} | {images:,.0f} | {gpu:.2f} | {spread:.4f} | {ratios} |")
    print(f"\nTarget: {TARGET:.0%} at 50% GPU use. Each ratio: total (per request + fixed).")


if __name__ == "__main__":
    main()
