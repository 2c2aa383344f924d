"""Benchmark: cold-start import time of each function's handler module against a minimal Powertools handler.

Each measurement is a fresh interpreter (no ``-X importtime``) that times, with ``perf_counter``, only the
import of one module: ``functions/<name>/app.py`` loaded the way ``tests/lambda_harness.load_handler`` does
(``spec_from_file_location`` + ``exec_module``), so interpreter start-up is left out. Baseline, same run,
same method: a minimal Powertools REST handler written to a temp file (``APIGatewayRestResolver`` with
``enable_validation=True``, one pydantic model, ``import boto3``), the floor any handler of this style pays.
Runs are interleaved (round robin over the modules) so a burst of machine noise hits all of them alike.

    /tmp/dv/bin/python benchmarks/bench_cold_start.py [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))

BASELINE_HANDLER = """
import boto3
from pydantic import BaseModel
from aws_lambda_powertools.event_handler import APIGatewayRestResolver

app = APIGatewayRestResolver(enable_validation=True)


class Item(BaseModel):
    name: str
    size: int = 1


@app.post("/items")
def create(item: Item) -> dict:
    return {"name": item.name, "size": item.size}


def lambda_handler(event, context):
    return app.resolve(event, context)
"""

# Runs in the fresh interpreter: time the module load only, print milliseconds.
PROBE = """
import importlib.util, sys, time
path = sys.argv[1]
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("bench_cold_module", path)
module = importlib.util.module_from_spec(spec)
sys.modules["bench_cold_module"] = module
spec.loader.exec_module(module)
assert callable(module.lambda_handler)
print((time.perf_counter() - start) * 1000)
"""


def _env() -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "POWERTOOLS_", "DARKROOM_", "PYTHONDONTWRITEBYTECODE"))
    }
    env.update(
        {
            "POWERTOOLS_TRACE_DISABLED": "true",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
    )
    return env


def _load_ms(path: Path, env: dict) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    runs = parser.parse_args().runs
    env = _env()
    with tempfile.TemporaryDirectory() as tmp:
        baseline_path = Path(tmp) / "baseline_app.py"
        baseline_path.write_text(BASELINE_HANDLER)
        modules = {"baseline (minimal Powertools)": baseline_path}
        modules.update({name: ROOT / "functions" / name / "app.py" for name in FUNCTIONS})
        for path in modules.values():  # one unmeasured load each: compiles .pyc, warms the page cache
            _load_ms(path, env)
        samples: dict[str, list[float]] = {name: [] for name in modules}
        for _ in range(runs):
            for name, path in modules.items():
                samples[name].append(_load_ms(path, env))
    base = statistics.median(samples["baseline (minimal Powertools)"])
    print(f"Median of {runs} fresh interpreters per module; ratio = module / baseline.\n")
    print("| handler module | median import (ms) | min (ms) | max (ms) | ratio to baseline |")
    print("|---|---:|---:|---:|---:|")
    for name, values in samples.items():
        label = name if name.startswith("baseline") else f"functions/{name}/app.py"
        median = statistics.median(values)
        print(f"| {label} | {median:.0f} | {min(values):.0f} | {max(values):.0f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
