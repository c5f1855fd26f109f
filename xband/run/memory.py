"""Freed memory kept for the next pass while xband runs (Linux with glibc).

glibc hands a freed block larger than its mmap threshold back to the system, and trims the
heap's free top; the next pass allocates the same tens of megabytes (a batch of masked copies, a
convolution's output) and the kernel faults their pages in again, zeroed, page by page. Raising
both thresholds while xband runs keeps those blocks in the process for reuse: the same numbers,
fewer page faults (the README's Speed section has the measured gain). On leaving, the kept
memory is handed back (`malloc_trim`) and glibc's initial thresholds are set again. Where the
user tuned glibc's malloc for the process (MALLOC_*_ variables, GLIBC_TUNABLES), and elsewhere
(macOS, Windows, musl), this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
_GLIBC_DEFAULT = 128 * 1024  # both thresholds' initial value in glibc
_MMAP_THRESHOLD_FALLBACK = 32 << 20  # glibc's largest dynamic mmap threshold (64-bit)
KEPT_BYTES = 1 << 30  # blocks up to this size come from the heap; free heap up to it is kept

_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                  "MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX")

_lock = threading.Lock()
_depth = 0


def _user_tuned() -> bool:
    """Whether the process was started with glibc's malloc tuned (read once by glibc)."""
    return (any(name in os.environ for name in _USER_SETTINGS)
            or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""))


@cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, where xband may set its malloc thresholds; None where it leaves them alone."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or _user_tuned():
        return None
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _set_thresholds(libc: ctypes.CDLL, size: int) -> None:
    if not libc.mallopt(_M_MMAP_THRESHOLD, size):  # a glibc that refuses it takes 32 MiB
        libc.mallopt(_M_MMAP_THRESHOLD, min(size, _MMAP_THRESHOLD_FALLBACK))
    libc.mallopt(_M_TRIM_THRESHOLD, size)


def allocator() -> str:
    """How xband's runs allocate memory here, for what is measured under it (pass timings)."""
    if _glibc() is not None:
        return f"glibc, freed blocks up to {KEPT_BYTES} bytes kept"
    return "glibc as the user tuned it" if _user_tuned() else "system default"


@contextmanager
def freed_memory_kept() -> Iterator[None]:
    """Within the block, freed large blocks stay in the process for reuse; nested and
    concurrent uses share one setting, undone when the last one leaves."""
    global _depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            _set_thresholds(libc, KEPT_BYTES)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _set_thresholds(libc, _GLIBC_DEFAULT)
                libc.malloc_trim(0)
