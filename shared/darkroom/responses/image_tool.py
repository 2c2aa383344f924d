"""The ``image_generation`` tool: the planned image call runs through the Images API's own generate and edit
use cases (same limits, storage and usage), and its :class:`~darkroom.generation.ImagesResult` becomes an
``image_generation_call`` output item."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from darkroom.api.images import ImageEditRequest
from darkroom.api.responses import ImageGenerationCall, ResponseUsage
from darkroom.editing import edit_decoded
from darkroom.generation import generate_images
from darkroom.limits import Admission
from darkroom.metering import UsageEvent
from darkroom.ports import ImagePorts, RequestContext
from darkroom.responses.planning import Plan
from darkroom.responses.rendering import image_generation_call

if TYPE_CHECKING:
    from darkroom.image_stream import StreamRun


def image_answer(
    context: RequestContext,
    plan: Plan,
    ports: ImagePorts,
    admission: Admission | None,
    stream: StreamRun[Any] | None = None,
) -> tuple[ImageGenerationCall, ResponseUsage, str, UsageEvent]:
    """(the output item, the response's usage, the image's S3 key, the usage billed or to bill)."""
    call = plan.image_call
    assert call is not None, "answered as an image only when planned with an image call"
    if isinstance(call.options, ImageEditRequest):
        assert call.base is not None, "an edit is planned with the image it edits"
        result = edit_decoded(context, call.options, [call.base], call.mask, ports, admission, plan.end_user, stream)
    else:
        result = generate_images(context, call.options, ports, admission, plan.end_user, stream)
    output = image_generation_call(result, "edit" if call.edit else "generate", call.call_id)
    input_tokens = result.input_text_tokens + result.input_image_tokens
    usage = ResponseUsage(
        input_tokens=input_tokens,
        output_tokens=result.output_tokens,
        total_tokens=input_tokens + result.output_tokens,
        images=1,
    )
    return output, usage, result.images[0].key, result.usage
