"""The shared browser harness: a live uvicorn server, Debian's chromium through Playwright, screenshots.

Loaded as a plugin by conftest.py, so its fixtures are everywhere:

- `live`: the app served by uvicorn on a free loopback port over the run's committed PostgreSQL database,
  Celery tasks inline (embedded mode) and mail to the aiosmtpd test server; yields (base_url, settings).
- `chromium`: a launched browser; `chromium.new_page(base_url)` opens a page whose every request is
  recorded, and the test fails at teardown if any went to a host other than `base_url`'s.

`screenshot(page, name)` saves test-output/screenshots/NAME-1280.png and NAME-390.png (full page).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import uvicorn

from newsletter.config import Settings
from newsletter.web import create_app
from tests.conftest import OUTPUT

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from tests.smtpserver import RecordingSMTPServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = OUTPUT / "screenshots"
WIDTHS = (1280, 390)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """uvicorn in a thread, on a free loopback port."""

    def __init__(self, settings: Settings, port: int) -> None:
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live(
    committed_pg: str,
    smtp_server: RecordingSMTPServer,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, Settings]]:
    from newsletter.delivery import sending
    from worker import tasks

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = make_settings(database_url=committed_pg, smtp_url=smtp_server.url, base_url=base_url)
    # Embedded mode: the tasks run inline, reading these settings instead of the environment's.
    monkeypatch.setattr(tasks, "get_settings", lambda: settings)
    if not tasks.app.conf.task_always_eager:
        pytest.skip("NEWSLETTER_BROKER_URL is set: this test runs the tasks in embedded mode")
    tasks._mailer.cache_clear()
    tasks._rate_limiter.cache_clear()
    sending._prepared.clear()  # campaign ids restart after the truncation of the previous test
    with LiveServer(settings, port):
        yield base_url, settings
    tasks._mailer.cache_clear()
    tasks._rate_limiter.cache_clear()
    sending._prepared.clear()


@dataclass
class Chromium:
    """A launched chromium; pages from `new_page` record every request to another host in `foreign`."""

    browser: Browser
    foreign: list[str] = field(default_factory=list)

    def new_page(self, base_url: str, *, width: int = 1280, height: int = 800, **options: Any) -> Page:
        allowed = urlsplit(base_url).netloc
        context = self.browser.new_context(viewport={"width": width, "height": height}, **options)

        def record(request: Any) -> None:
            parts = urlsplit(request.url)
            if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != allowed:
                self.foreign.append(request.url)

        context.on("request", record)
        return context.new_page()


@pytest.fixture
def chromium() -> Iterator[Chromium]:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed")
    with sync_playwright() as playwright:
        launched = Chromium(playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS))
        try:
            yield launched
        finally:
            launched.browser.close()
    assert launched.foreign == [], f"pages requested other hosts: {launched.foreign}"


def screenshot(page: Page, name: str) -> list[Path]:
    """Full-page screenshots of `page` at 1280 and 390 px wide, under test-output/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    viewport = page.viewport_size or {"width": 1280, "height": 800}
    paths = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": viewport["height"]})
        path = SCREENSHOTS / f"{name}-{width}.png"
        page.screenshot(path=str(path), full_page=True)
        paths.append(path)
    page.set_viewport_size(viewport)
    return paths
