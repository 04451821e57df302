"""Stored XSS payloads in a real browser: no script runs on any admin page that shows them."""

from __future__ import annotations

from typing import Any

import pytest
from test_django_browser import browser, login  # noqa: F401 - a fixture and a helper
from test_django_security import PERMS, XSS, hostile_run, payload_pages

pytestmark = pytest.mark.usefixtures("db")


def no_script_ran(driver: Any) -> None:
    """No alert is open and the payloads' ``window.__pwned`` flag was never set."""
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert
        text = alert.text
        alert.accept()
    except NoAlertPresentException:
        pass
    else:
        raise AssertionError(f"an alert fired: {text!r}")
    assert driver.execute_script("return typeof window.__pwned") == "undefined"


def test_xss_payloads_render_as_text_in_chromium(live_server, browser, make_run,  # noqa: F811
                                                 make_user) -> None:
    """Arguments, outputs, errors and tracebacks holding payloads show as text; none executes."""
    from selenium.webdriver.common.by import By

    run = hostile_run(make_run)
    waiting = hostile_run(make_run, "WAITING", wait_kind="event", wait_step="wait#0",
                          wait_event=XSS[0][:60], wait_key=XSS[1][:60])
    user = make_user(*PERMS)
    pages = payload_pages(run, waiting)
    login(browser, live_server, user, pages[0])
    for url in pages:
        browser.get(f"{live_server}{url}")
        no_script_ran(browser)
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "window.__pwned" in body, f"{url}: the payload should be visible as text"
        # The timeline's collapsed outputs and tracebacks are opened too.
        for details in browser.find_elements(By.CSS_SELECTOR, "details"):
            browser.execute_script("arguments[0].open = true", details)
        no_script_ran(browser)
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
