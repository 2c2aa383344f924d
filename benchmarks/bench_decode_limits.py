"""Benchmark: the decode budget and decode-work bounds against the hostile corpus, and the sizing behind them.

Four tables. (1) Refusals: each hostile image (built by tests/hostile_images.py) is refused by
``darkroom.intake``; the median of ``--rounds`` refusals is set against the median time
``open_image`` takes to open a normal image of the same size and format, as a ratio, with the peak
resident-memory growth of one refusal (sampled every 0.5 ms, tests/memory_probe.py). The sixteen
40 Mpx PNGs are read as one EditFunction request (3008 MB, its budget): every header, then the refusal.
(2) The decode work darkroom still accepts: a progressive JPEG with exactly ``MAX_JPEG_SCANS`` scans
against a normal 10-scan photo of the same size. (3) Sizing: the peak resident-memory growth of whole
EditFunction invocations (in-process against moto, a fresh process each, all-zero RGBA PNGs, local
backend) per pixel charged to the budget (inputs plus the images produced): the ``BYTES_PER_PIXEL``
the budget divides by. (4) Routes: the refusals as whole handler invocations (edit multipart ``image[]``,
Responses ``input_image``, file upload), each function with its template MemorySize.

    .venv/bin/python benchmarks/bench_decode_limits.py [--rounds 7] [--unguarded] [--skip-sizing]

``--unguarded`` also times Pillow's own decode of two hostile files once (seconds each).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from PIL import Image  # noqa: E402

import hostile_images as hostile  # noqa: E402 - after the path
from darkroom import decode_work, intake  # noqa: E402
from darkroom.intake import DecodeBudget, ImageRejected, IntakeLimits, open_image, read_header  # noqa: E402
from darkroom.local.template import Stack  # noqa: E402
from memory_probe import peak_growth  # noqa: E402

MIB = 1024 * 1024
EDIT = IntakeLimits()
GIF = IntakeLimits(formats=frozenset({"gif"}))
# The sizing edits run as an EditFunction of 3008 MB (the decode budget that admits the largest cases; the
# template's EditFunction has 1024 MB since issue 17, docs/benchmarks.md section 13), with no synchronous time
# ceiling: they measure memory, and the local model's time estimate would send the large ones to background mode.
SIZING_MEMORY_MB = 3008
EDIT_FUNCTION = {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(SIZING_MEMORY_MB), "DARKROOM_INFERENCE_TIMEOUT_SECONDS": "600"}

SIZING = r"""
import base64, io, json, os, sys, time
sys.path.insert(0, "tests")
import conftest, lambda_harness
import httpx
import hostile_images
from darkroom import services
from darkroom.local.stack import in_process_aws
from darkroom.tenancy import Limits
from memory_probe import peak_growth

count, side, n = (int(arg) for arg in sys.argv[1:4])
os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
with in_process_aws("bench"):
    svc = services.services()
    tenant = svc.directory.create_tenant("bench", Limits(10**6, 10**6, 10**6))
    svc.directory.issue_key(tenant.tenant_id, secret=lambda_harness.EVENT_KEY)
    handler = lambda_harness.load_handler("edit")

    def event_for(files, data):
        request = httpx.Request("POST", "http://x/v1/images/edits", files=files, data=data)
        event = lambda_harness.load_event("edit")
        event["headers"]["content-type"] = request.headers["content-type"]
        event["multiValueHeaders"]["content-type"] = [request.headers["content-type"]]
        event["body"], event["isBase64Encoded"] = base64.b64encode(request.read()).decode(), True
        return event

    warm = event_for([("image", ("a.png", hostile_images.png(8), "image/png"))], {"prompt": "x"})
    assert handler(warm, lambda_harness.Context())["statusCode"] == 200
    png = hostile_images.zero_rgba_png(side)
    name = "image" if count == 1 else "image[]"
    event = event_for([(name, (f"{i}.png", png, "image/png")) for i in range(count)],
                      {"prompt": "x", "n": str(n), "output_format": "jpeg", "response_format": "url"})
    del png
    result = {}
    growth = peak_growth(lambda: result.update(handler(event, lambda_harness.Context())))
print(json.dumps({"status": result["statusCode"], "peak_growth": growth}))
"""


def median_ms(operation, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        operation()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def refusal(data: bytes, limits: IntakeLimits = EDIT):
    def refuse() -> str:
        try:
            open_image(data, param="image", limits=limits)
        except ImageRejected as error:
            return error.code
        raise AssertionError("accepted")

    return refuse


def sixteen_pngs(png: bytes):
    def refuse() -> str:
        with intake.request_decode_budget(DecodeBudget(intake.budget_pixels(3008))):
            try:
                for index in range(16):
                    read_header(png, param=f"image[{index}]", limits=EDIT)
            except ImageRejected as error:
                return error.code
        raise AssertionError("accepted")

    return refuse


def opening(data: bytes, limits: IntakeLimits = EDIT):
    return lambda: open_image(data, param="image", limits=limits)


def photo(side: int, fmt: str) -> bytes:
    """A photo-like image (noise over smooth colour) of ``side`` x ``side`` in ``fmt``."""
    if fmt == "JPEG":
        return hostile.photo_jpeg(side)
    image = Image.open(io.BytesIO(hostile.photo_jpeg(side))).convert("RGB")
    buffer = io.BytesIO()
    (image.quantize(256) if fmt == "GIF" else image).save(buffer, format=fmt)
    return buffer.getvalue()


def table_refusals(rounds: int) -> None:
    zero = hostile.zero_rgba_png()
    gif = hostile.gif_with_sub_blocks(1_000_000)
    fill = hostile.jpeg_with_segments(0)[:2] + b"\xff" * 20_000 + hostile.jpeg_with_segments(0)[2:]
    cases = [  # (hostile image, its bytes, its refusal, the normal image, its bytes, the limits to open it)
        (
            "progressive JPEG 2000x2000, 5,000 scans",
            hostile.progressive_jpeg(2000, 5000),
            None,
            "photo JPEG 2000x2000, progressive",
            hostile.photo_jpeg(2000),
            EDIT,
        ),
        (
            "progressive JPEG 6000x6000, 20,000 scans",
            hostile.progressive_jpeg(6000, 20_000),
            None,
            "photo JPEG 6000x6000, progressive",
            hostile.photo_jpeg(6000),
            EDIT,
        ),
        (
            "16 all-zero RGBA PNGs 6324x6324 in one edit (3008 MB)",
            zero,
            sixteen_pngs(zero),
            "one all-zero RGBA PNG 6324x6324",
            zero,
            EDIT,
        ),
        # Tiny pictures in large files: the normal image has about the same file size.
        ("PNG 8x8 with 2,000 iCCP chunks", hostile.iccp_bomb(2000), None, "photo PNG 930x930", photo(930, "PNG"), EDIT),
        (
            "PNG 8x8 with 100,000 empty chunks",
            hostile.png_with_chunks(100_000),
            None,
            "photo PNG 700x700",
            photo(700, "PNG"),
            EDIT,
        ),
        ("JPEG 64x64 with 20,000 fill bytes", fill, None, "photo JPEG 200x200", hostile.photo_jpeg(200), EDIT),
        ("GIF 64x64 with 1,000,000 sub-blocks", gif, refusal(gif, GIF), "photo GIF 1450x1450", photo(1450, "GIF"), GIF),
    ]
    print(
        f"Median of {rounds} runs; ratio = refusal / opening the normal image (open_image: checks, decode, "
        "orientation, mode).\n"
    )
    print("| hostile image | file | code | refusal (ms) | peak memory (MB) | normal image | file | open (ms) | ratio |")
    print("|---|---:|---|---:|---:|---|---:|---:|---:|")
    for label, data, refuse, normal_label, normal, limits in cases:
        refuse = refuse or refusal(data)
        code = refuse()
        opening(normal, limits)()  # warm
        refused_ms = median_ms(refuse, rounds)
        normal_ms = median_ms(opening(normal, limits), rounds)
        growth = peak_growth(refuse)
        print(
            f"| {label} | {len(data) / 1024:,.0f} KB | {code} | {refused_ms:.3f} | {growth / MIB:.1f} "
            f"| {normal_label} | {len(normal) / 1024:,.0f} KB | {normal_ms:.1f} | {refused_ms / normal_ms:.4f} |",
            flush=True,
        )


def table_accepted(rounds: int) -> None:
    print(f"\nAt the limit (accepted): {decode_work.MAX_JPEG_SCANS} scans against a normal progressive photo.\n")
    print(
        "| side | normal photo, 10 scans (ms) | flat colour, 10 scans (ms) "
        f"| flat colour, {decode_work.MAX_JPEG_SCANS} scans (ms) | {decode_work.MAX_JPEG_SCANS} scans / photo |"
    )
    print("|---:|---:|---:|---:|---:|")
    for side in (2000, 6000):
        photo, ten = hostile.photo_jpeg(side), hostile.progressive_jpeg(side)
        most = hostile.progressive_jpeg(side, decode_work.MAX_JPEG_SCANS)
        photo_ms, ten_ms, most_ms = (median_ms(opening(data), rounds) for data in (photo, ten, most))
        print(f"| {side} | {photo_ms:.0f} | {ten_ms:.0f} | {most_ms:.0f} | {most_ms / photo_ms:.2f} |", flush=True)


def table_unguarded() -> None:
    print("\nUnguarded: Pillow's own open + load of the hostile bytes, once.\n")
    print("| hostile image | Pillow open + load (s) |")
    print("|---|---:|")
    for label, data in (
        ("progressive JPEG 2000x2000, 5,000 scans", hostile.progressive_jpeg(2000, 5000)),
        ("PNG 8x8 with 2,000 iCCP chunks", hostile.iccp_bomb(2000)),
    ):
        started = time.perf_counter()
        Image.open(io.BytesIO(data)).load()
        print(f"| {label} | {time.perf_counter() - started:.1f} |", flush=True)


def table_sizing() -> None:
    print(
        f"\nSizing: whole edits as EditFunction ({EDIT_FUNCTION['AWS_LAMBDA_FUNCTION_MEMORY_SIZE']} MB), peak "
        "resident growth per pixel charged (inputs + images produced).\n"
    )
    print("| images x side | n | pixels charged (M) | peak growth (MB) | bytes per pixel |")
    print("|---|---:|---:|---:|---:|")
    for count, side, n in ((1, 2048, 4), (16, 1024, 1), (4, 2048, 1), (1, 4096, 1), (1, 6324, 1), (2, 6324, 1)):
        out = subprocess.run(
            [sys.executable, "-c", SIZING, str(count), str(side), str(n)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **EDIT_FUNCTION},
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["status"] == 200, result
        charged = (count + n) * side * side
        print(
            f"| {count} x {side} | {n} | {charged / 1e6:.1f} | {result['peak_growth'] / MIB:.0f} "
            f"| {result['peak_growth'] / charged:.1f} |",
            flush=True,
        )


def table_routes(rounds: int) -> None:
    """Whole handler invocations in-process against moto, each function with its template MemorySize."""
    import base64
    import warnings

    import httpx

    import conftest  # noqa: F401 - the test environment (region, credentials)
    import lambda_harness
    from darkroom import config, services
    from darkroom.local.stack import in_process_aws
    from darkroom.tenancy import Limits

    warnings.filterwarnings("ignore", "No application metrics")
    os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    memory = {function.logical_id: function.memory_mb for function in Stack().functions()}

    def multipart(event_name: str, files: list, data: dict) -> dict:
        request = httpx.Request("POST", "http://x/", files=files, data=data)
        event = lambda_harness.load_event(event_name)
        event["headers"]["content-type"] = request.headers["content-type"]
        event["multiValueHeaders"]["content-type"] = [request.headers["content-type"]]
        event["body"], event["isBase64Encoded"] = base64.b64encode(request.read()).decode(), True
        return event

    jpeg, png = hostile.progressive_jpeg(2000, 5000), hostile.zero_rgba_png()
    responses = lambda_harness.load_event("responses-create")
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    responses["body"] = json.dumps(
        {
            "model": "local-vision",
            "input": [
                {
                    "role": "user",
                    "content": [{"type": "input_text", "text": "x"}, {"type": "input_image", "image_url": url}],
                }
            ],
        }
    )
    cases = [
        (
            "edit, 16 all-zero RGBA PNGs 6324x6324 (image[])",
            "edit",
            "EditFunction",
            multipart("edit", [("image[]", (f"{i}.png", png, "image/png")) for i in range(16)], {"prompt": "x"}),
        ),
        (
            "edit, JPEG 2000x2000 with 5,000 scans",
            "edit",
            "EditFunction",
            multipart("edit", [("image", ("a.jpg", jpeg, "image/jpeg"))], {"prompt": "x"}),
        ),
        ("Responses, the same JPEG as an input_image data URL", "responses", "ResponsesFunction", responses),
        (
            "file upload, the same JPEG",
            "files",
            "FilesFunction",
            multipart("files-create", [("file", ("a.jpg", jpeg, "image/jpeg"))], {"purpose": "vision"}),
        ),
        (
            "file upload, JPEG 6000x6000 with 20,000 scans",
            "files",
            "FilesFunction",
            multipart(
                "files-create",
                [("file", ("a.jpg", hostile.progressive_jpeg(6000, 20_000), "image/jpeg"))],
                {"purpose": "vision"},
            ),
        ),
    ]
    print(f"\nRoutes: whole handler invocations in-process against moto (warm), median of {rounds}.\n")
    print("| route and image | function (MB) | answer | median (ms) | peak memory (MB) |")
    print("|---|---:|---|---:|---:|")
    with in_process_aws("bench"):
        svc = services.services()
        tenant = svc.directory.create_tenant("bench", Limits(10**6, 10**6, 10**6))
        svc.directory.issue_key(tenant.tenant_id, secret=lambda_harness.EVENT_KEY)
        for label, name, function, event in cases:
            os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = str(memory[function])
            config.function_memory_mb.cache_clear()
            handler = lambda_harness.load_handler(name)
            result = handler(event, lambda_harness.Context())  # warm
            elapsed = median_ms(lambda h=handler, e=event: h(e, lambda_harness.Context()), rounds)
            growth = peak_growth(lambda h=handler, e=event: h(e, lambda_harness.Context()))
            error = json.loads(result["body"])["error"]
            print(
                f"| {label} | {function} ({memory[function]}) | {result['statusCode']} {error['code']}, "
                f"{error['param']} | {elapsed:.1f} | {growth / MIB:.1f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--unguarded", action="store_true", help="also time Pillow's own decode of two hostile files")
    parser.add_argument("--skip-sizing", action="store_true")
    args = parser.parse_args()
    table_refusals(args.rounds)
    table_accepted(args.rounds)
    if args.unguarded:
        table_unguarded()
    if not args.skip_sizing:
        table_sizing()
    table_routes(args.rounds)  # last: it points this process's environment at moto


if __name__ == "__main__":
    main()
