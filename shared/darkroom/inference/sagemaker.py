"""The ``sagemaker`` backend: a SageMaker endpoint, real-time or asynchronous, in the entry's ``contract``.

The catalog's ``endpoint.contract`` says what the container speaks (:mod:`darkroom.inference.sagemaker_contracts`
builds each request and parses each answer, with sources):

* ``darkroom`` (the default): darkroom's own JSON contract, below;
* ``jumpstart-sd``: SageMaker JumpStart's Stable Diffusion containers (generate; edit with a mask on an inpainting
  model); ``num_images_per_prompt`` = n, ``Accept: application/json;jpeg``, ``generated_images`` in the answer;
* ``hf-diffusers``: the Hugging Face inference toolkit's diffusers handler (generate only): ``{"inputs", "parameters"}``
  in, one bare base64 PNG string out, so ``n`` images are ``n`` invocations, one after another within the job's
  deadline (real time; an async endpoint takes n = 1 only).

Neither off-the-shelf container answers text: analyze is the client's 400 (``param: model``) there, as are sizes,
transparency and pass-through values they cannot take, all refused before a call.

For darkroom's contract, darkroom calls ``sagemaker-runtime:InvokeEndpoint`` with the endpoint's
``content_type``/``accept`` (both ``application/json`` unless the catalog says otherwise) and one JSON object as the
body. A model container that wants to be served by darkroom implements exactly this (docs/deploying-backends.md):

Request (keys with no value are left out)::

    {"task": "generate" | "edit" | "analyze",
     "prompt": "...",                      # generate, edit
     "negative_prompt": "...",             # when the job's pass-through options carry one
     "width": 1024, "height": 1024,        # generate, edit: the exact size every image must have
     "num_images": 2,                      # generate, edit: the exact number of images to return
     "quality": "low" | "medium" | "high", # generate, edit
     "background": "transparent",          # only when the client asked for transparency
     "steps": 30, "seed": 7, ...,          # any other catalog-approved pass-through, verbatim
     "image": "<base64 PNG>",              # edit: the image to edit (width x height)
     "reference_images": ["<base64 PNG>"], # edit: further input images, when the client sent them
     "mask": "<base64 PNG>",               # edit, optional: grayscale ("L"), width x height;
                                           #   WHITE (255) = repaint this pixel, BLACK (0) = keep it
     "images": ["<base64 PNG>"],           # analyze: the images to look at, in order (may be empty)
     "instructions": "...",                # analyze: the system prompt, when there is one
     "messages": [{"role": "user" | "assistant" | "system" | "developer", "content": "..."}]}

Response: ``{"images": ["<base64 PNG|JPEG|WebP>", ...]}`` for generate/edit (exactly ``num_images``,
ideally at ``width`` x ``height``: other sizes are cover-fitted) or ``{"text": "..."}`` for analyze.

darkroom's own masks use the OpenAI convention (alpha 0 = edit here); the contract's mask is the
inverse, white = edit, as most diffusion inpainting pipelines expect, and is sent as a plain grayscale
PNG of only 0 and 255 so a container never has to reason about alpha.

The container's answer is untrusted: the body is read with a byte cap, every image goes through
:func:`darkroom.intake.decode_base64` and :func:`darkroom.intake.open_image`, and any deviation from the
contract is a 502 ``upstream_invalid_response``. Error messages never carry the endpoint name, an ARN
or the container's body. AWS errors map as follows:

* ``ThrottlingException``, ``ServiceUnavailable``, ``ModelNotReadyException``, ``InternalFailure``,
  ``InternalDependencyException``, a container answer of 429, a connection failure -> 503 + ``retry-after``;
* ``ModelError`` whose container answer was a 4xx carrying the contract's safety refusal,
  ``{"error": {"code": "content_policy_violation", ...}}`` -> 400 ``content_policy_violation`` with a neutral
  message (as :mod:`darkroom.inference.bedrock` answers its filters); a 4xx whose ``error.param`` is one of the
  model's ``passthrough`` names -> 400 ``invalid_value`` for that parameter (the client's value, e.g. a ``seed``
  the model cannot take); only ``code`` and ``param`` are read from the container's body, and at most
  ``MAX_REFUSAL_BYTES`` of it (:func:`container_refusal`);
* a 4xx ``ModelError`` from a ``jumpstart-sd`` or ``hf-diffusers`` container -> 502 ``upstream_error`` that counts
  against the endpoint: the Hugging Face container both run in answers *every* exception with a 400
  (``handler_service.handle``: ``raise PredictionException(str(e), 400)``), a CUDA out-of-memory included, so
  nothing tells a deliberate refusal apart; their error bodies are never read as darkroom refusals;
* any other ``ModelError`` (the container answered 4xx/5xx) and ``ValidationError`` (darkroom's request did
  not fit the endpoint: an operator issue) -> 502 ``upstream_error``;
* botocore ``ReadTimeoutError`` / ``ConnectTimeoutError`` -> 504 ``upstream_timeout``; so is a ``ModelError``
  with ``OriginalStatusCode`` 0, SageMaker's answer when the container did not answer within its 60 s ("Received
  server error (0) from primary with message \"Your invocation timed out while waiting for a response from
  container primary...\"", as reported in aws/amazon-sagemaker-examples#799 and #1407): no retry, which would
  take another 60 s.

Each backend has a circuit breaker (:class:`darkroom.inference.resilience.CircuitBreaker`): throttling,
timeouts, invalid answers and 5xx count against the endpoint; deliberate 4xx answers (refusals included) do not.

An endpoint with ``async_inference`` is a SageMaker *asynchronous* endpoint: the same body (inline up to 128,000
bytes, else through S3) and answer (through S3) (:mod:`darkroom.inference.sagemaker_async`); ``submit_async`` and
``collect_async`` split one call in two for a background job that outlives a Lambda invocation.

A generate or edit job that carries a ``PartialSink`` (a streamed request with ``partial_images``), on a real-time
endpoint of darkroom's contract, is sent with ``InvokeEndpointWithResponseStream`` instead, and the model's partial
images are delivered as they arrive (:mod:`darkroom.inference.sagemaker_stream`: the streamed answer, its errors,
the deadline and a client that goes away). Every other job, and the other contracts, ignore the sink.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast, overload

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
)

from darkroom import config
from darkroom.api.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.catalog_endpoints import SageMakerEndpoint
from darkroom.inference import EditJob, GeneratedImage, GenerateJob, TextJob
from darkroom.inference.aws_runtime import (
    CONFIG_MESSAGE,
    FAILED_MESSAGE,
    REFUSED_MESSAGE,
    AwsBackend,
    content_policy,
    error_code,
    guarded,
    read_body,
    refuse,
    throttled,
    transport_outcome,
)
from darkroom.inference.resilience import TIMEOUT_MESSAGE, CircuitBreaker, Deadline, Outcome, Resilience
from darkroom.inference.sagemaker_async import Answer, AsyncEndpoint, Task
from darkroom.inference.sagemaker_contracts import (
    ContractCall,
    expectation,
    parse_answer,
    prepare,
)
from darkroom.inference.sagemaker_stream import StreamCall, streams
from darkroom.observability import logger

# The contract's safety refusal (a 4xx whose body is {"error": {"code": "content_policy_violation"}}); the client
# gets aws_runtime.content_policy(), darkroom's neutral words, as from Bedrock, never the container's.
CONTENT_POLICY_CODE = "content_policy_violation"
# How much of a container's error body is looked at to find that code: an error object is a few hundred bytes
# (and botocore's sagemaker-runtime model caps ModelError.OriginalMessage at 2048 characters, shape "Message");
# anything longer is not a refusal, so a huge or hostile body is never parsed.
MAX_REFUSAL_BYTES = 64 * 1024
_UNAVAILABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "ModelNotReadyException",
        "InternalFailure",
        "InternalDependencyException",
        "InternalServerException",
    }
)


def container_refusal(model: ModelEntry, body: object) -> Outcome | None:
    """The client's 400 for a container's error body that the contract lets darkroom read, else None:

    * ``error.code`` ``content_policy_violation``: the safety refusal (neutral words, bedrock's);
    * ``error.param`` naming one of the model's ``passthrough`` parameters: the client sent that parameter a value
      the model cannot take (``seed: "x"``), which is the client's 400 for that parameter, not a 502.

    ``body`` is untrusted (``str`` or ``bytes``): only ``error.code`` and ``error.param`` are read, only from a body
    of at most ``MAX_REFUSAL_BYTES``, and ``param`` is used only when it is one of the catalog's own names. A refusal
    is the client's request, not the endpoint's health (``unhealthy=False``); nothing of the container's text
    reaches the client or the logs."""
    if not isinstance(model.endpoint, SageMakerEndpoint) or model.endpoint.contract != "darkroom":
        return None  # an off-the-shelf container's error body is not darkroom's: never read as a refusal
    data = body.encode("utf-8", "replace") if isinstance(body, str) else body
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_REFUSAL_BYTES:
        return None
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None
    if error.get("code") == CONTENT_POLICY_CODE:
        return content_policy()
    param = error.get("param")
    if isinstance(param, str) and param in model.passthrough:
        return Outcome(
            InvalidRequest(f"Invalid value for '{param}': {model.id} cannot take it.", param=param), unhealthy=False
        )
    return None


class SageMakerBackend(AwsBackend):
    """The ``Backend`` port over a SageMaker endpoint, real-time or asynchronous (darkroom's JSON contract)."""

    SERVICE = "sagemaker-runtime"

    def __init__(
        self,
        model: ModelEntry,
        client: Any = None,
        *,
        breaker: CircuitBreaker | None = None,
        resilience: Resilience | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(model, client, breaker=breaker, resilience=resilience)
        self._sleep = sleep  # injectable so tests poll an async endpoint without waiting
        self._clock = clock
        self._async: AsyncEndpoint | None = None

    # -- the port -------------------------------------------------------------------------------

    def generate(self, model: ModelEntry, job: GenerateJob) -> list[GeneratedImage]:
        return self._images(model, "generate", job)

    def edit(self, model: ModelEntry, job: EditJob) -> list[GeneratedImage]:
        return self._images(model, "edit", job)

    def respond(self, model: ModelEntry, job: TextJob) -> str:
        return self._call(model, "analyze", prepare(model, "analyze", job), job.deadline_seconds)

    # -- an async endpoint, across invocations --------------------------------------------------

    def submit_async(
        self, model: ModelEntry, task: Task, body: dict[str, Any], *, deadline_seconds: float | None = None
    ) -> dict[str, Any]:
        """Queue a darkroom-contract body (``generate_request`` & co.) on the model's async endpoint; the handle
        returned is plain JSON for :meth:`collect_async`, in this invocation or a later one."""
        return self.async_endpoint.submit(model, task, body, expectation(task, body), deadline_seconds)

    def collect_async(self, model: ModelEntry, handle: Mapping[str, Any]) -> Answer | None:
        """The images (or text) once the endpoint has answered, None while it is still working; raises
        the same ``ApiError``s as a real-time call (504 once the handle's deadline has passed)."""
        return self.async_endpoint.collect(model, handle)

    @property
    def async_endpoint(self) -> AsyncEndpoint:
        """Built on first use: a real-time model never needs the S3 client or the bucket."""
        if self._async is None:
            self._async = AsyncEndpoint(
                self.client,
                config.client("s3"),
                config.get_settings().images_bucket,
                self.breaker,
                parse=parse_answer,
                client_error=self._client_error,
                refusal=container_refusal,
                resilience=self.resilience,
                sleep=self._sleep,
                clock=self._clock,
            )
        return self._async

    # -- one call -------------------------------------------------------------------------------

    def _images(
        self, model: ModelEntry, task: Literal["generate", "edit"], job: GenerateJob | EditJob
    ) -> list[GeneratedImage]:
        request = prepare(model, task, job)
        if job.partials is None or not streams(model, job.partials):  # no sink, or a contract that cannot stream
            return self._call(model, task, request, job.deadline_seconds)
        # The job's deadline alone (streamed requests get the long ceiling): the endpoint's timeout_seconds is
        # InvokeEndpoint's, whose container must answer within 60 s; a stream may run longer (sagemaker_stream).
        deadline = self.resilience.deadline(job.deadline_seconds)
        call = StreamCall(self.client, model, task, request, job.partials, deadline, self._client_error)
        return guarded(
            self.breaker, model.id, task, call, backend=model.backend, deadline=deadline, resilience=self.resilience
        )

    @overload
    def _call(
        self, model: ModelEntry, task: Literal["generate", "edit"], request: ContractCall, deadline_seconds: float
    ) -> list[GeneratedImage]: ...

    @overload
    def _call(
        self, model: ModelEntry, task: Literal["analyze"], request: ContractCall, deadline_seconds: float
    ) -> str: ...

    def _call(self, model: ModelEntry, task: Task, request: ContractCall, deadline_seconds: float) -> Answer:
        endpoint = model.endpoint_as(SageMakerEndpoint)
        headers = (request.content_type, request.accept)
        if endpoint.async_inference:
            if request.repeat > 1:  # one async handle is one inference: n answers would need n handles
                raise refuse(f"'n' must be 1 for {model.id}: it answers one image per request.", "n")
            return self.async_endpoint.run(model, task, request.body, request.expect, deadline_seconds, headers)
        if request.repeat == 1:
            return self._invoke(model, task, request, self.deadline(model, deadline_seconds))
        # hf-diffusers answers one image per invocation: n invocations, one after another, within the job's deadline
        # (each at most the endpoint's timeout). The catalog's seconds_per_image already scales the estimate by n.
        job = self.resilience.deadline(deadline_seconds)
        images: list[GeneratedImage] = []
        timeout = endpoint.timeout_seconds
        for _ in range(request.repeat):
            answer = self._invoke(model, task, request, self.resilience.deadline(min(job.remaining(), timeout)))
            images += cast(list[GeneratedImage], answer)  # an image task's answer
        return images

    def _invoke(self, model: ModelEntry, task: Task, request: ContractCall, deadline: Deadline) -> Answer:
        endpoint = model.endpoint_as(SageMakerEndpoint)
        payload = json.dumps(request.body, separators=(",", ":")).encode("utf-8")

        def call() -> Answer:
            try:
                response = self.client.invoke_endpoint(
                    EndpointName=endpoint.endpoint_name,
                    Body=payload,
                    ContentType=request.content_type,
                    Accept=request.accept,
                )
            except ClientError as exc:
                raise self._client_error(model, exc) from None
            except BotoCoreError as exc:
                raise transport_outcome(exc) from None
            return parse_answer(task, request.expect, read_body(response.get("Body")))

        return guarded(
            self.breaker,
            model.id,
            task,
            call,
            backend=model.backend,
            deadline=deadline,
            resilience=self.resilience,
        )

    @staticmethod
    def _client_error(model: ModelEntry, exc: ClientError) -> Outcome:
        code = error_code(exc)
        if code in _UNAVAILABLE_CODES:
            return throttled()
        if code == "ModelError":
            original = exc.response.get("OriginalStatusCode")
            status = original if isinstance(original, int) else 500
            if status == 0:  # no container answer at all: SageMaker gave up waiting (60 s)
                logger.error("sagemaker container timed out", extra={"model": model.id})
                return Outcome(UpstreamTimeout(TIMEOUT_MESSAGE), unhealthy=True)
            if 400 <= status < 500 and status != 429:
                refused = container_refusal(model, exc.response.get("OriginalMessage"))
                if refused is not None:  # the client's request, not an operator's problem: guarded() logs it
                    return refused
            logger.error("sagemaker container error", extra={"model": model.id, "original_status": status})
            if status == 429:
                return throttled()
            # Only darkroom's contract answers 4xx on purpose; the Hugging Face container behind hf-diffusers and
            # jumpstart-sd turns every exception (CUDA out of memory included) into a 400: a fault of the endpoint.
            deliberate = model.endpoint_as(SageMakerEndpoint).contract == "darkroom"
            if 400 <= status < 500 and deliberate:  # the container refused this request deliberately
                return Outcome(UpstreamError(REFUSED_MESSAGE, code="upstream_error"), unhealthy=False)
            return Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_error"), unhealthy=True)
        if code == "ValidationError":  # our request does not fit the endpoint (name, content type, size)
            logger.error("sagemaker rejected darkroom's request", extra={"model": model.id, "code": code})
            return Outcome(UpstreamError(CONFIG_MESSAGE, code="upstream_error"), unhealthy=False)
        logger.error("sagemaker call failed", extra={"model": model.id, "code": code[:64]})
        return Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_error"), unhealthy=False)
