"""Stored responses: one DynamoDB item per response under the tenant's key, images by S3 reference.

An item holds what threading needs (the turn's messages, where its input and output images are in
S3, and the response as answered minus image bytes) and expires with the table's TTL. Image bytes are
never in the table; a 400 KB item holds the texts (prompts are capped at 32,000 characters).

A background response's item is also its job: ``status`` moves ``queued`` -> ``in_progress`` ->
``completed`` | ``failed`` | ``cancelled``, and every move is one conditional ``UpdateItem``. A worker
claims the job with a fresh token and a lease; only the holder of the current token can finish it, and
nothing moves a finished job. So a duplicate SQS delivery finds the job claimed and stops; a worker
that finishes after a cancel (or after its lease passed and another worker took over) finds its token
stale and its result is discarded; a crashed worker's job is claimable again once the lease runs out.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field

RESPONSE_ID = re.compile(r"^resp_[0-9a-f]{32}$")  # what create_response makes; anything else is not found
RETENTION_SECONDS = 30 * 24 * 3600  # as OpenAI keeps stored responses

Status = Literal["queued", "in_progress", "completed", "failed", "cancelled"]  # as ResponseObject.status
QUEUED: Final = "queued"
IN_PROGRESS: Final = "in_progress"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
_STATUSES: dict[str, Status] = {s: s for s in (QUEUED, IN_PROGRESS, COMPLETED, FAILED, CANCELLED)}
FINISHED = frozenset({COMPLETED, FAILED, CANCELLED})


Message = tuple[str, str]  # (role, text)


class Thread(BaseModel):
    """What ``previous_response_id`` carries forward: the conversation's text, and its images by S3 key."""

    messages: list[Message] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list)  # oldest first; the latest is what "make it blue" edits


class ResponseRecord(BaseModel):
    """What a stored response keeps: the response as answered minus image bytes and URLs (JSON), its thread
    (None until a background response completes), and where each ``image_generation_call``'s image is."""

    response: dict[str, Any]
    thread: Thread | None = None
    outputs: dict[str, str] = Field(default_factory=dict)  # output item id -> S3 key


class QueuedJob(BaseModel):
    """The work a background response still has to do, references only: no image bytes, no raw end-user id."""

    request: dict[str, Any]  # the create request as JSON, minus its input, end-user fields and mask
    request_id: str  # the accepting request's id: the usage record's key and the worker's correlation id
    messages: list[Message]
    inputs: list[tuple[str, str]]  # (S3 key, detail) of the turn's input images
    image_call: bool
    mask: str | None = None  # S3 key of the image tool's mask
    history: Thread
    end_user: str | None = None  # darkroom.end_users' opaque id
    created_at: int
    admission: list[tuple[str, int]]  # (window item, amount) the acceptance counted, for a refund
    key_id: str | None = None  # the API key that accepted the job: its usage is billed to that key's buckets


@dataclass(frozen=True)
class StoredResponse:
    """One item: the record (response, thread, outputs), its status, and for background responses the job."""

    record: ResponseRecord
    status: Status
    job: QueuedJob | None = None  # the work a background response still has to do (references only)
    error: dict[str, str] | None = None  # {"code", "message"} of a failed response
    usage: dict[str, Any] | None = None  # a completed job's usage, until it is billed
    checkpoint: dict[str, Any] | None = None  # upstream work still running from an earlier attempt (its handle)
    attempts: int = 0
    token: str | None = None  # the current claim's token
    lease_until: float = 0.0

    @property
    def background(self) -> bool:
        return self.job is not None


def _stored(item: dict[str, Any]) -> StoredResponse:
    def loaded(name: str) -> Any:
        return json.loads(item[name]["S"]) if name in item else None

    job = loaded("job")
    return StoredResponse(
        record=ResponseRecord.model_validate_json(item["record"]["S"]),
        status=_STATUSES[item.get("status", {}).get("S", COMPLETED)],
        job=QueuedJob.model_validate(job) if job is not None else None,
        error=loaded("error"),
        usage=loaded("usage"),
        checkpoint=loaded("checkpoint"),
        attempts=int(item.get("attempts", {}).get("N", 0)),
        token=item.get("token", {}).get("S"),
        lease_until=float(item.get("lease_until", {}).get("N", 0)),
    )


def _json(value: BaseModel | dict[str, Any]) -> dict[str, str]:
    if isinstance(value, BaseModel):
        return {"S": value.model_dump_json()}
    return {"S": json.dumps(value, separators=(",", ":"))}


class ResponseStore:
    def __init__(self, dynamodb: Any, table: str, clock: Callable[[], float] = time.time) -> None:
        self._db = dynamodb
        self._table = table
        self._clock = clock

    @staticmethod
    def _key(tenant_id: str, response_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"TENANT#{tenant_id}"}, "sk": {"S": f"RESP#{response_id}"}}

    def put(self, tenant_id: str, response_id: str, record: ResponseRecord, job: QueuedJob | None = None) -> None:
        """Store a finished response, or (with ``job``) a background response, queued."""
        item = {
            **self._key(tenant_id, response_id),
            "record": _json(record),
            "status": {"S": QUEUED if job is not None else COMPLETED},
            "expires_at": {"N": str(int(self._clock()) + RETENTION_SECONDS)},
        }
        if job is not None:
            item["job"] = _json(job)
        self._db.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")

    def get(self, tenant_id: str, response_id: str) -> ResponseRecord | None:
        """The record, or None when this tenant has no such (unexpired) response."""
        found = self.load(tenant_id, response_id)
        return found.record if found else None

    def load(self, tenant_id: str, response_id: str) -> StoredResponse | None:
        """The item with its status, or None when this tenant has no such (unexpired) response."""
        item = self._db.get_item(TableName=self._table, Key=self._key(tenant_id, response_id), ConsistentRead=True).get(
            "Item"
        )
        if not item or int(item["expires_at"]["N"]) < self._clock():  # TTL deletion is lazy
            return None
        return _stored(item)

    def delete(self, tenant_id: str, response_id: str) -> bool:
        """True when something was deleted."""
        old = self._db.delete_item(
            TableName=self._table,
            Key=self._key(tenant_id, response_id),
            ReturnValues="ALL_OLD",
        ).get("Attributes")
        return bool(old)

    # -- background jobs: every state change is one conditional write ---------------------------------

    def claim(self, tenant_id: str, response_id: str, lease_seconds: float) -> StoredResponse | None:
        """Take the job for one attempt: a queued job, or a running one whose worker's lease ran out."""
        now = self._clock()
        return self._item(
            tenant_id,
            response_id,
            "SET #s = :running, #token = :token, #lease = :lease ADD #attempts :one",
            "attribute_exists(#job) AND (#s = :queued OR (#s = :running AND #lease < :now))",
            {
                ":running": {"S": IN_PROGRESS},
                ":queued": {"S": QUEUED},
                ":token": {"S": secrets.token_hex(16)},
                ":lease": {"N": str(now + lease_seconds)},
                ":now": {"N": str(now)},
                ":one": {"N": "1"},
            },
            returns="ALL_NEW",
        )

    def complete(
        self, tenant_id: str, response_id: str, token: str, record: ResponseRecord, usage: dict[str, Any]
    ) -> bool:
        """The claim holder's result; False (nothing written) when the claim is no longer current."""
        return (
            self._update(
                tenant_id,
                response_id,
                "SET #s = :done, #record = :record, #usage = :usage REMOVE #token, #lease",
                "#s = :running AND #token = :token",
                {
                    ":done": {"S": COMPLETED},
                    ":record": _json(record),
                    ":usage": _json(usage),
                    ":running": {"S": IN_PROGRESS},
                    ":token": {"S": token},
                },
            )
            is not None
        )

    def billed(self, tenant_id: str, response_id: str) -> None:
        """The completed job's usage is recorded: forget it."""
        self._update(tenant_id, response_id, "REMOVE #usage", "#s = :done", {":done": {"S": COMPLETED}})

    def requeue(self, tenant_id: str, response_id: str, token: str) -> bool:
        """Give the claim back for a later attempt (a transient failure)."""
        return (
            self._update(
                tenant_id,
                response_id,
                "SET #s = :queued REMOVE #token, #lease",
                "#s = :running AND #token = :token",
                {":queued": {"S": QUEUED}, ":running": {"S": IN_PROGRESS}, ":token": {"S": token}},
            )
            is not None
        )

    def pause(self, tenant_id: str, response_id: str, token: str, handle: dict[str, Any]) -> bool:
        """Give the claim back while the upstream works on ``handle``; the pause is not a failed attempt."""
        return (
            self._update(
                tenant_id,
                response_id,
                "SET #s = :queued, #checkpoint = :handle REMOVE #token, #lease ADD #attempts :less",
                "#s = :running AND #token = :token",
                {
                    ":queued": {"S": QUEUED},
                    ":handle": _json(handle),
                    ":less": {"N": "-1"},
                    ":running": {"S": IN_PROGRESS},
                    ":token": {"S": token},
                },
            )
            is not None
        )

    def fail(
        self, tenant_id: str, response_id: str, error: dict[str, str], token: str | None = None
    ) -> StoredResponse | None:
        """Mark the job failed: by the claim holder (``token``), or, without one, a job no worker holds
        (queued, or running past its lease). The old item when this call failed it, else None."""
        values = {":failed": {"S": FAILED}, ":error": _json(error), ":running": {"S": IN_PROGRESS}}
        if token is not None:
            condition = "#s = :running AND #token = :token"
            values[":token"] = {"S": token}
        else:
            condition = "attribute_exists(#job) AND (#s = :queued OR (#s = :running AND #lease < :now))"
            values |= {":queued": {"S": QUEUED}, ":now": {"N": str(self._clock())}}
        return self._item(
            tenant_id,
            response_id,
            "SET #s = :failed, #error = :error REMOVE #token, #lease",
            condition,
            values,
            returns="ALL_OLD",
        )

    def cancel(self, tenant_id: str, response_id: str) -> StoredResponse | None:
        """Cancel a queued or running job; the old item when this call cancelled it, else None."""
        return self._item(
            tenant_id,
            response_id,
            "SET #s = :cancelled REMOVE #token, #lease",
            "attribute_exists(#job) AND (#s = :queued OR #s = :running)",
            {":cancelled": {"S": CANCELLED}, ":queued": {"S": QUEUED}, ":running": {"S": IN_PROGRESS}},
            returns="ALL_OLD",
        )

    def _item(
        self,
        tenant_id: str,
        response_id: str,
        expression: str,
        condition: str,
        values: dict[str, Any],
        returns: str,
    ) -> StoredResponse | None:
        """The item (as ``returns`` says: before or after) when the write happened, None when it did not."""
        attributes = self._update(tenant_id, response_id, expression, condition, values, returns)
        return None if attributes is None else _stored(attributes)

    def _update(
        self,
        tenant_id: str,
        response_id: str,
        expression: str,
        condition: str,
        values: dict[str, Any],
        returns: str = "NONE",
    ) -> dict[str, Any] | None:
        """One conditional write: the returned attributes ({} unless asked for), None when the condition failed."""
        names = {
            "#s": "status",
            "#token": "token",
            "#lease": "lease_until",
            "#attempts": "attempts",
            "#job": "job",
            "#record": "record",
            "#usage": "usage",
            "#error": "error",
            "#checkpoint": "checkpoint",
        }
        used = {name: attribute for name, attribute in names.items() if name in expression or name in condition}
        try:
            result = self._db.update_item(
                TableName=self._table,
                Key=self._key(tenant_id, response_id),
                UpdateExpression=expression,
                ConditionExpression=f"attribute_exists(pk) AND ({condition})",
                ExpressionAttributeNames=used,
                ExpressionAttributeValues=values,
                ReturnValues=returns,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return None
            raise
        attributes: dict[str, Any] = result.get("Attributes", {})
        return attributes
