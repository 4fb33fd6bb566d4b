"""What the real-browser tests share: Debian's Chromium driven by Playwright, and an app served
by uvicorn in a thread on a free local port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: Chromium's switches here: no sandbox (root), no GPU, and no background traffic to hosts this
#: closed machine cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("BREASTPATH_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def served(app: Any, *, log_level: str = "warning") -> Iterator[str]:
    """``app`` served by uvicorn in a thread; yields its base URL, stops it on exit."""
    import uvicorn

    port = free_port()
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def chromium_page(
    *, errors: list[str], timeout_ms: int = 30_000, **context_options: Any
) -> Iterator[Any]:
    """A page of a fresh headless Chromium context (``context_options``: Playwright's
    ``new_context``); its uncaught exceptions and console errors go to ``errors``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(**context_options)
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        try:
            yield page
        finally:
            context.close()
            browser.close()
