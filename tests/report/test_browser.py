"""The report in a real browser: headless Chromium opens it from file://.

Uses Debian's ``chromium`` (``/usr/bin/chromium``, installed by ``make test``)
driven by playwright with that system executable; playwright never downloads
a browser here. In CI (``CI=true``) a missing browser fails the test; locally
it skips with the reason.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = os.environ.get("PETBIND_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: Where the screenshot goes (for a person to look at); a temp folder by default.
SHOT_DIR = Path(os.environ.get("PETBIND_SCREENSHOT_DIR", tempfile.gettempdir()))
#: A report to open instead of the fixture's (e.g. the demo's: ``petbind demo`` then
#: ``PETBIND_BROWSER_REPORT=petbind-demo/derivatives/petbind/report.html``).
OTHER_REPORT = os.environ.get("PETBIND_BROWSER_REPORT")


def _browser_or_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (make test installs it)"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (make test installs Debian's chromium)"
    return None


def test_report_opens_from_file_url_without_errors_and_the_viewer_draws(request):
    reason = _browser_or_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
    from PIL import Image
    from playwright.sync_api import sync_playwright

    report = (Path(OTHER_REPORT) if OTHER_REPORT
              else request.getfixturevalue("built_report")["report"])
    url = report.resolve().as_uri()
    problems: list[str] = []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True,
            viewport={"width": 1280, "height": 900})
        try:
            page = ctx.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on("request", lambda r: None if r.url.startswith(("data:", "blob:", url))
                    else problems.append(f"request made: {r.url}"))
            page.goto(url, wait_until="load")
            page.wait_for_function("window.petbindViewer !== undefined", timeout=30000)
            assert page.evaluate("window.petbindViewer") == "ready"
            # the target regions' outlines are drawn over the first map (the atlas is on the
            # statistics grid in the fixture and in the demo)
            outlines = page.evaluate("window.petbindViewerState.outlines")
            assert outlines["shown"] is True and "NAcc" in outlines["regions"]
            assert page.locator("#viewer-outlines").is_checked()
            images = page.evaluate(
                "() => Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
            assert len(images) >= 10
            undecoded = [alt for alt, complete, width in images if not (complete and width > 0)]
            assert undecoded == []
            # the viewer's canvas: screenshot it and count non-black pixels
            page.locator("#viewer-box").scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            canvas_png = page.locator("#viewer-canvas").screenshot()
            pixels = np.asarray(Image.open(io.BytesIO(canvas_png)).convert("RGB"), dtype=int)
            lit = np.count_nonzero(pixels.sum(axis=-1) > 60)
            assert lit > 0.02 * pixels.shape[0] * pixels.shape[1]
            # the colour-map control restyles the overlay without errors
            page.select_option("#viewer-colormap", "hot|electric_blue")
            page.click("#viewer-next")
            # a parametric map (mean BP_ND of a condition) replaces the t map
            maps = page.evaluate("Array.from(document.querySelectorAll('#viewer-volume option'))"
                                 ".map(o => o.textContent)")
            assert any("mean BP_ND" in m for m in maps) and any("t map" in m for m in maps)
            page.select_option("#viewer-volume", index=len(maps) - 1)
            page.wait_for_timeout(300)
            assert page.evaluate("window.petbindViewer") == "ready"
            # an injected region name is text on the page, never markup
            assert page.evaluate("document.querySelectorAll('script:not([src])').length") == 3
            if not OTHER_REPORT:
                assert "<script>alert(1)</script>" in page.evaluate(
                    "document.getElementById('fits').textContent")
            SHOT_DIR.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOT_DIR / "petbind_report.png"))
            page.locator("#viewer").screenshot(path=str(SHOT_DIR / "petbind_report_viewer.png"))
        finally:
            ctx.close()
    assert problems == []
