"""A headless Chromium (Debian's package, driven by Playwright) on the dashboard of the live service.

Every page blocks requests that leave the service, so the tests also show the pages work offline.
Screenshots go to .gradserve/screenshots/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Service

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / ".gradserve" / "screenshots"
WAIT_MS = 60_000
WIDTH = 1400  # the width the dashboard must fit: the screenshots


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: install Debian's package (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


class Tab:
    """A browser page on the dashboard; it refuses every request that leaves the service and keeps JS errors."""

    def __init__(self, browser: Any, service: Service) -> None:
        self.service = service
        self.context = browser.new_context(viewport={"width": WIDTH, "height": 1000})
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.hold: Any = None  # a predicate on requests to keep unanswered until a test lets them go
        self.held: list[Any] = []
        self.context.route("**/*", self._only_the_service)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _only_the_service(self, route: Any) -> None:
        if self.hold is not None and self.hold(route.request):
            self.held.append(route)
        elif route.request.url.startswith(self.service.url):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def open(self, fragment: str, key: str | None) -> Any:
        self.page.goto(f"{self.service.url}/ui/{fragment}")
        if key is not None:
            self.page.fill("#key-input", key)
            self.page.click("#key-save")
        return self.page

    def points(self, selector: str) -> int:
        return int(self.page.get_attribute(selector, "data-points") or 0)

    def frames(self, count: int = 2) -> None:
        """Wait for the page to render ``count`` frames: what a chart draws after its data is drawn by then."""
        self.page.evaluate(
            "(n) => new Promise((done) => {"
            " const next = (k) => (k ? requestAnimationFrame(() => next(k - 1)) : done()); next(n); })",
            count,
        )

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert not self.outside, f"the page asked for outside resources: {self.outside}"
        assert not self.errors, f"JavaScript errors: {self.errors}"


@pytest.fixture
def tab(browser: Any, service: Service) -> Iterator[Tab]:
    t = Tab(browser, service)
    yield t
    t.close()
