"""The Call admin pages in a real headless Chromium at 1366 px: nothing cut off or scrolled
sideways. Screenshots land in the test's tmp_path (`--basetemp` to keep them)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from tests.calls_fixtures import calls_build

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"
    ),
]

# The page's width against the window's, and every element that hides or scrolls part of
# its content sideways (the admin's list and form rows have `overflow: hidden` or `auto`);
# screen-reader-only text is hidden on purpose.
OVERFLOW = """() => ({
    page: document.documentElement.scrollWidth,
    window: window.innerWidth,
    cut: [...document.querySelectorAll('*')]
        .filter(e => !e.closest('.visually-hidden')
                     && getComputedStyle(e).overflowX !== 'visible'
                     && e.scrollWidth > e.clientWidth + 1)
        .map(e => `${e.tagName}.${e.className}: ${e.scrollWidth} > ${e.clientWidth}`),
})"""


def assert_fits(page: Any) -> None:
    sizes = page.evaluate(OVERFLOW)
    assert sizes["page"] <= sizes["window"] and not sizes["cut"], sizes


def test_the_call_pages_fit_1366_px(
    live_server: Any,
    settings: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    transactional_db: None,
) -> None:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls here are safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    calls = calls_build(tmp_path, settings)
    get_user_model().objects.create_superuser("operator", "", "a-long-password")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", "a-long-password")
        with page.expect_navigation():
            page.click("input[type=submit]")

        page.goto(f"{live_server.url}/admin/cdr/call/")
        page.screenshot(path=tmp_path / "call-list.png", full_page=True)
        assert_fits(page)
        assert "1001 → 2000" in page.locator("#result_list").inner_text()

        page.goto(f"{live_server.url}/admin/cdr/call/{calls.transferred.pk}/change/")
        page.screenshot(path=tmp_path / "call-detail.png", full_page=True)
        assert_fits(page)
        with page.expect_navigation():
            page.locator("table.cdr-fields a").first.click()
        assert "/admin/cdr/cdr/" in page.url
        browser.close()
