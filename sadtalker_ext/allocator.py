"""The C memory allocator of processes that render on the CPU (glibc on Linux).

By default glibc hands every allocation above its mmap threshold (at most 32 MiB) to the kernel with ``mmap``
and gives it back with ``munmap`` when freed, and threads other than the first allocate from arenas of their own
that return freed memory just as eagerly. Rendering allocates the same large tensors again for every frame, so
the kernel maps and zero-fills those pages again each time.

The processes this project starts (the CLI, the standalone app, Ray workers; :func:`tune_from_environment`,
called at start-up before threads start) keep freed memory in the process for reuse: one arena, no ``mmap`` for
large blocks, no trimming while a job runs. ``SADTALKER_MALLOC=default`` leaves glibc as it is. A WebUI host's
allocator is the host's (A1111's ``webui.sh`` preloads tcmalloc where it is installed): the extension never
tunes it. :func:`release_freed_memory` (``malloc_trim``) gives free memory back to the system after every
generation either way.

Measured on a 2-core Xeon, official-width renderer at 256, batch 2, one process each: 2.3-2.4 s per frame
instead of 2.7-2.8 (system time 0.8 s -> 0.01 s per batch), peak RSS 2072 instead of 1886 MiB after 12 batches
(the official code: about 2470 MiB). Before the renderer's memory work of 2026-12-06 the same setting cost
+16 % peak RSS (2925 -> 3404 MiB), above the official's, and was opt-in.
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
"""Environment variable: ``reuse`` (the default) applies :func:`keep_freed_memory` at start-up, ``default``
leaves glibc's settings."""

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
    """:func:`keep_freed_memory` unless ``SADTALKER_MALLOC=default``; an unknown value is logged and leaves the
    allocator as it is. Returns whether the allocator was tuned."""
    value = os.environ.get(ENV, "").strip().lower() or "reuse"
    if value == "default":
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
