"""Benchmark: peak memory of each image function's largest allowed request, to set its MemorySize by measurement.

Each case is a fresh process: moto in-process, a tenant, the function's handler warmed with a small request,
then one largest request, its peak resident-memory growth sampled every 0.5 ms (tests/memory_probe.py; Pillow
allocates outside Python's allocator, so tracemalloc would not see it). The local backend renders the images
(real Pillow pixels and encodes, no model). ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` is the candidate MemorySize, so
the request is admitted, or refused, by the decode budget that memory gives (darkroom.intake.DecodeBudget).

The base each function adds the growth to is its primed cold process (benchmarks/bench_cold_start.py, the
"+ prime" row); the edit function's largest inputs are measured by benchmarks/bench_edit_memory.py.

    .venv/bin/python benchmarks/bench_function_memory.py [--memory 512]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASE = r"""
import json, os, sys
sys.path.insert(0, "tests")
os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
import conftest, lambda_harness
from memory_probe import peak_growth
from darkroom import services
from darkroom.local.stack import in_process_aws
from darkroom.tenancy import Limits

function, body = sys.argv[1], json.loads(sys.argv[2])
event_name = {"generate": "generate", "responses": "responses-create"}[function]
with in_process_aws("bench"):
    svc = services.services()
    tenant = svc.directory.create_tenant("bench", Limits(10**6, 10**6, 10**6))
    svc.directory.issue_key(tenant.tenant_id, secret=lambda_harness.EVENT_KEY)
    handler = lambda_harness.load_handler(function)
    warm = lambda_harness.load_event(event_name)
    assert handler(warm, lambda_harness.Context())["statusCode"] == 200
    event = lambda_harness.load_event(event_name, body=json.dumps(body))
    answer = {}
    growth = peak_growth(lambda: answer.update(handler(event, lambda_harness.Context())))
status, text = answer.get("statusCode"), answer.get("body", "")
error = text[:300] if status != 200 else None
print(json.dumps({"status": status, "response_bytes": len(text), "growth": growth, "error": error}))
"""

CASES = {
    "generate: n=6, 1536x1024, png, b64_json": (
        "generate",
        {
            "model": "local-image",
            "prompt": "a lighthouse",
            "n": 6,
            "size": "1536x1024",
            "output_format": "png",
            "response_format": "b64_json",
        },
    ),
    "generate: n=1, 1024x1024, png, b64_json": (
        "generate",
        {
            "model": "local-image",
            "prompt": "a lighthouse",
            "size": "1024x1024",
            "output_format": "png",
            "response_format": "b64_json",
        },
    ),
    "responses: image tool, 1536x1024 png": (
        "responses",
        {
            "model": "local-text",
            "input": "a lighthouse at dusk",
            "tools": [{"type": "image_generation", "size": "1536x1024", "output_format": "png"}],
        },
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory", type=int, default=512, help="the candidate MemorySize, in MB")
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    env = {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(options.memory), "PATH": "/usr/bin:/bin"}
    print(f"AWS_LAMBDA_FUNCTION_MEMORY_SIZE={options.memory}; median of {options.runs} fresh processes.\n")
    print("| request | status | response (MB) | peak growth (MB) |")
    print("|---|---:|---:|---:|")
    for name, (function, body) in CASES.items():
        runs = []
        for _ in range(options.runs):
            out = subprocess.run(
                [sys.executable, "-c", CASE, function, json.dumps(body)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        runs.sort(key=lambda run: run["growth"])
        middle = runs[len(runs) // 2]
        print(
            f"| {name} | {middle['status']} | {middle['response_bytes'] / 1e6:.1f} | {middle['growth'] / 2**20:.0f} |"
        )


if __name__ == "__main__":
    main()
