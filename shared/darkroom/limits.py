"""Per-tenant admission: requests per minute, images per minute, images per day.

Each window is one DynamoDB item updated with one conditional ``UpdateItem`` (``ADD`` guarded by
``count <= limit - cost``), so DynamoDB itself serializes concurrent admissions and no window ever
passes its limit. Windows are taken in order; when a later one refuses, the earlier increments are
given back, so a request for ``n`` images is admitted whole or refused whole. There is no
read-before-write anywhere. Expired window items are removed by the table's TTL; the logic never
relies on that, because the window start is part of the key. A tenant's monthly budget in USD is the last
step of the same order (:mod:`darkroom.budgets`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError

from darkroom import budgets
from darkroom.api.errors import InsufficientQuota, InvalidRequest, RateLimited, refunds_admission
from darkroom.observability import rate_limited
from darkroom.tenancy import Tenant

# Window items outlive their window by this much before TTL may delete them.
_TTL_GRACE_SECONDS = 300


WindowName = Literal["requests", "images"]  # the suffix of the x-ratelimit-* headers


@dataclass(frozen=True)
class Window:
    name: WindowName
    seconds: int
    label: str  # for messages: "requests per minute"


REQUESTS_PER_MINUTE = Window("requests", 60, "requests per minute")
IMAGES_PER_MINUTE = Window("images", 60, "images per minute")
IMAGES_PER_DAY = Window("images", 86_400, "images per day")


@dataclass(frozen=True)
class WindowState:
    window: Window
    limit: int
    used: int
    reset_at: float  # epoch seconds

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True)
class Admission:
    """The state of the tenant's windows after a decision, for the ``x-ratelimit-*`` headers."""

    states: tuple[WindowState, ...]
    now: float
    taken: tuple[tuple[str, int], ...] = ()  # (window item, amount counted), for a refund
    budget: budgets.BudgetState | None = None  # the tenant's month, when it has a budget (x-budget-* headers)

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = self.budget.headers(self.now) if self.budget is not None else {}
        for name in ("requests", "images"):
            states = [s for s in self.states if s.window.name == name]
            if not states:
                continue
            # Report the tightest window of each kind.
            tightest = min(states, key=lambda s: (s.remaining, s.reset_at))
            headers[f"x-ratelimit-limit-{name}"] = str(tightest.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(tightest.remaining)
            headers[f"x-ratelimit-reset-{name}"] = f"{max(0, math.ceil(tightest.reset_at - self.now))}s"
        return headers


def _limits_for(tenant: Tenant) -> list[tuple[Window, int]]:
    return [
        (REQUESTS_PER_MINUTE, tenant.limits.requests_per_minute),
        (IMAGES_PER_MINUTE, tenant.limits.images_per_minute),
        (IMAGES_PER_DAY, tenant.limits.images_per_day),
    ]


class RateLimiter:
    """Admits or refuses one request of ``images`` images for a tenant, atomically per window."""

    # ``dynamodb``: a boto3 DynamoDB client (untyped: only boto3-stubs' base package is installed).
    def __init__(self, dynamodb: Any, table: str, clock: Callable[[], float] = time.time) -> None:
        self._db = dynamodb
        self._table = table
        self._clock = clock

    def admit(self, tenant: Tenant, images: int, cost_usd: float = 0.0) -> Admission:
        """Count the request in every window, and reserve its estimated ``cost_usd`` in the tenant's monthly
        budget (image work only), or raise :class:`RateLimited` (:class:`InsufficientQuota`) having counted
        nothing."""
        now = self._clock()
        windows = _limits_for(tenant)
        for window, limit in windows:
            cost = 1 if window is REQUESTS_PER_MINUTE else images
            if cost > limit:
                raise InvalidRequest(
                    f"This request needs {cost} {window.label.split()[0]} but the limit is {limit} "
                    f"{window.label}; it can never be admitted.",
                    param="n" if window.name == "images" else None,
                    code="exceeds_limit",
                )
        taken: list[tuple[str, int]] = []
        states: list[WindowState] = []
        refused: WindowState | None = None
        for window, limit in windows:
            cost = 1 if window is REQUESTS_PER_MINUTE else images
            if cost == 0:  # a request without images (text, analysis) only counts as a request
                continue
            start = int(now // window.seconds) * window.seconds
            key = f"{tenant.tenant_id}#{window.name}#{window.seconds}#{start}"
            reset_at = start + window.seconds
            try:
                attrs = self._db.update_item(
                    TableName=self._table,
                    Key={"pk": {"S": key}},
                    UpdateExpression="ADD #c :cost SET #e = if_not_exists(#e, :exp)",
                    ConditionExpression="attribute_not_exists(#c) OR #c <= :room",
                    ExpressionAttributeNames={"#c": "count", "#e": "expires_at"},
                    ExpressionAttributeValues={
                        ":cost": {"N": str(cost)},
                        ":room": {"N": str(limit - cost)},
                        ":exp": {"N": str(reset_at + _TTL_GRACE_SECONDS)},
                    },
                    ReturnValues="UPDATED_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )["Attributes"]
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    self._give_back(taken)
                    raise
                # ReturnValuesOnConditionCheckFailure puts the item in the error, a key botocore's stubs lack.
                refusal: Mapping[str, Any] = exc.response
                used = int(refusal.get("Item", {}).get("count", {}).get("N", limit))
                refused = WindowState(window, limit, used, reset_at)
                states.append(refused)
                break
            taken.append((key, cost))
            states.append(WindowState(window, limit, int(attrs["count"]["N"]), reset_at))
        admission = Admission(tuple(states), now, tuple(taken))
        if refused is None:
            return self._reserve(tenant, images, cost_usd, admission)
        self._give_back(taken)
        rate_limited(refused.window.name)
        retry_after = max(1, math.ceil(refused.reset_at - now))
        headers = admission.headers() | {"retry-after": str(retry_after)}
        raise RateLimited(
            f"Rate limit reached: {refused.limit} {refused.window.label} for this account "
            f"({refused.used} used). Retry after {retry_after}s.",
            headers=headers,
            type_=refused.window.name,
        )

    def _reserve(self, tenant: Tenant, images: int, cost_usd: float, admission: Admission) -> Admission:
        """The budget step, after every window: reserve the estimate, or give the windows back and refuse."""
        limit = tenant.limits.monthly_budget_micro_usd
        if limit is None or images == 0:  # no budget, or text-only work: not counted against budgets
            return admission
        cost = budgets.micro_usd(cost_usd)
        percent = tenant.limits.budget_soft_percent
        key, state, admitted = budgets.reserve(
            self._db, self._table, tenant.tenant_id, limit, percent, cost, admission.now
        )
        if admitted:
            return Admission(admission.states, admission.now, (*admission.taken, (key, cost)), state)
        self._give_back(list(admission.taken))
        refused = Admission(admission.states, admission.now, (), state)
        raise InsufficientQuota(
            f"You exceeded your monthly budget of {budgets.usd_text(limit)} USD: this request's estimated cost is "
            f"{budgets.usd_text(cost)} USD and {budgets.usd_text(state.remaining)} USD remain until the month's end.",
            headers=refused.headers(),
        )

    def settle(self, admission: Admission, cost_usd: float) -> None:
        """Reconcile the admission's budget reservation (its estimate) to the billed ``cost_usd``."""
        for key, reserved in admission.taken:
            if budgets.BUDGET_KEY in key:
                budgets.settle(self._db, self._table, key, reserved, budgets.micro_usd(cost_usd))

    def refund(self, admission: Admission) -> None:
        """Give back what an admitted request counted (the request failed on darkroom's side)."""
        self._give_back(list(admission.taken))

    @contextmanager
    def refunded_on_failure(self, admission: Admission) -> Iterator[None]:
        """Refund the admission when the block fails on our side (5xx, or any unexpected error);
        a client's own error (4xx) keeps counting, as at OpenAI."""
        try:
            yield
        except Exception as exc:
            if refunds_admission(exc):
                self.refund(admission)
            raise

    def _give_back(self, taken: list[tuple[str, int]]) -> None:
        for key, cost in taken:
            self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": key}},
                UpdateExpression="ADD #c :neg",
                ExpressionAttributeNames={"#c": "count"},
                ExpressionAttributeValues={":neg": {"N": str(-cost)}},
            )
