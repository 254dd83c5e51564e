"""Bounces and complaints: what each does to the contact, the suppression list, the events and the campaign,
counted once however often the provider repeats itself, and never reaching into another account."""
import datetime as dt

import pytest
import sqlalchemy as sa

from nudge.delivery.feedback import COMPLAINT, HARD, SOFT, Feedback
from nudge.extensions import db
from nudge.models import Campaign, Contact, EmailEvent, Message, Suppression
from nudge.models.types import utcnow
from nudge.services import bounces
from tests.campaign_helpers import add_contacts


def sent_campaign(account, contacts, provider="ses", name="May news", sent_at=None):
    """A sent campaign with one sent message per contact (provider ids "<provider>-<email>")."""
    campaign = Campaign(account_id=account.id, name=name, status="sent", recipient_count=len(contacts),
                        sent_count=len(contacts), delivered_count=len(contacts))
    db.session.add(campaign)
    db.session.flush()
    messages = [Message(account_id=account.id, campaign_id=campaign.id, contact_id=c.id, email=c.email,
                        status="sent", provider=provider, provider_message_id=f"{provider}-{name}-{c.email}",
                        attempts=1, sent_at=sent_at or utcnow())
                for c in contacts]
    db.session.add_all(messages)
    db.session.commit()
    return campaign, messages


@pytest.fixture
def shop(make_account):
    account, _ = make_account()
    contacts = add_contacts(account, "ann@example.org", "bob@example.org", "cy@example.org")
    campaign, messages = sent_campaign(account, contacts)
    return account, contacts, campaign, messages


def state(contact, campaign):
    db.session.expire_all()
    contact = db.session.get(Contact, contact.id)
    campaign = db.session.get(Campaign, campaign.id)
    suppressed = db.session.scalar(sa.select(Suppression.reason).where(Suppression.account_id == contact.account_id,
                                                                       Suppression.email == contact.email))
    return contact.status, suppressed, campaign.bounced_count, campaign.complained_count


def events_of(contact, event_type):
    return db.session.scalars(sa.select(EmailEvent).where(EmailEvent.contact_id == contact.id,
                                                          EmailEvent.event_type == event_type)).all()


def test_a_hard_bounce_marks_the_contact_bounced_suppresses_it_and_counts_once(shop):
    account, (ann, bob, _), campaign, (message, *_) = shop
    bounce = Feedback(HARD, "ses", message_id=str(message.id), email="Ann@Example.org",
                      reason="smtp; 550 5.1.1 user unknown", notification_id="fb-1:ann@example.org")

    assert bounces.record_feedback(bounce) == bounces.RECORDED
    assert state(ann, campaign) == ("bounced", "hard_bounce", 1, 0)
    (event,) = events_of(ann, "email.bounced")
    assert event.account_id == account.id and event.campaign_id == campaign.id
    assert event.event_data == {"message_id": str(message.id), "type": "hard", "reason": "smtp; 550 5.1.1 user unknown",
                                "provider": "ses", "notification_id": "fb-1:ann@example.org"}

    # The same notification again, and the same bounce reported under another notification id.
    assert bounces.record_feedback(bounce) == bounces.DUPLICATE
    assert bounces.record_feedback(Feedback(HARD, "ses", provider_message_id=message.provider_message_id,
                                            notification_id="fb-2")) == bounces.DUPLICATE
    assert state(ann, campaign) == ("bounced", "hard_bounce", 1, 0)
    assert len(events_of(ann, "email.bounced")) == 1
    assert state(bob, campaign)[:2] == ("active", None)


def test_a_notification_is_matched_by_the_message_id_header_we_gave_the_email(shop):
    """SES notifications carry the email's Message-ID (commonHeaders) even when the original headers (with
    ours) are not included: <campaign id.contact id@domain> names the message."""
    from nudge.delivery.message import message_id_for
    _, (ann, bob, _), campaign, _ = shop
    header = message_id_for(campaign.id, bob.id, "shop.example")
    bounce = Feedback(HARD, "ses", provider_message_id="an-id-we-never-stored", email="bob@example.org",
                      notification_id="fb-9", header_message_id=header)
    assert bounces.record_feedback(bounce) == bounces.RECORDED
    assert state(bob, campaign)[:3] == ("bounced", "hard_bounce", 1)
    assert state(ann, campaign)[:2] == ("active", None)
    forged = Feedback(HARD, "ses", email="ann@example.org", header_message_id=f"<{campaign.id}.not-a-contact@x>")
    assert bounces.record_feedback(forged) == bounces.UNKNOWN


def test_a_complaint_marks_the_contact_complained_and_suppresses_it(shop):
    _, (ann, bob, _), campaign, (_, message, _) = shop
    complaint = Feedback(COMPLAINT, "sendgrid", provider_message_id=message.provider_message_id,
                         email="bob@example.org", reason="spamreport", notification_id="sg-ev-1")

    assert bounces.record_feedback(complaint) == bounces.RECORDED
    assert bounces.record_feedback(complaint) == bounces.DUPLICATE
    assert bounces.record_feedback(Feedback(COMPLAINT, "sendgrid", message_id=str(message.id),
                                            notification_id="sg-ev-2")) == bounces.DUPLICATE
    assert state(bob, campaign) == ("complained", "complaint", 0, 1)
    (event,) = events_of(bob, "email.complained")
    assert event.event_data["provider"] == "sendgrid" and event.event_data["message_id"] == str(message.id)
    # A later hard bounce of the same address counts as a bounce but never hides the complaint.
    assert bounces.record_feedback(Feedback(HARD, "sendgrid", message_id=str(message.id))) == bounces.RECORDED
    assert state(bob, campaign) == ("complained", "complaint", 1, 1)
    assert state(ann, campaign)[:2] == ("active", None)


def test_a_soft_bounce_is_an_event_only(shop):
    _, (ann, _, _), campaign, (message, *_) = shop
    soft = Feedback(SOFT, "ses", message_id=str(message.id), reason="mailbox full", notification_id="fb-9")

    assert bounces.record_feedback(soft) == bounces.RECORDED
    assert bounces.record_feedback(soft) == bounces.DUPLICATE
    assert bounces.record_feedback(Feedback(SOFT, "ses", message_id=str(message.id),
                                            notification_id="fb-10")) == bounces.RECORDED
    assert state(ann, campaign) == ("active", None, 0, 0)
    assert [e.event_data["type"] for e in events_of(ann, "email.bounced")] == ["soft", "soft"]


def test_three_campaigns_in_a_row_soft_bouncing_make_a_hard_bounce(make_account):
    account, _ = make_account()
    ann, bob = add_contacts(account, "ann@example.org", "bob@example.org")
    start = utcnow() - dt.timedelta(days=30)
    sent = [sent_campaign(account, [ann, bob], name=f"Issue {n}", sent_at=start + dt.timedelta(days=n))
            for n in range(3)]
    for campaign, (to_ann, to_bob) in sent[:2]:
        bounces.record_feedback(Feedback(SOFT, "ses", message_id=str(to_ann.id), notification_id=f"a-{campaign.id}"))
    bounces.record_feedback(Feedback(SOFT, "ses", message_id=str(sent[0][1][1].id), notification_id="b-0"))

    last, (to_ann, to_bob) = sent[2]
    for message, notification in ((to_ann, "a-3"), (to_bob, "b-3")):
        feedback = Feedback(SOFT, "ses", message_id=str(message.id), notification_id=notification)
        assert bounces.record_feedback(feedback) == bounces.RECORDED

    assert state(ann, last) == ("bounced", "hard_bounce", 1, 0)
    assert events_of(ann, "email.bounced")[-1].event_data["after_soft_bounces"] == 3
    assert state(bob, last)[:2] == ("active", None)    # Issue 1 reached Bob: no streak


def test_notifications_about_unknown_messages_or_other_addresses_are_ignored(shop):
    _, (ann, _, _), campaign, (message, *_) = shop
    assert bounces.record_feedback(Feedback(HARD, "ses", message_id="not-a-uuid")) == bounces.UNKNOWN
    assert bounces.record_feedback(Feedback(HARD, "ses", provider_message_id="nobody-sent-this")) == bounces.UNKNOWN
    assert bounces.record_feedback(Feedback(HARD, "ses", message_id=str(message.id),
                                            email="mallory@example.org")) == bounces.UNKNOWN
    assert state(ann, campaign) == ("active", None, 0, 0)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(EmailEvent)
                             .where(EmailEvent.event_type == "email.bounced")) == 0


def test_a_bounce_only_touches_the_account_of_its_message(shop, make_account):
    account, (ann, *_), campaign, (message, *_) = shop
    other, _ = make_account()
    (other_ann,) = add_contacts(other, "ann@example.org")
    other_campaign, (other_message,) = sent_campaign(other, [other_ann], provider="sendgrid")

    assert bounces.record_feedback(Feedback(HARD, "ses", message_id=str(message.id))) == bounces.RECORDED
    assert state(ann, campaign) == ("bounced", "hard_bounce", 1, 0)
    assert state(other_ann, other_campaign) == ("active", None, 0, 0)
    assert events_of(other_ann, "email.bounced") == []


def test_a_deleted_contact_keeps_the_bounce_for_when_it_is_restored(shop):
    _, (ann, *_), campaign, (message, *_) = shop
    ann.status, ann.status_before_delete, ann.deleted_at = "deleted", "active", utcnow()
    db.session.commit()
    assert bounces.record_feedback(Feedback(HARD, "ses", message_id=str(message.id))) == bounces.RECORDED
    db.session.expire_all()
    contact = db.session.get(Contact, ann.id)
    assert (contact.status, contact.status_before_delete) == ("deleted", "bounced")
    assert state(ann, campaign)[1:] == ("hard_bounce", 1, 0)


def test_send_bounces_of_a_batch_are_recorded_once(shop, make_account):
    account, (ann, bob, cy), campaign, (to_ann, to_bob, to_cy) = shop
    other, _ = make_account()
    (stranger,) = add_contacts(other, "dee@example.org")
    _, (foreign,) = sent_campaign(other, [stranger])
    batch = [(to_ann.id, "recipient rejected: 550 5.1.1 no such user"), (str(to_bob.id), "550 unknown"),
             (foreign.id, "550 not this campaign's")]

    assert bounces.record_send_bounces(campaign.id, batch) == 2
    assert bounces.record_send_bounces(campaign.id, batch) == 0
    assert bounces.record_send_bounces(campaign.id, []) == 0

    assert state(ann, campaign) == ("bounced", "hard_bounce", 2, 0)
    assert state(bob, campaign)[:2] == ("bounced", "hard_bounce")
    assert state(cy, campaign)[:2] == ("active", None)
    (event,) = events_of(ann, "email.bounced")
    assert event.event_data == {"message_id": str(to_ann.id), "type": "hard", "provider": "ses",
                                "reason": "recipient rejected: 550 5.1.1 no such user"}
    assert db.session.get(Contact, stranger.id).status == "active"


def test_recent_counts_cover_the_last_30_days(shop):
    account, (ann, bob, cy), campaign, (to_ann, to_bob, to_cy) = shop
    bounces.record_feedback(Feedback(HARD, "ses", message_id=str(to_ann.id)))
    bounces.record_feedback(Feedback(SOFT, "ses", message_id=str(to_bob.id), notification_id="s1"))
    bounces.record_feedback(Feedback(COMPLAINT, "ses", message_id=str(to_cy.id)))
    assert bounces.recent_counts(account.id) == {"hard": 1, "soft": 1, "complaints": 1}
    assert bounces.recent_counts(account.id, now=utcnow() + dt.timedelta(days=31)) == {"hard": 0, "soft": 0,
                                                                                        "complaints": 0}
