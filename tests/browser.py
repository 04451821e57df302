"""Headless Debian Chromium for the browser tests, driven by chromedriver through Selenium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
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
