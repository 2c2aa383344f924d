"""What the AWS backend tests share: PNG bytes and base64 as an endpoint sends them, and Stubber on a client."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager

from botocore.stub import Stubber
from PIL import Image

from darkroom.inference.resilience import Resilience, RetryPolicy

# How many times a retryable AWS error is tried before its 503 reaches the client (the default policy's count).
ATTEMPTS = RetryPolicy().max_attempts


def no_wait() -> Resilience:
    """The default retry policy without its backoff sleeps: a throttled call is tried ``ATTEMPTS`` times at once."""
    return Resilience(sleep=lambda _seconds: None)


def png_of(width: int, height: int, colour=(200, 30, 30), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode_png(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


@contextmanager
def stubbed(client) -> Iterator[Stubber]:
    """Stubber on ``client``; every response a test queued must have been asked for."""
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()
