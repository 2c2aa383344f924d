"""One deadline per request, from what Lambda and API Gateway leave, for the upstream call to use.

The entry point works out when the request must be answered: the earlier of the Lambda's remaining time
and API Gateway's integration timeout counted from when the gateway received the request, minus the
time darkroom needs to store, meter and answer. That :class:`RequestDeadline` is a value passed down
explicitly (no context variable): inference gets what is left of it at the moment it starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from darkroom.config import Settings

API_GATEWAY_TIMEOUT_SECONDS = 29.0
# Encoding, S3 puts, the usage transaction and the response: kept back from the upstream's share.
ANSWER_MARGIN_SECONDS = 3.0


@dataclass(frozen=True)
class RequestDeadline:
    """When this work must be answered (``time.monotonic()`` seconds; None: only the ceilings bound it), and
    whether it is a background job (no API Gateway timeout to answer within; the job's longer ceiling)."""

    answer_by: float | None = None
    background: bool = False
    streamed: bool = False  # a streamed answer: no API Gateway 29 s, the function's own timeout bounds it

    @property
    def long_running(self) -> bool:
        """Whether this work has the long ceiling (a background job, or a streamed request) instead of 29 s."""
        return self.background or self.streamed

    @classmethod
    def for_request(cls, remaining_lambda_ms: int | None, gateway_received_epoch_ms: int | None) -> RequestDeadline:
        """A synchronous request's deadline, from the Lambda context and the API Gateway event."""
        budgets: list[float] = []
        if remaining_lambda_ms is not None:
            budgets.append(remaining_lambda_ms / 1000)
        if gateway_received_epoch_ms:
            waited = max(0.0, time.time() - gateway_received_epoch_ms / 1000)
            budgets.append(API_GATEWAY_TIMEOUT_SECONDS - waited)
        answer_by = time.monotonic() + min(budgets) - ANSWER_MARGIN_SECONDS if budgets else None
        return cls(answer_by)

    @classmethod
    def for_job(cls, remaining_lambda_ms: int | None) -> RequestDeadline:
        """A background job's deadline: only the worker Lambda's remaining time bounds it."""
        return cls(cls.for_request(remaining_lambda_ms, None).answer_by, background=True)

    @classmethod
    def for_stream(cls, remaining_lambda_ms: int | None) -> RequestDeadline:
        """A streamed request's deadline: a streamed integration may run up to 15 minutes
        (https://docs.aws.amazon.com/apigateway/latest/developerguide/response-transfer-mode.html), so only the
        function's remaining time bounds it, and its inference gets the long ceiling a background job gets."""
        return cls(cls.for_request(remaining_lambda_ms, None).answer_by, streamed=True)

    def inference_seconds(self, ceiling: float) -> float:
        """Seconds the upstream call may take now: at most ``ceiling``, never past the deadline."""
        if self.answer_by is None:
            return ceiling
        return max(0.0, min(ceiling, self.answer_by - time.monotonic()))

    def inference_budget(self, settings: Settings) -> float:
        """:meth:`inference_seconds` under the ceiling of this kind of work (a synchronous request or a job)."""
        return self.inference_seconds(
            settings.job_inference_timeout_seconds if self.long_running else settings.inference_timeout_seconds
        )


NO_DEADLINE = RequestDeadline()  # work that only the ceilings bound (the CLI, benchmarks, tests)
