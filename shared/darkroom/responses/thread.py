"""A response's conversation thread: what ``previous_response_id`` carries forward.

The thread keeps text and S3 keys, never image bytes. Carried images are read back from S3 and validated
like any input (their headers first, then their pixels); the turn's input images are kept in S3,
re-encoded as PNG so no input metadata survives.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

from PIL import Image

from darkroom import intake
from darkroom.ports import ImageStorage
from darkroom.response_store import Message, Thread

ANALYSIS_FORMATS = frozenset({"png", "jpeg", "webp", "gif"})  # vision input takes non-animated GIF too
MAX_CARRIED_IMAGES = 16


def stored_images(keys: list[str], store: ImageStorage) -> list[intake.IntakeImage]:
    """The images at ``keys``, validated again: every header read (and charged), then decoded."""
    limits = intake.IntakeLimits(formats=ANALYSIS_FORMATS)
    headers = [intake.read_header(store.get(key), param="previous_response_id", limits=limits) for key in keys]
    return [header.decode() for header in headers]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def next_thread(history: Thread, turn: Iterable[Message], answer: str, images: Iterable[str]) -> Thread:
    """The thread after this turn: its messages and the answer's text; its input and output images, the
    latest :data:`MAX_CARRIED_IMAGES` kept."""
    return Thread(
        messages=[*history.messages, *turn, *([("assistant", answer)] if answer else [])],
        images=[*history.images, *images][-MAX_CARRIED_IMAGES:],
    )
