"""How glibc's malloc keeps and returns a node's memory.

Two settings, both measured on the benchmark's large log (100,000 messages,
then GET /messages seven times on each node):

- **Two arenas.** glibc hands each thread that allocates an arena of its
  own (up to eight per core), and memory freed into an arena stays with the
  process. With 64 Waitress threads each serving a large GET /messages now
  and then, every thread's arena settled at the size of the largest
  response it built: a secondary with 10 MB of messages measured 43 MB
  after the load and 143 MB after ten reads; with two arenas, 55 MB.
  Python's own allocator does not need per-thread arenas (the GIL
  serialises it), so little is lost.
- **Fixed mmap and trim thresholds.** By default glibc raises its mmap
  threshold to the size of any mmapped block that is freed (up to 32 MB),
  and its trim threshold to twice that. After one large response, blocks
  of that size come from the heap instead, and the heap is never trimmed:
  the primary stayed at 87 MB after the reads, s1 at 80 MB. Fixed (which
  also turns the raising off), blocks of 1 MiB and more are mapped and
  unmapped on their own, and free space over 4 MiB at the heap's top goes
  back to the system: 56 and 50 MB. Append throughput did not change
  beyond the noise of A/B runs (docs/benchmarks.md).

Call ``tune_malloc`` first thing in ``main``, before any thread starts.
Elsewhere than glibc it does nothing. Thread: main, at start.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: mallopt's parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

MALLOC_ARENAS = 2
#: Blocks of this size and more are mmapped, and unmapped when freed.
MMAP_THRESHOLD_BYTES = 1 << 20
#: Free space at the top of the heap beyond this goes back to the system.
TRIM_THRESHOLD_BYTES = 4 << 20


def tune_malloc() -> bool:
    """True if glibc took every setting."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    settings = ((_M_ARENA_MAX, MALLOC_ARENAS), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
                (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return all([mallopt(parameter, value) == 1 for parameter, value in settings])
