"""Benchmark: peak memory of one edit request against the size of its input image.

Each case runs in a fresh process: build a PNG of about the target size (noise compresses badly, so
the file is large for its pixels), then measure the process's peak RSS growth across one whole
EditFunction invocation in-process against moto (multipart parse, intake decode, edit, encode, S3 put,
usage, JSON response). Pillow allocates pixels outside Python's allocator, so resident memory, not
tracemalloc, is the honest measure: a thread samples /proc/self/statm every 0.5 ms and the figure is
the peak above the resident size just before (after malloc_trim). Baseline: the same measure while
only decoding the image with Pillow (Image.open + load), the memory no implementation can avoid.

A second table edits with a mask, as EditFunction (its template MemorySize sizes the decode budget), and gives
the peak against (encoded input + decoded pixels): encoded input is the image's and the mask's file bytes (not
the multipart body, nor its base64); decoded pixels are width x height x bands of the image (RGB, 3) plus the
mask's (RGBA, 4), as the intake decodes them (Pillow holds an RGB raster at 4 bytes a pixel, so the image's raster
really takes 4/3 of that). Two cases: a 2048x2048 noise PNG, and the largest input the intake allows (40 Mpx in a
file under 20 MiB). Each is the median of ``--runs`` fresh processes.

    .venv/bin/python benchmarks/bench_edit_memory.py [--json PATH] [--only sizes|ratio] [--runs N]

``--json PATH`` also writes the figures (``cases``: the first table, ``masked``: the second);
``benchmarks/plot_memory.py`` draws docs/benchmarks-memory.png from the first, so run both tables for it.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASE = r'''
import base64, io, json, os, sys
sys.path.insert(0, "tests")
import conftest, lambda_harness
import httpx
from PIL import Image
from darkroom import services
from darkroom.local.stack import in_process_aws

png = open(sys.argv[1], "rb").read()
mask = open(sys.argv[3], "rb").read() if len(sys.argv) > 3 else b""
size = sys.argv[4] if len(sys.argv) > 4 else "auto"
opened = Image.open(io.BytesIO(png))
side = opened.size[0]
def rasters(image):
    """(width x height x bands, what Pillow allocates: 4 bytes a pixel for 2 to 4 bands of 8 bits)."""
    pixels, bands = image.size[0] * image.size[1], len(image.getbands())
    return pixels * bands, pixels * (1 if bands == 1 else 4)
raster, held = rasters(opened)  # the raster intake decodes (RGB here)
mask_raster = mask_held = 0
if mask:
    opened_mask = Image.open(io.BytesIO(mask))
    mask_raster, mask_held = rasters(opened_mask)  # RGBA
    del opened_mask
del opened
parts = [("image", ("a.png", png, "image/png"))] + ([("mask", ("mask.png", mask, "image/png"))] if mask else [])
request = httpx.Request("POST", "http://x/v1/images/edits", files=parts,
                        data={"prompt": "x", "output_format": "jpeg", "response_format": "url", "size": size})
body = request.read()
content_type = request.headers["content-type"]

import ctypes, gc, threading
PAGE = os.sysconf("SC_PAGE_SIZE")
libc = ctypes.CDLL("libc.so.6")

def current_rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE

def peak_growth(operation):
    """Peak of (resident memory - resident memory before), sampled every 0.5 ms during operation()."""
    gc.collect()
    libc.malloc_trim(0)  # hand freed memory back, so the baseline is what is really held
    before = current_rss()
    peak = [before]
    done = threading.Event()
    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], current_rss())
            done.wait(0.0005)
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = operation()
    finally:
        done.set()
        sampler.join()
    peak[0] = max(peak[0], current_rss())
    return result, peak[0] - before

os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
with in_process_aws("bench", overrides={"DARKROOM_MAX_IMAGE_BYTES": str(64 * 1024 * 1024)}):
    svc = services.services()
    tenant = svc.directory.create_tenant("bench", __import__("darkroom.tenancy").tenancy.Limits(10**6, 10**6, 10**6))
    svc.directory.issue_key(tenant.tenant_id, secret=lambda_harness.EVENT_KEY)
    handler = lambda_harness.load_handler("edit")
    event = lambda_harness.load_event("edit")
    event["headers"]["content-type"] = content_type
    event["body"] = base64.b64encode(body).decode()
    del body, request
    # Warm: imports, clients, a tiny edit.
    small = io.BytesIO(); Image.new("RGB", (8, 8)).save(small, format="PNG")
    warm = dict(event)
    warm_request = httpx.Request("POST", "http://x/", files=[("image", ("a.png", small.getvalue(), "image/png"))],
                                 data={"prompt": "x"})
    warm["body"] = base64.b64encode(warm_request.read()).decode()
    warm["headers"] = dict(event["headers"], **{"content-type": warm_request.headers["content-type"]})
    assert handler(warm, lambda_harness.Context())["statusCode"] == 200
    if sys.argv[2] == "decode":
        def decode():
            decoded = Image.open(io.BytesIO(png))
            decoded.load()
            return decoded
        _, growth = peak_growth(decode)
    elif sys.argv[2] == "intake":
        from darkroom.editing import intake_limits
        from darkroom.intake import open_image
        _, growth = peak_growth(lambda: open_image(png, param="image", limits=intake_limits(svc.settings)))
    else:
        result, growth = peak_growth(lambda: handler(event, lambda_harness.Context()))
        assert result["statusCode"] == 200, result["body"][:300]
print(json.dumps({"bytes": len(png), "mask_bytes": len(mask), "pixels": side * side, "raster_bytes": raster,
                  "mask_raster_bytes": mask_raster, "pillow_bytes": held + mask_held, "peak_growth": growth}))
'''


def _image_file(target: int) -> Path:
    """A noise PNG of about ``target`` bytes, made once (in this process, so its peak is not measured)."""
    from PIL import Image

    path = Path(tempfile.gettempdir()) / f"darkroom-bench-{target}.png"
    if not path.exists():
        side = int((target / 3.05) ** 0.5)
        noise = [Image.effect_noise((side, side), 90).rotate(angle) for angle in (0, 90, 180)]
        Image.merge("RGB", noise).save(path, format="PNG", compress_level=1)
    return path


def _masked_case(side: int, target: int) -> tuple[Path, Path]:
    """An RGB PNG of ``side`` x ``side`` pixels: noise in every band when ``target`` is the raw raster's size,
    otherwise noise over smooth colour fields (about 0.45 bytes a pixel); and its RGBA mask (opaque, the centre
    quarter transparent). Made once."""
    from PIL import Image, ImageDraw

    image_path = Path(tempfile.gettempdir()) / f"darkroom-bench-{side}-{target}.png"
    mask_path = Path(tempfile.gettempdir()) / f"darkroom-bench-mask-{side}.png"
    if not image_path.exists():
        if target >= side * side * 3:  # as large as a PNG of these pixels gets: noise in every band
            noise = [Image.effect_noise((side, side), 90).rotate(angle) for angle in (0, 90, 180)]
            Image.merge("RGB", noise).save(image_path, format="PNG", compress_level=1)
        else:  # smooth fields in two bands, 4-level noise in the third: about 0.45 bytes a pixel
            red = Image.linear_gradient("L").resize((side, side))
            green = red.rotate(90)
            blue = Image.effect_noise((side, side), 90).point(lambda value: value // 64 * 64)
            Image.merge("RGB", (red, green, blue)).save(image_path, format="PNG", compress_level=6)
    if not mask_path.exists():
        mask = Image.new("RGBA", (side, side), (0, 0, 0, 255))
        ImageDraw.Draw(mask).rectangle((side // 4, side // 4, 3 * side // 4 - 1, 3 * side // 4 - 1), fill=(0, 0, 0, 0))
        mask.save(mask_path, format="PNG")
    return image_path, mask_path


def run(target: int | tuple[Path, Path], mode: str, env: dict[str, str] | None = None, size: str = "auto") -> dict:
    files = [str(path) for path in target] if isinstance(target, tuple) else [str(_image_file(target))]
    files += [size] if isinstance(target, tuple) else []
    out = subprocess.run(
        [sys.executable, "-c", CASE, files[0], mode, *files[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def table_sizes(cases: list[dict]) -> None:
    mib = 1024 * 1024
    print(
        "| image file | pixels | Pillow decode | darkroom intake | whole edit | intake / decode "
        "| whole edit / file size |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for target in (1 * mib, 4 * mib, 20 * mib):
        decode, checked, edit = (run(target, mode) for mode in ("decode", "intake", "edit"))
        cases.append(
            {
                "target_bytes": target,
                "bytes": edit["bytes"],
                "pixels": edit["pixels"],
                "decode": decode["peak_growth"],
                "intake": checked["peak_growth"],
                "edit": edit["peak_growth"],
            }
        )
        print(
            f"| {edit['bytes'] / mib:.1f} MB | {edit['pixels'] / 1e6:.2f} M | {decode['peak_growth'] / mib:.1f} MB "
            f"| {checked['peak_growth'] / mib:.1f} MB | {edit['peak_growth'] / mib:.0f} MB "
            f"| {checked['peak_growth'] / decode['peak_growth']:.2f} | {edit['peak_growth'] / edit['bytes']:.1f} |",
            flush=True,
        )


# (label, side, target file bytes, size): a 2048x2048 noise PNG edited at its own size, and the largest input
# the edit function's intake allows: max_input_pixels (40,000,000: 6324 x 6324) in a file under max_image_bytes
# (20 MiB), edited at 1024x1024 (at its own size the edit would take about 76 s, past the synchronous budget).
MASKED_CASES = (
    ("2048x2048 + mask", 2048, 2048 * 2048 * 3, "auto"),
    ("6324x6324 + mask, size 1024x1024 (largest)", 6324, 20 * 1024 * 1024, "1024x1024"),
)


def table_ratio(runs: int, results: list[dict]) -> None:
    """Peak growth of a whole masked edit against (encoded input + decoded input rasters): the median of
    ``runs`` fresh processes, run as EditFunction (its template MemorySize sizes the decode budget)."""
    from statistics import median

    mb = 1e6
    env = {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": _edit_function_memory()}
    memory = env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
    print(f"\nMasked edits, EditFunction ({memory} MB), median of {runs} runs (MB = 10^6 bytes):\n")
    print(
        "| case | peak growth | encoded input | decoded pixels | ratio | Pillow's rasters | ratio to them | runs (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for label, side, target, size in MASKED_CASES:
        samples = [run(_masked_case(side, target), "edit", env, size) for _ in range(runs)]
        first = samples[0]
        encoded = first["bytes"] + first["mask_bytes"]
        decoded = first["raster_bytes"] + first["mask_raster_bytes"]
        peak = median(sample["peak_growth"] for sample in samples)
        held = first["pillow_bytes"]
        peaks = [sample["peak_growth"] for sample in samples]
        results.append({"case": label, "encoded": encoded, "decoded": decoded, "pillow": held, "peaks": peaks})
        print(
            f"| {label} | {peak / mb:.1f} MB | {encoded / mb:.2f} MB | {decoded / mb:.2f} MB "
            f"| {peak / (encoded + decoded):.2f} | {held / mb:.2f} MB | {peak / (encoded + held):.2f} "
            f"| {', '.join(f'{value / mb:.0f}' for value in peaks)} |",
            flush=True,
        )


def _edit_function_memory() -> str:
    sys.path.insert(0, str(ROOT / "shared"))
    from darkroom.local.template import Stack

    return str(next(function.memory_mb for function in Stack().functions() if function.logical_id == "EditFunction"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path, help="also write the figures here (for plot_memory.py)")
    parser.add_argument("--only", choices=("sizes", "ratio"), help="one table (default: both)")
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per masked case (median)")
    args = parser.parse_args()
    cases: list[dict] = []
    ratio: list[dict] = []
    if args.only != "ratio":
        table_sizes(cases)
    if args.only != "sizes":
        table_ratio(args.runs, ratio)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"unit": "bytes", "cases": cases, "masked": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()
