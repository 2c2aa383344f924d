"""SageMaker *asynchronous* inference for the ``sagemaker`` backend (``endpoint.async_inference``).

An async endpoint reads its request from S3 and writes its answer to S3, so one invocation may run for up
to an hour: far longer than a synchronous call, or one Lambda invocation, can wait. darkroom sends the
same request body as to a real-time endpoint, in the endpoint's contract (:mod:`darkroom.inference.sagemaker`,
:mod:`darkroom.inference.sagemaker_contracts`), with the contract's ``ContentType`` and ``Accept``:

1. a body of at most ``MAX_INLINE_BYTES`` (128,000) travels inline, as ``InvokeEndpointAsync``'s ``Body``: no S3
   object, nothing to delete. botocore's sagemaker-runtime service model (2017-05-13, as installed: botocore
   1.44.8) has ``Body`` (blob, max 128000; "``Body`` and ``InputLocation`` are mutually exclusive. Provide exactly
   one of them."); https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-invoke-endpoint.html.
   A larger body (an edit's images, usually) is put at ``s3://<images bucket>/async-inference/input/<inference
   id>.json`` and named by ``InputLocation``;
2. ``InvokeEndpointAsync`` queues it and says where the answer (``OutputLocation``) or the failure
   (``FailureLocation``) will appear. The endpoint's ``AsyncInferenceConfig`` must put both under
   ``async-inference/`` in the same bucket: the only prefix darkroom's functions may read;
3. the output and failure objects are polled by listing their keys: a ``ListBucket`` limited to the
   prefix answers "not yet" honestly, where a ``GetObject`` on a missing key is a 403 unless the role may
   list the whole bucket. An answer is parsed exactly like a real-time one (byte cap, images through the
   intake). A failure object holds the container's failed answer (SageMaker Runtime's API change of
   2023-04-04: async endpoints "receive failure model responses in S3"): at most its first
   ``MAX_FAILURE_BYTES`` are read, only to recognise the contract's safety refusal (400
   ``content_policy_violation``, as in real time); anything else is a 502. Its text never reaches a client
   or darkroom's logs: the container's words stay in S3 and in its logs. No answer by the deadline is the
   real-time path's 504.

Submitting and collecting are separate steps joined by a small JSON handle, so a background job can
submit in one Lambda invocation and collect in a later one. An S3 input object is deleted once the job
is over either way; deleting it after a timeout also makes a still-queued request fail fast at
SageMaker instead of spending GPU time on an answer nobody waits for.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from darkroom.api.errors import UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.catalog_endpoints import SageMakerEndpoint
from darkroom.inference import GeneratedImage, checkpoint
from darkroom.inference.aws_runtime import (
    CONFIG_MESSAGE,
    FAILED_MESSAGE,
    error_code,
    guarded,
    read_body,
    transport_outcome,
)
from darkroom.inference.resilience import TIMEOUT_MESSAGE, CircuitBreaker, Outcome, Resilience
from darkroom.observability import logger

PREFIX = "async-inference/"
INPUT_PREFIX = PREFIX + "input/"
# InvokeEndpointAsync's inline ``Body`` (botocore's sagemaker-runtime model: blob, max 128000, exclusive of
# InputLocation): a request body up to this size travels in the call itself, with nothing put in S3.
MAX_INLINE_BYTES = 128_000
FIRST_POLL_SECONDS = 0.5
MAX_POLL_SECONDS = 5.0
# RequestTTLSeconds: how long a request may wait in the endpoint's queue (SageMaker allows 60..21600).
MIN_QUEUE_SECONDS = 60
MAX_QUEUE_SECONDS = 21_600
# How much of a failure object is read (a ranged GetObject): enough for the contract's error object, never a
# traceback's worth; a longer object is not a refusal (sagemaker.MAX_REFUSAL_BYTES refuses it unparsed).
MAX_FAILURE_BYTES = 64 * 1024

# What the contract asks a container for, and what it answers: images (generate, edit) or text (analyze).
Task = Literal["generate", "edit", "analyze"]
Answer = list[GeneratedImage] | str
# (task, expected answer, the answer's bytes) -> the backend's result; a contract violation raises an Outcome.
Parse = Callable[[str, Mapping[str, Any], bytes], Answer]
# (ContentType, Accept) of one submission: the contract's (None: the catalog's content_type and accept).
Headers = tuple[str, str] | None
MapClientError = Callable[[ModelEntry, ClientError], Outcome]
# (model, the first bytes of a failure object) -> the contract's refusal as an Outcome, or None for a plain failure.
Refusal = Callable[[ModelEntry, bytes], Outcome | None]


class AsyncEndpoint:
    """Submits contract bodies to a SageMaker async endpoint and collects the answers from S3."""

    def __init__(
        self,
        runtime: Any,
        s3: Any,
        bucket: str,
        breaker: CircuitBreaker,
        *,
        parse: Parse,
        client_error: MapClientError,
        refusal: Refusal,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        resilience: Resilience | None = None,
    ) -> None:
        self.runtime = runtime
        self.s3 = s3
        self.bucket = bucket
        self.breaker = breaker
        self.parse = parse
        self.client_error = client_error
        self.refusal = refusal
        self.resilience = resilience or Resilience()
        self.sleep = sleep
        self.clock = clock  # wall-clock seconds: a handle's expiry must mean the same in a later invocation

    # -- the three ways in ------------------------------------------------------------------------

    def run(
        self,
        model: ModelEntry,
        task: Task,
        body: dict[str, Any],
        expect: Mapping[str, Any],
        deadline_seconds: float,
        headers: Headers = None,
    ) -> Answer:
        """Submit, then poll at a growing interval until the answer, a failure, or the deadline.

        In a background job (:mod:`darkroom.inference.checkpoint`) the submission may outlive this
        invocation: it is made for the endpoint's own limit, resumed when the job already made one, and
        still pending at ``deadline_seconds`` it raises ``StillRunning`` for the job to collect later."""
        resumable = checkpoint.active()
        handle = checkpoint.load() if resumable else None
        if handle is None:
            handle = self.submit(model, task, body, expect, None if resumable else deadline_seconds, headers)
            checkpoint.save(handle)
        stop_at = min(handle["expires_at"], self.clock() + deadline_seconds) if resumable else handle["expires_at"]
        delay = FIRST_POLL_SECONDS
        while True:
            self.sleep(max(0.0, min(delay, stop_at - self.clock())))
            result = self.collect(model, handle)
            if result is not None:
                return result
            if resumable and self.clock() >= stop_at:
                raise checkpoint.StillRunning(handle)
            delay = min(delay * 2, MAX_POLL_SECONDS)

    def submit(
        self,
        model: ModelEntry,
        task: Task,
        body: dict[str, Any],
        expect: Mapping[str, Any],
        deadline_seconds: float | None = None,
        headers: Headers = None,
    ) -> dict[str, Any]:
        """Queue ``body``; returns the JSON handle :meth:`collect` needs. The breaker is asked first: a
        submission is a new call on the endpoint. Without a deadline the handle lasts as long as
        SageMaker may keep the request (queue time plus the invocation timeout). The submission itself (the
        input's put, ``InvokeEndpointAsync``) is retried like a real-time call, within the endpoint's timeout."""
        seconds = model.endpoint_as(SageMakerEndpoint).timeout_seconds
        deadline = self.resilience.deadline(seconds if deadline_seconds is None else min(deadline_seconds, seconds))
        return guarded(
            self.breaker,
            model.id,
            task,
            lambda: self._submit(model, task, body, dict(expect), deadline_seconds, headers),
            backend=model.backend,
            deadline=deadline,
            resilience=self.resilience,
        )

    def collect(self, model: ModelEntry, handle: Mapping[str, Any]) -> Answer | None:
        """The result, or None while the endpoint is still working; raises the mapped ``ApiError``.

        The breaker records the outcome but is not asked first: the job already runs, and an open
        breaker must not strand its answer. A pending job records nothing."""
        try:
            result = self._finish_or_wait(model, handle)
        except Outcome as outcome:  # the submission counted the call (UpstreamCalls)
            operation = str(handle["task"])
            settle = self.resilience.settle
            settle(self.breaker, outcome, backend=model.backend, model=model.id, operation=operation, counted=True)
            raise outcome.error from None
        if result is not None:
            self.breaker.success()
        return result

    # -- submitting -------------------------------------------------------------------------------

    def _submit(
        self,
        model: ModelEntry,
        task: Task,
        body: dict[str, Any],
        expect: dict[str, Any],
        deadline_seconds: float | None,
        headers: Headers,
    ) -> dict[str, Any]:
        started = self.clock()
        endpoint = model.endpoint_as(SageMakerEndpoint)
        content_type, accept = headers or (endpoint.content_type, endpoint.accept)
        inference_id = uuid.uuid4().hex
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
        source: dict[str, Any] = {"Body": payload}
        input_location: str | None = None
        if len(payload) > MAX_INLINE_BYTES:  # too big to travel inline: put in S3, InputLocation names it
            input_location = f"s3://{self.bucket}/{INPUT_PREFIX}{inference_id}.json"
            key = self._key(input_location)
            self._s3(lambda: self.s3.put_object(Bucket=self.bucket, Key=key, Body=payload, ContentType=content_type))
            source = {"InputLocation": input_location}
        queue_seconds = _queue_seconds(deadline_seconds)
        lifetime = queue_seconds + endpoint.async_timeout_seconds if deadline_seconds is None else deadline_seconds
        try:
            response = self._invoke(model, source, (content_type, accept), inference_id, queue_seconds)
            handle = {
                "task": task,
                "expect": expect,
                "inference_id": inference_id,
                "input_location": input_location,
                "output_location": response.get("OutputLocation"),
                "failure_location": response.get("FailureLocation"),
                "expires_at": started + lifetime,
            }
            for name in ("output_location", "failure_location"):
                self._key(handle[name], model)  # refuse a misconfigured endpoint now, not at the first poll
        except BaseException:
            self._discard(input_location)
            raise
        return handle

    def _invoke(
        self,
        model: ModelEntry,
        source: dict[str, Any],
        headers: tuple[str, str],
        inference_id: str,
        queue_seconds: int,
    ) -> dict[str, Any]:
        endpoint = model.endpoint_as(SageMakerEndpoint)
        try:
            response: dict[str, Any] = self.runtime.invoke_endpoint_async(
                EndpointName=endpoint.endpoint_name,
                **source,  # Body (inline) or InputLocation: exactly one of them
                ContentType=headers[0],
                Accept=headers[1],
                InferenceId=inference_id,
                InvocationTimeoutSeconds=endpoint.async_timeout_seconds,
                RequestTTLSeconds=queue_seconds,
            )
        except ClientError as exc:
            raise self.client_error(model, exc) from None
        except BotoCoreError as exc:
            raise transport_outcome(exc) from None
        return response

    # -- collecting -------------------------------------------------------------------------------

    def _finish_or_wait(self, model: ModelEntry, handle: Mapping[str, Any]) -> Answer | None:
        """One look at S3; the input object goes as soon as the job is over, whatever the outcome."""
        try:
            result = self._look(model, handle)
        except BaseException:
            self._discard(handle["input_location"])
            raise
        if result is not None:
            self._discard(handle["input_location"])
        return result

    def _look(self, model: ModelEntry, handle: Mapping[str, Any]) -> Answer | None:
        output_key = self._key(handle["output_location"], model)
        if self._exists(output_key):
            answer = self._s3(lambda: read_body(self.s3.get_object(Bucket=self.bucket, Key=output_key).get("Body")))
            return self.parse(handle["task"], handle["expect"], answer)
        failure_key = self._key(handle["failure_location"], model)
        if self._exists(failure_key):
            refused = self.refusal(model, self._failure_prefix(failure_key))
            if refused is not None:  # the client's request was refused: a 400, not the endpoint's ill health
                raise refused
            # The container's failure text is not for clients, nor for darkroom's logs: only that it failed.
            logger.error("sagemaker async inference failed", extra={"model": model.id, "code": "async_failure"})
            raise Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_error"), unhealthy=True)
        if self.clock() >= handle["expires_at"]:
            raise Outcome(UpstreamTimeout(TIMEOUT_MESSAGE), unhealthy=True)
        return None

    # -- S3 -----------------------------------------------------------------------------------------

    def _key(self, location: object, model: ModelEntry | None = None) -> str:
        """The key of an ``s3://`` location, which must be under ``async-inference/`` in darkroom's bucket:
        anything else is an endpoint configured against the docs (a 502 that is not the endpoint's health)."""
        if isinstance(location, str):
            bucket, _, key = location.removeprefix("s3://").partition("/")
            if location.startswith("s3://") and bucket == self.bucket and key.startswith(PREFIX):
                return key
        logger.error(
            "sagemaker async location outside darkroom's bucket prefix",
            extra={"model": model.id if model else None, "code": "async_location"},
        )
        raise Outcome(UpstreamError(CONFIG_MESSAGE, code="upstream_error"), unhealthy=False)

    def _exists(self, key: str) -> bool:
        """Whether SageMaker has written ``key``: the exact key sorts first among those it prefixes."""
        listing = self._s3(lambda: self.s3.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1))
        return any(item.get("Key") == key for item in listing.get("Contents", []))

    def _failure_prefix(self, key: str) -> bytes:
        """At most ``MAX_FAILURE_BYTES`` + 1 bytes of a failure object (one more tells a longer object apart).

        Best effort: a failure that cannot be read is still a failure (the caller's 502), so S3 errors here
        give no bytes rather than an error of their own."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{MAX_FAILURE_BYTES}").get("Body")
            return body.read(MAX_FAILURE_BYTES + 1) if body is not None else b""
        except (ClientError, BotoCoreError, OSError, ValueError) as exc:
            logger.warning("could not read an async inference failure", extra={"code": type(exc).__name__})
            return b""

    @staticmethod
    def _s3(call: Callable[[], Any]) -> Any:
        """One S3 call. Its failures are darkroom's own (IAM, the bucket), not the endpoint's health: a 502
        that leaves the breaker alone."""
        try:
            return call()
        except ClientError as exc:
            logger.error("async inference storage call failed", extra={"code": error_code(exc)[:64]})
        except BotoCoreError as exc:
            logger.error("async inference storage call failed", extra={"code": type(exc).__name__})
        raise Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_error"), unhealthy=False)

    def _discard(self, input_location: str | None) -> None:
        """Best effort: the bucket's lifecycle rule expires whatever is left under ``async-inference/``. An inline
        request (no ``input_location``) left nothing in S3."""
        if input_location is None:
            return
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=self._key(input_location))
        except (ClientError, BotoCoreError, Outcome) as exc:
            logger.warning("could not delete an async inference input", extra={"code": type(exc).__name__})


def _queue_seconds(deadline_seconds: float | None) -> int:
    """RequestTTLSeconds: no longer than the caller waits (SageMaker's floor permitting), so a request still
    queued when its caller gives up is dropped; SageMaker's maximum when the caller has no deadline."""
    if deadline_seconds is None:
        return MAX_QUEUE_SECONDS
    return min(max(math.ceil(deadline_seconds), MIN_QUEUE_SECONDS), MAX_QUEUE_SECONDS)
