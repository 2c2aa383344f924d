"""Benchmark: where the time of one generate request goes, in-process with moto.

Baseline (same process, same run): the local backend's render + encode alone, i.e. the "inference"
a request cannot avoid. Measured: the whole GenerateFunction handler (auth, validation, rate-limit
update, render, encode, S3 put + presign, usage transaction, JSON). Reported as medians and as the
ratio handler/baseline, so a noisy machine moves both together.

    .venv/bin/python benchmarks/bench_generate.py [--rounds 15]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


import conftest  # noqa: E402, F401  (sets test credentials and Powertools switches before imports)
import lambda_harness  # noqa: E402
from darkroom import services  # noqa: E402
from darkroom.encoding import encode  # noqa: E402
from darkroom.inference import GenerateJob  # noqa: E402
from darkroom.inference.local import render  # noqa: E402
from darkroom.local.stack import in_process_aws  # noqa: E402
from darkroom.tenancy import Limits  # noqa: E402

CASES = [("256x256", "png"), ("1024x1024", "png"), ("1024x1024", "jpeg"), ("1024x1024", "webp"), ("1536x1024", "png")]


def _median_ms(fn, rounds: int) -> float:
    fn()  # warm-up (imports, first client calls)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    import os

    os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    with in_process_aws("bench"):
        svc = services.services()
        tenant = svc.directory.create_tenant("bench", Limits(10**6, 10**6, 10**6))
        svc.directory.issue_key(tenant.tenant_id, secret=lambda_harness.EVENT_KEY)
        handler = lambda_harness.load_handler("generate")
        print(f"{'size':>10} {'format':>6} {'baseline ms':>12} {'handler ms':>11} {'ratio':>6} {'bytes':>8}")
        for size, output_format in CASES:
            width, height = map(int, size.split("x"))
            job = GenerateJob("a lighthouse at dusk", width, height, 1, "medium", False, 20)
            baseline = _median_ms(lambda j=job, f=output_format: encode(render(j, 0), f, None, False), rounds)
            event = lambda_harness.load_event("generate")
            event["body"] = json.dumps(
                {"model": "local-image", "prompt": "a lighthouse at dusk", "size": size, "output_format": output_format}
            )
            sizes = []

            def call(e=event, out=sizes):
                result = handler(e, lambda_harness.Context())
                assert result["statusCode"] == 200, result["body"]
                out.append(len(result["body"]))

            full = _median_ms(call, rounds)
            print(f"{size:>10} {output_format:>6} {baseline:12.1f} {full:11.1f} {full / baseline:6.2f} {sizes[-1]:8d}")


if __name__ == "__main__":
    main()
