"""An image request resolved against its model's catalog entry: every default applied, every option the
model cannot honour refused (400) before any admission or work, and the time budget judged up front."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from darkroom.api.errors import InvalidRequest, UnknownParameter
from darkroom.api.images import ImageOptions, OutputFormat
from darkroom.catalog import Capability, Catalog, ModelEntry, parse_size
from darkroom.config import Settings


@dataclass(frozen=True)
class ImageJob:
    """A request's options with every default resolved against the model's catalog entry."""

    model: ModelEntry
    n: int
    size: str
    width: int
    height: int
    quality: str
    output_format: OutputFormat
    background: Literal["transparent", "opaque"]
    response_format: Literal["url", "b64_json"]
    options: dict[str, Any]


def resolve_request(
    request: ImageOptions,
    catalog: Catalog,
    capability: Capability = Capability.GENERATE,
    input_size: tuple[int, int] | None = None,
) -> ImageJob:
    """Apply the model's catalog entry: defaults for nulls, 400 for what this model cannot do.

    ``input_size`` (edits): ``size: auto`` means the first input image's size.
    """
    model = catalog.resolve(request.model, capability)
    options = _passthrough(request, model)
    if len(request.prompt) > model.max_prompt_chars:
        raise InvalidRequest(
            f"'prompt' is too long: at most {model.max_prompt_chars} characters for {model.id}.",
            param="prompt",
            code="string_above_max_length",
        )
    if request.stream and (request.n or 1) > 1:
        # OpenAI's stream events carry one image each and no index (image_gen_completed_event.py): n>1 is unspecified.
        raise InvalidRequest(
            "A streamed request makes one image: send 'n' 1, or omit 'stream'.", param="n", code="unsupported_value"
        )
    output_format = _output_format(request, model)
    n = request.n or 1
    if n > model.max_n:
        raise InvalidRequest(f"'n' must be at most {model.max_n} for {model.id}.", param="n")
    size: str = request.size or "auto"
    if size == "auto":
        # An image model's catalog entry always has a default size (ModelEntry's validator).
        size = f"{input_size[0]}x{input_size[1]}" if input_size else model.default_size or ""
    else:
        _check_listed("size", size, model.sizes, model)
    quality: str = request.quality or "auto"
    if quality == "auto":
        quality = model.default_quality
    else:
        _check_listed("quality", quality, model.qualities, model)
    transparent = _transparent(request, model, output_format)
    width, height = parse_size(size)
    return ImageJob(
        model=model,
        n=n,
        size=size,
        width=width,
        height=height,
        quality=quality,
        output_format=output_format,
        background="transparent" if transparent else "opaque",
        response_format=request.response_format or model.default_response_format,
        options=options,
    )


def _passthrough(request: ImageOptions, model: ModelEntry) -> dict[str, Any]:
    """The model-specific options the request may send (the catalog's ``passthrough``); any other is unknown."""
    options: dict[str, Any] = {}
    for name, value in (request.model_extra or {}).items():
        if name not in model.passthrough:
            raise UnknownParameter(name)
        options[name] = value
    if request.complexity is not None and "complexity" in model.passthrough:
        options["complexity"] = request.complexity  # otherwise the model has no planning step to tune
    return options


def _check_listed(param: str, value: str, supported: Sequence[str], model: ModelEntry) -> None:
    if value not in supported:
        raise InvalidRequest(
            f"Invalid value for '{param}'. Supported values for {model.id} are: "
            + ", ".join(f"'{v}'" for v in (*supported, "auto"))
            + ".",
            param=param,
        )


def _transparent(request: ImageOptions, model: ModelEntry, output_format: str) -> bool:
    if request.background != "transparent":
        return False
    if not model.transparent_background:
        raise InvalidRequest(f"{model.id} cannot produce transparent backgrounds.", param="background")
    if output_format == "jpeg":
        raise InvalidRequest(
            "A transparent background needs output_format 'png' or 'webp'.", param="background", code="invalid_value"
        )
    return True


def _output_format(request: ImageOptions, model: ModelEntry) -> OutputFormat:
    """The format to encode in; ``unsupported_value`` naming ``model`` for outputs no darkroom model produces:
    GIF and SVG (darkroom encodes from pixels, :mod:`darkroom.encoding`, and writes no animated GIF and no
    SVG), their options, and edit ``markup``."""
    requested = request.output_format
    if requested == "gif" or requested == "svg":
        raise InvalidRequest(
            f"{model.id} cannot produce '{request.output_format}' images; output_format must be "
            "'png', 'jpeg' or 'webp'.",
            param="output_format",
            code="unsupported_value",
        )
    for name, output_format in (("frame_count", "gif"), ("frame_duration_ms", "gif"), ("svg", "svg")):
        if getattr(request, name) is not None:
            raise InvalidRequest(
                f"'{name}' applies to output_format '{output_format}', which {model.id} cannot produce.",
                param=name,
                code="unsupported_value",
            )
    if getattr(request, "markup", None) is not None:
        raise InvalidRequest(
            f"{model.id} does not support 'markup'; send a 'mask' to mark where to edit.",
            param="markup",
            code="unsupported_value",
        )
    return requested or "png"


def check_time_budget(job: ImageJob, settings: Settings, background: bool, streamed: bool = False) -> None:
    """Refuse up front what would time out: the catalog's estimate against the time this work may take
    (``background``: judged as a background job; ``streamed``: a streamed request, which has a background job's
    ceiling; otherwise as a synchronous request, bound by API Gateway's 29 s)."""
    if not background and job.model.async_inference:
        raise InvalidRequest(
            f'{job.model.id} runs only in background mode (POST /v1/responses with "background": true and the '
            "image_generation tool, then poll GET /v1/responses/{id}).",
            param="model",
            code="use_background_mode",
        )
    budget = settings.job_inference_timeout_seconds if background or streamed else settings.inference_timeout_seconds
    expected = job.model.expected_seconds(job.quality, job.width, job.height, job.n)
    if expected <= budget:
        return
    param = "n" if job.n > 1 else "quality"
    if background or streamed:
        raise InvalidRequest(
            f"This request is expected to take about {expected:.0f} s, longer than a "
            f"{'background job' if background else 'streamed request'} may run "
            f"({budget:.0f} s). Ask for fewer, smaller or lower-quality images.",
            param=param,
            code="request_too_long",
        )
    raise InvalidRequest(
        f"This request is expected to take about {expected:.0f} s, longer than a synchronous request may take "
        f'({budget:.0f} s). Send it in background mode (POST /v1/responses with "background": true and the '
        'image_generation tool, then poll GET /v1/responses/{id}), or stream it ("stream": true), or ask for fewer, '
        "smaller or lower-quality images.",
        param=param,
        code="use_background_mode",
    )
