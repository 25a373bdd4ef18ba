"""A real browser for the dashboard's tests: Playwright driving Debian's Chromium (``make test`` installs it).

Never skipped: a machine without the browser fails the tests with a message saying how to install it.
Chromium's background connections (updates, sync, field trials) are off: the tests' machines have no
internet, and the dashboard must work without it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, sync_playwright

#: The browser binary; Debian's package puts it here (``make browser`` installs it).
CHROMIUM = os.environ.get("TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",  # the tests run as root here
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: `make browser` (part of `make test`) installs Debian's chromium package; "
            "TEST_CHROMIUM names another binary (not RETRAIN_*: the daemon refuses unknown RETRAIN_ variables)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
