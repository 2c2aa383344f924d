"""Benchmark: what Content Credentials add to each image (issue 19), against encoding that image alone.

Per format (PNG, JPEG, WebP at darkroom's settings, ``darkroom.encoding.encode``) and per picture (the local
backend's flat drawing, and a photo-like one: gradients under blurred noise), 1024x1024: the median time of
``encode`` alone, and of ``content_credentials.mark`` on its output (the XMP packet, the C2PA manifest built,
hashed and signed with the file signer: one ES256 signature, as KMS makes one per image), in the same run,
interleaved; their ratio; and the bytes the marks add. The signer is loaded once before timing, as a container
loads it once. KMS's own latency (one ``Sign`` call a image, network) is not in these figures.

    .venv/bin/python benchmarks/bench_content_credentials.py [--rounds 21]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "shared"))

from PIL import Image, ImageDraw, ImageFilter  # noqa: E402


def pictures() -> dict[str, Image.Image]:
    flat = Image.new("RGB", (1024, 1024), (40, 60, 90))
    draw = ImageDraw.Draw(flat)
    for i in range(12):
        draw.ellipse((i * 60, i * 40, i * 60 + 300, i * 40 + 260), fill=(30 + i * 15, 200 - i * 10, 120))
    noise = Image.effect_noise((1024, 1024), 60).convert("RGB").filter(ImageFilter.GaussianBlur(1.5))
    gradient = Image.linear_gradient("L").resize((1024, 1024)).convert("RGB")
    return {"flat drawing": flat, "photo-like": Image.blend(noise, gradient, 0.5)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    os.environ.setdefault("DARKROOM_DEV_CREDENTIALS_DIR", tempfile.mkdtemp(prefix="darkroom-bench-credentials-"))
    from darkroom.local import dev_credentials

    os.environ.update(dev_credentials.environment())
    from darkroom.content_credentials import Provenance, ensure_ready, mark
    from darkroom.encoding import encode

    ensure_ready()  # the signer, once per container
    provenance = Provenance("local-image")
    print("| picture | format | encode ms | + marks ms | ratio | bytes | + bytes |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, image in pictures().items():
        for fmt in ("png", "jpeg", "webp"):
            encoded_ms, marked_ms = [], []
            data = marked = b""
            for _ in range(args.rounds):
                start = time.perf_counter()
                data = encode(image, fmt, None, False)
                middle = time.perf_counter()
                marked = mark(data, fmt, provenance)
                end = time.perf_counter()
                encoded_ms.append((middle - start) * 1000)
                marked_ms.append((end - middle) * 1000)
            enc, add = statistics.median(encoded_ms), statistics.median(marked_ms)
            print(
                f"| {name} | {fmt} | {enc:.1f} | {add:.1f} | {add / enc:.2f} | {len(data):,} | "
                f"{len(marked) - len(data):,} |"
            )


if __name__ == "__main__":
    main()
