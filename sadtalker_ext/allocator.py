"""The C memory allocator of processes that render on the CPU (glibc on Linux).

By default glibc hands every allocation above its mmap threshold (at most 32 MiB) to the kernel with ``mmap``
and gives it back with ``munmap`` when freed, and threads other than the first allocate from arenas of their own
that return freed memory just as eagerly. Rendering allocates the same large tensors again for every frame, so
the kernel maps and zero-fills those pages again each time.

``SADTALKER_MALLOC=reuse`` (opt-in; read by :func:`tune_from_environment`, which the CLI, the standalone app and
a Ray worker call at start-up, before they start threads) keeps freed memory in the process for reuse: one
arena, no ``mmap`` for large blocks, no trimming while a job runs. Measured on a 2-core Xeon, official-width
renderer at 256, 4 frames, batch 2, main thread: 20.0-20.5 s -> 16.7-17.1 s (1.2x), system time 4-5 s -> 0.1 s,
peak RSS 2925 -> 3404 MiB (+16 %); at 512 with the reduced-width renderer 11.6-13.8 -> 8.2-8.6 s per 2 s video. Off by
default for that memory. :func:`release_freed_memory` (``malloc_trim``) gives free memory back to the system
after every generation either way. The WebUI host's allocator is the host's (A1111's ``webui.sh`` preloads
tcmalloc where it is installed).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from functools import cache

log = logging.getLogger(__name__)

ENV = "SADTALKER_MALLOC"
"""Environment variable: ``reuse`` turns :func:`keep_freed_memory` on at start-up (default: off)."""

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_TRIM_AT = 2**31 - 1  # bytes (mallopt takes an int): practically no trim on free; released after each job


@cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (
        hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") and hasattr(libc, "gnu_get_libc_version")
    ):
        return None  # musl and others: nothing to tune
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def tune_from_environment() -> bool:
    """:func:`keep_freed_memory` when ``SADTALKER_MALLOC=reuse``; an unknown value is logged and ignored.
    Returns whether the allocator was tuned."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("", "default"):
        return False
    if value != "reuse":
        log.warning(
            "%s=%s is not understood (use 'reuse' or 'default'); the allocator is left as it is", ENV, value
        )
        return False
    return keep_freed_memory()


def keep_freed_memory() -> bool:
    """Make freed memory stay in the process for reuse (one arena, no ``mmap`` blocks, no trim on free).

    Call once at process start, before other threads allocate. Returns whether the settings were applied
    (glibc only)."""
    libc = _glibc()
    if libc is None:
        return False
    ok = all(
        libc.mallopt(param, value) == 1
        for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_AT))
    )
    log.debug("malloc tuned for tensor reuse: %s", ok)
    return ok


def release_freed_memory() -> None:
    """Give memory that is free inside the process back to the system (glibc ``malloc_trim(0)``); a no-op
    elsewhere. Cheap (milliseconds); called after each generation."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
