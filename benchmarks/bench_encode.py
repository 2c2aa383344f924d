"""Benchmark: encoder settings (time against size), and darkroom's own work per 1024x1024 generate against the
time to encode that image once in the requested format.

``settings``: two 1024x1024 images, what the local backend renders (flat shapes, a caption) and a photo-like
one (gradients under blurred noise), each encoded with a range of PNG and WebP settings (and darkroom's JPEG
for scale); median ms and KiB per setting.

``target``: the GenerateFunction handler in-process against moto (bench_overhead.py's method: a botocore hook
times the AWS calls, which are subtracted), inference stubbed by a backend that answers as a remote model does:
the model's file (PNG, JPEG or WebP, base64, prepared before timing) read through darkroom's own answer path
(``aws_runtime.decode_images``: base64, intake, decode). Per case: median own work (handler minus AWS calls),
median ``encoding.encode`` of the same pixels in the requested format (same run), and their ratio. Runs
against whichever ``darkroom`` is on the path, so the same script measures a tree before and after a change:

    .venv/bin/python benchmarks/bench_encode.py settings [--rounds 7]
    .venv/bin/python benchmarks/bench_encode.py target [--rounds 15] [--image photo-like]
    cd <tree> && PYTHONPATH=<tree>/shared:<tree>/tests python benchmarks/bench_encode.py target  # another tree
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(1, str(ROOT / "benchmarks"))

from PIL import Image, ImageChops, ImageFilter, ImageStat  # noqa: E402

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")  # before Powertools' loggers are built
import conftest  # noqa: E402, F401  (sets test credentials and Powertools switches before imports)
from darkroom.inference import GenerateJob  # noqa: E402
from darkroom.inference.local import render  # noqa: E402

SIDE = 1024


def _median_ms(fn: Callable[[], object], rounds: int) -> float:
    fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def rendered() -> Image.Image:
    """What the local backend draws: flat shapes and a caption (compresses well, like many model outputs)."""
    return render(GenerateJob("a lighthouse at dusk", SIDE, SIDE, 1, "medium", False, 20), 0).convert("RGB")


def photo_like() -> Image.Image:
    """Smooth gradients under fine, blurred noise: close to a photograph's statistics for a lossless encoder."""
    horizontal = Image.linear_gradient("L").rotate(90).resize((SIDE, SIDE))
    radial = Image.radial_gradient("L").resize((SIDE, SIDE))
    noise = Image.effect_noise((SIDE, SIDE), 48).filter(ImageFilter.GaussianBlur(0.8))
    bands = [Image.blend(band, noise, 0.35) for band in (horizontal, radial, Image.blend(horizontal, radial, 0.5))]
    return Image.merge("RGB", bands)


def _save(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()


SETTINGS: list[tuple[str, dict[str, object]]] = [
    *((f"png compress_level={level}", {"format": "PNG", "compress_level": level}) for level in (1, 2, 3, 4, 6, 9)),
    ("png optimize=True", {"format": "PNG", "optimize": True}),
    *(
        (f"webp quality={quality} method={method}", {"format": "WEBP", "quality": quality, "method": method})
        for quality in (80, 95)
        for method in (0, 2, 4, 6)
        if method < 6 or quality == 80  # method 6: 2-10x method 4's time for a few per cent
    ),
    ("webp quality=93 method=4 (PSNR of q=95 method=0)", {"format": "WEBP", "quality": 93, "method": 4}),
    ("jpeg quality=95 (darkroom's)", {"format": "JPEG", "quality": 95}),
]


def _psnr(original: Image.Image, data: bytes) -> str:
    """Peak signal-to-noise ratio of the decoded file against ``original`` (dB); "exact" when lossless."""
    back = Image.open(io.BytesIO(data)).convert("RGB")
    squares = [rms**2 for rms in ImageStat.Stat(ImageChops.difference(original, back)).rms]
    mse = sum(squares) / len(squares)
    return "exact" if mse == 0 else f"{10 * math.log10(255**2 / mse):.1f}"


def settings(rounds: int) -> None:
    images = {"rendered": rendered(), "photo-like": photo_like()}
    print(f"1024x1024 RGB, median of {rounds}; KiB = encoded size; dB = PSNR of the decoded file\n")
    print("| setting | " + " | ".join(f"{name} ms | KiB | dB" for name in images) + " |")
    print("|---|" + "---:|---:|---:|" * len(images))
    for label, options in SETTINGS:
        cells = []
        for image in images.values():
            data = _save(image, **options)
            ms = _median_ms(lambda i=image, o=options: _save(i, **o), rounds)
            cells.append(f"{ms:.1f} | {len(data) / 1024:.0f} | {_psnr(image, data)}")
        print(f"| {label} | " + " | ".join(cells) + " |")


class AnswerBackend:
    """Answers as a remote model does, with a prepared file read through darkroom's own answer path (base64,
    intake, decode); or, with no file, as the local backend does: pixels, nothing to decode."""

    def __init__(self, pixels: Image.Image) -> None:
        self.pixels = pixels
        self.answer: str | None = None

    def generate(self, model, job):  # type: ignore[no-untyped-def]
        from darkroom.inference import GeneratedImage
        from darkroom.inference.aws_runtime import decode_images

        if self.answer is None:
            return [GeneratedImage(self.pixels) for _ in range(job.n)]
        return decode_images([self.answer], job.n, job.width, job.height, job.transparent)


# (requested output_format, what the model answers): a file in the same format can pass through; a PNG answer
# for JPEG or WebP, or pixels (the local backend; an answer that had to be resized), are encoded once.
CASES = [
    ("png", "PNG"),
    ("jpeg", "JPEG"),
    ("webp", "WEBP"),
    ("jpeg", "PNG"),
    ("webp", "PNG"),
    ("png", "pixels"),
    ("jpeg", "pixels"),
    ("webp", "pixels"),
]


def target(rounds: int, image: Image.Image) -> None:
    import bench_overhead

    import lambda_harness
    from darkroom import services
    from darkroom.encoding import encode
    from darkroom.local.stack import in_process_aws
    from darkroom.tenancy import Limits

    warnings.filterwarnings("ignore", message="No application metrics to publish")
    exif = Image.Exif()
    exif[0x010F] = "upstream camera"  # the model's file carries metadata, as real ones do
    files = {
        name: base64.b64encode(
            _save(image, format=name, exif=exif.tobytes(), **({"quality": 95} if name != "PNG" else {}))
        ).decode()
        for name in ("PNG", "JPEG", "WEBP")
    }
    stub = AnswerBackend(image)
    with in_process_aws("bench"):
        svc = services.services()
        svc.backends = lambda model: stub
        tenant = svc.directory.create_tenant("bench", Limits(10**6, 10**6, 10**6))
        svc.directory.issue_key(tenant.tenant_id, secret=lambda_harness.EVENT_KEY)
        counter = bench_overhead.CallCounter()
        for client in bench_overhead._clients(svc):
            counter.attach(client)
        handler = lambda_harness.load_handler("generate")
        own: dict[tuple[str, str], list[float]] = {case: [] for case in CASES}
        encode_ms: dict[str, list[float]] = {fmt: [] for fmt, _ in CASES}
        stored: dict[tuple[str, str], int] = {}
        events = {}
        for output_format, upstream in CASES:
            event = lambda_harness.load_event("generate")
            body = {"model": "local-image", "prompt": "a lighthouse at dusk", "size": f"{SIDE}x{SIDE}"}
            event["body"] = json.dumps(dict(body, output_format=output_format, response_format="b64_json"))
            events[(output_format, upstream)] = event
        sink = io.StringIO()
        for round_number in range(rounds + 1):  # round 0 warms up; cases interleaved round by round
            for case, event in events.items():
                stub.answer = files.get(case[1])
                counter.reset()
                with contextlib.redirect_stdout(sink):
                    start = time.perf_counter()
                    result = handler(event, lambda_harness.Context())
                    elapsed = (time.perf_counter() - start) * 1000
                assert result["statusCode"] == 200, result["body"][:300]
                stored[case] = len(base64.b64decode(json.loads(result["body"])["data"][0]["b64_json"]))
                if round_number:
                    own[case].append(elapsed - counter.seconds * 1000)
            for output_format in encode_ms:
                start = time.perf_counter()
                encode(image, output_format, None, False)
                if round_number:
                    encode_ms[output_format].append((time.perf_counter() - start) * 1000)
    print(f"Median of {rounds} warm requests; own work = handler minus time in AWS calls (moto)\n")
    print("| output_format | model's answer | own work (ms) | encode once (ms) | ratio | stored bytes |")
    print("|---|---|---:|---:|---:|---:|")
    for output_format, upstream in CASES:
        work, once = statistics.median(own[(output_format, upstream)]), statistics.median(encode_ms[output_format])
        answer = "pixels" if upstream == "pixels" else f"{upstream.lower()} file"
        stored_bytes = stored[(output_format, upstream)]
        print(f"| {output_format} | {answer} | {work:.1f} | {once:.1f} | {work / once:.2f} | {stored_bytes:,} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=("settings", "target"))
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--image", choices=("rendered", "photo-like"), default="rendered", help="target's picture")
    args = parser.parse_args()
    if args.part == "settings":
        settings(args.rounds or 7)
    else:
        target(args.rounds or 15, rendered() if args.image == "rendered" else photo_like())


if __name__ == "__main__":
    main()
