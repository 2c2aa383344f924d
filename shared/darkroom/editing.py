"""The edit use case: read the images (multipart or JSON), resolve, admit, decode, edit, deliver.

Two wire forms, one request model. ``multipart/form-data`` is what the openai SDK sends (``image`` for
one file, ``image[]`` for several, ``mask``, scalars as strings); the JSON form carries references
(``images: [{image_url | file_id}]``, ``mask: {...}``). Images are only read, by :mod:`darkroom.intake`,
after the request is valid and admitted, so a refused or malformed request costs no decoding; then every
header is read (and charged to the request's decode budget, with the images the edit will produce) before
any pixel is decoded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image
from pydantic import ValidationError

from darkroom import intake
from darkroom.api.errors import InvalidRequest, UnknownParameter, invalid_from_validation
from darkroom.api.http import HttpRequest
from darkroom.api.images import ImageEditRequest
from darkroom.api.multipart import FilePart, Form, typed_fields
from darkroom.catalog import Capability
from darkroom.config import Settings
from darkroom.content_credentials import Ingredient, Provenance
from darkroom.end_users import identify
from darkroom.generation import Delivery, ImagesResult, admitted, deliver, image_cost_usd, inference_starts
from darkroom.image_job import ImageJob, check_time_budget, resolve_request
from darkroom.inference import EditJob, GeneratedImage
from darkroom.limits import Admission
from darkroom.observability import inference_latency
from darkroom.ports import ImagePorts, ImageSources, RequestContext

if TYPE_CHECKING:
    from darkroom.image_stream import StreamRun

_IMAGE_FIELD = re.compile(r"^image(\[(\d*)\])?$")


@dataclass(frozen=True)
class EditRequest:
    """A validated edit request whose images are not read yet."""

    options: ImageEditRequest
    # One reader per input image, in order: its header (decoded later), or an image decoded already.
    images: list[Callable[[], intake.ImageHeader | intake.IntakeImage]]
    mask: Callable[[], intake.ImageHeader | intake.IntakeImage] | None
    encoded_bytes: int  # what the request carried, for the total-size bound


def read_edit_request(http: HttpRequest, tenant_id: str, settings: Settings, sources: ImageSources) -> EditRequest:
    """Read either wire form of ``http`` into an :class:`EditRequest` (400s for anything malformed); JSON
    references are read from ``sources`` when the edit runs."""
    limits = intake_limits(settings)
    if http.media_type == "multipart/form-data":
        request = _from_multipart(http.form, limits)
    elif http.media_type in ("application/json", ""):
        request = _from_json(http, tenant_id, sources, limits)
    else:
        raise InvalidRequest(
            "Send multipart/form-data (as the openai SDK does) or application/json.", code="unsupported_content_type"
        )
    if len(request.images) > limits.max_images:
        raise intake.ImageRejected(
            f"At most {limits.max_images} images can be edited at once.", param="image", code="too_many_images"
        )
    if request.encoded_bytes > limits.max_total_bytes:
        raise intake.ImageRejected(
            f"The images together exceed {limits.max_total_bytes} bytes.", param="image", code="image_too_large"
        )
    return request


def intake_limits(settings: Settings) -> intake.IntakeLimits:
    return intake.IntakeLimits(
        max_images=settings.max_input_images,
        max_image_bytes=settings.max_image_bytes,
        max_pixels=settings.max_input_pixels,
    )


def _validate(fields: dict[str, Any]) -> ImageEditRequest:
    try:
        return ImageEditRequest.model_validate(fields)
    except ValidationError as exc:
        raise invalid_from_validation(exc.errors(include_url=False)) from None  # names the type only


def _from_multipart(form: Form, limits: intake.IntakeLimits) -> EditRequest:
    fields: dict[str, str] = {}
    for name, values in form.fields.items():
        if _IMAGE_FIELD.match(name) or name in ("mask", "markup"):
            raise InvalidRequest(
                f"Invalid type for '{name}': expected a file, but got a string instead.",
                param=name,
                code="invalid_type",
            )
        if name in ("images",):
            raise UnknownParameter(name)
        if len(values) > 1:
            raise InvalidRequest(f"'{name}' was sent more than once.", param=name, code="duplicate_parameter")
        fields[name] = values[0]
    indexed: list[tuple[int, int, FilePart]] = []
    mask_part = None
    markup = False
    for name, parts in form.files.items():
        match = _IMAGE_FIELD.match(name)
        if name == "markup":  # refused by model when the request is resolved; its bytes are never read
            markup = True
        elif name == "mask":
            if len(parts) > 1:
                raise InvalidRequest("Send at most one mask.", param="mask", code="duplicate_parameter")
            mask_part = parts[0]
        elif match:
            position = int(match.group(2)) if match.group(2) else 0
            indexed.extend((position, order, part) for order, part in enumerate(parts))
        else:
            raise UnknownParameter(name)
    if not indexed:
        raise InvalidRequest("Missing required parameter: 'image'.", param="image", code="missing_required_parameter")
    # Form fields are text: typed by the parameter's type here, so the strict model takes "2" for n.
    options = _validate({**typed_fields(ImageEditRequest, fields), **({"markup": {}} if markup else {})})
    parts = [part for _, _, part in sorted(indexed, key=lambda item: (item[0], item[1]))]

    def decoder(part: FilePart, param: str) -> Callable[[], intake.ImageHeader]:
        # The part's declared Content-Type is not trusted (the SDK sends octet-stream for raw bytes). The header
        # holds the bytes until the image is decoded; then nothing does.
        return lambda: intake.read_header(part.take(), param=param, limits=limits)

    return EditRequest(
        options=options,
        images=[decoder(part, "image" if len(parts) == 1 else f"image[{i}]") for i, part in enumerate(parts)],
        mask=decoder(mask_part, "mask") if mask_part else None,
        encoded_bytes=sum(len(p.data) for p in parts) + (len(mask_part.data) if mask_part else 0),
    )


def _from_json(http: HttpRequest, tenant_id: str, sources: ImageSources, limits: intake.IntakeLimits) -> EditRequest:
    fields = http.json
    if not isinstance(fields, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    options = _validate(fields)
    if not options.images:
        raise InvalidRequest("Missing required parameter: 'images'.", param="images", code="missing_required_parameter")

    def decoder(ref: object, param: str) -> Callable[[], intake.ImageHeader]:
        return lambda: intake.read_reference(
            ref, param=param, tenant_id=tenant_id, files=sources.files, limits=limits, fetcher=sources.fetcher
        )

    return EditRequest(
        options=options,
        images=[decoder(ref, f"images[{i}]") for i, ref in enumerate(options.images)],
        mask=decoder(options.mask, "mask") if options.mask is not None else None,
        encoded_bytes=http.size,
    )


def edit_images(
    context: RequestContext,
    request: EditRequest,
    ports: ImagePorts,
    admission: Admission | None = None,
    end_user: str | None = None,
    stream: StreamRun[Any] | None = None,
) -> ImagesResult:
    """Edit the first image (inside the mask, if any) ``n`` times; store, meter and answer as generate does.

    ``admission``: a background job's, owned (refunded, billed) by the job, as in ``generate_images``;
    ``end_user`` and ``stream`` as there.
    """
    options = request.options
    end_user = end_user or identify(context.tenant.tenant_id, options.safety_identifier, options.user)
    job = resolve_request(options, ports.catalog, Capability.EDIT)  # every option checked before admission
    check_time_budget(job, ports.settings, context.deadline.background, streamed=context.deadline.streamed)

    # An image the client sent that does not decode keeps counting (a 4xx); failing to read a stored
    # file, or anything after, is ours and gives the admission back.
    def work(taken: Admission, bill: bool) -> ImagesResult:
        # Every header (each charged to the request's decode budget) before any pixel; no name holds them after
        # _prepare, so the mask's decoded raster goes once its alpha is taken, before the edit runs.
        edit = _prepare(
            context, options, [read() for read in request.images], request.mask() if request.mask else None, ports
        )
        delivery = _delivery(edit, taken, bill, end_user, stream)
        job, edited = _infer(context, edit, ports, stream)
        del edit  # the inputs' pixels go before the answers are encoded and stored
        return deliver(context, job, edited, options, ports, delivery)

    return admitted(ports, context.tenant, job.n, admission, work, image_cost_usd(options.prompt, job))


def edit_decoded(
    context: RequestContext,
    options: ImageEditRequest,
    images: list[intake.IntakeImage],
    mask: intake.IntakeImage | None,
    ports: ImagePorts,
    admission: Admission | None = None,
    end_user: str | None = None,
    stream: StreamRun[Any] | None = None,
) -> ImagesResult:
    """:func:`edit_images` for inputs decoded already (the Responses image tool decodes them while it plans)."""
    job = resolve_request(options, ports.catalog, Capability.EDIT, input_size=images[0].size)

    def work(taken: Admission, bill: bool) -> ImagesResult:
        edit = _prepare(context, options, images, mask, ports, at_input_size=job)
        delivery = _delivery(edit, taken, bill, end_user, stream)
        return deliver(context, *_infer(context, edit, ports, stream), options, ports, delivery)

    return admitted(
        ports,
        context.tenant,
        job.n,
        admission,
        work,
        image_cost_usd(options.prompt, job, [image.size for image in images]),
    )


@dataclass(frozen=True)
class _Edit:
    """An edit ready to run: the job resolved at the input's size, the inputs decoded, the mask's alpha."""

    job: ImageJob
    options: ImageEditRequest
    images: list[intake.IntakeImage]
    mask: Image.Image | None


def _delivery(
    edit: _Edit, taken: Admission, bill: bool, end_user: str | None, stream: StreamRun[Any] | None
) -> Delivery:
    ingredients = tuple(Ingredient(i.encoded, i.format) for i in edit.images if i.encoded is not None)
    sizes = tuple(i.size for i in edit.images)
    return Delivery("edit", taken, bill, end_user, sizes, stream is not None, ingredients)


def _prepare(
    context: RequestContext,
    options: ImageEditRequest,
    inputs: Sequence[intake.ImageHeader | intake.IntakeImage],
    mask: intake.ImageHeader | intake.IntakeImage | None,
    ports: ImagePorts,
    at_input_size: ImageJob | None = None,
) -> _Edit:
    """``at_input_size``: the job already resolved at ``inputs[0]``'s size, when the caller has it."""
    intake.check_totals(inputs, param="image", limits=intake_limits(ports.settings))
    # Now the input's size is known, "auto" is judged at it (before admission it could only be judged at the
    # model's default size): the time budget, and the images this edit will produce against the decode budget,
    # before anything is decoded. EXIF orientation, applied when decoding, may swap the sides, never the pixel
    # count that both checks depend on.
    job = at_input_size or resolve_request(options, ports.catalog, Capability.EDIT, input_size=inputs[0].size)
    intake.request_budget().ensure_room(job.n * job.width * job.height, param="n")  # memory first: no mode helps
    check_time_budget(job, ports.settings, context.deadline.background, streamed=context.deadline.streamed)
    images = [header.decode() for header in inputs]
    first = images[0]
    alpha = intake.edit_mask(mask.decode(), first) if mask else None
    if (options.size or "auto") == "auto" and first.size != inputs[0].size:  # turned by its EXIF orientation
        job = resolve_request(options, ports.catalog, Capability.EDIT, input_size=first.size)
    return _Edit(job, options, images, alpha)


def _infer(
    context: RequestContext, edit: _Edit, ports: ImagePorts, stream: StreamRun[Any] | None
) -> tuple[ImageJob, list[GeneratedImage]]:
    """The job and the model's answers (kept inside the mask here if the model ignores masks)."""
    job, options = edit.job, edit.options
    base, mask = edit.images[0].image, edit.mask
    if base.size != (job.width, job.height):  # an explicit size: edit at that size
        base = base.resize((job.width, job.height), Image.Resampling.LANCZOS)
        mask = mask.resize((job.width, job.height), Image.Resampling.NEAREST) if mask else None
    # An upstream that ignores masks is sent none; its answer is kept inside the mask only.
    composite = mask is not None and not job.model.honours_mask
    provenance = Provenance(job.model.id, True, (), context.tenant.tenant_id, options.prompt)
    partials = inference_starts(stream, provenance)  # a partial says what the final image says, less its inputs
    started = time.monotonic()
    edited = ports.backends(job.model).edit(
        job.model,
        EditJob(
            prompt=options.prompt,
            images=[base, *(i.image for i in edit.images[1:])],
            mask=None if composite else mask,
            width=job.width,
            height=job.height,
            n=job.n,
            quality=job.quality,
            transparent=job.background == "transparent",
            input_fidelity=options.input_fidelity or "low",
            deadline_seconds=context.deadline.inference_budget(ports.settings),
            options=job.options,
            partials=partials,
        ),
    )
    inference_latency(job.model.backend, (time.monotonic() - started) * 1000)
    if composite and mask is not None:
        edited = [keep_outside_mask(base, mask, image) for image in edited]
    return job, edited


def keep_outside_mask(base: Image.Image, mask: Image.Image, edited: GeneratedImage) -> GeneratedImage:
    """``edited`` inside the mask and ``base``'s own pixels outside it, so an upstream that redrew the whole
    image (it ignores masks) changes only what the mask allows, as OpenAI's edits do. ``mask`` is darkroom's
    ("L", 0 = edit here, 255 = keep; values between blend), at the size of both images."""
    drawn = edited.image
    kept = Image.composite(base.convert(drawn.mode), drawn, mask)
    return GeneratedImage(kept, edited.revised_prompt)
