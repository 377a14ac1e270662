"""Keep model-sized tensors in the glibc heap instead of fresh mmaps.

A UNet step on CPU allocates and frees many tensors of a few MB. By default glibc serves
allocations above its (adaptive) mmap threshold with a fresh ``mmap`` each time, so every
step pays page faults to zero new pages; Dask's nanny makes this worse by exporting
``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes the adaptive threshold. Measured on
the default prior (128 px, 30 DDPG steps, one thread, AMD EPYC): 3.0 s as started, 3.8 s
in a process with Dask's setting, 2.2-2.3 s after :func:`tune_allocator` (either way).
Dask's documented remedy, dropping the variable through
``distributed.nanny.pre-spawn-environ``, only gets back to the 3.0 s of a plain process,
so workers keep this instead.

``mallopt`` applies to the running process, so this works in Dask workers of any
cluster, whatever their environment. A no-op where glibc is absent (macOS, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's maximum on 64-bit
TRIM_THRESHOLD = 256 * 2**20  # free memory kept at the heap top before returning it

_done = False


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True if applied."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
