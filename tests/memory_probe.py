"""Peak resident memory of an operation, for tests that must show memory stayed bounded.

Pillow allocates pixels outside Python's allocator, so tracemalloc cannot see a decode; resident
memory (sampled from /proc/self/statm) can.
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
from collections.abc import Callable

_PAGE = os.sysconf("SC_PAGE_SIZE")
_LIBC = ctypes.CDLL("libc.so.6")


def _resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def peak_growth(operation: Callable[[], object]) -> int:
    """Bytes of resident memory above the level before ``operation``, at its peak (sampled every 0.5 ms)."""
    gc.collect()
    _LIBC.malloc_trim(0)
    before = _resident()
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _resident())
            done.wait(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        operation()
    except Exception:  # noqa: BLE001, S110 - the caller asserts on the outcome separately
        pass
    finally:
        done.set()
        sampler.join()
    return max(peak, _resident()) - before
