"""A headless Chromium for tests: Debian's ``chromium``, driven by Playwright.

No browser is downloaded (``playwright install`` is never run): Playwright
is pointed at the system's binary with ``executable_path``. Where there is
no Playwright or no Chromium, the tests that need one are skipped, saying
which is missing; ``.ci/run`` installs both.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

PLAYWRIGHT_MISSING = ("no browser test: Playwright for Python is not installed "
                      "(pip install -r requirements-dev.txt)")
#: Where to look for the browser, first match wins; CHROMIUM overrides.
CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


@contextmanager
def headless_chromium() -> Iterator[Browser]:
    """The browser, or a skip that says what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(PLAYWRIGHT_MISSING)
    path = chromium_path()
    if path is None:
        pytest.skip("no browser test: no Chromium on PATH (apt-get install chromium, as .ci/run "
                    "does; or set CHROMIUM to the binary)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def console_errors(page: Page) -> list[str]:
    """A list that fills with the page's console errors and uncaught exceptions."""
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    return errors
