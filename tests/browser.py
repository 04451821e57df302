"""Headless Debian Chromium for the browser tests, driven by chromedriver through Selenium."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import services

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               "--disable-dev-shm-usage", "--window-size=1440,1000"]


def chromium() -> Iterator[Any]:
    """Yield a headless Chromium WebDriver (skips, or fails under CI, when it is missing)."""
    binary = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    driver_path = CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else shutil.which("chromedriver")
    if not binary or not driver_path:
        services.unavailable("chromium and chromedriver are not installed "
                             "(apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@cache
def screenshot_dir() -> Path:
    """Where the browser tests save their screenshots.

    ``DURABLE_SCREENSHOTS`` names it (``make screenshots`` sets ``docs/images``, refreshing
    the documentation's pictures); otherwise a temporary folder, removed at exit: a test
    run writes nothing into the repository.
    """
    named = os.environ.get("DURABLE_SCREENSHOTS")
    if named:
        folder = Path(named)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    folder = Path(tempfile.mkdtemp(prefix="durable-screenshots-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def shot(driver: Any, name: str, *, min_height: int = 600, max_height: int = 2000) -> Path:
    """Save a full-height screenshot ``<name>.png`` to :func:`screenshot_dir`; its path."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1680, min(max(int(height) + 40, min_height), max_height))
    path = screenshot_dir() / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1440, 1000)
    return path
