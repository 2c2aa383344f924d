"""API key authentication: ``Authorization: Bearer <key>`` -> the tenant, with a short per-container cache.

The cache bounds how long a revoked key or a suspended tenant keeps working (``key_cache_seconds``); a key's
expiry is checked on every request, cached or not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

from darkroom.api.errors import InvalidApiKey, TenantSuspended
from darkroom.tenancy import ACTIVE, KEY_PATTERN, ApiKey, Tenant, TenantDirectory, hash_key


class Authenticator:
    """``Authorization: Bearer <key>`` -> the active tenant, with a short per-container cache."""

    def __init__(
        self, directory: TenantDirectory, ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._directory = directory
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, tuple[ApiKey, Tenant | None] | None]] = {}
        self._lock = threading.Lock()

    def authenticate(self, authorization: str | None) -> Tenant:
        """The tenant of a usable key, with ``key_id`` set; 401 for a missing, malformed, unknown, revoked or
        expired key, 403 for a suspended tenant."""
        found = self._usable(authorization)
        if found is None:
            raise InvalidApiKey()
        key, tenant = found
        if tenant.status != ACTIVE:
            raise TenantSuspended()
        return replace(tenant, key_id=key.key_id)

    def tenant_of(self, authorization: str | None) -> Tenant | None:
        """The tenant a usable key belongs to (suspended or not); None for a missing, malformed, unknown,
        revoked or expired key. The same lookup and cache as :meth:`authenticate`, which decides; this only
        names."""
        found = self._usable(authorization)
        return found[1] if found else None

    def _usable(self, authorization: str | None) -> tuple[ApiKey, Tenant] | None:
        scheme, _, secret = (authorization or "").partition(" ")
        secret = secret.strip()
        # Malformed keys are refused without a table read.
        if scheme.lower() != "bearer" or not KEY_PATTERN.match(secret):
            return None
        found = self._lookup(hash_key(secret))
        if found is None:
            return None
        key, tenant = found
        # Expiry is checked on every request, not when cached: a key stops at its expires_at to the second.
        return (key, tenant) if tenant is not None and key.usable() else None

    def _lookup(self, key_hash: str) -> tuple[ApiKey, Tenant | None] | None:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key_hash)
        if cached and cached[0] > now:
            return cached[1]
        found = self._directory.lookup(key_hash)
        with self._lock:
            if len(self._cache) > 10_000:  # unknown keys are cached too; bound the memory
                self._cache.clear()
            self._cache[key_hash] = (now + self._ttl, found)
        return found

    def forget(self) -> None:
        """Drop every cached lookup (after a SnapStart restore: :mod:`darkroom.snapstart`)."""
        with self._lock:
            self._cache.clear()
