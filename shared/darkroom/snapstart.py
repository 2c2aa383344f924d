"""SnapStart: what a function builds before its snapshot, and what every restored environment makes its own.

With SnapStart, Lambda initializes a published version once, snapshots it, and resumes every new execution
environment of that version from the one snapshot (https://docs.aws.amazon.com/lambda/latest/dg/snapstart.html).
The hooks come from ``snapshot_restore_py``, which the Python managed runtimes include
(https://docs.aws.amazon.com/lambda/latest/dg/snapstart-runtime-hooks-python.html); outside a SnapStart
version (``$LATEST``, the local stack, tests) they are registered and never run.

- **Before the snapshot** (:func:`prime`): each function builds what its first request would otherwise build
  (the catalog, the key lookup, its AWS clients), so a restored environment starts with them. Without
  SnapStart the same parts are built on first use instead (:mod:`darkroom.services`).
- **After each restore** (:func:`on_restore`), what must not be shared between environments
  (https://docs.aws.amazon.com/lambda/latest/dg/snapstart-uniqueness.html):
  - ``random`` is reseeded from the OS (:func:`reseed`): retry jitter (:mod:`darkroom.inference.resilience`)
    drawn from the snapshot's state would put every restored environment on the same retry schedule;
  - cached API-key lookups are forgotten (registered by :mod:`darkroom.services` and
    :mod:`darkroom.api.authorizer`, which own those caches): their expiry is read on a monotonic clock, and
    an entry cached before the snapshot would outlive a revocation in every environment resumed from it.

  Nothing else is: ids and keys come from ``secrets``/``uuid4`` (the OS, at the time of the call), and AWS
  clients built before the snapshot keep working, because a SnapStart function gets its role's credentials
  from the container credentials endpoint, which the SDK refreshes, not from environment variables
  (https://docs.aws.amazon.com/lambda/latest/dg/snapstart-activate.html#snapstart-credentials).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from snapshot_restore_py import register_after_restore, register_before_snapshot


def prime(build: Callable[[], object]) -> None:
    """Run ``build`` before the snapshot: it builds what the function's first request would."""
    register_before_snapshot(build)


def on_restore(make_fresh: Callable[[], None]) -> None:
    """Run ``make_fresh`` in every environment resumed from the snapshot, before its first request (the module
    that owns a cache registers its own)."""
    register_after_restore(make_fresh)


def reseed() -> None:
    """Make this restored environment's ``random`` its own (from os.urandom)."""
    random.seed()


on_restore(reseed)
