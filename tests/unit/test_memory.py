"""The malloc arena limit takes on glibc (CI, the Docker image) and is a no-op elsewhere."""

from __future__ import annotations

import platform

from shared.memory import limit_malloc_arenas


def test_the_arena_limit_takes_exactly_where_glibc_runs():
    assert limit_malloc_arenas() is (platform.libc_ver()[0] == "glibc")
