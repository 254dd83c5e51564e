"""Domain events (the spec's webhook list and more) go through emit(): it records each one in
email_events, where a contact's history and reports read it. Webhooks and automations will hook in here."""
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import EmailEvent
from nudge.models.types import utcnow
from nudge.services.dialect import new_uuid_sql

EVENT_TYPES = (
    "email.sent", "email.delivered", "email.opened", "email.clicked", "email.bounced", "email.complained",
    "contact.subscribed", "contact.unsubscribed", "contact.tag_added", "contact.tag_removed",
    "contact.updated", "contact.deleted", "contact.restored", "automation.triggered",
)


def emit(account_id, event_type, *, contact_id=None, campaign_id=None, data=None, ip=None, user_agent=None):
    """Record one event; the calling service commits it with its own change."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    event = EmailEvent(account_id=account_id, event_type=event_type, contact_id=contact_id,
                       campaign_id=campaign_id, event_data=data or {}, ip_address=ip, user_agent=user_agent)
    db.session.add(event)
    return event


def emit_for_contacts(account_id, event_type, contact_ids, data=None):
    """Record one event per contact of a select of contact ids, in one INSERT ... SELECT (bulk paths)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    ids = contact_ids.subquery()
    id_column = list(ids.c)[0]
    select = sa.select(new_uuid_sql(), sa.literal(account_id, EmailEvent.account_id.type), id_column,
                       sa.literal(event_type), sa.literal(data or {}, EmailEvent.event_data.type),
                       sa.literal(utcnow(), EmailEvent.created_at.type))
    result = db.session.connection().execute(sa.insert(EmailEvent).from_select(
        ["id", "account_id", "contact_id", "event_type", "event_data", "created_at"], select))
    return result.rowcount
