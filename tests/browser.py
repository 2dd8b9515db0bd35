"""Open report pages in headless Chromium (Debian's package) and list what a reader would see break."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageCheck:
    page: Path
    console_errors: list[str] = field(default_factory=list)
    broken_images: int = 0
    n_images: int = 0
    external_requests: list[str] = field(default_factory=list)


def check_pages(pages: list[Path], screenshot: Path | None = None) -> list[PageCheck]:
    """Load each page; collect console errors, page errors, broken images and any non-file request."""
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        for page_path in pages:
            check = PageCheck(page_path)
            page = browser.new_page(viewport={"width": 1280, "height": 1800})
            page.on(
                "console", lambda m, c=check: c.console_errors.append(m.text) if m.type == "error" else None
            )
            page.on("pageerror", lambda e, c=check: c.console_errors.append(str(e)))
            page.on(
                "request",
                lambda r, c=check: (
                    c.external_requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None
                ),
            )
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            check.n_images = page.evaluate("document.images.length")
            check.broken_images = page.evaluate(
                "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length"
            )
            if screenshot is not None and page_path == pages[0]:
                page.screenshot(path=str(screenshot), full_page=False)
            page.close()
            results.append(check)
        browser.close()
    return results
