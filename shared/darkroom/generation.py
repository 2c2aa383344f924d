"""The generate use case, and the steps every image-producing use case shares: admitting the work, and
delivering its images (encode, store, presign, meter) as an :class:`ImagesResult`, the domain result the
edge renders. Resolving a request against its model is :mod:`darkroom.image_job`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from darkroom.api.errors import ServiceUnavailable, UpstreamError
from darkroom.api.images import ImageGenerateRequest, ImageOptions, OutputFormat
from darkroom.config import Settings
from darkroom.content_credentials import Ingredient, Provenance, ensure_ready, mark
from darkroom.encoding import encode
from darkroom.end_users import identify
from darkroom.image_job import ImageJob, check_time_budget, resolve_request
from darkroom.inference import GeneratedImage, GenerateJob, PartialSink
from darkroom.limits import Admission
from darkroom.metering import UsageEvent
from darkroom.observability import B64_OMITTED, IMAGES_EDITED, IMAGES_GENERATED, count, inference_latency, logger
from darkroom.ports import ImagePorts, Meter, RequestContext
from darkroom.storage import image_key
from darkroom.tenancy import Tenant

if TYPE_CHECKING:
    from darkroom.image_stream import StreamRun

# Bytes of JSON around the images in a response body, beyond the base64 itself (generous).
_ENVELOPE_BYTES = 4096
_PER_IMAGE_BYTES = 2048  # url (presigned, ~1.5 KB) + keys


@dataclass(frozen=True)
class ProducedImage:
    """One image made and stored: where it is, the URL it leaves by, and its bytes when the answer carries
    them inline (``response_format: b64_json`` within the response-size limit)."""

    key: str
    url: str
    revised_prompt: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class ImagesResult:
    """What an image-producing use case made: the stored images with their facts, the tokens, the usage.

    The edge renders it (``darkroom.api.rendering``): an Images API body, or a Responses
    ``image_generation_call``; nothing here is a wire shape."""

    created: int
    images: tuple[ProducedImage, ...]
    size: str
    quality: str
    output_format: OutputFormat
    background: Literal["transparent", "opaque"]
    input_text_tokens: int
    input_image_tokens: int
    output_tokens: int
    usage: UsageEvent  # what was (or, for a background job, will be) billed
    admission: Admission | None = None  # the tenant's windows after admitting this work (rate-limit headers)
    inline_omitted: bool = False  # b64_json was asked for but would not fit in a Lambda answer

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(image.key for image in self.images)


def _usage(prompt: str, job: ImageJob) -> tuple[int, int]:
    """(input text tokens, output image tokens): ~4 characters a token; image tokens scale with area."""
    text_tokens = max(1, math.ceil(len(prompt) / 4))
    per_square = job.model.output_tokens_per_image.get(job.quality, 0)
    per_image = math.ceil(per_square * job.width * job.height / (1024 * 1024))
    return text_tokens, per_image * job.n


def input_image_tokens(sizes: Sequence[tuple[int, int]]) -> int:
    """Tokens for input images, as vision models count them: 85 plus 170 per 512-pixel tile."""
    return sum(85 + 170 * math.ceil(w / 512) * math.ceil(h / 512) for w, h in sizes)


def image_cost_usd(prompt: str, job: ImageJob, input_sizes: Sequence[tuple[int, int]] = ()) -> float:
    """What ``job`` costs in USD: its tokens at the model's prices plus its per-image price. The one formula for
    the estimate reserved at admission (input images not yet read: ``input_sizes`` empty) and the bill."""
    text_tokens, output_tokens = _usage(prompt, job)
    price = job.model.price
    return (
        text_tokens * price.input_text_per_million
        + input_image_tokens(input_sizes) * price.input_image_per_million
        + output_tokens * price.output_image_per_million
    ) / 1e6 + job.model.image_cost(job.quality, job.size, job.n)


def admitted(
    ports: ImagePorts,
    tenant: Tenant,
    images: int,
    admission: Admission | None,
    work: Callable[[Admission, bool], ImagesResult],
    estimate_usd: float = 0.0,
) -> ImagesResult:
    """``work(admission, bill)`` under an admission: the one given (a background job's, which its job refunds
    on failure and bills on completion: ``bill`` False), or one taken now (reserving ``estimate_usd`` in the
    tenant's monthly budget, if any) and given back if ``work`` fails."""
    ensure_ready()  # no signer for Content Credentials: a 503 before anything is admitted or spent
    if admission is not None:
        return work(admission, False)
    taken = ports.admission.admit(tenant, images, estimate_usd)
    with ports.admission.refunded_on_failure(taken):
        return work(taken, True)


def generate_images(
    context: RequestContext,
    request: ImageGenerateRequest,
    ports: ImagePorts,
    admission: Admission | None = None,
    end_user: str | None = None,
    stream: StreamRun[Any] | None = None,
) -> ImagesResult:
    """Generate, store and meter ``n`` images for ``context.tenant``.

    ``admission``: a background job's, taken when it was accepted; its caller owns the refund on failure and
    the billing (``ImagesResult.usage``, recorded once the job completes).
    ``end_user``: the opaque end-user id (:mod:`darkroom.end_users`) when the caller already has one (the
    Responses API); otherwise it comes from the request's ``safety_identifier``/``user``.
    ``stream``: a streamed request's run (:mod:`darkroom.image_stream`): told when the model starts, and given
    the model's partial images.
    """
    tenant = context.tenant
    end_user = end_user or identify(tenant.tenant_id, request.safety_identifier, request.user)
    job = resolve_request(request, ports.catalog)
    check_time_budget(job, ports.settings, context.deadline.background, streamed=context.deadline.streamed)

    def work(taken: Admission, bill: bool) -> ImagesResult:
        partials = inference_starts(stream, Provenance(job.model.id, False, (), tenant.tenant_id, request.prompt))
        started = time.monotonic()
        images = ports.backends(job.model).generate(
            job.model,
            GenerateJob(
                prompt=request.prompt,
                width=job.width,
                height=job.height,
                n=job.n,
                quality=job.quality,
                transparent=job.background == "transparent",
                deadline_seconds=context.deadline.inference_budget(ports.settings),
                options=job.options,
                partials=partials,
            ),
        )
        inference_latency(job.model.backend, (time.monotonic() - started) * 1000)
        delivery = Delivery("generate", taken, bill, end_user, streamed=stream is not None)
        return deliver(context, job, images, request, ports, delivery)

    return admitted(ports, tenant, job.n, admission, work, image_cost_usd(request.prompt, job))


def inference_starts(stream: StreamRun[Any] | None, provenance: Provenance) -> PartialSink | None:
    """Tell a streamed request's run that the model is about to run; the partial sink its backend gets, if any."""
    if stream is None:
        return None
    stream.inference_started(provenance)
    return stream.sink if stream.sink.count else None


@dataclass(frozen=True)
class Delivery:
    """How produced images are delivered: which operation, under which admission, billed now or by a job."""

    operation: Literal["generate", "edit"]
    admission: Admission
    bill: bool = True  # False (background jobs): the usage is returned, not recorded; the job records it
    end_user: str | None = None  # the opaque end-user id the usage carries (never a raw safety_identifier)
    input_sizes: tuple[tuple[int, int], ...] = ()
    streamed: bool = False  # the answer is a stream: b64_json always inline, with no 6 MB response limit
    ingredients: tuple[Ingredient, ...] = ()  # an edit's inputs, for its Content Credentials


def deliver(
    context: RequestContext,
    job: ImageJob,
    images: list[GeneratedImage],
    request: ImageOptions,
    ports: ImagePorts,
    delivery: Delivery,
) -> ImagesResult:
    """Encode (once, or not at all: :func:`darkroom.encoding.encode`), store, presign and meter the produced
    images."""
    if len(images) != job.n:  # a backend that returns the wrong count is an upstream fault, not a 200
        raise UpstreamError(f"The model returned {len(images)} images instead of {job.n}.")
    tenant_id = context.tenant.tenant_id
    keys = tuple(image_key(tenant_id, context.request_id, i, job.output_format) for i in range(job.n))
    edited = delivery.operation == "edit"
    provenance = Provenance(job.model.id, edited, delivery.ingredients, tenant_id, request.prompt)

    def store(index: int) -> tuple[bytes, str]:
        produced = images[index]  # encoded once, or the model's own bytes when they are what was asked for
        transparent = job.background == "transparent"
        data = encode(produced.image, job.output_format, request.output_compression, transparent, produced.upstream)
        data = mark(data, job.output_format, provenance)  # signed once, as stored and as returned
        ports.store.put(keys[index], data, job.output_format)
        return data, ports.store.presign(keys[index], job.output_format)

    with ThreadPoolExecutor(max_workers=min(4, job.n)) as pool:
        stored = list(pool.map(store, range(job.n)))

    text_tokens, output_tokens = _usage(request.prompt, job)
    image_tokens = input_image_tokens(delivery.input_sizes)
    usage = UsageEvent(
        request_id=context.request_id,
        tenant_id=tenant_id,
        operation=delivery.operation,
        model=job.model.id,
        size=job.size,
        quality=job.quality,
        images=job.n,
        input_text_tokens=text_tokens,
        input_image_tokens=image_tokens,
        output_tokens=output_tokens,
        cost_usd=image_cost_usd(request.prompt, job, delivery.input_sizes),
        end_user=delivery.end_user,
        key_id=context.tenant.key_id,
    )
    if delivery.bill:
        # The budget's reservation becomes the bill; a usage already billed (a retried invocation) gives it back.
        billed = record_usage(usage, ports.meter)
        ports.admission.settle(delivery.admission, usage.cost_usd if billed else 0.0)

    inline = delivery.streamed or job.response_format == "b64_json" and _fits_inline(stored, job.n, ports.settings)
    if job.response_format == "b64_json" and not inline:
        count(B64_OMITTED)  # Lambda cannot return more than 6 MB: every image still has its URL
    count(IMAGES_EDITED if delivery.operation == "edit" else IMAGES_GENERATED, job.n)
    logger.info(
        "images produced",
        extra={
            "operation": delivery.operation,
            "model": job.model.id,
            "n": job.n,
            "size": job.size,
            "format": job.output_format,
            "input_images": len(delivery.input_sizes),
            "bytes": sum(len(raw) for raw, _ in stored),
        },
    )
    return ImagesResult(
        created=int(time.time()),
        images=tuple(
            ProducedImage(key, url, images[i].revised_prompt, raw if inline else None)
            for i, (key, (raw, url)) in enumerate(zip(keys, stored, strict=True))
        ),
        size=job.size,
        quality=job.quality,
        output_format=job.output_format,
        background=job.background,
        input_text_tokens=text_tokens,
        input_image_tokens=image_tokens,
        output_tokens=output_tokens,
        usage=usage,
        admission=delivery.admission,
        inline_omitted=job.response_format == "b64_json" and not inline,
    )


def _fits_inline(stored: list[tuple[bytes, str]], n: int, settings: Settings) -> bool:
    """Whether the images' base64 fits in one Lambda answer beside the JSON around it."""
    budget = settings.max_response_bytes - _ENVELOPE_BYTES - _PER_IMAGE_BYTES * n
    return sum(4 * math.ceil(len(raw) / 3) for raw, _ in stored) <= budget


def record_usage(usage: UsageEvent, meter: Meter) -> bool:
    """Bill ``usage`` once (the meter is idempotent per request id: True the first time), or fail the request
    with a 503."""
    try:
        return meter.record(usage)
    except (ClientError, BotoCoreError) as exc:
        # No usage record, no delivery: the client retries and nothing goes unbilled.
        logger.error("usage record failed", extra={"error": type(exc).__name__})
        raise ServiceUnavailable("Usage could not be recorded; the request was not completed. Retry.") from exc
