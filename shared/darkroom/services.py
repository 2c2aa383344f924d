"""The objects a container needs, built once on first use (never at import time, never per request)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from botocore.config import Config

from darkroom import config
from darkroom.api.authorizer import key_authenticator
from darkroom.catalog import Catalog, get_catalog
from darkroom.fetch import fetcher_from_settings
from darkroom.files import FileStore
from darkroom.inference import backend_for
from darkroom.job_queue import JobQueue
from darkroom.limits import RateLimiter
from darkroom.metering import UsageMeter
from darkroom.ports import BackendLookup, ImagePorts, ImageSources, ResponsePorts, WorkerPorts
from darkroom.response_store import ResponseStore
from darkroom.storage import ImageStore
from darkroom.tenancy import Authenticator, Limits, TenantDirectory


@dataclass
class Services:
    settings: config.Settings
    catalog: Catalog
    directory: TenantDirectory
    authenticator: Authenticator
    limiter: RateLimiter
    meter: UsageMeter
    store: ImageStore
    files: FileStore
    responses: ResponseStore
    jobs: JobQueue  # where background responses wait for the worker
    fetcher: Callable[[str, str], bytes]  # SSRF-safe image URL fetcher for the intake
    backends: BackendLookup = backend_for  # the catalog entry's adapter (tests swap in stubs here)

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
    settings = config.get_settings()
    dynamodb = config.client("dynamodb")
    s3 = config.client("s3", Config(signature_version="s3v4"))  # SigV4: presigned GET and POST
    directory = TenantDirectory(
        dynamodb,
        settings.tenants_table,
        Limits(
            images_per_minute=settings.default_images_per_minute,
            images_per_day=settings.default_images_per_day,
            requests_per_minute=settings.default_requests_per_minute,
        ),
    )
    return Services(
        settings=settings,
        catalog=get_catalog(),
        directory=directory,
        authenticator=Authenticator(directory, settings.key_cache_seconds),
        limiter=RateLimiter(dynamodb, settings.rate_limits_table),
        meter=UsageMeter(dynamodb, settings.usage_table),
        store=ImageStore(s3, settings.images_bucket, settings.presign_seconds),
        files=FileStore(
            s3, settings.images_bucket, settings.presign_seconds, settings.max_upload_bytes, settings.max_input_pixels
        ),
        responses=ResponseStore(dynamodb, settings.responses_table),
        jobs=JobQueue(config.client("sqs") if settings.jobs_queue_url else None, settings.jobs_queue_url),
        fetcher=fetcher_from_settings(settings, settings.max_image_bytes),
    )


def reset() -> None:
    """Forget everything built from the environment (tests and the local stack change it)."""
    services.cache_clear()
    key_authenticator.cache_clear()  # the authorizer's own, built without this container
    get_catalog.cache_clear()
    config.reset()
