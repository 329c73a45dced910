"""The OS Chromium driven by playwright, for the browser tests (the dashboard, the device page):
scripts/install-browser.sh installs it; EDGESWITCH_NO_BROWSER=1 skips those tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("EDGESWITCH_CHROMIUM", "/usr/bin/chromium")
NO_BROWSER = pytest.mark.skipif(os.environ.get("EDGESWITCH_NO_BROWSER") == "1",
                                reason="EDGESWITCH_NO_BROWSER=1")


def sync_playwright_or_fail():
    """playwright's Chromium launcher for the OS browser; a clear failure without one."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]'")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no browser at {CHROMIUM}: run scripts/install-browser.sh (or set "
                    "EDGESWITCH_NO_BROWSER=1 to skip this test)")
    return sync_playwright
