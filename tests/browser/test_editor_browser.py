"""The block editor in a real browser: Playwright drives Debian's Chromium against a real server
(fixtures in tests/browser/conftest.py)."""
import re

import pytest

from nudge.services import email_doc
from nudge.services import templates as templates_service
from tests.browser.conftest import sign_in

pytestmark = pytest.mark.browser

TYPED = "Hello from a real browser"


def _drag(page, source, target, steps=24):
    """A real mouse drag (SortableJS's fallback needs the moves in between) that ends on the lower part of
    the target, so the block lands after it. The target is measured again at each step: the placeholder
    the drag opens in the list moves it."""
    start = source.bounding_box()
    x0, y0 = start["x"] + start["width"] / 2, start["y"] + start["height"] / 2
    page.mouse.move(x0, y0)
    page.mouse.down()
    for step in range(1, steps + 1):
        end = target.bounding_box()
        x1, y1 = end["x"] + end["width"] / 2, end["y"] + end["height"] * 0.8
        page.mouse.move(x0 + (x1 - x0) * step / steps, y0 + (y1 - y0) * step / steps)
        page.wait_for_timeout(15)
    for fraction in (0.8, 0.85, 0.8):  # settle on the target once SortableJS's 150 ms animations are done
        page.wait_for_timeout(250)
        end = target.bounding_box()
        page.mouse.move(end["x"] + end["width"] / 2, end["y"] + end["height"] * fraction)
    page.mouse.up()


def test_drag_a_text_block_edit_it_see_it_in_the_preview_and_after_reload(chromium, server, make_account):
    from playwright.sync_api import expect

    app, base_url = server
    account, owner = make_account(mfa=False)
    doc = {"schema": 1, "settings": {}, "blocks": [
        {"id": "head01", "type": "heading", "text": "Spring news"},
        {"id": "foot01", "type": "footer", "html": email_doc.FOOTER_HTML}]}
    template = templates_service.create_template(owner, account.id, name="Browser test", content_json=doc)

    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, base_url, owner)

    page.goto(f"{base_url}/templates/{template.id}/edit")
    expect(page.locator("#editor-status")).to_contain_text("Saved · version 1")
    _drag(page, page.locator(".palette-item[data-type=text]"), page.locator("#block-head01"))

    new_block = page.locator("#editor-stage .block-text")
    expect(new_block).to_have_count(1)
    expect(page.locator("#editor-stage .block")).to_have_count(3)
    expect(new_block).to_have_class(re.compile(r"\bis-selected\b"))  # the new block is open in the panel
    expect(page.locator("#editor-panel-title")).to_have_text("Text")

    area = page.locator("#editor-panel [data-rte-area]")
    area.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(TYPED)
    expect(new_block).to_contain_text(TYPED)
    expect(page.locator("#editor")).to_have_attribute("data-save-state", "saved", timeout=15000)
    expect(page.locator("#editor-status")).to_contain_text("Saved · version")

    page.click("#tab-preview")
    expect(page.frame_locator("#editor-preview").locator("body")).to_contain_text(TYPED, timeout=15000)

    page.reload()
    expect(page.locator("#editor-stage .block")).to_have_count(3)
    expect(page.locator("#editor-stage .block-text")).to_contain_text(TYPED)
    version = templates_service.latest_version(template.id)
    saved = [block for block in version.content_json["blocks"] if block["type"] == "text"]
    assert version.version >= 2 and len(saved) == 1 and TYPED in saved[0]["html"]
    assert errors == []
