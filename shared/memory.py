"""Keep glibc from giving every thread a heap of its own.

glibc's malloc hands each thread that allocates an arena of its own (up to
eight per core), and memory freed into an arena stays with the process.
With 64 Waitress threads each serving a large GET /messages now and then,
every thread's arena settles at the size of the largest response it built:
a secondary with 10 MB of messages measured 43 MB after the load and 143 MB
after ten reads; with two arenas it stays at 55 MB. Python's own allocator
does not need per-thread arenas (the GIL serialises it), so little is lost.

Call ``limit_malloc_arenas`` first thing in ``main``, before any thread
starts. Elsewhere than glibc it does nothing. Thread: main, at start.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: mallopt's M_ARENA_MAX parameter (malloc.h).
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """True if glibc took the limit."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return mallopt(_M_ARENA_MAX, arenas) == 1
