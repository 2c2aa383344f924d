"""Benchmark: peak memory of one edit request against the size of its input image.

Each case runs in a fresh process: build a PNG of about the target size (noise compresses badly, so
the file is large for its pixels), then measure the process's peak RSS growth across one whole
EditFunction invocation in-process against moto (multipart parse, intake decode, edit, encode, S3 put,
usage, JSON response). Pillow allocates pixels outside Python's allocator, so resident memory, not
tracemalloc, is the honest measure: a thread samples /proc/self/statm every 0.5 ms and the figure is
the peak above the resident size just before (after malloc_trim). Baseline: the same measure while
only decoding the image with Pillow (Image.open + load), the memory no implementation can avoid.

    .venv/bin/python benchmarks/bench_edit_memory.py [--json PATH]

``--json PATH`` also writes the figures; ``benchmarks/plot_memory.py`` draws docs/benchmarks-memory.png from them.
"""

import argparse
import json
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
side = Image.open(io.BytesIO(png)).size[0]
request = httpx.Request("POST", "http://x/v1/images/edits", files=[("image", ("a.png", png, "image/png"))],
                        data={"prompt": "x", "output_format": "jpeg", "response_format": "url"})
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
print(json.dumps({"bytes": len(png), "pixels": side * side, "peak_growth": growth}))
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


def run(target: int, mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CASE, str(_image_file(target)), mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path, help="also write the figures here (for plot_memory.py)")
    args = parser.parse_args()
    mib = 1024 * 1024
    print(
        "| image file | pixels | Pillow decode | darkroom intake | whole edit | intake / decode "
        "| whole edit / file size |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    cases = []
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
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"unit": "bytes", "cases": cases}, indent=2) + "\n")


if __name__ == "__main__":
    main()
