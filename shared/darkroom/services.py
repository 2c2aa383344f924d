"""The objects a container needs, each built on its first use (never at import time, never per request).

A function pays for what its routes use: ``GET /v1/models`` builds the catalog, the key lookup and one
DynamoDB client, and never imports Pillow, httpx or an inference adapter (``tests/unit/test_import_sets.py``).
The modules behind the parts below are imported inside the property that builds them, for that reason.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

from botocore.config import Config

from darkroom import config
from darkroom.api.authorizer import key_authenticator
from darkroom.authentication import Authenticator
from darkroom.catalog import Catalog, get_catalog
from darkroom.ports import ImagePorts, ImageSources, ResponsePorts, WorkerPorts
from darkroom.snapstart import on_restore
from darkroom.tenancy import Limits, TenantDirectory

if TYPE_CHECKING:
    from darkroom.files import FileStore
    from darkroom.job_queue import JobQueue
    from darkroom.limits import RateLimiter
    from darkroom.metering import UsageMeter
    from darkroom.ports import BackendLookup
    from darkroom.response_store import ResponseStore
    from darkroom.storage import ImageStore


class Services:
    """The container: settings now, every other part on first use. Tests replace a part by assigning it."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings

    @cached_property
    def _dynamodb(self) -> Any:
        return config.client("dynamodb")

    @cached_property
    def _s3(self) -> Any:
        return config.client("s3", Config(signature_version="s3v4"))  # SigV4: presigned GET and POST

    @cached_property
    def catalog(self) -> Catalog:
        return get_catalog()

    @cached_property
    def directory(self) -> TenantDirectory:
        settings = self.settings
        defaults = Limits(
            images_per_minute=settings.default_images_per_minute,
            images_per_day=settings.default_images_per_day,
            requests_per_minute=settings.default_requests_per_minute,
        )
        return TenantDirectory(self._dynamodb, settings.tenants_table, defaults)

    @cached_property
    def authenticator(self) -> Authenticator:
        return Authenticator(self.directory, self.settings.key_cache_seconds)

    @cached_property
    def limiter(self) -> RateLimiter:
        from darkroom.limits import RateLimiter

        return RateLimiter(self._dynamodb, self.settings.rate_limits_table)

    @cached_property
    def meter(self) -> UsageMeter:
        from darkroom.metering import UsageMeter

        return UsageMeter(self._dynamodb, self.settings.usage_table)

    @cached_property
    def store(self) -> ImageStore:
        from darkroom.storage import ImageStore

        return ImageStore(self._s3, self.settings.images_bucket, self.settings.presign_seconds)

    @cached_property
    def files(self) -> FileStore:
        from darkroom.files import FileStore

        s = self.settings
        return FileStore(self._s3, s.images_bucket, s.presign_seconds, s.max_upload_bytes, s.max_input_pixels)

    @cached_property
    def responses(self) -> ResponseStore:
        from darkroom.response_store import ResponseStore

        return ResponseStore(self._dynamodb, self.settings.responses_table)

    @cached_property
    def jobs(self) -> JobQueue:
        """Where background responses wait for the worker."""
        from darkroom.job_queue import JobQueue

        queue_url = self.settings.jobs_queue_url
        return JobQueue(config.client("sqs") if queue_url else None, queue_url)

    @cached_property
    def fetcher(self) -> Callable[[str, str], bytes]:
        """The SSRF-safe image URL fetcher for the intake."""
        from darkroom.fetch import fetcher_from_settings

        return fetcher_from_settings(self.settings, self.settings.max_image_bytes)

    @cached_property
    def backends(self) -> BackendLookup:
        """The catalog entry's adapter (tests swap in stubs here)."""
        from darkroom.inference import backend_for

        return backend_for

    # What each use case receives: the narrow ports (darkroom.ports), never this container. Built on each
    # use (a few references), so they always hold the container's current settings and catalog.

    @property
    def images(self) -> ImagePorts:
        return ImagePorts(self.settings, self.catalog, self.limiter, self.meter, self.store, self.backends)

    @property
    def sources(self) -> ImageSources:
        return ImageSources(self.files, self.fetcher)

    @property
    def response_ports(self) -> ResponsePorts:
        return ResponsePorts(self.images, self.sources, self.responses, self.jobs)

    @property
    def worker(self) -> WorkerPorts:
        return WorkerPorts(self.response_ports, self.responses, self.jobs, self.directory)


@cache
def services() -> Services:
    return Services(config.get_settings())


def _forget_cached_keys() -> None:
    """After a SnapStart restore: no key lookup cached before the snapshot outlives a revocation."""
    if services.cache_info().currsize and "authenticator" in vars(services()):
        services().authenticator.forget()


on_restore(_forget_cached_keys)


def reset() -> None:
    """Forget everything built from the environment (tests and the local stack change it)."""
    services.cache_clear()
    key_authenticator.cache_clear()  # the authorizer's own, built without this container
    get_catalog.cache_clear()
    config.reset()
