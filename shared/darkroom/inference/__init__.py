"""The ``Backend`` port and the registry that maps a catalog entry's ``backend`` to an adapter."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from darkroom.catalog import ModelEntry
from darkroom.catalog_endpoints import OpenAIEndpoint


@dataclass(frozen=True)
class PartialSink:
    """Where a backend that can stream its work sends partial images while a streamed request runs.

    ``deliver(index, image)`` takes partial ``index`` (0 to ``count - 1``, in order) of the first image, at the
    job's final size; a backend that cannot stream partials ignores the sink and sends none. ``stopped`` is set when
    the client has gone away: a backend stops its upstream work there if it can, raising
    :class:`darkroom.api.errors.ClientGone`.
    """

    count: int  # 0-3: the request's partial_images (0: none wanted; the sink still carries ``stopped``)
    deliver: Callable[[int, Image.Image], None]
    stopped: threading.Event = field(default_factory=threading.Event)

    def steps_for(self, total: int) -> dict[int, int]:
        """{step: partial index}: ``count`` steps of ``total`` (1-based), evenly spaced, never the last."""
        return {max(1, (total * (k + 1)) // (self.count + 1)): k for k in range(self.count)} if total > 1 else {}


class ClientGone(Exception):
    """A backend stopped its work because the streamed request's client went away (``PartialSink.stopped``)."""


@dataclass(frozen=True)
class GenerateJob:
    """What a backend is asked to draw, with every default already resolved."""

    prompt: str
    width: int
    height: int
    n: int
    quality: str
    transparent: bool
    deadline_seconds: float
    options: dict[str, Any] = field(default_factory=dict)  # catalog-approved pass-through parameters
    partials: PartialSink | None = None  # set on a streamed request that asked for partial images


@dataclass(frozen=True)
class EditJob:
    """An edit: the first image is the one edited; a mask (mode "L", 0 = edit here) applies to it."""

    prompt: str
    images: list[Image.Image]  # validated by darkroom.intake, already at width x height (first image)
    mask: Image.Image | None
    width: int
    height: int
    n: int
    quality: str
    transparent: bool
    input_fidelity: str
    deadline_seconds: float
    options: dict[str, Any] = field(default_factory=dict)
    partials: PartialSink | None = None


@dataclass(frozen=True)
class InputImage:
    image: Image.Image  # validated by darkroom.intake
    format: str
    detail: str = "auto"


@dataclass(frozen=True)
class TextSink:
    """Where a backend that can stream text sends the answer's pieces while a streamed request runs.

    ``deliver(delta)`` takes each piece in order, as the model produces it; the pieces joined are exactly the text
    the backend then returns. A backend that cannot stream text ignores the sink (the whole text is sent once it is
    returned). ``stopped``: as :class:`PartialSink`'s.
    """

    deliver: Callable[[str], None]
    stopped: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class TextJob:
    """A conversation turn for a text or vision model: earlier turns first, images in order."""

    instructions: str | None
    messages: list[tuple[str, str]]  # (role, text)
    images: list[InputImage]
    deadline_seconds: float
    deltas: TextSink | None = None  # set on a streamed request


@dataclass(frozen=True)
class GeneratedImage:
    image: Image.Image  # exactly width x height; RGBA when the job asked for transparency
    revised_prompt: str | None = None
    # The model's own file for ``image``, validated and decoded by darkroom.intake, when ``image`` is exactly its
    # pixels (not resized): darkroom.encoding stores it as it is, metadata stripped, when it is what was asked for.
    upstream: bytes | None = None


class Backend(Protocol):
    def generate(self, model: ModelEntry, job: GenerateJob) -> list[GeneratedImage]:
        """Return ``job.n`` images or raise an ``ApiError`` (upstream error, timeout)."""
        ...

    def edit(self, model: ModelEntry, job: EditJob) -> list[GeneratedImage]:
        """Return ``job.n`` edited images of ``job.width`` x ``job.height``, or raise an ``ApiError``."""
        ...

    def respond(self, model: ModelEntry, job: TextJob) -> str:
        """The assistant's text for a conversation (with images for models that analyze them)."""
        ...


def backend_for(model: ModelEntry) -> Backend:
    """The adapter for the model's catalog ``backend`` (the catalog only admits known names).

    Remote adapters are built once per container and model id (one client and circuit breaker each),
    and rebuilt only when the model's catalog entry changes; the local stand-in has no state to keep."""
    if model.backend == "local":
        from darkroom.inference.local import LocalBackend

        return LocalBackend()
    with _adapters_lock:
        cached = _adapters.get(model.id)
        if cached is None or cached[0] != model:
            cached = _adapters[model.id] = (model, _build_adapter(model))
        return cached[1]


_adapters: dict[str, tuple[ModelEntry, Backend]] = {}
_adapters_lock = threading.Lock()


def _build_adapter(model: ModelEntry) -> Backend:
    if model.backend == "sagemaker":
        from darkroom.inference.sagemaker import SageMakerBackend

        return SageMakerBackend(model)
    if model.backend == "bedrock":
        from darkroom.inference.bedrock import BedrockBackend

        return BedrockBackend(model)
    from darkroom.inference.openai_http import OpenAIBackend, upstream_for

    return OpenAIBackend(upstream_for(model.endpoint_as(OpenAIEndpoint).base_url))
