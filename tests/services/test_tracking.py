"""Tracking tokens across key rotation (NUDGE_TRACKING_KEYS), and unsubscribing from an email whose recipient's
contact was deleted, or purged, since it left."""
import datetime as dt
import uuid

import pytest
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import Campaign, Contact, EmailEvent, Message, Suppression
from nudge.models.types import utcnow
from nudge.services import campaigns, contacts, housekeeping, imports, tracking
from tests.campaign_helpers import add_contacts, sent_message

OLD_SECRET = "secret-key-of-2025-before-rotation"
NEW_SECRET = "the-secret-key-after-rotation-0123456789"
NEW_TRACKING = "a-new-tracking-secret-0123456789"
MESSAGE_ID = uuid.UUID("11111111-2222-4333-8444-555555555555")
CAMPAIGN_ID = uuid.UUID("66666666-7777-4888-9999-aaaaaaaaaaaa")
# The token services/tracking.py made for these ids before NUDGE_TRACKING_KEYS existed, with
# NUDGE_SECRET_KEY = OLD_SECRET: such links are in subscribers' mailboxes.
TOKEN_BEFORE = "ERERESIiQzOERFVVVVVVVWZmZmZ3d0iImZmqqqqqqqqYzDbHjHsZtMlhYUY"


def test_unset_tracking_keys_sign_and_verify_as_before(make_app):
    make_app(SECRET_KEY=OLD_SECRET)
    assert tracking.ids_from(TOKEN_BEFORE) == (MESSAGE_ID, CAMPAIGN_ID)
    assert tracking.token_for(MESSAGE_ID, CAMPAIGN_ID) == TOKEN_BEFORE


def test_a_link_signed_with_an_old_key_verifies_while_it_is_listed_second(make_app):
    app = make_app(SECRET_KEY=NEW_SECRET, TRACKING_KEYS=[NEW_TRACKING, OLD_SECRET])
    assert tracking.ids_from(TOKEN_BEFORE) == (MESSAGE_ID, CAMPAIGN_ID)

    signed_now = tracking.token_for(MESSAGE_ID, CAMPAIGN_ID)
    assert signed_now != TOKEN_BEFORE
    app.config["TRACKING_KEYS"] = [NEW_TRACKING]  # new links are signed with the first key alone
    assert tracking.ids_from(signed_now) == (MESSAGE_ID, CAMPAIGN_ID)


def test_a_link_signed_with_a_key_no_longer_listed_is_refused(make_app):
    app = make_app(SECRET_KEY=NEW_SECRET, TRACKING_KEYS=[NEW_TRACKING])
    assert tracking.ids_from(TOKEN_BEFORE) is None
    app.config["TRACKING_KEYS"] = None  # unset after a rotation of the secret key: the old links are refused too
    assert tracking.ids_from(TOKEN_BEFORE) is None
    tampered = TOKEN_BEFORE[:-1] + ("A" if TOKEN_BEFORE[-1] != "A" else "B")
    app.config["TRACKING_KEYS"] = [NEW_TRACKING, OLD_SECRET]
    assert tracking.ids_from(tampered) is None


# --- Unsubscribing after the contact is gone --------------------------------------------------------------

@pytest.fixture
def shop(make_account):
    return make_account()


def purge(contact, owner):
    """Delete the contact and let housekeeping purge it once the 30-day restore window has passed."""
    contacts.delete_contact(owner, contact.id)
    assert housekeeping.run_housekeeping(now=utcnow() + dt.timedelta(days=31))["contacts"] == 1
    db.session.expire_all()


def suppressions_of(account):
    return db.session.execute(sa.select(Suppression.email, Suppression.reason)
                              .where(Suppression.account_id == account.id)).all()


def test_one_click_unsubscribe_of_a_purged_contact_suppresses_the_address(shop):
    account, owner = shop
    ann = add_contacts(account, "ann@example.org")[0]
    ann_id = ann.id
    campaign, message = sent_message(account, ann)
    purge(ann, owner)
    assert db.session.get(Contact, ann_id) is None

    assert tracking.unsubscribe(message.id, source="one_click") == "ann@example.org"
    assert suppressions_of(account) == [("ann@example.org", "unsubscribed")]
    assert db.session.get(Campaign, campaign.id).unsubscribed_count == 1
    assert tracking.recipient_status(db.session.get(Message, message.id)) == "unsubscribed"

    assert tracking.unsubscribe(message.id, source="one_click") == "ann@example.org"  # counted once
    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).unsubscribed_count == 1 and len(suppressions_of(account)) == 1


def test_the_purged_address_is_stored_lower_cased_and_recognised_as_already_suppressed(shop):
    account, owner = shop
    ann = add_contacts(account, "Ann.Lee@example.org")[0]
    campaign, message = sent_message(account, ann)
    purge(ann, owner)
    assert tracking.recipient_status(db.session.get(Message, message.id)) == "removed"

    tracking.unsubscribe(message.id)
    assert suppressions_of(account) == [("ann.lee@example.org", "unsubscribed")]

    # An address already listed as first typed is not listed again, nor counted again.
    other_campaign, other = sent_message(account, add_contacts(account, "Bob@example.org", status="unsubscribed")[0])
    contacts.suppressions.suppress(account.id, ["Bob@example.org"], "manual")
    db.session.commit()
    purge(db.session.get(Contact, other.contact_id), owner)
    tracking.unsubscribe(other.id)
    assert sorted(suppressions_of(account)) == [("Bob@example.org", "manual"), ("ann.lee@example.org", "unsubscribed")]
    assert db.session.get(Campaign, other_campaign.id).unsubscribed_count == 0


def test_an_address_unsubscribed_after_its_purge_is_not_mailed_when_imported_again(shop):
    account, owner = shop
    ann = add_contacts(account, "ann@example.org")[0]
    _, message = sent_message(account, ann)
    purge(ann, owner)
    tracking.unsubscribe(message.id, source="one_click")

    imported, errors = imports.import_contacts(owner, [{"email": "ann@example.org"}, {"email": "bob@example.org"}])
    assert errors == [{"row": 1, "field": None, "value": "ann@example.org",
                       "message": "On the suppression list: not imported."}]
    assert imported.created_count == 1
    db.session.expire_all()
    mailable = db.session.scalars(sa.select(Contact.email).where(campaigns.mailable(account.id))).all()
    assert mailable == ["bob@example.org"]


def test_a_deleted_contact_that_unsubscribes_stays_deleted_and_is_restored_unsubscribed(shop):
    account, owner = shop
    ann = add_contacts(account, "ann@example.org")[0]
    campaign, message = sent_message(account, ann)
    contacts.delete_contact(owner, ann.id)

    tracking.unsubscribe(message.id, source="one_click")
    db.session.expire_all()
    ann = db.session.get(Contact, ann.id)
    assert (ann.status, ann.status_before_delete) == ("deleted", "unsubscribed")
    assert suppressions_of(account) == [("ann@example.org", "unsubscribed")]
    assert db.session.get(Campaign, campaign.id).unsubscribed_count == 1
    assert db.session.scalar(sa.select(EmailEvent.event_data).where(
        EmailEvent.contact_id == ann.id, EmailEvent.event_type == "contact.unsubscribed")) == {
        "previous_status": "deleted", "source": "one_click"}

    assert contacts.restore_contact(owner, ann.id).status == "unsubscribed"


def test_a_message_that_is_gone_unsubscribes_nobody(shop):
    assert tracking.unsubscribe(uuid.uuid4()) is None
