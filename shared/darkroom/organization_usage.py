"""OpenAI's organization usage and costs for one tenant: the parameters, the time buckets, paging, grouping.

The parameters and their limits are those of OpenAI's published spec: github.com/openai/openai-openapi,
openapi.yaml at commit f85dbe223d40e1a31cba812ab2d755c7e98a92a3 (2026-08-21), paths
``/organization/usage/images`` and ``/organization/costs``. darkroom answers them from its hourly buckets
(:mod:`darkroom.usage_buckets`), so what needs a finer grain (``bucket_width=1m``) or what darkroom does not
have (projects, organization users) is refused with a 400 that says why, never answered with wrong numbers.

Buckets are whole UTC hours or days: the first one starts at ``start_time`` rounded down to the bucket
width, and a page holds every bucket up to ``end_time`` (default: now), at most ``limit`` of them; the
rest are behind ``next_page``. Each page's usage is one Query bounded by the page's hours.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from darkroom.api.errors import InvalidRequest
from darkroom.usage_buckets import IMAGE_SOURCES, HourUsage

MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z: the largest unix time a start or end may be
WIDTHS = {"1h": 3600, "1d": 86400}
# (default, maximum) buckets per page by bucket_width, as the spec sets them
IMAGES_LIMITS = {"1h": (24, 168), "1d": (7, 31)}
COSTS_LIMITS = {"1d": (7, 180)}
IMAGES_GROUPS = ("project_id", "user_id", "api_key_id", "model", "size", "source")
COSTS_GROUPS = ("project_id", "line_item", "api_key_id")
SOURCE_FILTER = ("image.generation", "image.edit", "image.variation")  # the spec's `sources` values
MAX_VALUES = 100  # values of one array parameter
MAX_VALUE_LENGTH = 128
_TOKEN = re.compile(r"(1h|1d):([0-9]{1,12})")


@dataclass(frozen=True)
class Window:
    """The buckets of one page: ``count`` buckets of ``width`` seconds from ``first``."""

    width: int
    first: int
    count: int
    next_page: str | None  # the token of the page after this one

    @property
    def span(self) -> tuple[int, int]:
        """The page's time range, unix seconds: start inclusive, end exclusive."""
        return self.first, self.first + self.count * self.width

    def starts(self) -> list[int]:
        return [self.first + i * self.width for i in range(self.count)]

    def bucket_of(self, at: int) -> int:
        return self.first + (at - self.first) // self.width * self.width


@dataclass(frozen=True)
class UsageQuery:
    """A validated request: the page's buckets, the fields to group by and the values each field may take."""

    window: Window
    group_by: tuple[str, ...]
    filters: tuple[tuple[str, frozenset[str]], ...] = ()  # (HourUsage field, the values it may have)

    def selects(self, row: HourUsage) -> bool:
        return all(getattr(row, name) in values for name, values in self.filters)


@dataclass
class Totals:
    requests: int = 0
    images: int = 0
    cost_micro_usd: int = 0  # summed as integers: the USD amount is exact
    sources: set[str] = field(default_factory=set)

    def add(self, row: HourUsage) -> None:
        self.requests += row.requests
        self.images += row.images
        self.cost_micro_usd += row.cost_micro_usd
        self.sources.add(row.source)

    @property
    def images_only(self) -> bool:
        """Every request counted was an image request (a quantity in images means something)."""
        return bool(self.sources) and self.sources <= set(IMAGE_SOURCES.values())


def _page_token(bucket_width: str, start: int) -> str:
    return base64.urlsafe_b64encode(f"{bucket_width}:{start}".encode()).decode().rstrip("=")


def _page_start(page: str, bucket_width: str, first: int, end: int, width: int) -> int:
    """The first bucket a ``page`` token names; 400 unless this query could have answered it."""
    invalid = InvalidRequest(
        "Invalid value for 'page': pass the 'next_page' of the previous answer, with the same parameters.",
        param="page",
        code="invalid_page",
    )
    try:
        text = base64.urlsafe_b64decode(page + "=" * (-len(page) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise invalid from None
    match = _TOKEN.fullmatch(text)
    if match is None or match[1] != bucket_width:
        raise invalid
    start = int(match[2])
    if start < first or start >= end or (start - first) % width:
        raise invalid
    return start


def _time(value: int | None, param: str) -> None:
    if value is not None and not 0 <= value <= MAX_TIME:
        raise InvalidRequest(
            f"Invalid value for '{param}': expected a unix time in seconds from 0 to {MAX_TIME}.", param=param
        )


@dataclass(frozen=True)
class Times:
    """The time parameters both endpoints take, as sent (unvalidated)."""

    start_time: int
    end_time: int | None = None
    bucket_width: str | None = None
    limit: int | None = None
    page: str | None = None


def _window(times: Times, limits: dict[str, tuple[int, int]], now: int | None) -> Window:
    start_time, end_time, limit = times.start_time, times.end_time, times.limit
    width_name = times.bucket_width or "1d"
    if width_name not in limits:
        allowed = " or ".join(f"'{name}'" for name in limits)
        if width_name == "1m" and "1h" in limits:
            raise InvalidRequest(
                f"bucket_width '1m' cannot be served: darkroom records usage in hourly buckets. Use {allowed}.",
                param="bucket_width",
                code="unsupported_value",
            )
        raise InvalidRequest(f"Invalid value for 'bucket_width': expected {allowed}.", param="bucket_width")
    default, maximum = limits[width_name]
    if limit is not None and not 1 <= limit <= maximum:
        raise InvalidRequest(
            f"Invalid value for 'limit': with bucket_width '{width_name}' it must be from 1 to {maximum}.",
            param="limit",
        )
    _time(start_time, "start_time")
    _time(end_time, "end_time")
    end = end_time if end_time is not None else now if now is not None else int(time.time())
    if end <= start_time:
        if end_time is None:
            raise InvalidRequest(
                "'start_time' must be in the past when 'end_time' is not given.",
                param="start_time",
                code="invalid_time_range",
            )
        raise InvalidRequest("'end_time' must be after 'start_time'.", param="end_time", code="invalid_time_range")
    width = WIDTHS[width_name]
    first = start_time // width * width  # whole UTC hours or days
    if times.page is not None:
        first = _page_start(times.page, width_name, first, end, width)
    total = -(-(end - first) // width)  # buckets from first up to end, the last one possibly partial
    count = min(total, limit or default)
    following = first + count * width
    return Window(width, first, count, _page_token(width_name, following) if count < total else None)


def _values(param: str, values: Sequence[str] | None, allowed: Sequence[str] | None = None) -> frozenset[str] | None:
    if not values:
        return None
    if len(values) > MAX_VALUES or any(len(value) > MAX_VALUE_LENGTH for value in values):
        raise InvalidRequest(
            f"Invalid value for '{param}': at most {MAX_VALUES} values of at most {MAX_VALUE_LENGTH} characters.",
            param=param,
        )
    if allowed is not None and not set(values) <= set(allowed):
        expected = ", ".join(f"'{value}'" for value in allowed)
        raise InvalidRequest(f"Invalid value for '{param}': expected any of {expected}.", param=param)
    return frozenset(values)


def _refused(params: Iterable[tuple[str, Sequence[str] | None]]) -> None:
    for param, values in params:
        if values:
            what = "projects" if param == "project_ids" else "organization users"
            raise InvalidRequest(
                f"'{param}' cannot be served: darkroom has no {what}. Usage is the calling tenant's, by API key"
                " ('api_key_ids', 'group_by=api_key_id').",
                param=param,
                code="unsupported_parameter",
            )


def _group_by(values: Sequence[str] | None, allowed: Sequence[str]) -> tuple[str, ...]:
    chosen = _values("group_by", values, allowed) or frozenset()
    return tuple(name for name in allowed if name in chosen)  # the spec's order, each field once


Arrays = Mapping[str, Sequence[str]]  # an array parameter's values by its name; absent: not sent


def images_query(times: Times, arrays: Arrays, now: int | None = None) -> UsageQuery:
    """The parameters of ``GET /v1/organization/usage/images``, validated; :class:`InvalidRequest` otherwise."""
    _refused([("project_ids", arrays.get("project_ids")), ("user_ids", arrays.get("user_ids"))])
    window = _window(times, IMAGES_LIMITS, now)
    chosen = {
        "source": _values("sources", arrays.get("sources"), SOURCE_FILTER) or frozenset(IMAGE_SOURCES.values()),
        "model": _values("models", arrays.get("models")),
        "size": _values("sizes", arrays.get("sizes")),
        "api_key_id": _values("api_key_ids", arrays.get("api_key_ids")),
    }
    filters = tuple((name, values) for name, values in chosen.items() if values is not None)
    return UsageQuery(window, _group_by(arrays.get("group_by"), IMAGES_GROUPS), filters)


def costs_query(times: Times, arrays: Arrays, now: int | None = None) -> UsageQuery:
    """The parameters of ``GET /v1/organization/costs``, validated; :class:`InvalidRequest` otherwise."""
    _refused([("project_ids", arrays.get("project_ids"))])
    window = _window(times, COSTS_LIMITS, now)
    keys = _values("api_key_ids", arrays.get("api_key_ids"))
    return UsageQuery(window, _group_by(arrays.get("group_by"), COSTS_GROUPS), (("api_key_id", keys),) if keys else ())


def line_item(row: HourUsage) -> str:
    """A costs line item: the model and the source, as ``"<model>, <source>"`` (``"gpt-image-1, image.edit"``)."""
    return f"{row.model}, {row.source}"


# The value of each group_by field for a bucket row; darkroom has no projects or organization users.
_FIELDS: dict[str, Callable[[HourUsage], str | None]] = {
    "project_id": lambda row: None,
    "user_id": lambda row: None,
    "api_key_id": lambda row: row.api_key_id,
    "model": lambda row: row.model,
    "size": lambda row: row.size,
    "source": lambda row: row.source,
    "line_item": line_item,
}

Group = tuple[tuple[str, str | None], ...]  # (field, value) for each group_by field


def grouped(rows: Iterable[HourUsage], query: UsageQuery) -> dict[int, dict[Group, Totals]]:
    """The selected rows' totals by bucket start, then by the values of the ``group_by`` fields (in order)."""
    buckets: dict[int, dict[Group, Totals]] = {start: {} for start in query.window.starts()}
    for row in rows:
        if not query.selects(row):
            continue
        group = tuple((name, _FIELDS[name](row)) for name in query.group_by)
        groups = buckets.setdefault(query.window.bucket_of(row.hour), {})
        groups.setdefault(group, Totals()).add(row)
    return {start: dict(sorted(groups.items(), key=_order)) for start, groups in sorted(buckets.items())}


def _order(item: tuple[Group, Totals]) -> tuple[str, ...]:
    return tuple(value or "" for _, value in item[0])
