"""Screenshot each starter-gallery template into nudge/static/img/gallery/<slug>.png.

Run from the checkout: `.venv/bin/python scripts/gallery_thumbnails.py [slug ...]`. Each document is
compiled the way the product compiles it (email_doc -> MJML -> HTML), its merge tags are filled with
sample values, and the top of the email (600x780 CSS pixels) is captured at half scale (300x390) by
Playwright driving Debian's Chromium. Images under /static/ are loaded from the checkout by file URL.
"""
from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path

import jinja2
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nudge.services import email_doc  # noqa: E402  (needs ROOT on sys.path first)

CHROMIUM = "/usr/bin/chromium"
GALLERY = ROOT / "nudge" / "gallery"
THUMBNAILS = ROOT / "nudge" / "static" / "img" / "gallery"
VIEWPORT = {"width": 600, "height": 780}
SCALE = 0.5
MAX_BYTES = 80_000

# What a subscriber named Alex would see; the links go nowhere in a screenshot.
SAMPLE_CONTEXT = {
    "contact": {"first_name": "Alex", "last_name": "Morgan", "email": "alex@example.com"},
    "account": {"name": "Juniper & Co.", "postal_address": "Juniper & Co., 12 Orchard Lane, Riverside RS1 2AB"},
    "unsubscribe_url": "#", "preferences_url": "#", "view_in_browser_url": "#",
}


@contextlib.contextmanager
def launch_chromium():
    """Yield a headless Debian Chromium driven by Playwright."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def sample_html(slug: str) -> str:
    """The gallery document compiled to email HTML with sample merge-tag values and file:// images."""
    doc = json.loads((GALLERY / f"{slug}.json").read_text())
    compiled = email_doc.to_html(email_doc.validate_document(doc), base_url=(ROOT / "nudge").as_uri())
    return jinja2.Environment(autoescape=True).from_string(compiled).render(SAMPLE_CONTEXT)


def screenshot(browser, slug: str) -> Path:
    """Capture one template's thumbnail; fail loudly if it is over MAX_BYTES."""
    target = THUMBNAILS / f"{slug}.png"
    with tempfile.TemporaryDirectory() as folder:
        page_file = Path(folder) / f"{slug}.html"
        page_file.write_text(sample_html(slug))
        page = browser.new_page(viewport=VIEWPORT, device_scale_factor=SCALE)
        page.goto(page_file.as_uri(), wait_until="load")
        page.screenshot(path=str(target), type="png")
        page.close()
    size = target.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{target.name} is {size} bytes, over {MAX_BYTES}")
    return target


def main(slugs: list[str]) -> None:
    """Make the thumbnails of the named templates, or of every template in the gallery's index."""
    index = json.loads((GALLERY / "index.json").read_text())
    slugs = slugs or [entry["slug"] for entry in index]
    with launch_chromium() as browser:
        for slug in slugs:
            target = screenshot(browser, slug)
            print(f"{target.relative_to(ROOT)}  {target.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
