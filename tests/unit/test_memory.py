"""The malloc settings take on glibc (CI, the Docker image) and are a no-op elsewhere."""

from __future__ import annotations

import platform

from shared.runtime.memory import tune_malloc


def test_the_malloc_settings_take_exactly_where_glibc_runs():
    assert tune_malloc() is (platform.libc_ver()[0] == "glibc")
