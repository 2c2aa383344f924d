"""The Responses API use case: one endpoint for analysis, text, and image generation and editing.

Routing is by the catalog's capabilities, never by model names: the ``image_generation`` tool (or an
image model named directly) produces an ``image_generation_call`` through the same generate and edit
use cases as the Images API (same limits, storage and usage); a model that analyzes gets the text and
images; a text-only model gets images described by its configured ``vision_fallback`` model, or a
400 naming it. Stored responses keep the conversation's text and its images by S3 reference, so
``previous_response_id`` carries both forward.

One module per concern: :mod:`.input` (the request read), :mod:`.planning` (every check before any
work), :mod:`.image_tool` and :mod:`.text` (the two kinds of answer), :mod:`.thread` (what carries
forward), :mod:`.rendering` (the response and its stored record), :mod:`.background` (jobs),
:mod:`.create` (the use case) and :mod:`.stored` (retrieve, cancel, delete).
"""

from darkroom.responses.background import answer_job, job_admission, plan_from_job
from darkroom.responses.create import create_response
from darkroom.responses.stored import cancel_response, delete_response, refund_job, retrieve_response

__all__ = [
    "answer_job",
    "cancel_response",
    "create_response",
    "delete_response",
    "job_admission",
    "plan_from_job",
    "refund_job",
    "retrieve_response",
]
