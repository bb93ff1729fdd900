"""The app in a real browser: headless Chromium (Debian's `chromium` package, driven by Playwright with
`executable_path`; no browser download) opens the page, sets a budget, clicks Generate, waits for both images and
saves a full-page screenshot.

Needs `apt-get install -y chromium` and `pip install playwright`; skipped, saying so, when either is missing.
Runs on the tiny random-weight models (screenshot in the test's temporary folder) unless FLEXIDIT_TEST_ASSETS names
an assets folder: with the trained assets/ it writes the README's docs/screenshot-app.png.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
README_SCREENSHOT = ROOT / "docs" / "screenshot-app.png"

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install playwright)"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"),
]


def test_budget_generate_and_screenshot(tiny_assets, tmp_path):
    from test_app import launch

    from flexi_core.loading import load_model
    from flexi_core.registry import get_spec
    from flexi_core.sampling import budget_schedule
    assets = os.environ.get("FLEXIDIT_TEST_ASSETS") or tiny_assets
    screenshot = README_SCREENSHOT if os.environ.get("FLEXIDIT_TEST_ASSETS") else tmp_path / "screenshot-app.png"
    demo, url = launch(assets)
    spec = get_spec("shapes")  # the page's default model
    budget = 40
    expected = budget_schedule(load_model(spec.name, assets=Path(assets), merged=spec.embedded), budget / 100,
                               spec.steps, spec.guidance)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url)
                preview = page.locator("#preview")
                expect(preview).to_contain_text("of static FLOPs", timeout=60_000)

                box = page.locator("#budget input[type=number]")
                box.fill(str(budget))
                box.press("Enter")
                # the schedule the budget implies is shown before anything runs
                expect(preview).to_contain_text(f"{expected.weak_steps} of {spec.steps} steps weak",
                                                timeout=30_000)

                page.locator("#generate").click()
                images = page.locator("#comparison img")
                expect(images).to_have_count(2, timeout=120_000)
                for i in range(2):
                    expect(images.nth(i)).to_have_attribute("src", re.compile(r"\.png"), timeout=30_000)
                    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                           arg=images.nth(i).element_handle(), timeout=30_000)
                expect(page.locator("#flexible-stats")).to_contain_text(f"Flexible ({budget}% budget)")
                expect(page.locator("#static-stats")).to_contain_text("FLOPs")
                screenshot.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            finally:
                browser.close()
    finally:
        demo.close()
    assert screenshot.stat().st_size > 10_000
