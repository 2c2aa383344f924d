"""Benchmark: time to first byte and to the first partial image, against the total, streamed and not.

Starts ONE local stack (``darkroom serve``, as ``make run`` does) on loopback and sends the same 1024x1024 generate
through it, alternating a streamed request (``stream: true``, ``partial_images``) and a non-streamed one. The local
stand-in spends ``--step`` seconds on each of its 9 shapes (medium quality), so a generation takes about 9 x step
seconds, like a model's steps. Each time is measured by the client (httpx) from just before the request is sent:

* first byte: the first body byte (for a stream, its first event; for a non-streamed answer, the JSON);
* first partial: the end of the first ``image_generation.partial_image`` event (streamed only);
* total: the end of the body.

    .venv/bin/python benchmarks/bench_streaming.py [--rounds 7] [--step 0.3] [--partials 2]

With ``--model-server`` the stack also starts darkroom's model server with the tiny random-weight diffusion model
(the endpoint's venv, as ``make run-endpoint``) and the requests go to ``tiny-diffusion`` with ``steps``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from local_stack_process import serve  # noqa: E402


def _one(client: httpx.Client, url: str, body: dict, streamed: bool) -> dict[str, float]:
    started = time.perf_counter()
    first_byte = first_partial = None
    buffer = b""
    with client.stream("POST", url, json={**body, "stream": streamed} if streamed else body) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            now = time.perf_counter() - started
            first_byte = now if first_byte is None else first_byte
            buffer += chunk
            if streamed and first_partial is None and b"image_generation.partial_image" in buffer:
                if b"\n\n" in buffer.split(b"image_generation.partial_image", 1)[1]:
                    first_partial = now
    total = time.perf_counter() - started
    if not streamed:
        json.loads(buffer)  # the whole answer arrived
    return {"first_byte": first_byte or total, "first_partial": first_partial or float("nan"), "total": total}


def _median(samples: list[dict[str, float]], key: str) -> float:
    return statistics.median(sample[key] for sample in samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--step", type=float, default=0.3, help="the local stand-in's seconds per shape")
    parser.add_argument("--partials", type=int, default=2)
    parser.add_argument("--model-server", action="store_true", help="tiny-diffusion through the model server")
    parser.add_argument("--steps", type=int, default=40, help="tiny-diffusion's denoising steps (--model-server)")
    args = parser.parse_args()
    extra = ("--model-server",) if args.model_server else ()
    with serve({}, args=extra) as env:
        url = env["OPENAI_BASE_URL"].rstrip("/") + "/images/generations"
        headers = {"Authorization": f"Bearer {env['OPENAI_API_KEY']}"}
        if args.model_server:
            body = {"model": "tiny-diffusion", "prompt": "a lighthouse", "steps": args.steps}
        else:
            body = {"model": "local-image", "prompt": "a lighthouse", "size": "1024x1024", "step_seconds": args.step}
        body["partial_images"] = args.partials
        with httpx.Client(headers=headers, timeout=600) as client:
            _one(client, url, body, True)  # warm both paths' containers
            _one(client, url, body, False)
            streamed, buffered = [], []
            for _ in range(args.rounds):
                streamed.append(_one(client, url, body, True))
                buffered.append(_one(client, url, body, False))
    print(f"rounds {args.rounds}; medians in seconds; ratios to the same kind's total")
    print("| request | first byte | first partial | total | first byte / total | first partial / total |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, samples in (("streamed", streamed), ("not streamed", buffered)):
        first_byte, partial, total = (_median(samples, k) for k in ("first_byte", "first_partial", "total"))
        partial_text = f"{partial:.3f}" if partial == partial else "-"
        ratio = f"{partial / total:.2f}" if partial == partial else "-"
        print(f"| {name} | {first_byte:.3f} | {partial_text} | {total:.3f} | {first_byte / total:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
