"""Every dashboard page in a real browser, signed in: no console error, no uncaught exception, no CSP
violation and no request to another origin, on load and across a few htmx swaps (fixtures in
tests/browser/conftest.py)."""
import io
import re
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from nudge.delivery.selection import outbox_dir
from nudge.extensions import db
from nudge.models import Contact, Message
from nudge.services import campaigns, imports, segments, templates, tracking
from tests.browser.conftest import sign_in
from tests.browser.test_segments_browser import settle

pytestmark = pytest.mark.browser

# Not pages: downloads, and fragments htmx fetches into a page (they are visited through their pages).
NOT_PAGES = {"imports.errors_csv", "imports.export", "sending_settings.provider_fields",
             "campaigns.audience_count", "campaigns.live", "imports.progress", "editor.history"}
# Pages for someone signed out, or reached only from an emailed link.
SIGNED_OUT = {"auth.login", "auth.mfa_challenge", "auth.signup"}

CONTENT = """<!doctype html><html><body>
<p>Hi {{ contact.first_name | default("there") }}, our <a href="https://shop.example/spring">spring collection</a>
 is here.</p>
<p>{{ account.postal_address }} · <a href="{{ unsubscribe_url }}">Unsubscribe</a> ·
 <a href="{{ view_in_browser_url }}">View in browser</a></p>
</body></html>"""


class Watch:
    """What a page reports that a user must never cause: console errors, page errors, CSP violations
    (Chromium logs each as a console error) and requests leaving the app's origin."""

    def __init__(self, page, base_url):
        self.problems = []
        self.where = ""
        origin = urlsplit(base_url)[:2]
        page.on("console", lambda msg: msg.type == "error" and self.problems.append(
            f"{self.where}: console: {msg.text}"))
        page.on("pageerror", lambda exc: self.problems.append(f"{self.where}: pageerror: {exc}"))
        page.on("request", lambda request: self._request(request, origin))

    def _request(self, request, origin):
        url = urlsplit(request.url)
        if url.scheme in ("data", "blob", "about"):
            return
        if url[:2] != origin:
            self.problems.append(f"{self.where}: request to another origin: {request.url}")


@pytest.fixture
def server_config(app):
    """Mail goes to the Outbox, the same folder for the server as for the test's own app (which sends)."""
    outbox = {"PROVIDERS_SMALL": ["outbox"], "PROVIDERS_BULK": ["outbox"], "OUTBOX_DIR": outbox_dir(app.config)}
    app.config.update(outbox)
    return outbox


def _world(owner, account):
    """One of each thing that has a page of its own, and a message in the Outbox; {argument name: value}."""
    account.postal_address = "1 Market Street\nSpringfield"
    account.default_from_email = "news@shop.example"
    contact = Contact(account_id=account.id, email="ann@shop.example", first_name="Ann", status="active",
                      tags=["vip"])
    db.session.add(contact)
    db.session.commit()
    segment = segments.create_segment(owner, "VIPs", "dynamic", {
        "match": "all", "conditions": [{"field": "tags", "op": "contains_any", "value": ["vip"]}]})
    template = templates.create_template(owner, account.id, name="Spring letter", format="html",
                                         content_source=CONTENT)
    campaign = campaigns.create_campaign(owner, {
        "name": "Spring", "subject": "Spring is here", "from_email": "news@shop.example",
        "from_name": "Shop News", "content_html": CONTENT, "audience": {"all": True}})
    campaigns.send_now(owner, campaign.id)
    # A starter design (blocks compiled by MJML) in the Outbox too, as a test send.
    templates.sync_gallery()
    designed = campaigns.create_campaign(owner, {"name": "Designed", "subject": "Designed", "audience": {"all": True},
                                                 "from_email": "news@shop.example", "from_name": "Shop News"})
    campaigns.set_content_from(owner, designed.id, "gallery", copy_of=templates.list_gallery()[0].id)
    campaigns.send_test(owner, designed.id, ["me@shop.example"])
    imp = imports.create_csv_import(owner, io.BytesIO(b"email,first_name\nbob@shop.example,Bob\nnot-an-email,X\n"),
                                    "people.csv")
    sent = db.session.scalars(sa.select(Message).where(Message.campaign_id == campaign.id)).all()
    return {"views_in_browser": [f"/t/v/{tracking.token_for(message.id, campaign.id)}" for message in sent],
            "contact_id": contact.id, "segment_id": segment.id, "template_id": template.id,
            "campaign_id": campaign.id, "import_id": imp.id, "number": 1}


def _pages(app, ids):
    """The dashboard's GET pages from the URL map: those without arguments and those whose arguments are ids
    of the things made above."""
    pages = []
    with app.test_request_context():
        from flask import url_for
        for rule in app.url_map.iter_rules():
            if ("GET" not in rule.methods or rule.endpoint in NOT_PAGES | SIGNED_OUT
                    or rule.rule.startswith(("/api/v1", "/static", "/hooks", "/t/", "/uploads"))
                    or not set(rule.arguments) <= set(ids)):
                continue
            pages.append(url_for(rule.endpoint, **{name: ids[name] for name in rule.arguments}))
    return sorted(set(pages))


def _visit(page, watch, base_url, path):
    watch.where = path
    page.goto(base_url + path)
    page.wait_for_load_state("networkidle")


def test_every_page_and_a_few_swaps_log_no_error_and_load_nothing_from_elsewhere(chromium, server, make_account):
    from playwright.sync_api import expect

    app, base_url = server
    account, owner = make_account(mfa=False)
    ids = _world(owner, account)
    pages = _pages(app, ids)
    assert {"/contacts/", "/segments/new", "/settings/account", "/api/docs", "/outbox/"} <= set(pages)

    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page, base_url)
    sign_in(page, base_url, owner)

    _visit(page, watch, base_url, "/outbox/")
    messages = sorted(set(re.findall(r'href="(/outbox/[^"/]+)"', page.content())))
    assert len(messages) == 2
    pages += messages + [f"{path}/html" for path in messages]
    for path in pages:
        _visit(page, watch, base_url, path)
    # The Outbox shows a message with its links made inert (they lead to the preview page); the recipient's
    # own "View in browser" copy is the signed link of a real message.
    previews = {link for path in messages
                for link in re.findall(r'href="[^"]*(/[upv]/preview)"', page.request.get(f"{base_url}{path}/html").text())}
    assert "/v/preview" in previews
    views_in_browser = set(previews) | set(ids["views_in_browser"])
    for path in sorted(views_in_browser):
        _visit(page, watch, base_url, path)

    # htmx swaps: a filter on contacts, the segment builder's live count, a settings form save.
    _visit(page, watch, base_url, "/contacts/")
    page.locator("input[name=q]").first.fill("ann")
    settle(page)
    expect(page.locator("#contact-results")).to_contain_text("ann@shop.example")

    _visit(page, watch, base_url, "/segments/new")
    page.get_by_role("button", name="+ Field rule").click()
    settle(page)
    page.locator("select[id$='-field']").select_option("tags")
    settle(page)  # the rule row is swapped for the field's operators and value input
    page.locator("input[id$='-value']").first.fill("vip")
    expect(page.locator("#segment-live")).to_contain_text("1 contact")
    settle(page)

    _visit(page, watch, base_url, "/settings/account")
    page.locator("form[hx-post] button[type=submit]").first.click()
    settle(page)
    page.wait_for_load_state("networkidle")

    assert watch.problems == []


LONG = "Spring-collection-" * 5  # one long word, as a pasted URL or product code is


def _when_fits(page, scope):
    """The When column of the table in scope is whole on screen: inside the table's box without scrolling it,
    its time on one line."""
    wrap = page.locator(f"{scope} .table-wrap").first
    box = wrap.bounding_box()
    scroll_width, client_width = (wrap.evaluate(f"e => e.{name}") for name in ("scrollWidth", "clientWidth"))
    for time in wrap.locator("tbody td.when time").all():
        cell = time.bounding_box()
        line_height = float(time.evaluate("e => parseFloat(getComputedStyle(e).lineHeight)"))
        assert cell["x"] + cell["width"] <= box["x"] + box["width"] and cell["height"] < 1.5 * line_height
    assert scroll_width <= client_width


def test_long_cells_do_not_cut_the_when_column_at_1280_px(chromium, server, make_account):
    app, base_url = server
    account, owner = make_account(mfa=False)
    contact = Contact(account_id=account.id, email="ann@shop.example", status="active")
    db.session.add(contact)
    db.session.commit()
    from nudge.services import contacts
    contacts.update_contact(owner, contact.id, {"tags": [LONG, "vip"]})
    campaigns.create_campaign(owner, {"name": LONG, "subject": LONG})

    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, base_url, owner)
    page.goto(f"{base_url}/campaigns/")
    _when_fits(page, "#campaign-results")
    page.goto(f"{base_url}/contacts/{contact.id}?tab=activity")
    assert page.locator("#contact-tab td.when time").count() >= 1
    _when_fits(page, "#contact-tab")
