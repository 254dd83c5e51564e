"""Bounces and complaints: what a hard bounce, a soft bounce or a spam complaint about a sent message does
to the events, the campaign's aggregates, the contact and the suppression list.

- hard bounce: an email.bounced event (type hard), the campaign's bounced_count, the contact's status
  bounced and the address suppressed (hard_bounce);
- complaint: an email.complained event, complained_count, status complained, suppressed (complaint);
- soft bounce (mailbox full, greylisting, a temporary block): an email.bounced event (type soft) only;
  after SOFT_BOUNCE_LIMIT soft bounces in a row (each a different campaign, no delivered campaign in
  between) the address is treated as a hard bounce.

Every notification is matched to the message it is about (our message id, or the provider's), and
everything it changes belongs to that message's account. Providers deliver notifications at least once:
a message counts as hard-bounced once and as complained once whatever arrives twice, and a soft bounce
notification is recorded once per notification id.
"""
import datetime as dt
import uuid

import sqlalchemy as sa

from nudge.delivery.feedback import COMPLAINT, HARD, KINDS, SOFT, Feedback
from nudge.delivery.message import parse_message_id
from nudge.extensions import db
from nudge.models import Campaign, Contact, EmailEvent, Message
from nudge.models.types import utcnow
from nudge.services import events, suppressions

RECORDED = "recorded"
DUPLICATE = "duplicate"
UNKNOWN = "unknown"
SOFT_BOUNCE_LIMIT = 3
REASON_MAX = 500
# What each kind does to the contact: its new status and the suppression reason (contacts.SUPPRESSING_STATUSES).
CONTACT_STATUS = {HARD: "bounced", COMPLAINT: "complained"}
SUPPRESSION_REASON = {HARD: "hard_bounce", COMPLAINT: "complaint"}
COUNTER = {HARD: "bounced_count", COMPLAINT: "complained_count"}


def record_feedback(feedback):
    """Record one provider notification; returns "recorded", "duplicate" or "unknown" (no such message, or
    the notification names another address than the message's: ignored)."""
    if feedback.kind not in KINDS:
        raise ValueError(f"unknown feedback kind {feedback.kind!r}")
    message = find_message(feedback.message_id, feedback.provider_message_id, feedback.header_message_id)
    if message is None or not _same_address(message, feedback.email):
        db.session.rollback()
        return UNKNOWN
    if _already_recorded(message, feedback):
        db.session.rollback()
        return DUPLICATE
    kind = feedback.kind
    if kind == SOFT and _soft_streak_reached(message):
        kind = HARD
    _emit(message, kind, feedback.provider, feedback.reason, feedback.notification_id,
          soft_streak=kind != feedback.kind)
    if kind in COUNTER:
        _bump(message.account_id, message.campaign_id, COUNTER[kind], 1)
        _mark_contacts(message.account_id, kind, [message.contact_id] if message.contact_id else [])
        suppressions.suppress(message.account_id, [message.email], SUPPRESSION_REASON[kind])
    db.session.commit()
    return RECORDED


def find_message(message_id=None, provider_message_id=None, header_message_id=None):
    """The message a notification is about — by our id, else by the Message-ID header we gave the email
    (campaign and contact: unique and indexed), else by the provider's id — locked until the caller commits
    (PostgreSQL), so two deliveries of one notification are recorded one after the other."""
    query = sa.select(Message).with_for_update()
    ours = _uuid(message_id)
    if ours is not None:
        message = db.session.scalar(query.where(Message.id == ours))
        if message is not None:
            return message
    campaign_id, contact_id = _header_ids(header_message_id)
    if campaign_id is not None:
        message = db.session.scalar(query.where(Message.campaign_id == campaign_id, Message.contact_id == contact_id))
        if message is not None:
            return message
    if provider_message_id:
        found = db.session.scalars(query.where(Message.provider_message_id == provider_message_id).limit(2)).all()
        if len(found) == 1:
            return found[0]
    return None


def _header_ids(header_message_id):
    """(campaign id, contact id) from a Message-ID of ours (message_id_for()); else (None, None)."""
    campaign_id, contact_id = map(_uuid, parse_message_id(header_message_id) or (None, None))
    return (campaign_id, contact_id) if campaign_id and contact_id else (None, None)


def _uuid(value):
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def _same_address(message, email):
    """A notification names the recipient; one naming another address than the message's is not about it."""
    return not email or email.strip().lower() == message.email.strip().lower()


def _events_of(message, *event_types):
    """(event_type, data) of the events of one message (its campaign and contact, then its id in the data)."""
    contact = (EmailEvent.contact_id == message.contact_id if message.contact_id is not None
               else EmailEvent.contact_id.is_(None))
    rows = db.session.execute(sa.select(EmailEvent.event_type, EmailEvent.event_data).where(
        EmailEvent.account_id == message.account_id, EmailEvent.campaign_id == message.campaign_id, contact,
        EmailEvent.event_type.in_(event_types))).all()
    return [(kind, data or {}) for kind, data in rows if (data or {}).get("message_id") == str(message.id)]


def _already_recorded(message, feedback):
    recorded = _events_of(message, "email.bounced", "email.complained")
    if feedback.kind == COMPLAINT:
        return any(kind == "email.complained" for kind, _ in recorded)
    if any(kind == "email.bounced" and data.get("type") == HARD for kind, data in recorded):
        return True     # nothing more to learn about a message that bounced hard
    if feedback.kind == SOFT and feedback.notification_id:
        return any(data.get("notification_id") == feedback.notification_id for _, data in recorded)
    return False


def _soft_streak_reached(message):
    """Whether this soft bounce makes SOFT_BOUNCE_LIMIT in a row: the contact's last campaigns' messages
    (this one included) all soft-bounced. Another delivered campaign in between breaks the streak."""
    if message.contact_id is None:
        return False
    earlier = sa.select(Message.id).where(
        Message.account_id == message.account_id, Message.contact_id == message.contact_id,
        Message.status == "sent", Message.id != message.id)
    if message.sent_at is not None:
        earlier = earlier.where(Message.sent_at <= message.sent_at)
    recent = db.session.scalars(earlier.order_by(Message.sent_at.desc()).limit(SOFT_BOUNCE_LIMIT - 1)).all()
    if len(recent) < SOFT_BOUNCE_LIMIT - 1:
        return False
    soft = db.session.scalars(sa.select(EmailEvent.event_data).where(
        EmailEvent.account_id == message.account_id, EmailEvent.contact_id == message.contact_id,
        EmailEvent.event_type == "email.bounced")).all()
    bounced = {(data or {}).get("message_id") for data in soft}
    return all(str(message_id) in bounced for message_id in recent)


def _emit(message, kind, provider, reason, notification_id=None, soft_streak=False):
    reason = (reason or "")[:REASON_MAX] or None
    if kind == COMPLAINT:
        data = {"message_id": str(message.id), "provider": provider, "reason": reason}
        event_type = "email.complained"
    else:
        data = {"message_id": str(message.id), "type": kind, "reason": reason, "provider": provider}
        event_type = "email.bounced"
        if soft_streak:
            data["after_soft_bounces"] = SOFT_BOUNCE_LIMIT
    if notification_id:
        data["notification_id"] = notification_id
    events.emit(message.account_id, event_type, contact_id=message.contact_id, campaign_id=message.campaign_id,
                data=data)


def _bump(account_id, campaign_id, counter, amount):
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign_id, Campaign.account_id == account_id)
                       .values({counter: getattr(Campaign, counter) + amount}))


def _mark_contacts(account_id, kind, contact_ids):
    """Give the account's contacts the bounce's or complaint's status (a deleted contact gets it when
    restored). A complaint outranks a bounce; a bounce never hides a complaint."""
    if not contact_ids:
        return
    status = CONTACT_STATUS[kind]
    keep = ("complained", status) if kind == HARD else (status,)
    mine = sa.and_(Contact.account_id == account_id, Contact.id.in_(contact_ids))
    now = utcnow()
    db.session.execute(sa.update(Contact).where(mine, Contact.status.not_in(keep + ("deleted",)))
                       .values(status=status, updated_at=now).execution_options(synchronize_session=False))
    db.session.execute(sa.update(Contact).where(mine, Contact.status == "deleted",
                                                sa.or_(Contact.status_before_delete.is_(None),
                                                       Contact.status_before_delete.not_in(keep)))
                       .values(status_before_delete=status).execution_options(synchronize_session=False))


def record_send_bounces(campaign_id, bounces):
    """Hard bounces the sending loop learnt synchronously (an SMTP 5xx to RCPT: SendResult.bounce), for one
    batch: bounces is [(message_id, reason), ...]. Set-based: one read, one contact update, one suppression
    insert and one counter update per call. Returns how many were recorded (repeats are skipped)."""
    reasons = {}
    for message_id, reason in bounces:
        ours = _uuid(message_id)
        if ours is not None:
            reasons.setdefault(ours, reason)
    if not reasons:
        return 0
    account_id = db.session.scalar(sa.select(Campaign.account_id).where(Campaign.id == campaign_id))
    if account_id is None:
        return 0
    messages = db.session.execute(sa.select(Message.id, Message.contact_id, Message.email, Message.provider).where(
        Message.account_id == account_id, Message.campaign_id == campaign_id,
        Message.id.in_(list(reasons)))).all()
    done = _hard_bounced(account_id, campaign_id, [m.contact_id for m in messages if m.contact_id is not None])
    fresh = [m for m in messages if str(m.id) not in done]
    if not fresh:
        return 0
    for m in fresh:
        events.emit(account_id, "email.bounced", contact_id=m.contact_id, campaign_id=campaign_id,
                    data={"message_id": str(m.id), "type": HARD, "reason": (reasons[m.id] or "")[:REASON_MAX] or None,
                          "provider": m.provider or "smtp"})
    _bump(account_id, campaign_id, COUNTER[HARD], len(fresh))
    _mark_contacts(account_id, HARD, [m.contact_id for m in fresh if m.contact_id is not None])
    suppressions.suppress(account_id, sorted({m.email for m in fresh}), SUPPRESSION_REASON[HARD])
    db.session.commit()
    return len(fresh)


def _hard_bounced(account_id, campaign_id, contact_ids):
    """Ids (text) of the campaign's messages to these contacts that already have a hard bounce recorded."""
    if not contact_ids:
        return set()
    rows = db.session.scalars(sa.select(EmailEvent.event_data).where(
        EmailEvent.account_id == account_id, EmailEvent.campaign_id == campaign_id,
        EmailEvent.event_type == "email.bounced", EmailEvent.contact_id.in_(contact_ids))).all()
    return {data.get("message_id") for data in rows if data and data.get("type") == HARD}


def recent_counts(account_id, days=30, now=None):
    """{"hard", "soft", "complaints"}: what the account's providers reported in the last `days` days (the
    sending settings page)."""
    since = (now or utcnow()) - dt.timedelta(days=days)
    hard = sa.func.sum(sa.case((EmailEvent.event_data["type"].as_string() == HARD, 1), else_=0))
    rows = db.session.execute(sa.select(EmailEvent.event_type, sa.func.count(), hard).where(
        EmailEvent.account_id == account_id, EmailEvent.created_at >= since,
        EmailEvent.event_type.in_(("email.bounced", "email.complained")))
        .group_by(EmailEvent.event_type)).all()
    counts = {"hard": 0, "soft": 0, "complaints": 0}
    for event_type, count, hard_count in rows:
        if event_type == "email.complained":
            counts["complaints"] = count
        else:
            counts["hard"] = int(hard_count or 0)
            counts["soft"] = count - counts["hard"]
    return counts


__all__ = ["Feedback", "record_feedback", "record_send_bounces", "recent_counts", "find_message"]
