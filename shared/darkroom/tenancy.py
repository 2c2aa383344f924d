"""Tenants and their API keys.

A key is 256 random bits shown once at issue; darkroom stores only its sha256 (the lookup key), a
short display prefix and an optional expiry. :mod:`darkroom.authentication` caches lookups per container
for ``key_cache_seconds``, which bounds how long a revoked key or a suspended tenant keeps working.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, NotRequired, TypedDict

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from darkroom.api.errors import NotFound

KEY_PREFIX = "dk-"
# dk- + token_urlsafe(32): 43 characters of the URL-safe alphabet.
KEY_PATTERN = re.compile(r"^dk-[A-Za-z0-9_-]{43}$")
DISPLAY_PREFIX_CHARS = 8

ACTIVE: Final = "active"
SUSPENDED: Final = "suspended"
REVOKED: Final = "revoked"
TenantStatus = Literal["active", "suspended"]
KeyStatus = Literal["active", "revoked"]


@dataclass(frozen=True)
class Limits:
    """Per-tenant admission limits (all per tenant, across its keys)."""

    images_per_minute: int = 20
    images_per_day: int = 500
    requests_per_minute: int = 60
    monthly_budget_micro_usd: int | None = None  # None: no budget (unlimited); darkroom.budgets
    budget_soft_percent: int = 80  # the share of the budget past which the BudgetSoftLimit metric is emitted


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    name: str
    status: TenantStatus = ACTIVE
    limits: Limits = field(default_factory=Limits)
    created_at: str = ""
    key_id: str | None = None  # the key a request authenticated with (Authenticator.authenticate); None otherwise


@dataclass(frozen=True)
class ApiKey:
    """What is stored about a key: never the key itself."""

    key_id: str
    tenant_id: str
    prefix: str
    status: KeyStatus
    created_at: str
    expires_at: str | None = None  # UTC, YYYY-MM-DDTHH:MM:SSZ; past it the key is refused like a revoked one

    def usable(self, now: datetime | None = None) -> bool:
        """Active and not expired (at ``now``, default the current time)."""
        if self.status != ACTIVE:
            return False
        return self.expires_at is None or (now or datetime.now(UTC)).strftime(_ISO) < self.expires_at


def hash_key(key: str) -> str:
    """sha256 of the key, hex: enough for 256-bit random keys (no password stretching needed)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


_ISO = "%Y-%m-%dT%H:%M:%SZ"  # every timestamp in the tenants table: UTC, to the second, sortable as text


def _now_iso() -> str:
    return datetime.now(UTC).strftime(_ISO)


class AttributeValue(TypedDict, total=False):
    """One DynamoDB attribute as the low-level client sends it (``{"S": "x"}``, ``{"N": "1"}``, ...)."""

    S: str
    N: str
    B: bytes
    SS: Sequence[str]
    NS: Sequence[str]
    BS: Sequence[bytes]
    M: Mapping[str, Any]
    L: Sequence[Any]
    NULL: bool
    BOOL: bool


Item = dict[str, AttributeValue]  # a DynamoDB item (or key) in the low-level client's format


class TenantItem(TypedDict):
    """A tenant's item in the tenants table, as Python values."""

    pk: str  # TENANT#<tenant id>
    sk: Literal["TENANT"]
    tenant_id: str
    name: str
    status: TenantStatus
    created_at: str
    images_per_minute: int
    images_per_day: int
    requests_per_minute: int


class KeyItem(TypedDict):
    """A key's item in the tenants table, as Python values: its hash is the key, the secret is not stored."""

    pk: str  # KEY#<sha256 of the secret>
    sk: Literal["KEY"]
    key_id: str
    tenant_id: str
    prefix: str
    status: KeyStatus
    created_at: str
    expires_at: NotRequired[str]


_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_item(values: Mapping[str, object]) -> Item:
    """Python values -> a DynamoDB item; None values are left out."""
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def from_item(item: Mapping[str, AttributeValue]) -> dict[str, Any]:
    """A DynamoDB item -> Python values (numbers as ``Decimal``)."""
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def _tenant_from(values: Mapping[str, Any]) -> Tenant:
    return Tenant(
        tenant_id=values["tenant_id"],
        name=values["name"],
        status=values["status"],
        limits=Limits(
            images_per_minute=int(values["images_per_minute"]),
            images_per_day=int(values["images_per_day"]),
            requests_per_minute=int(values["requests_per_minute"]),
            monthly_budget_micro_usd=(
                None if values.get("monthly_budget_micro_usd") is None else int(values["monthly_budget_micro_usd"])
            ),
            budget_soft_percent=int(values.get("budget_soft_percent", 80)),
        ),
        created_at=values.get("created_at", ""),
    )


def _key_from(values: Mapping[str, Any]) -> ApiKey:
    return ApiKey(
        key_id=values["key_id"],
        tenant_id=values["tenant_id"],
        prefix=values["prefix"],
        status=values["status"],
        created_at=values.get("created_at", ""),
        expires_at=values.get("expires_at"),
    )


class TenantDirectory:
    """Tenants and key hashes in the tenants table (``pk``/``sk`` plus the ``ByTenant``/``ByKeyId`` indexes)."""

    # ``dynamodb``: a boto3 DynamoDB client (untyped: only boto3-stubs' base package is installed).
    def __init__(self, dynamodb: Any, table: str, default_limits: Limits | None = None) -> None:
        self._db = dynamodb
        self._table = table
        self.default_limits = default_limits or Limits()  # for tenants created without limits of their own

    # tenants

    def create_tenant(self, name: str, limits: Limits | None = None) -> Tenant:
        limits = limits or self.default_limits
        tenant = Tenant(tenant_id="tnt_" + secrets.token_hex(8), name=name, limits=limits, created_at=_now_iso())
        self._db.put_item(
            TableName=self._table,
            Item=to_item(
                TenantItem(
                    pk=f"TENANT#{tenant.tenant_id}",
                    sk="TENANT",
                    tenant_id=tenant.tenant_id,
                    name=name,
                    status=ACTIVE,
                    created_at=tenant.created_at,
                    images_per_minute=limits.images_per_minute,
                    images_per_day=limits.images_per_day,
                    requests_per_minute=limits.requests_per_minute,
                )
            ),
            ConditionExpression="attribute_not_exists(pk)",
        )
        return tenant

    def get_tenant(self, tenant_id: str) -> Tenant | None:
        item = self._db.get_item(
            TableName=self._table, Key=to_item({"pk": f"TENANT#{tenant_id}", "sk": "TENANT"}), ConsistentRead=True
        ).get("Item")
        return _tenant_from(from_item(item)) if item else None

    def list_tenants(self) -> list[Tenant]:
        """Every tenant, oldest first (the CLI's listing; the admin API reads :meth:`tenants_page`)."""
        tenants: list[Tenant] = []
        after: str | None = None
        while True:
            page, after = self.tenants_page(1000, after)
            tenants.extend(page)
            if after is None:
                return sorted(tenants, key=lambda t: (t.created_at, t.tenant_id))

    def tenants_page(self, limit: int, after: str | None = None) -> tuple[list[Tenant], str | None]:
        """Up to ``limit`` tenants after the tenant id ``after`` (None: from the start), in the table's scan
        order, and the id to pass as ``after`` for the next page (None: no more).

        A Scan resumes after any item's key (ExclusiveStartKey), so the last tenant returned is the cursor
        (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Scan.html#Scan.Pagination). The
        scan reads key items too and filters them out, so a page costs more reads than it returns tenants.
        """
        tenants: list[Tenant] = []
        start: Item | None = to_item({"pk": f"TENANT#{after}", "sk": "TENANT"}) if after else None
        while True:
            page = self._db.scan(
                TableName=self._table,
                FilterExpression="sk = :t",
                ExpressionAttributeValues={":t": {"S": "TENANT"}},
                **({"ExclusiveStartKey": start} if start else {}),
            )
            for item in page["Items"]:
                if len(tenants) == limit:
                    return tenants, tenants[-1].tenant_id
                tenants.append(_tenant_from(from_item(item)))
            start = page.get("LastEvaluatedKey")
            if start is None:
                return tenants, None
            if len(tenants) == limit:
                return tenants, tenants[-1].tenant_id

    def set_status(self, tenant_id: str, status: TenantStatus) -> Tenant:
        return self._update_tenant(tenant_id, {"status": {"S": status}})

    def set_limits(
        self,
        tenant_id: str,
        *,
        images_per_minute: int | None = None,
        images_per_day: int | None = None,
        requests_per_minute: int | None = None,
    ) -> Tenant:
        """Change some of a tenant's limits (the others stay); functions see them within ``key_cache_seconds``."""
        changes = {
            name: value
            for name, value in (
                ("images_per_minute", images_per_minute),
                ("images_per_day", images_per_day),
                ("requests_per_minute", requests_per_minute),
            )
            if value is not None
        }
        if not changes:
            raise ValueError("no limit to change")
        if any(not isinstance(value, int) or value < 1 for value in changes.values()):
            raise ValueError("limits are whole numbers of at least 1")
        return self._update_tenant(tenant_id, {name: {"N": str(value)} for name, value in changes.items()})

    def set_budget(self, tenant_id: str, monthly_micro_usd: int | None, soft_percent: int = 80) -> Tenant:
        """Give a tenant a monthly budget (micro-USD; darkroom.budgets), or none (``None``: unlimited)."""
        if monthly_micro_usd is None:
            return self._update_tenant(tenant_id, {}, remove=("monthly_budget_micro_usd", "budget_soft_percent"))
        if monthly_micro_usd < 1 or not 1 <= soft_percent <= 100:
            raise ValueError("a budget is above zero, its soft threshold a percent from 1 to 100")
        budget: Item = {"monthly_budget_micro_usd": {"N": str(monthly_micro_usd)}}
        return self._update_tenant(tenant_id, budget | {"budget_soft_percent": {"N": str(soft_percent)}})

    def _update_tenant(self, tenant_id: str, values: Item, remove: tuple[str, ...] = ()) -> Tenant:
        """Set (or ``remove``) attributes of an existing tenant; 404 when there is none."""
        update = " ".join(
            part
            for part in (
                "SET " + ", ".join(f"#{name} = :{name}" for name in values) if values else "",
                "REMOVE " + ", ".join(f"#{name}" for name in remove) if remove else "",
            )
            if part
        )
        try:
            item = self._db.update_item(
                TableName=self._table,
                Key=to_item({"pk": f"TENANT#{tenant_id}", "sk": "TENANT"}),
                UpdateExpression=update,
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={f"#{name}": name for name in (*values, *remove)},
                **({"ExpressionAttributeValues": {f":{n}": v for n, v in values.items()}} if values else {}),
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise NotFound(f"No tenant {tenant_id}.", param="tenant_id") from None
            raise
        return _tenant_from(from_item(item))

    # keys

    def issue_key(
        self, tenant_id: str, *, secret: str | None = None, expires_at: datetime | None = None
    ) -> tuple[ApiKey, str]:
        """Create a key for the tenant, usable until ``expires_at`` (None: until revoked); returns the record and
        the secret (shown once, never stored)."""
        if self.get_tenant(tenant_id) is None:
            raise NotFound(f"No tenant {tenant_id}.", param="tenant_id")
        secret = secret or new_key()
        if not KEY_PATTERN.match(secret):
            raise ValueError("keys look like dk- followed by 43 URL-safe characters")
        key = ApiKey(
            key_id="key_" + secrets.token_hex(8),
            tenant_id=tenant_id,
            prefix=secret[:DISPLAY_PREFIX_CHARS],
            status=ACTIVE,
            created_at=_now_iso(),
            expires_at=expires_at.astimezone(UTC).strftime(_ISO) if expires_at else None,
        )
        item = KeyItem(
            pk=f"KEY#{hash_key(secret)}",
            sk="KEY",
            key_id=key.key_id,
            tenant_id=tenant_id,
            prefix=key.prefix,
            status=ACTIVE,
            created_at=key.created_at,
        )
        if key.expires_at:
            item["expires_at"] = key.expires_at
        self._db.put_item(TableName=self._table, Item=to_item(item), ConditionExpression="attribute_not_exists(pk)")
        return key, secret

    def list_keys(self, tenant_id: str) -> list[ApiKey]:
        keys: list[ApiKey] = []
        for page in self._db.get_paginator("query").paginate(
            TableName=self._table,
            IndexName="ByTenant",
            KeyConditionExpression="tenant_id = :t",
            ExpressionAttributeValues={":t": {"S": tenant_id}},
        ):
            keys.extend(_key_from(from_item(item)) for item in page["Items"])
        return keys

    def revoke_key(self, key_id: str) -> ApiKey:
        found = self._db.query(
            TableName=self._table,
            IndexName="ByKeyId",
            KeyConditionExpression="key_id = :k",
            ExpressionAttributeValues={":k": {"S": key_id}},
        )["Items"]
        if not found:
            raise NotFound(f"No key {key_id}.", param="key_id")
        item = self._db.update_item(
            TableName=self._table,
            Key={"pk": found[0]["pk"], "sk": found[0]["sk"]},
            UpdateExpression="SET #s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": REVOKED}},
            ReturnValues="ALL_NEW",
        )["Attributes"]
        return _key_from(from_item(item))

    def lookup(self, key_hash: str) -> tuple[ApiKey, Tenant | None] | None:
        item = self._db.get_item(TableName=self._table, Key=to_item({"pk": f"KEY#{key_hash}", "sk": "KEY"})).get("Item")
        if not item:
            return None
        key = _key_from(from_item(item))
        return key, self.get_tenant(key.tenant_id)
