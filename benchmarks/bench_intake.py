"""Benchmark: darkroom.intake.open_image against Pillow's own decode of the same bytes.

Inputs are photo-like noise made here (smooth low-frequency colour fields plus fine grain, so neither the
encoders nor the decoders get an easy flat image) at 1, 4 and 16 megapixels, saved as PNG, JPEG (quality
90) and WebP (quality 90). Per case: the median of ``--rounds`` calls of ``open_image`` (sniffing, size and
pixel checks, decode, EXIF orientation, mode normalisation), as a ratio to the median of Pillow's plain
``Image.open(BytesIO(data)); im.load()`` of the same bytes, both timed in the same run, alternating.

    /tmp/dv/bin/python benchmarks/bench_intake.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

from PIL import Image, ImageChops

from darkroom.intake import IntakeLimits, open_image

SIDES = {1: 1024, 4: 2048, 16: 4096}  # megapixels -> side of a square image
FORMATS = {
    "png": {"format": "PNG", "compress_level": 6},
    "jpeg": {"format": "JPEG", "quality": 90},
    "webp": {"format": "WEBP", "quality": 90},
}
LIMITS = IntakeLimits(max_image_bytes=256 * 1024 * 1024)  # the cases, not the byte limit, are measured


def photo_like(side: int) -> Image.Image:
    channels = []
    for seed_angle in (0, 90, 180):
        coarse = Image.effect_noise((side // 32, side // 32), 64).rotate(seed_angle)
        smooth = coarse.resize((side, side), Image.Resampling.BICUBIC)
        grain = Image.effect_noise((side, side), 24)
        channels.append(ImageChops.add(smooth, grain, scale=1.0, offset=-100))
    return Image.merge("RGB", channels)


def encode(image: Image.Image, name: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **FORMATS[name])
    return buffer.getvalue()


def pillow_decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def intake(data: bytes):
    return open_image(data, param="image", limits=LIMITS)


def timed(fn, data: bytes) -> float:
    start = time.perf_counter()
    fn(data)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    print(f"Median of {rounds} runs each, alternating; ratio = intake / Pillow open + load.\n")
    print("| megapixels | format | file (MB) | Pillow open + load (ms) | darkroom intake (ms) | ratio |")
    print("|---:|---|---:|---:|---:|---:|")
    for megapixels, side in SIDES.items():
        image = photo_like(side)
        for name in FORMATS:
            data = encode(image, name)
            assert intake(data).image.size == (side, side)  # warm-up, and a check
            pillow_decode(data)
            plain, checked = [], []
            for _ in range(rounds):
                plain.append(timed(pillow_decode, data))
                checked.append(timed(intake, data))
            p, c = statistics.median(plain), statistics.median(checked)
            print(
                f"| {megapixels} | {name} | {len(data) / 1024 / 1024:.1f} | {p:.1f} | {c:.1f} | {c / p:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
