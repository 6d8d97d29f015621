"""Process-level settings: the usable CPUs, and allocator tuning PyTorch leaves to the user.

:func:`available_cpus` counts the cores this process may run on (its CPU affinity, which
a container or ``taskset`` can restrict below :func:`os.cpu_count`).

PyTorch's CPU allocator takes every tensor from the C library's ``malloc``. glibc serves
blocks above its mmap threshold (128 KiB at start, adapted upward on frees) with fresh
``mmap`` pages and returns the top of the heap to the kernel once more than the trim
threshold is free, so a loop that allocates and frees the same multi-megabyte
activations pays a page fault per 4 KiB on every pass. For a 6-block coupling INN
sampled in batches of 10,000 that was 40% of the time (``benchmarks/peers/speed.py``:
186k -> 277k samples/s, training 57 -> 67 steps/s, same machine, same run).

:func:`tune_allocator` raises both thresholds so freed blocks stay in the heap and are
reused. It is what ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` do from the
shell, and the same reason PyTorch's CPU performance guide suggests jemalloc or tcmalloc.
The ``vinaflow`` command and the benchmarks call it; library users may call it once.
The process then keeps up to the trim threshold of freed memory instead of returning it.

Example:
    >>> from vinaflow.runtime import tune_allocator
    >>> tune_allocator()  # True on glibc systems, False elsewhere
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["available_cpus", "tune_allocator"]

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 256 * 2**20
_TRIM_THRESHOLD_BYTES = 1024 * 2**20
_tuned = False


def available_cpus() -> int:
    """Cores this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def tune_allocator() -> bool:
    """Keep freed tensor memory in the heap for reuse (glibc only; idempotent).

    Returns ``True`` when the thresholds were set (or had been), ``False`` where the C
    library is not glibc or ``VINAFLOW_NO_MALLOC_TUNING`` is set in the environment.
    """
    global _tuned
    if _tuned:
        return True
    if os.environ.get("VINAFLOW_NO_MALLOC_TUNING") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1 and ok
    _tuned = ok
    return ok
