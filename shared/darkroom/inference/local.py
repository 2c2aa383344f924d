"""The ``local`` backend: a deterministic CPU stand-in for development and tests. Not a model.

It draws abstract compositions whose colours and shapes are derived from a hash of the prompt (plus
the ``seed`` pass-through and the image index), so different prompts give visibly different images
and the same request gives the same pixels. Every image carries a caption saying it is a stand-in.

Edits paint such a composition into the first image: only where the mask is transparent when a mask
is given (every other pixel is left exactly as it was), over the whole image otherwise. Further input
images only seed the composition; a real model would use them as references.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from darkroom.api.errors import ClientGone, InvalidRequest
from darkroom.catalog import ModelEntry
from darkroom.inference import EditJob, GeneratedImage, GenerateJob, InputImage, PartialSink, TextJob

CAPTION = "darkroom local stand-in - not a model"
_SHAPES_BY_QUALITY = {"low": 4, "medium": 9, "high": 18}
# Seconds the stand-in spends on each shape it draws, as a model spends on each step, so that streaming can be
# watched (and tested) with partial images arriving over time: the request's ``step_seconds`` pass-through (the
# local models' catalog entries allow it), else this variable, else 0 (at once). At most MAX_STEP_SECONDS.
STEP_SECONDS_VARIABLE = "DARKROOM_LOCAL_STEP_SECONDS"
MAX_STEP_SECONDS = 1.0
Progress = Callable[[int, int, Image.Image], None]  # (shape drawn, of shapes, canvas so far)


class LocalBackend:
    """Streams partial images: the first image's composition as it is drawn, shape by shape."""

    def generate(self, model: ModelEntry, job: GenerateJob) -> list[GeneratedImage]:
        first, rest = _progress(job.partials, _step_seconds(job.options))
        return [GeneratedImage(render(job, index, rest if index else first)) for index in range(job.n)]

    def edit(self, model: ModelEntry, job: EditJob) -> list[GeneratedImage]:
        first, rest = _progress(job.partials, _step_seconds(job.options))
        return [GeneratedImage(render_edit(job, index, rest if index else first)) for index in range(job.n)]

    def respond(self, model: ModelEntry, job: TextJob) -> str:
        """Measured facts, not understanding: each image's format, size and dominant colours."""
        words = sum(len(text.split()) for _, text in job.messages)
        lines = [f"{model.id} is a darkroom local stand-in, not a model: it reports what it can measure."]
        lines.append(f"The conversation has {len(job.messages)} message(s) and {words} word(s).")
        if job.messages:  # an echo, so a client can see what reached the model (e.g. described images)
            role, text = job.messages[-1]
            lines.append(f"The last {role} message was: {text[:2000]}")
        for number, picture in enumerate(job.images, start=1):
            lines.append(f"Image {number}: {describe(picture)}")
        text = "\n".join(lines)
        if job.deltas is not None:  # a streamed request: the answer line by line, as a model writes it
            for line in text.splitlines(keepends=True):
                if job.deltas.stopped.is_set():
                    raise ClientGone()
                job.deltas.deliver(line)
        return text


def describe(picture: InputImage) -> str:
    """``PNG, 512x512, opaque; dominant colours #1e5aa0 (46%), ...`` from a small quantized thumbnail."""
    image = picture.image
    thumbnail = image.convert("RGB")
    thumbnail.thumbnail((64, 64))
    quantized = thumbnail.quantize(colors=4)
    palette = quantized.getpalette() or []
    # A palette image's colours are palette indexes (Pillow types getcolors() for every mode at once).
    counts = sorted(
        ((count, index) for count, index in quantized.getcolors() or [] if isinstance(index, int)), reverse=True
    )
    total = sum(count for count, _ in counts) or 1
    colours = ", ".join(
        "#{:02x}{:02x}{:02x} ({}%)".format(*palette[index * 3 : index * 3 + 3], round(100 * count / total))
        for count, index in counts[:3]
    )
    alpha = "with transparency" if _has_transparency(image) else "opaque"
    return f"{picture.format.upper()}, {image.width}x{image.height}, {alpha}; dominant colours {colours}."


def _has_transparency(image: Image.Image) -> bool:
    if "A" not in image.getbands():
        return False
    lowest = image.getchannel("A").getextrema()[0]  # one band: (min, max) as numbers
    return isinstance(lowest, int | float) and lowest < 255


def _step_seconds(options: dict[str, Any]) -> float:
    value = options.get("step_seconds", os.environ.get(STEP_SECONDS_VARIABLE) or 0)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 <= seconds <= MAX_STEP_SECONDS or isinstance(value, bool):
        raise InvalidRequest(
            f"'step_seconds' must be a number from 0 to {MAX_STEP_SECONDS}.", param="step_seconds", code="invalid_value"
        )
    return seconds


def _no_progress(step: int, total: int, canvas: Image.Image) -> None:
    pass


def _progress(sink: PartialSink | None, delay: float) -> tuple[Progress, Progress]:
    """(for the first image, for the others): wait the step time; for the first, stop if the client went away
    and deliver a partial where one is due."""

    def paced(step: int, total: int, canvas: Image.Image) -> None:
        time.sleep(delay)

    rest = paced if delay > 0 else _no_progress
    if sink is None:
        return rest, rest

    def first(step: int, total: int, canvas: Image.Image) -> None:
        rest(step, total, canvas)
        if sink.stopped.is_set():
            raise ClientGone()
        due = sink.steps_for(total).get(step)
        if due is not None:
            sink.deliver(due, canvas.copy())

    return first, rest


def render_edit(job: EditJob, index: int, progress: Progress = _no_progress) -> Image.Image:
    """The first image with a composition painted where the mask is transparent (blended over it all
    without a mask); RGBA, so a transparent input stays transparent outside the edit."""
    base = job.images[0].convert("RGBA")
    # Extra images change the composition, so a request with references differs from one without.
    seed = "".join(f"{i.size}{i.resize((4, 4)).tobytes().hex()}" for i in job.images[1:])
    layer = render(
        GenerateJob(
            prompt=job.prompt,
            width=job.width,
            height=job.height,
            n=job.n,
            quality=job.quality,
            transparent=False,
            deadline_seconds=job.deadline_seconds,
            options={**job.options, "references": seed},
        ),
        index,
        progress,
    )
    if job.mask is None:
        blended = Image.blend(base, layer, 0.5)
        band = _band_height(min(job.width, job.height))  # one legible caption, not two overlaid
        blended.paste(layer.crop((0, job.height - band, job.width, job.height)), (0, job.height - band))
        return blended
    # Mask alpha 0 = edit: the composition replaces those pixels; every other pixel stays as it was.
    region = job.mask.point(lambda alpha: 255 if alpha == 0 else 0)
    base.paste(layer, mask=region)  # base is convert()'s own copy: painted in place, not copied again
    return base


def _rng(job: GenerateJob, index: int) -> random.Random:
    seed = f"{job.prompt}\x00{job.options.get('seed', '')}\x00{index}".encode()
    return random.Random(hashlib.sha256(seed).digest())  # noqa: S311 - art, not security


def _colour(rng: random.Random, alpha: int = 255) -> tuple[int, int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256), alpha)


def render(job: GenerateJob, index: int, progress: Progress = _no_progress) -> Image.Image:
    """One ``job.width`` x ``job.height`` RGBA image for ``job`` (transparent background if asked);
    ``progress`` is called after each shape."""
    rng = _rng(job, index)
    size = (job.width, job.height)
    if job.transparent:
        canvas = Image.new("RGBA", size, (0, 0, 0, 0))
    else:
        # Image.composite(end, start, mask) without two full-size colour images: paste end's colour through mask.
        canvas, end = Image.new("RGBA", size, _colour(rng)), _colour(rng)
        canvas.paste(end, mask=Image.linear_gradient("L").rotate(rng.choice((0, 90, 180, 270))).resize(size))
    draw = ImageDraw.Draw(canvas)
    short = min(size)
    shapes = _SHAPES_BY_QUALITY.get(job.quality, 9)
    for step in range(1, shapes + 1):
        x, y = rng.randrange(job.width), rng.randrange(job.height)
        radius = rng.randrange(short // 12 + 1, short // 3 + 2)
        box = (x - radius, y - radius, x + radius, y + radius)
        fill = _colour(rng)
        kind = rng.randrange(3)
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=fill)
        progress(step, shapes, canvas)
    _caption(draw, job, short)
    return canvas


def _band_height(short: int) -> int:
    return max(10, short // 40) * 2 + 8


def _caption(draw: ImageDraw.ImageDraw, job: GenerateJob, short: int) -> None:
    font_size = max(10, short // 40)
    font = ImageFont.load_default(size=font_size)
    band = _band_height(short)
    draw.rectangle((0, job.height - band, job.width, job.height), fill=(0, 0, 0, 200))
    prompt = job.prompt if len(job.prompt) <= 60 else job.prompt[:57] + "..."
    draw.text((6, job.height - band + 2), CAPTION, fill=(255, 255, 255, 255), font=font)
    draw.text((6, job.height - band + font_size + 4), prompt, fill=(200, 200, 200, 255), font=font)
