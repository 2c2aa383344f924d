"""Benchmark: what background mode costs, in-process with moto.

Baseline (same process, same run): a synchronous ``POST /v1/responses`` with the image tool (validate,
admit, generate with the local stand-in, store, bill, answer). Measured: the background accept (validate,
admit, store the job, send its SQS message, answer ``queued``), and the worker's run of one job (claim,
generate, complete, bill). Reported as medians and as ratios to the baseline, so a noisy machine moves
all three together. AWS calls per step are counted from botocore's events.

    .venv/bin/python benchmarks/bench_background.py [--rounds 15] [--size 1024x1024]
"""

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"  # before darkroom's logger exists


import conftest  # noqa: E402, F401  (sets test credentials and Powertools switches before imports)
from darkroom import services  # noqa: E402
from darkroom.api.responses import ResponseCreateRequest  # noqa: E402
from darkroom.jobs import run_job  # noqa: E402
from darkroom.local.stack import in_process_aws  # noqa: E402
from darkroom.ports import RequestContext  # noqa: E402
from darkroom.responses import create_response  # noqa: E402
from darkroom.tenancy import Limits  # noqa: E402

CALLS: Counter = Counter()


def _count(event_name: str, **_) -> None:
    CALLS[event_name.split(".")[-1]] += 1


def _timed(fn, rounds: int) -> tuple[float, float]:
    """(median ms, AWS calls per round)."""
    fn()  # warm-up
    samples = []
    CALLS.clear()
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), sum(CALLS.values()) / rounds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", default="1024x1024")
    args = parser.parse_args()
    with in_process_aws("bench"):
        svc = services.services()
        ports = svc.response_ports
        tenant = svc.directory.create_tenant(
            "bench", Limits(images_per_minute=10_000, images_per_day=100_000, requests_per_minute=10_000)
        )
        for client in {id(c): c for c in (svc.limiter._db, svc.store._s3, svc.jobs._sqs)}.values():
            client.meta.events.register("before-call.*.*", _count)
        body = {
            "model": "local-image",
            "input": "a lighthouse at dusk",
            "tools": [{"type": "image_generation", "size": args.size}],
        }
        sync = ResponseCreateRequest.model_validate(body)
        background = ResponseCreateRequest.model_validate(body | {"background": True})
        counter = iter(range(10**9))
        accepted: list[str] = []

        def accept() -> None:
            accepted.append(create_response(RequestContext(tenant, f"bg-{next(counter)}"), background, ports).id)

        sync_ms, sync_calls = _timed(
            lambda: create_response(RequestContext(tenant, f"sync-{next(counter)}"), sync, ports), args.rounds
        )
        accept_ms, accept_calls = _timed(accept, args.rounds)
        jobs = iter(list(accepted))
        worker_ms, worker_calls = _timed(
            lambda: run_job(tenant.tenant_id, next(jobs), 900_000, svc.worker), min(args.rounds, len(accepted) - 1)
        )
    print(f"image tool, {args.size}, local stand-in, {args.rounds} rounds (medians):")
    print(f"  synchronous create (baseline) {sync_ms:8.1f} ms  {sync_calls:4.1f} AWS calls")
    print(
        f"  background accept             {accept_ms:8.1f} ms  {accept_calls:4.1f} AWS calls"
        f"  ({accept_ms / sync_ms:.2f}x baseline)"
    )
    print(
        f"  worker run of one job         {worker_ms:8.1f} ms  {worker_calls:4.1f} AWS calls"
        f"  ({worker_ms / sync_ms:.2f}x baseline)"
    )


if __name__ == "__main__":
    main()
