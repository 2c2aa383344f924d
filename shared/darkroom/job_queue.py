"""The queue background jobs wait in: one SQS message per job attempt, naming the job, never its content.

The message carries the tenant and response ids only; the job itself (references to its input images
in S3, the validated request) is in the response's DynamoDB item, so nothing a tenant sent passes
through SQS and a message is far below SQS's 256 KB. Delivery is at least once: the worker's
conditional claim (darkroom.response_store) makes duplicates harmless.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DELAY_SECONDS = 900  # SQS's limit


class JobQueue:
    # ``sqs``: a boto3 SQS client (untyped: only boto3-stubs' base package is installed), None when disabled.
    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self._url = queue_url

    @property
    def enabled(self) -> bool:
        return bool(self._url)

    def send(self, tenant_id: str, response_id: str, delay_seconds: int = 0) -> None:
        self._sqs.send_message(
            QueueUrl=self._url,
            MessageBody=json.dumps({"tenant_id": tenant_id, "response_id": response_id}, separators=(",", ":")),
            DelaySeconds=max(0, min(MAX_DELAY_SECONDS, int(delay_seconds))),
        )

    def retry_later(self, receipt_handle: str, delay_seconds: float) -> None:
        """Have SQS deliver a received message again after ``delay_seconds`` (instead of its visibility timeout)."""
        self._sqs.change_message_visibility(
            QueueUrl=self._url, ReceiptHandle=receipt_handle, VisibilityTimeout=max(0, min(43_200, int(delay_seconds)))
        )


def parse_message(body: str) -> tuple[str, str]:
    """(tenant id, response id) of a job message; ValueError for anything else."""
    message = json.loads(body)
    tenant_id, response_id = message["tenant_id"], message["response_id"]
    if not (isinstance(tenant_id, str) and isinstance(response_id, str)):
        raise ValueError("a job message names a tenant and a response")
    return tenant_id, response_id
