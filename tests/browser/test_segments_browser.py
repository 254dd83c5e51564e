"""The segment builder in a real browser: the live count follows what is typed or pasted (fixtures in
tests/browser/conftest.py)."""
import pytest

from nudge.extensions import db
from nudge.models import Contact
from tests.browser.conftest import sign_in

pytestmark = pytest.mark.browser


def settle(page):
    """Wait until htmx has swapped and settled what it fetched: its listeners are on the new elements then.
    (No wait_for_function: the page's CSP forbids evaluating strings.)"""
    from playwright.sync_api import expect
    expect(page.locator(".htmx-request, .htmx-swapping, .htmx-settling")).to_have_count(0)
    page.wait_for_timeout(50)


def test_the_live_count_follows_a_pasted_value_and_a_changed_operator(chromium, server, make_account):
    from playwright.sync_api import expect

    app, base_url = server
    account, owner = make_account(mfa=False)
    db.session.add_all([Contact(account_id=account.id, email=f"{name}@shop.example", status="active", tags=tags)
                        for name, tags in (("ann", ["vip"]), ("bob", ["lead"]), ("cat", ["vip", "lead"]),
                                           ("dan", None))])
    db.session.commit()

    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, base_url, owner)
    page.goto(f"{base_url}/segments/new")
    live = page.locator("#segment-live")
    expect(live).to_contain_text("4 contacts")

    page.get_by_role("button", name="+ Field rule").click()
    field = page.locator("select[id$='-field']")
    expect(field).to_have_count(1)
    settle(page)
    field.select_option("tags")
    operator = page.locator("select[id$='-op']").first
    expect(operator).to_have_value("contains_any")
    # fill() is a paste: an input event and no key presses.
    page.locator("input[id$='-value']").first.fill("vip, lead")
    expect(live).to_contain_text("3 contacts")

    operator.select_option("contains_all")
    expect(live).to_contain_text("1 contact")
    expect(live).to_contain_text("cat@shop.example")
    assert errors == []
