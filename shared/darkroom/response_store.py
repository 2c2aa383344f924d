"""Stored responses: one DynamoDB item per response under the tenant's key, images by S3 reference.

An item holds what threading needs (the turn's messages, where its input and output images are in
S3, and the response as answered minus image bytes) and expires with the table's TTL. Image bytes are
never in the table; a 400 KB item holds the texts (prompts are capped at 32,000 characters).
"""

from __future__ import annotations

import json
import time

RETENTION_SECONDS = 30 * 24 * 3600  # as OpenAI keeps stored responses


class ResponseStore:
    def __init__(self, dynamodb, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def put(self, tenant_id: str, response_id: str, record: dict) -> None:
        self._db.put_item(
            TableName=self._table,
            Item={
                "pk": {"S": f"TENANT#{tenant_id}"}, "sk": {"S": f"RESP#{response_id}"},
                "record": {"S": json.dumps(record, separators=(",", ":"))},
                "expires_at": {"N": str(int(time.time()) + RETENTION_SECONDS)},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def get(self, tenant_id: str, response_id: str) -> dict | None:
        """The record, or None when this tenant has no such (unexpired) response."""
        item = self._db.get_item(
            TableName=self._table, Key={"pk": {"S": f"TENANT#{tenant_id}"}, "sk": {"S": f"RESP#{response_id}"}},
        ).get("Item")
        if not item or int(item["expires_at"]["N"]) < time.time():  # TTL deletion is lazy
            return None
        return json.loads(item["record"]["S"])

    def delete(self, tenant_id: str, response_id: str) -> bool:
        """True when something was deleted."""
        old = self._db.delete_item(
            TableName=self._table, Key={"pk": {"S": f"TENANT#{tenant_id}"}, "sk": {"S": f"RESP#{response_id}"}},
            ReturnValues="ALL_OLD",
        ).get("Attributes")
        return bool(old)
