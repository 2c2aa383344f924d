"""Per-tenant monthly budgets in USD: a hard cap at admission, a soft threshold that raises an alarm.

A tenant with a budget (``Limits.monthly_budget_micro_usd``) has one item per calendar month (UTC) in the
rate-limits table, ``{tenant}#budget#{YYYY-MM}``, whose ``count`` is the month's spend in integer micro-USD
(no float drift): the estimated cost of admitted work, reconciled to the billed cost when usage is recorded.
Admission (:meth:`darkroom.limits.RateLimiter.admit`) reserves the estimate with one conditional ``UpdateItem``
(``ADD`` guarded by ``count <= limit - estimate``), after the windows and in the same give-back order, so the
reserved spend never passes the cap however many requests race; a refusal is a 429 ``insufficient_quota``.
A refund gives the estimate back as it gives back the windows; billing adds ``actual - estimate``
(:func:`settle`). Text-only Responses requests (no images) are not counted against budgets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from darkroom.observability import budget_soft_limit, logger

MICRO = 1_000_000
BUDGET_KEY = "#budget#"  # in a window item's key: the item is a month's budget, its count micro-USD
_TTL_GRACE_SECONDS = 40 * 86_400  # a month's item stays readable for a while after the month


def micro_usd(usd: float) -> int:
    """USD as whole micro-USD (rounded to the nearest)."""
    return round(usd * MICRO)


def usd_text(micro: int) -> str:
    """Micro-USD as an exact decimal string, e.g. ``12.500000``."""
    sign = "-" if micro < 0 else ""
    return f"{sign}{abs(micro) // MICRO}.{abs(micro) % MICRO:06d}"


def month_of(now: float) -> tuple[str, float]:
    """(``YYYY-MM``, the epoch second the month ends) of the UTC calendar month holding ``now``."""
    at = datetime.fromtimestamp(now, UTC)
    following = datetime(at.year + (at.month == 12), at.month % 12 + 1, 1, tzinfo=UTC)
    return f"{at.year:04d}-{at.month:02d}", following.timestamp()


@dataclass(frozen=True)
class BudgetState:
    """A tenant's month after a decision, for the ``x-budget-*`` headers (amounts in micro-USD)."""

    limit: int
    used: int
    reset_at: float  # epoch seconds: the month's end

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def headers(self, now: float) -> dict[str, str]:
        return {
            "x-budget-limit-usd": usd_text(self.limit),
            "x-budget-remaining-usd": usd_text(self.remaining),
            "x-budget-reset": f"{max(0, math.ceil(self.reset_at - now))}s",
        }


def reserve(
    db: Any, table: str, tenant_id: str, limit: int, soft_percent: int, cost: int, now: float
) -> tuple[str, BudgetState, bool]:
    """Add ``cost`` micro-USD to the tenant's month unless it would pass ``limit``: (the item's key, the state,
    whether it was admitted). One conditional write; nothing is counted when it refuses."""
    month, reset_at = month_of(now)
    key = f"{tenant_id}{BUDGET_KEY}{month}"
    if cost > limit:
        return key, BudgetState(limit, 0, reset_at), False
    try:
        attrs = db.update_item(
            TableName=table,
            Key={"pk": {"S": key}},
            UpdateExpression="ADD #c :cost SET #e = if_not_exists(#e, :exp), #l = :limit, #s = :soft",
            ConditionExpression="attribute_not_exists(#c) OR #c <= :room",
            ExpressionAttributeNames={"#c": "count", "#e": "expires_at", "#l": "limit", "#s": "soft"},
            ExpressionAttributeValues={
                ":cost": {"N": str(cost)},
                ":room": {"N": str(limit - cost)},
                ":exp": {"N": str(int(reset_at) + _TTL_GRACE_SECONDS)},
                ":limit": {"N": str(limit)},
                ":soft": {"N": str(limit * soft_percent // 100)},
            },
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )["Attributes"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
        refusal: Mapping[str, Any] = exc.response  # the item, in a key botocore's stubs lack
        used = int(refusal.get("Item", {}).get("count", {}).get("N", limit))
        return key, BudgetState(limit, used, reset_at), False
    _crossed(key, attrs, cost)
    return key, BudgetState(limit, int(attrs["count"]["N"]), reset_at), True


def settle(db: Any, table: str, key: str, reserved: int, actual: int) -> None:
    """Reconcile a month's reservation of ``reserved`` micro-USD to the ``actual`` billed cost (unconditional:
    the work is done; a bill above its estimate may take the month past its cap, and the next request is refused)."""
    delta = actual - reserved
    if delta == 0:
        return
    attrs = db.update_item(
        TableName=table,
        Key={"pk": {"S": key}},
        UpdateExpression="ADD #c :delta",
        ExpressionAttributeNames={"#c": "count"},
        ExpressionAttributeValues={":delta": {"N": str(delta)}},
        ReturnValues="ALL_NEW",
    )["Attributes"]
    _crossed(key, attrs, delta)


def _crossed(key: str, attrs: Mapping[str, Any], added: int) -> None:
    """Emit the soft-threshold metric when this write took the month across it (exactly one write does)."""
    if added <= 0 or "soft" not in attrs:
        return
    now, soft = int(attrs["count"]["N"]), int(attrs["soft"]["N"])
    if now - added < soft <= now:
        budget_soft_limit()
        logger.warning("budget soft threshold crossed", extra={"budget": key, "spent_micro_usd": now})
