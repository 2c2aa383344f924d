"""Chart: peak memory of one edit request against input size, from bench_edit_memory.py's --json output.

Drawn with Pillow's ImageDraw only (no plotting library): linear axes, one line per measure (Pillow decode,
darkroom intake, whole edit request) and a dotted "1x file size" reference.

    /tmp/dv/bin/python benchmarks/bench_edit_memory.py --json benchmarks/results/edit-memory.json
    /tmp/dv/bin/python benchmarks/plot_memory.py [--input benchmarks/results/edit-memory.json]
                                                 [--output docs/benchmarks-memory.png]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
WIDTH, HEIGHT = 1000, 640
LEFT, RIGHT, TOP, BOTTOM = 100, 40, 70, 90  # plot margins
SERIES = [  # key, label, colour, marker
    ("edit", "whole edit request (EditFunction)", (200, 40, 40), "square"),
    ("intake", "darkroom intake (open_image)", (30, 110, 200), "circle"),
    ("decode", "Pillow open + load (baseline)", (40, 150, 60), "cross"),
]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _nice_step(span: float, ticks: int) -> float:
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _marker(draw: ImageDraw.ImageDraw, x: float, y: float, kind: str, colour) -> None:
    r = 7
    if kind == "square":
        draw.rectangle((x - r, y - r, x + r, y + r), fill=colour)
    elif kind == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=3)
    else:
        draw.line((x - r, y - r, x + r, y + r), fill=colour, width=3)
        draw.line((x - r, y + r, x + r, y - r), fill=colour, width=3)


def plot(data: dict, output: Path, subtitle: str) -> None:
    cases = sorted(data["cases"], key=lambda c: c["bytes"])
    x_max = _nice_step(max(c["bytes"] for c in cases) / MIB, 5) * 5
    x_step = _nice_step(x_max, 5)
    x_max = math.ceil(max(c["bytes"] for c in cases) / MIB / x_step) * x_step
    y_top = max(c[key] for c in cases for key, *_ in SERIES) / MIB
    y_step = _nice_step(y_top, 6)
    y_max = math.ceil(y_top * 1.05 / y_step) * y_step
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    title, small, tick = _font(24), _font(15), _font(16)
    x0, y0, x1, y1 = LEFT, HEIGHT - BOTTOM, WIDTH - RIGHT, TOP

    def px(mb: float) -> float:
        return x0 + (x1 - x0) * mb / x_max

    def py(mb: float) -> float:
        return y0 - (y0 - y1) * mb / y_max

    draw.text(
        (WIDTH / 2, 14), "Peak memory of one edit request vs input file size", fill="black", font=title, anchor="ma"
    )
    draw.text((WIDTH / 2, 44), subtitle, fill=(90, 90, 90), font=small, anchor="ma")
    value = 0.0
    while value <= y_max + 1e-9:  # horizontal grid + y ticks
        draw.line((x0, py(value), x1, py(value)), fill=(225, 225, 225))
        draw.text((x0 - 10, py(value)), f"{value:g}", fill="black", font=tick, anchor="rm")
        value += y_step
    value = 0.0
    while value <= x_max + 1e-9:
        draw.line((px(value), y0, px(value), y0 + 6), fill="black")
        draw.text((px(value), y0 + 10), f"{value:g}", fill="black", font=tick, anchor="ma")
        value += x_step
    draw.line((x0, y0, x1, y0), fill="black", width=2)
    draw.line((x0, y0, x0, y1), fill="black", width=2)
    draw.text(((x0 + x1) / 2, HEIGHT - 40), "input image file (MB, noise PNG)", fill="black", font=tick, anchor="ma")
    label = Image.new("RGB", (300, 24), "white")
    ImageDraw.Draw(label).text((150, 12), "peak resident growth (MB)", fill="black", font=tick, anchor="mm")
    image.paste(label.rotate(90, expand=True), (14, int((y0 + y1) / 2 - 150)))
    # Reference: memory equal to the file size.
    steps = 40
    for i in range(0, steps, 2):
        a, b = x_max * i / steps, x_max * (i + 1) / steps
        if b <= y_max:
            draw.line((px(a), py(a), px(b), py(b)), fill=(150, 150, 150), width=2)
    for key, _, colour, kind in SERIES:
        points = [(px(c["bytes"] / MIB), py(c[key] / MIB)) for c in cases]
        draw.line(points, fill=colour, width=3 if key != "decode" else 2)
        for x, y in points:
            _marker(draw, x, y, kind, colour)
    last = cases[-1]
    for key, _, colour, _ in SERIES[:1]:
        draw.text(
            (px(last["bytes"] / MIB) - 12, py(last[key] / MIB) + 14),
            f"{last[key] / MIB:.0f} MB = {last[key] / last['bytes']:.1f}x file",
            fill=colour,
            font=small,
            anchor="ra",
        )
    # Legend (top left, inside the plot).
    lx, ly = x0 + 20, y1 + 12
    draw.rectangle((lx - 10, ly - 8, lx + 380, ly + 4 * 26), fill="white", outline=(180, 180, 180))
    for index, (_, text, colour, kind) in enumerate(SERIES):
        y = ly + 10 + index * 26
        draw.line((lx, y, lx + 40, y), fill=colour, width=3)
        _marker(draw, lx + 20, y, kind, colour)
        draw.text((lx + 52, y), text, fill="black", font=small, anchor="lm")
    y = ly + 10 + len(SERIES) * 26
    draw.line((lx, y, lx + 16, y), fill=(150, 150, 150), width=2)
    draw.line((lx + 24, y, lx + 40, y), fill=(150, 150, 150), width=2)
    draw.text((lx + 52, y), "1x file size (reference)", fill="black", font=small, anchor="lm")
    output.parent.mkdir(parents=True, exist_ok=True)
    image.save(output, format="PNG", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", type=Path, default=ROOT / "benchmarks" / "results" / "edit-memory.json")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks-memory.png")
    parser.add_argument(
        "--subtitle",
        default="bench_edit_memory.py: fresh process per case, RSS sampled every "
        "0.5 ms, against moto; intake overlaps the Pillow decode",
    )
    args = parser.parse_args()
    plot(json.loads(args.input.read_text()), args.output, args.subtitle)
    print(f"wrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}")


if __name__ == "__main__":
    main()
