"""The public tracking endpoints (open pixel, click redirect, view in browser, preferences, unsubscribe page and
RFC 8058 one-click POST) with links signed before a key rotation, and for a recipient whose contact was
purged since the email left."""
import datetime as dt
import re

import pytest
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import Campaign, Contact, EmailEvent, Suppression
from nudge.models.types import utcnow
from nudge.services import api_clients
from nudge.services import campaigns as campaigns_service
from nudge.services import contacts, housekeeping, tracking
from tests.campaign_helpers import add_contacts, sent_message

OLD_SECRET = "secret-key-of-2025-before-rotation"
NEW_TRACKING = "a-new-tracking-secret-0123456789"


@pytest.fixture
def app(make_app):
    return make_app(SECRET_KEY=OLD_SECRET, BASE_URL="https://mail.shop.example")


@pytest.fixture
def sent(app, make_account):
    """A campaign sent to Ann, and its links as signed before the rotation (with the old secret key)."""
    account, owner = make_account()
    ann = add_contacts(account, "ann@example.org")[0]
    campaign, message = sent_message(account, ann)
    token = tracking.token_for(message.id, campaign.id)
    return {"account": account, "owner": owner, "ann": ann, "campaign": campaign, "message": message,
            "urls": {"open": f"/t/o/{token}.gif", "click": f"/t/c/{token}/0", "view": f"/t/v/{token}",
                     "preferences": f"/t/p/{token}", "unsubscribe": f"/t/u/{token}"}}


def events_of(kind):
    return db.session.scalar(sa.select(sa.func.count()).select_from(EmailEvent).where(EmailEvent.event_type == kind))


def rotate(app, keys, secret_key="the-secret-key-after-rotation-0123456789"):
    app.config.update(SECRET_KEY=secret_key, TRACKING_KEYS=keys)


def test_every_link_signed_before_the_rotation_works_while_its_key_is_listed(app, sent):
    rotate(app, [NEW_TRACKING, OLD_SECRET])
    web, urls = app.test_client(), sent["urls"]

    pixel = web.get(urls["open"])
    pixel.close()  # the event is queued once the response is sent
    assert pixel.status_code == 200 and events_of("email.opened") == 1
    click = web.get(urls["click"])
    click.close()
    assert click.status_code == 302 and click.headers["Location"] == "https://shop.example/spring"
    assert events_of("email.clicked") == 1
    assert web.get(urls["view"]).status_code == 200
    assert "gets email from" in web.get(urls["preferences"]).get_data(as_text=True)
    assert "Stop all marketing email" in web.get(urls["unsubscribe"]).get_data(as_text=True)

    assert web.post(urls["unsubscribe"], data={"List-Unsubscribe": "One-Click"}).status_code == 200
    db.session.expire_all()
    assert db.session.get(Contact, sent["ann"].id).status == "unsubscribed"


def test_new_links_are_signed_with_the_first_key(app, sent):
    rotate(app, [NEW_TRACKING, OLD_SECRET])
    message = sent["message"]
    fresh = tracking.token_for(message.id, message.campaign_id)
    rotate(app, [NEW_TRACKING])
    web = app.test_client()
    assert web.get(f"/t/v/{fresh}").status_code == 200
    assert web.get(sent["urls"]["view"]).status_code == 404


def test_a_link_signed_with_a_key_no_longer_listed_is_refused(app, sent):
    rotate(app, [NEW_TRACKING])
    web, urls = app.test_client(), sent["urls"]

    pixel = web.get(urls["open"])
    pixel.close()
    assert pixel.status_code == 200 and pixel.mimetype == "image/gif"  # a pixel always, but nothing recorded
    assert events_of("email.opened") == 0
    for name in ("click", "view", "preferences", "unsubscribe"):
        assert web.get(urls[name]).status_code == 404, name
    assert web.post(urls["unsubscribe"], data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert web.post(urls["preferences"], data={"action": "subscribe"}).status_code == 404
    db.session.expire_all()
    assert db.session.get(Contact, sent["ann"].id).status == "active"
    assert events_of("email.clicked") == 0


def test_unset_tracking_keys_keep_the_links_made_with_the_secret_key(app, sent):
    web = app.test_client()  # NUDGE_TRACKING_KEYS unset, NUDGE_SECRET_KEY unchanged
    assert web.get(sent["urls"]["view"]).status_code == 200
    assert web.post(sent["urls"]["unsubscribe"], data={"List-Unsubscribe": "One-Click"}).status_code == 200


def purge(sent):
    contacts.delete_contact(sent["owner"], sent["ann"].id)
    assert housekeeping.run_housekeeping(now=utcnow() + dt.timedelta(days=31))["contacts"] == 1
    db.session.expire_all()


def suppressed(account):
    return db.session.execute(sa.select(Suppression.email, Suppression.reason)
                              .where(Suppression.account_id == account.id)).all()


def test_one_click_unsubscribe_after_the_contact_was_purged_suppresses_the_address(app, sent):
    purge(sent)
    web, urls = app.test_client(), sent["urls"]

    assert web.post(urls["unsubscribe"], data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert suppressed(sent["account"]) == [("ann@example.org", "unsubscribed")]
    assert db.session.get(Campaign, sent["campaign"].id).unsubscribed_count == 1
    assert "You are unsubscribed" in web.get(urls["preferences"]).get_data(as_text=True)


def test_the_unsubscribe_page_of_a_purged_contact_asks_and_then_suppresses(app, sent):
    purge(sent)
    web, urls = app.test_client(), sent["urls"]

    page = web.get(urls["unsubscribe"]).get_data(as_text=True)  # not "unsubscribed": nothing suppresses it yet
    assert "Stop all marketing email" in page and "ann@example.org" in page
    assert "Stop all marketing email" in web.get(urls["preferences"]).get_data(as_text=True)
    assert suppressed(sent["account"]) == []

    done = web.post(urls["unsubscribe"])
    assert done.status_code == 200 and "You are unsubscribed" in done.get_data(as_text=True)
    assert suppressed(sent["account"]) == [("ann@example.org", "unsubscribed")]
    again = web.post(urls["preferences"], data={"action": "subscribe"})  # no contact to subscribe again
    assert "cannot be subscribed again" in again.get_data(as_text=True)
    assert suppressed(sent["account"]) == [("ann@example.org", "unsubscribed")]


def campaign_counts(campaign):
    db.session.expire_all()
    stats = campaigns_service.stats(db.session.get(Campaign, campaign.id))
    return stats["opened"], stats["clicked"], stats["unsubscribed"]


def test_a_recipient_who_unsubscribes_subscribes_again_and_unsubscribes_again_counts_once(app, sent, login):
    """The reported case: Unsubscribed showed 2 (14.3 %) for one contact."""
    web, urls = app.test_client(), sent["urls"]
    assert "You are unsubscribed" in web.post(urls["unsubscribe"]).get_data(as_text=True)
    again = web.post(urls["preferences"], data={"action": "subscribe"})
    assert "You are subscribed again" in again.get_data(as_text=True)
    assert web.post(urls["unsubscribe"]).status_code == 200
    assert web.post(urls["preferences"], data={"action": "subscribe"}).status_code == 200
    assert web.post(urls["unsubscribe"], data={"List-Unsubscribe": "One-Click"}).status_code == 200

    assert campaign_counts(sent["campaign"])[2] == 1
    assert events_of("contact.unsubscribed") == 3  # the contact's history keeps every change
    assert db.session.get(Contact, sent["ann"].id).status == "unsubscribed"
    dashboard = app.test_client()
    login(dashboard, sent["owner"])
    page = dashboard.get(f"/campaigns/{sent['campaign'].id}").get_data(as_text=True)
    assert re.search(r'Unsubscribed</span><span class="stat-value">1</span>', page)
    integration, secret = api_clients.create_api_client(sent["owner"], name="Stats", scopes="campaigns:read")
    token = app.test_client().post("/api/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": integration.client_id, "client_secret": secret}).get_json()
    api = app.test_client().get(f"/api/v1/campaigns/{sent['campaign'].id}",
                                headers={"Authorization": f"Bearer {token['access_token']}"})
    assert api.get_json()["data"]["stats"]["unsubscribed"] == 1


def test_opens_and_clicks_repeated_by_one_recipient_count_one_recipient(app, sent):
    web, urls = app.test_client(), sent["urls"]
    for _ in range(3):
        web.get(urls["open"]).close()
        web.get(urls["click"]).close()
    assert campaign_counts(sent["campaign"]) == (1, 1, 0)
    assert events_of("email.opened") == 3 and events_of("email.clicked") == 3
