"""The generate use case, and the steps every image-producing use case shares: resolving the request
against the model's catalog entry, and delivering images (encode, store, meter, answer)."""

from __future__ import annotations

import base64
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from darkroom import deadline
from darkroom.api.errors import InvalidRequest, ServiceUnavailable, UnknownParameter, UpstreamError
from darkroom.api.images import (
    UNSUPPORTED_FORMATS,
    ImageData,
    ImageGenerateRequest,
    ImageOptions,
    ImagesResponse,
    ImagesUsage,
    InputTokensDetails,
)
from darkroom.catalog import Capability, ModelEntry, parse_size
from darkroom.encoding import encode
from darkroom.end_users import identify
from darkroom.inference import Backend, GeneratedImage, GenerateJob, backend_for
from darkroom.limits import Admission
from darkroom.metering import UsageEvent
from darkroom.observability import B64_OMITTED, IMAGES_EDITED, IMAGES_GENERATED, count, inference_latency, logger
from darkroom.services import Services
from darkroom.storage import image_key
from darkroom.tenancy import Tenant

# Bytes of JSON around the images in a response body, beyond the base64 itself (generous).
_ENVELOPE_BYTES = 4096
_PER_IMAGE_BYTES = 2048  # url (presigned, ~1.5 KB) + keys


@dataclass(frozen=True)
class GenerateResult:
    response: ImagesResponse
    headers: dict[str, str]
    keys: tuple[str, ...] = ()  # where each image is stored, in data[] order
    usage: UsageEvent | None = None  # what was (or, for a background job, will be) billed


@dataclass(frozen=True)
class ImageJob:
    """A request's options with every default resolved against the model's catalog entry."""

    model: ModelEntry
    n: int
    size: str
    width: int
    height: int
    quality: str
    output_format: str
    background: str  # "transparent" | "opaque"
    response_format: str
    options: dict


def resolve_request(
    request: ImageOptions,
    services: Services,
    capability: Capability = Capability.GENERATE,
    input_size: tuple[int, int] | None = None,
) -> ImageJob:
    """Apply the model's catalog entry: defaults for nulls, 400 for what this model cannot do.

    ``input_size`` (edits): ``size: auto`` means the first input image's size.
    """
    model = services.catalog.resolve(request.model, capability)
    options = {}
    for name, value in (request.model_extra or {}).items():
        if name not in model.passthrough:
            raise UnknownParameter(name)
        options[name] = value
    if len(request.prompt) > model.max_prompt_chars:
        raise InvalidRequest(
            f"'prompt' is too long: at most {model.max_prompt_chars} characters for {model.id}.",
            param="prompt",
            code="string_above_max_length",
        )
    if request.stream:
        raise InvalidRequest(
            "Streaming image generation is not supported yet; omit 'stream' or send false.",
            param="stream",
            code="unsupported_value",
        )
    _refuse_unsupported_outputs(request, model)
    if request.complexity is not None and "complexity" in model.passthrough:
        options["complexity"] = request.complexity  # otherwise the model has no planning step to tune
    n = request.n or 1
    if n > model.max_n:
        raise InvalidRequest(f"'n' must be at most {model.max_n} for {model.id}.", param="n")
    size = request.size or "auto"
    if size == "auto":
        size = f"{input_size[0]}x{input_size[1]}" if input_size else model.default_size
    elif size not in model.sizes:
        raise InvalidRequest(
            f"Invalid value for 'size'. Supported values for {model.id} are: "
            + ", ".join(f"'{s}'" for s in (*model.sizes, "auto"))
            + ".",
            param="size",
        )
    quality = request.quality or "auto"
    if quality == "auto":
        quality = model.default_quality
    elif quality not in model.qualities:
        raise InvalidRequest(
            f"Invalid value for 'quality'. Supported values for {model.id} are: "
            + ", ".join(f"'{q}'" for q in (*model.qualities, "auto"))
            + ".",
            param="quality",
        )
    output_format = request.output_format or "png"
    background = request.background or "auto"
    if background == "transparent":
        if not model.transparent_background:
            raise InvalidRequest(f"{model.id} cannot produce transparent backgrounds.", param="background")
        if output_format == "jpeg":
            raise InvalidRequest(
                "A transparent background needs output_format 'png' or 'webp'.",
                param="background",
                code="invalid_value",
            )
    width, height = parse_size(size)
    return ImageJob(
        model=model,
        n=n,
        size=size,
        width=width,
        height=height,
        quality=quality,
        output_format=output_format,
        background="transparent" if background == "transparent" else "opaque",
        response_format=request.response_format or model.default_response_format,
        options=options,
    )


def _refuse_unsupported_outputs(request: ImageOptions, model: ModelEntry) -> None:
    """``unsupported_value`` naming ``model`` for outputs no darkroom model produces: GIF and SVG (darkroom
    encodes from pixels and writes neither), their options, and edit ``markup``."""
    if request.output_format in UNSUPPORTED_FORMATS:
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


def check_time_budget(job: ImageJob, services: Services, background: bool | None = None) -> None:
    """Refuse up front what would time out: the catalog's estimate against the time this work may take
    (``background``: judge it as a background job; default: as the work running now)."""
    background = deadline.in_background() if background is None else background
    if not background and job.model.endpoint is not None and job.model.endpoint.async_inference:
        raise InvalidRequest(
            f'{job.model.id} runs only in background mode (POST /v1/responses with "background": true and the '
            "image_generation tool, then poll GET /v1/responses/{id}).",
            param="model",
            code="use_background_mode",
        )
    settings = services.settings
    budget = settings.job_inference_timeout_seconds if background else settings.inference_timeout_seconds
    expected = job.model.expected_seconds(job.quality, job.width, job.height, job.n)
    if expected <= budget:
        return
    param = "n" if job.n > 1 else "quality"
    if background:
        raise InvalidRequest(
            f"This request is expected to take about {expected:.0f} s, longer than a background job may run "
            f"({budget:.0f} s). Ask for fewer, smaller or lower-quality images.",
            param=param,
            code="request_too_long",
        )
    raise InvalidRequest(
        f"This request is expected to take about {expected:.0f} s, longer than a synchronous request may take "
        f'({budget:.0f} s). Send it in background mode (POST /v1/responses with "background": true and the '
        "image_generation tool, then poll GET /v1/responses/{id}), or ask for fewer, smaller or lower-quality "
        "images.",
        param=param,
        code="use_background_mode",
    )


def _usage(prompt: str, job: ImageJob) -> tuple[int, int]:
    """(input text tokens, output image tokens): ~4 characters a token; image tokens scale with area."""
    text_tokens = max(1, math.ceil(len(prompt) / 4))
    per_square = job.model.output_tokens_per_image.get(job.quality, 0)
    per_image = math.ceil(per_square * job.width * job.height / (1024 * 1024))
    return text_tokens, per_image * job.n


def input_image_tokens(sizes: list[tuple[int, int]]) -> int:
    """Tokens for input images, as vision models count them: 85 plus 170 per 512-pixel tile."""
    return sum(85 + 170 * math.ceil(w / 512) * math.ceil(h / 512) for w, h in sizes)


def generate_images(
    tenant: Tenant,
    request: ImageGenerateRequest,
    request_id: str,
    services: Services,
    backend: Backend | None = None,
    admitted: Admission | None = None,
    end_user: str | None = None,
) -> GenerateResult:
    """Generate, store and meter ``n`` images for ``tenant``; the OpenAI ``ImagesResponse`` and headers.

    ``admitted``: a background job admitted when it was accepted. Its caller owns the admission (refunds
    it if the job fails) and the billing (``GenerateResult.usage``, recorded once the job completes).
    ``end_user``: the opaque end-user id (:mod:`darkroom.end_users`) when the caller already has one (the
    Responses API); otherwise it comes from the request's ``safety_identifier``/``user``.
    """
    end_user = end_user or identify(tenant.tenant_id, request.safety_identifier, request.user)
    job = resolve_request(request, services)
    check_time_budget(job, services)
    if admitted is not None:
        return _generate(tenant, job, request, request_id, services, backend, admitted, bill=False, end_user=end_user)
    admission = services.limiter.admit(tenant, job.n)
    with services.limiter.refunded_on_failure(admission):
        return _generate(tenant, job, request, request_id, services, backend, admission, bill=True, end_user=end_user)


def _generate(
    tenant: Tenant,
    job: ImageJob,
    request: ImageGenerateRequest,
    request_id: str,
    services: Services,
    backend: Backend | None,
    admission: Admission,
    bill: bool,
    end_user: str | None,
) -> GenerateResult:
    started = time.monotonic()
    images = (backend or backend_for(job.model)).generate(
        job.model,
        GenerateJob(
            prompt=request.prompt,
            width=job.width,
            height=job.height,
            n=job.n,
            quality=job.quality,
            transparent=job.background == "transparent",
            deadline_seconds=deadline.inference_budget(services.settings),
            options=job.options,
        ),
    )
    inference_latency(job.model.backend, (time.monotonic() - started) * 1000)
    return deliver(
        tenant,
        job,
        images,
        request,
        request_id,
        services,
        admission,
        operation="generate",
        bill=bill,
        end_user=end_user,
    )


def deliver(
    tenant: Tenant,
    job: ImageJob,
    images: list[GeneratedImage],
    request: ImageOptions,
    request_id: str,
    services: Services,
    admission: Admission,
    operation: str,
    input_sizes: list[tuple[int, int]] = (),
    bill: bool = True,
    end_user: str | None = None,
) -> GenerateResult:
    """Encode, store, presign and meter the produced images, and build the ``ImagesResponse``.

    ``bill=False`` (background jobs): the usage is returned, not recorded; the job records it on completion.
    ``end_user``: the opaque end-user id the usage record carries (never a raw ``safety_identifier``)."""
    if len(images) != job.n:  # a backend that returns the wrong count is an upstream fault, not a 200
        raise UpstreamError(f"The model returned {len(images)} images instead of {job.n}.")

    keys = tuple(image_key(tenant.tenant_id, request_id, i, job.output_format) for i in range(job.n))

    def store(index: int) -> tuple[bytes, str]:
        data = encode(
            images[index].image, job.output_format, request.output_compression, job.background == "transparent"
        )
        services.store.put(keys[index], data, job.output_format)
        return data, services.store.presign(keys[index], job.output_format)

    with ThreadPoolExecutor(max_workers=min(4, job.n)) as pool:
        stored = list(pool.map(store, range(job.n)))

    text_tokens, output_tokens = _usage(request.prompt, job)
    image_tokens = input_image_tokens(list(input_sizes))
    price = job.model.price
    cost = (
        text_tokens * price.input_text_per_million
        + image_tokens * price.input_image_per_million
        + output_tokens * price.output_image_per_million
    ) / 1e6
    usage = UsageEvent(
        request_id=request_id,
        tenant_id=tenant.tenant_id,
        operation=operation,
        model=job.model.id,
        size=job.size,
        quality=job.quality,
        images=job.n,
        input_text_tokens=text_tokens,
        input_image_tokens=image_tokens,
        output_tokens=output_tokens,
        cost_usd=cost,
        end_user=end_user,
    )
    if bill:
        record_usage(usage, services)

    headers = admission.headers()
    data = [ImageData(url=url, revised_prompt=images[i].revised_prompt) for i, (_, url) in enumerate(stored)]
    if job.response_format == "b64_json":
        encoded = [base64.b64encode(raw).decode("ascii") for raw, _ in stored]
        budget = services.settings.max_response_bytes - _ENVELOPE_BYTES - _PER_IMAGE_BYTES * job.n
        if sum(map(len, encoded)) <= budget:
            for item, b64 in zip(data, encoded, strict=True):
                item.b64_json = b64
        else:
            # Lambda cannot return more than 6 MB: every image still has its URL; say why b64_json is absent.
            headers["x-darkroom-b64-omitted"] = "response-size-limit"
            count(B64_OMITTED)
    count(IMAGES_EDITED if operation == "edit" else IMAGES_GENERATED, job.n)
    logger.info(
        "images produced",
        extra={
            "operation": operation,
            "model": job.model.id,
            "n": job.n,
            "size": job.size,
            "format": job.output_format,
            "input_images": len(input_sizes),
            "bytes": sum(len(raw) for raw, _ in stored),
        },
    )
    return GenerateResult(
        keys=keys,
        usage=usage,
        response=ImagesResponse(
            created=int(time.time()),
            data=data,
            size=job.size,
            quality=job.quality,
            output_format=job.output_format,
            background=job.background,
            usage=ImagesUsage(
                input_tokens=text_tokens + image_tokens,
                output_tokens=output_tokens,
                total_tokens=text_tokens + image_tokens + output_tokens,
                input_tokens_details=InputTokensDetails(text_tokens=text_tokens, image_tokens=image_tokens),
            ),
        ),
        headers=headers,
    )


def record_usage(usage: UsageEvent, services: Services) -> None:
    """Bill ``usage`` once (the meter is idempotent per request id), or fail the request with a 503."""
    try:
        services.meter.record(usage)
    except (ClientError, BotoCoreError) as exc:
        # No usage record, no delivery: the client retries and nothing goes unbilled.
        logger.error("usage record failed", extra={"error": type(exc).__name__})
        raise ServiceUnavailable("Usage could not be recorded; the request was not completed. Retry.") from exc
