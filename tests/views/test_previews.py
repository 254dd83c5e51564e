"""No link of a preview acts on a contact: the Outbox (HTML, text part, headers), the campaign's preview and
test sends (as they arrive at a real SMTP server). Every link each one shows is followed the ways a person
or a mailbox provider would (GET, the page's button, the RFC 8058 one-click POST, "subscribe again"), and the
recipient, the campaign's counts and the suppression list stay as they were."""
import asyncio
import email
import email.policy
import html as html_text
import re

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from nudge.extensions import db
from nudge.models import Campaign, Contact, EmailEvent, Suppression
from nudge.services import campaigns, sending
from tests.campaign_helpers import add_contacts, ready_campaign
from tests.delivery.conftest import RecordingHandler, SMTPServer, free_port

BASE = "https://mail.shop.example"
HTMX = {"HX-Request": "true"}
CONTENT = ('<html><body><p>Hi {{ contact.first_name }}</p><p><a href="https://shop.example/spring">Spring</a></p>'
           '<p>{{ account.postal_address }}</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · '
           '<a href="{{ preferences_url }}">Preferences</a> · <a href="{{ view_in_browser_url }}">View online</a>'
           '</p></body></html>')
URL = re.compile(r"https?://[^\s\"'<>]+")


@pytest.fixture
def smtp():
    controller = Controller(RecordingHandler(), hostname="127.0.0.1", port=free_port(), loop=asyncio.new_event_loop())
    controller.start()
    yield SMTPServer(controller, controller.handler, controller.port)
    controller.stop()


@pytest.fixture
def app(make_app, smtp, tmp_path):
    return make_app(SMTP_URL=f"smtp://127.0.0.1:{smtp.port}", PROVIDERS_SMALL=["outbox"], PROVIDERS_BULK=["outbox"],
                    OUTBOX_DIR=str(tmp_path / "outbox"), BASE_URL=BASE)


@pytest.fixture
def shop(app, make_account, login):
    """Ann, subscribed; Bob, who unsubscribed; a ready campaign with every recipient link; its owner signed in."""
    account, owner = make_account()
    ann = add_contacts(account, "ann@example.org", first_name="Ann")[0]
    bob = add_contacts(account, "bob@example.org", status="unsubscribed", first_name="Bob")[0]
    campaign = ready_campaign(owner, account, content_html=CONTENT, from_email="news@shop.example")
    web = app.test_client()
    login(web, owner)
    return {"account": account, "owner": owner, "ann": ann, "bob": bob, "campaign": campaign, "web": web}


def state(shop):
    """Everything a followed link could have changed."""
    db.session.expire_all()
    statuses = db.session.execute(sa.select(Contact.email, Contact.status).where(
        Contact.account_id == shop["account"].id).order_by(Contact.email)).all()
    changes = db.session.scalar(sa.select(sa.func.count()).select_from(EmailEvent).where(
        EmailEvent.event_type.in_(["contact.unsubscribed", "contact.subscribed"])))
    counts = db.session.execute(sa.select(Campaign.unsubscribed_count, Campaign.opened_count, Campaign.clicked_count)
                                .where(Campaign.account_id == shop["account"].id)).all()
    suppressed = db.session.scalar(sa.select(sa.func.count()).select_from(Suppression).where(
        Suppression.account_id == shop["account"].id))
    return statuses, changes, counts, suppressed


def follow_every_link(app, text):
    """Follow each link to this app found in text, as a recipient's browser and mailbox provider would; returns
    the paths followed."""
    web, paths = app.test_client(), []
    for url in sorted(set(URL.findall(html_text.unescape(text)))):
        if not url.startswith(BASE + "/"):
            continue
        path = url[len(BASE):]
        paths.append(path)
        page = web.get(path)
        page.close()
        if path.endswith("/preview"):
            assert "This is a preview" in page.get_data(as_text=True)
        for form in ({}, {"List-Unsubscribe": "One-Click"}, {"action": "subscribe"}):
            web.post(path, data=form).close()
    return paths


def assert_inert(app, shop, *texts):
    before = state(shop)
    followed = follow_every_link(app, "\n".join(texts))
    assert {"/u/preview", "/p/preview", "/v/preview"} <= set(followed), followed
    assert not [path for path in followed if path.startswith("/t/")], followed
    assert state(shop) == before


def test_every_link_of_a_sent_email_in_the_outbox_changes_nothing(app, shop):
    campaigns.send_now(shop["owner"], shop["campaign"].id)
    web = shop["web"]
    name = re.search(r'href="/outbox/([^"/]+)"', web.get("/outbox/").get_data(as_text=True)).group(1)
    html = web.get(f"/outbox/{name}/html").get_data(as_text=True)
    page = web.get(f"/outbox/{name}").get_data(as_text=True)  # the text part and every header
    assert "Hi Ann" in html and "List-Unsubscribe" in page and "/t/u/" not in page + html

    assert_inert(app, shop, html, page)


def test_every_link_of_a_test_send_in_the_outbox_changes_nothing(app, shop):
    sent = shop["web"].post(f"/campaigns/{shop['campaign'].id}/test", data={"emails": "me@shop.example"},
                            headers=HTMX)
    assert sent.status_code == 200
    name = re.search(r'href="/outbox/([^"/]+)"', shop["web"].get("/outbox/").get_data(as_text=True)).group(1)

    assert_inert(app, shop, shop["web"].get(f"/outbox/{name}/html").get_data(as_text=True),
                 shop["web"].get(f"/outbox/{name}").get_data(as_text=True))


@pytest.mark.parametrize("who", ["ann", "bob"])
def test_every_link_of_a_test_send_personalised_for_a_real_contact_changes_nothing(app, shop, smtp, who):
    """A test send arrives at a real address, personalised for a real contact: its links still act on nobody."""
    app.config.update(PROVIDERS_SMALL=["smtp"], PROVIDERS_BULK=["smtp"])
    results = sending.send_test(shop["owner"], shop["campaign"].id, ["me@shop.example"], contact_id=shop[who].id)
    assert [result["status"] for result in results] == ["sent"]
    arrived = email.message_from_bytes(smtp.messages[0].content, policy=email.policy.default)
    html = arrived.get_body(("html",)).get_content()
    text = arrived.get_body(("plain",)).get_content()
    assert f"Hi {who.title()}" in html

    assert_inert(app, shop, html, text, "\n".join(str(value) for value in arrived.values()))


def test_every_link_of_the_campaign_preview_changes_nothing(app, shop):
    preview = shop["web"].get(f"/campaigns/{shop['campaign'].id}/preview")
    assert preview.status_code == 200

    assert_inert(app, shop, preview.get_data(as_text=True))


def test_a_preview_page_says_what_the_link_does_for_a_recipient(client):
    assert "opens their unsubscribe page" in client.get("/u/preview").get_data(as_text=True)
    assert "opens their email preferences" in client.get("/p/preview").get_data(as_text=True)
    one_click = client.post("/u/preview", data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200 and "Nothing was changed" in one_click.get_data(as_text=True)
