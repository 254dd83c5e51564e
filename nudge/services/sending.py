"""The sending pipeline: snapshot a campaign's recipients into `messages`, then workers claim batches,
render, send and record each result as it comes (docs/delivery.md says what this guarantees and why).

- start_send(): one INSERT … SELECT of the audience (only contacts that may be mailed) into messages,
  idempotent (a second call adds nobody twice), then enqueue_workers().
- deliver_campaign task → deliver_chunk(): claim up to BATCH queued messages (FOR UPDATE SKIP LOCKED on
  PostgreSQL), send each through the provider chain, and commit each result on its own, so a worker killed
  at any moment leaves at most the message in flight on each connection unrecorded. A chunk runs for a
  bounded time and re-enqueues itself, so higher-priority jobs (test sends, tracking) are never starved.
- release_stale_claims()/resume_stalled(): claims of a dead worker go back to the queue and the campaign's
  workers are enqueued again (periodically and when a worker starts).
"""
import datetime as dt
import threading
import time
import uuid
from typing import NamedTuple

import sqlalchemy as sa
from flask import current_app

from nudge.errors import NotFound, ValidationError
from nudge.extensions import db
from nudge.models import Account, Campaign, Contact, Message
from nudge.models.types import utcnow
from nudge.services import rendering, tracking
from nudge.services.dialect import insert as dialect_insert
from nudge.services.dialect import is_postgres, new_uuid_sql

BATCH = 200
CHUNK_SECONDS = 10            # a delivery task works this long, then re-enqueues itself
MAX_ATTEMPTS = 5
RECOUNT_EVERY = 1.0           # seconds between aggregate refreshes per worker
MIN_SAMPLE = 100              # sends before failure/bounce rates may pause a campaign
DEFAULT_PAUSE_FAILURE_RATE = 0.2
DEFAULT_PAUSE_BOUNCE_RATE = 0.1
TRANSIENT_STREAK_PAUSE = 50   # consecutive transient failures: every provider is down


# --------------------------------------------------------------------------------------------------
# Snapshot

def start_send(campaign_id):
    """Snapshot the recipients (one set-based insert) and start the workers; returns the recipient count."""
    from nudge.services import campaigns as campaigns_service
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound("No such campaign.")
    _, links = tracking.prepare_html(campaign.content_html or "")
    campaign.links = links
    audience = campaigns_service.audience_query(campaign.account_id, campaign.audience).subquery()
    snapshot = sa.select(new_uuid_sql(), sa.literal(campaign.account_id, Message.account_id.type),
                         sa.literal(campaign.id, Message.campaign_id.type), audience.c.id, audience.c.email,
                         sa.literal("queued"), sa.literal(0), sa.literal(utcnow(), Message.created_at.type)
                         ).where(sa.true())  # SQLite needs a WHERE before ON CONFLICT in INSERT … SELECT
    insert = dialect_insert(Message).on_conflict_do_nothing().from_select(
        ["id", "account_id", "campaign_id", "contact_id", "email", "status", "attempts", "created_at"], snapshot)
    db.session.execute(insert)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(Message)
                              .where(Message.campaign_id == campaign.id))
    campaign.recipient_count = total
    db.session.commit()
    if total == 0:
        _finish(campaign.id)
    else:
        enqueue_workers(campaign.id)
    return total


def worker_count():
    return max(1, int(current_app.config.get("SEND_WORKERS", 4)))


def enqueue_workers(campaign_id, count=None):
    """Start (or restart) the campaign's delivery tasks; extra ones find nothing to claim and stop."""
    from nudge.tasks import deliver_campaign
    for _ in range(count or worker_count()):
        deliver_campaign(str(campaign_id))


# --------------------------------------------------------------------------------------------------
# Claiming and recording

def claim(campaign_id, limit=BATCH):
    """Mark up to `limit` queued messages as being sent by this worker; returns their ids."""
    pick = (sa.select(Message.id).where(Message.campaign_id == campaign_id, Message.status == "queued")
            .order_by(Message.id).limit(limit))
    if is_postgres():
        pick = pick.with_for_update(skip_locked=True)
    statement = (sa.update(Message).where(Message.id.in_(pick.scalar_subquery()))
                 .values(status="sending", claimed_at=utcnow(), attempts=Message.attempts + 1)
                 .returning(Message.id))
    ids = [row[0] for row in db.session.execute(statement, execution_options={"synchronize_session": False})]
    db.session.commit()
    return ids


class Recipient(NamedTuple):
    """A claimed message as plain values (ORM objects would be reloaded after every per-message commit)."""
    id: uuid.UUID
    account_id: uuid.UUID
    campaign_id: uuid.UUID
    contact_id: uuid.UUID
    email: str
    attempts: int


CONTACT_COLUMNS = ("email", "first_name", "last_name", "tags", "custom_fields", "subscription_date")


def _batch_rows(ids):
    """(Recipient, contact dict) pairs for claimed ids, in one query."""
    columns = [Message.id, Message.account_id, Message.campaign_id, Message.contact_id, Message.email,
               Message.attempts] + [getattr(Contact, name) for name in CONTACT_COLUMNS]
    rows = db.session.execute(sa.select(*columns).outerjoin(Contact, Contact.id == Message.contact_id)
                              .where(Message.id.in_(ids)).order_by(Message.id)).all()
    pairs = []
    for row in rows:
        recipient = Recipient(*row[:6])
        contact = dict(zip(CONTACT_COLUMNS, row[6:])) if recipient.contact_id else None
        pairs.append((recipient, contact))
    return pairs


def _record(message_id, **values):
    """Commit one message's result at once (asynchronous commit on PostgreSQL: a killed worker cannot
    lose a committed row, only a crashed database server could lose the last few milliseconds)."""
    if is_postgres():
        db.session.execute(sa.text("SET LOCAL synchronous_commit = off"))
    db.session.execute(sa.update(Message).where(Message.id == message_id).values(**values),
                       execution_options={"synchronize_session": False})
    db.session.commit()


def record_sent(message, result):
    from nudge.services import events
    if is_postgres():
        db.session.execute(sa.text("SET LOCAL synchronous_commit = off"))
    now = utcnow()
    db.session.execute(sa.update(Message).where(Message.id == message.id).values(
        status="sent", provider=result.provider, provider_message_id=result.provider_message_id, sent_at=now,
        error=None), execution_options={"synchronize_session": False})
    events.emit(message.account_id, "email.sent", contact_id=message.contact_id, campaign_id=message.campaign_id,
                data={"message_id": str(message.id), "provider": result.provider})
    db.session.commit()


def touch_claims(campaign_id, ids):
    """A live worker renews its claims (and the campaign's heartbeat) well before they could look stale,
    however slow the provider is, so they are never handed to another worker while it sends."""
    now = utcnow()
    db.session.execute(sa.update(Message).where(Message.id.in_(ids), Message.status == "sending")
                       .values(claimed_at=now), execution_options={"synchronize_session": False})
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign_id).values(updated_at=now))
    db.session.commit()


def release(ids):
    """Put claimed, unsent messages back in the queue (pause, cancel, deferral)."""
    if not ids:
        return
    db.session.execute(sa.update(Message).where(Message.id.in_(ids), Message.status == "sending")
                       .values(status="queued", claimed_at=None, attempts=Message.attempts - 1),
                       execution_options={"synchronize_session": False})
    db.session.commit()


def refresh_counts(campaign_id):
    """Recount sent/failed from messages into the campaign's aggregates (pages read only those)."""
    def count(status):
        return (sa.select(sa.func.count()).select_from(Message)
                .where(Message.campaign_id == campaign_id, Message.status == status).scalar_subquery())
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign_id).values(
        sent_count=count("sent"), failed_count=count("failed"), delivered_count=count("sent"), updated_at=utcnow()))
    db.session.commit()


def _finish(campaign_id):
    """Mark the campaign sent when nothing is queued or in flight (once, whoever gets here first)."""
    busy = db.session.scalar(sa.select(sa.func.count()).select_from(Message).where(
        Message.campaign_id == campaign_id, Message.status.in_(("queued", "sending"))))
    if busy:
        return False
    refresh_counts(campaign_id)
    result = db.session.execute(sa.update(Campaign).where(Campaign.id == campaign_id, Campaign.status == "sending")
                                .values(status="sent", sent_at=utcnow()))
    db.session.commit()
    return result.rowcount == 1


# --------------------------------------------------------------------------------------------------
# Rendering one recipient's email

class CampaignContent:
    """What is common to every recipient of a campaign, built once per process: the compiled templates
    (links pre-rewritten, open pixel added), the MIME skeleton, the subject template, the account."""

    def __init__(self, campaign, account, base_url):
        from nudge.delivery.message import compose_skeleton
        html, links = tracking.prepare_html(campaign.content_html or "")
        text = campaign.content_text or rendering.html_to_text(campaign.content_html or "")
        self.campaign_id = campaign.id
        self.account_id = campaign.account_id
        self.links = links
        self.compiled = rendering.CompiledVersion(html, text)
        self.subject = rendering.TEXT_ENV.from_string(campaign.subject or "")
        self.account = rendering.account_fields(account)
        self.base_url = base_url
        self.from_email = campaign.from_email
        self.from_name = campaign.from_name
        self.reply_to = campaign.reply_to
        self.domain = (campaign.from_email or "nudge.invalid").rsplit("@", 1)[-1]
        self.skeleton = compose_skeleton(from_email=campaign.from_email, from_name=campaign.from_name,
                                         reply_to=campaign.reply_to)

    def context(self, message, contact):
        urls = tracking.urls_for(tracking.token_for(message.id, self.campaign_id), self.base_url)
        return {"contact": rendering.contact_fields(contact if contact is not None else {"email": message.email}),
                "account": self.account, **urls}

    def render(self, message, contact):
        """(subject, html, text, urls) for one recipient."""
        context = self.context(message, contact)
        html, text = self.compiled.render(context)
        subject = " ".join(self.subject.render(context).split())
        return subject, html, text, context

    def outgoing(self, message, contact):
        """The OutgoingMessage of one recipient, with the compliance and bounce-matching headers."""
        from nudge.delivery.message import OutgoingMessage, message_id_for
        subject, html, text, context = self.render(message, contact)
        mailto = f"mailto:{self.from_email}?subject=unsubscribe" if self.from_email else None
        unsubscribe_header = f"<{context['unsubscribe_url']}>" + (f", <{mailto}>" if mailto else "")
        return OutgoingMessage(
            from_email=self.from_email, from_name=self.from_name, to_email=message.email, reply_to=self.reply_to,
            subject=subject, html=html, text=text,
            message_id=message_id_for(self.campaign_id, message.contact_id or message.id, self.domain),
            headers=[("List-Unsubscribe", unsubscribe_header),
                     ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                     ("X-Nudge-Message-Id", str(message.id))],
            account_id=str(self.account_id))


_content_cache = {}
_content_lock = threading.Lock()


def campaign_content(campaign_id):
    """The CampaignContent of a campaign (cached per process; a sending campaign's content never changes)."""
    with _content_lock:
        content = _content_cache.get(campaign_id)
    if content is None:
        campaign = db.session.get(Campaign, campaign_id)
        account = db.session.get(Account, campaign.account_id)
        content = CampaignContent(campaign, account, current_app.config["BASE_URL"])
        with _content_lock:
            if len(_content_cache) > 32:
                _content_cache.clear()
            _content_cache[campaign_id] = content
    return content


def render_for_browser(message):
    """The email of one message as a web page (view in browser), or None when its campaign is gone."""
    campaign = db.session.get(Campaign, message.campaign_id)
    if campaign is None or not campaign.content_html:
        return None
    contact = db.session.get(Contact, message.contact_id) if message.contact_id else None
    _, html, _, _ = campaign_content(campaign.id).render(message, contact)
    return html


# --------------------------------------------------------------------------------------------------
# Delivering

_local = threading.local()
PROVIDER_SETTINGS = ("SMTP_URL", "SES_REGION", "SES_ENDPOINT_URL", "SENDGRID_API_KEY", "SENDGRID_API_URL", "OUTBOX_DIR")


def sender_for(campaign_id, size):
    """This thread's failover sender for a campaign's provider chain (connections stay open across tasks)."""
    from nudge.delivery import selection
    config = current_app.config
    names = tuple(selection.providers_for("marketing", size, config))
    key = (names,) + tuple(config.get(name) for name in PROVIDER_SETTINGS)
    senders = getattr(_local, "senders", None)
    if senders is None:
        senders = _local.senders = {}
    sender = senders.get(key)
    if sender is None:
        sender = senders[key] = selection.FailoverSender(list(names), selection.provider_factory(config))
    return sender


def _status(campaign_id):
    db.session.expire_all()
    return db.session.scalar(sa.select(Campaign.status).where(Campaign.id == campaign_id))


def deliver_chunk(campaign_id, seconds=CHUNK_SECONDS):
    """Claim and send batches for up to `seconds`; returns "done", "stopped" or "more"."""
    from nudge.delivery.message import compose
    deadline = time.monotonic() + seconds
    content = campaign_content(campaign_id)
    recipients = db.session.scalar(sa.select(Campaign.recipient_count).where(Campaign.id == campaign_id)) or 0
    sender = sender_for(campaign_id, recipients)
    last_count = time.monotonic()
    transient_streak = 0
    heartbeat_seconds = claim_timeout().total_seconds() / 4
    while time.monotonic() < deadline:
        if _status(campaign_id) != "sending":
            return "stopped"
        ids = claim(campaign_id)
        if not ids:
            _finish(campaign_id)
            return "done"
        rows = _batch_rows(ids)
        last_touch = time.monotonic()
        for position, (message, contact) in enumerate(rows):
            if position and position % 50 == 0 and _status(campaign_id) != "sending":
                release([m.id for m, _ in rows[position:]])
                return "stopped"
            if time.monotonic() - last_touch > heartbeat_seconds:
                touch_claims(campaign_id, [m.id for m, _ in rows[position:]])
                last_touch = time.monotonic()
            outcome = _send_one(content, sender, message, contact, compose)
            transient_streak = transient_streak + 1 if outcome == "transient" else 0
            if transient_streak >= TRANSIENT_STREAK_PAUSE:
                release([m.id for m, _ in rows[position + 1:]])
                auto_pause(campaign_id, "Every email provider failed for the last "
                                        f"{TRANSIENT_STREAK_PAUSE} emails; check the sending settings, then resume.")
                return "stopped"
        if time.monotonic() - last_count >= RECOUNT_EVERY:
            refresh_counts(campaign_id)
            last_count = time.monotonic()
            if check_rates(campaign_id):
                return "stopped"
    refresh_counts(campaign_id)
    return "more"


def _send_one(content, sender, message, contact, compose):
    """Render, send and record one message; returns "sent", "failed" or "transient"."""
    try:
        outgoing = content.outgoing(message, contact)
    except ValidationError as exc:
        _record(message.id, status="failed", error=exc.message[:1000])
        return "failed"
    result = sender.send(outgoing, compose(content.skeleton, outgoing))
    if result.status == "sent":
        record_sent(message, result)
        return "sent"
    if result.status == "permanent" or message.attempts >= MAX_ATTEMPTS:
        error = result.error or "Rejected by the provider."
        if result.status != "permanent":
            error = f"Gave up after {message.attempts} attempts: {error}"
        _record(message.id, status="failed", provider=result.provider, error=error[:1000])
        return "failed"
    _record(message.id, status="queued", claimed_at=None, provider=result.provider, error=(result.error or "")[:1000])
    return "transient"


def check_rates(campaign_id):
    """Pause the campaign when its failure rate spikes past the account's (or the default) threshold."""
    from nudge.models import SendingConfig
    campaign = db.session.get(Campaign, campaign_id)
    attempted = campaign.sent_count + campaign.failed_count
    if attempted < MIN_SAMPLE:
        return False
    settings = db.session.scalar(sa.select(SendingConfig).where(SendingConfig.account_id == campaign.account_id))
    failure_limit = (settings.pause_failure_rate if settings and settings.pause_failure_rate is not None
                     else DEFAULT_PAUSE_FAILURE_RATE)
    bounce_limit = (settings.pause_bounce_rate if settings and settings.pause_bounce_rate is not None
                    else DEFAULT_PAUSE_BOUNCE_RATE)
    failure_rate = campaign.failed_count / attempted
    bounce_rate = campaign.bounced_count / attempted
    if failure_rate > failure_limit:
        auto_pause(campaign_id, f"Paused automatically: {failure_rate:.1%} of the emails sent so far failed "
                                f"(limit {failure_limit:.1%}). Look at the failed recipients, then resume.")
        return True
    if bounce_rate > bounce_limit:
        auto_pause(campaign_id, f"Paused automatically: {bounce_rate:.1%} of the emails sent so far bounced "
                                f"(limit {bounce_limit:.1%}). Clean the list, then resume.")
        return True
    return False


def auto_pause(campaign_id, reason):
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign_id, Campaign.status == "sending")
                       .values(status="paused", paused_reason=reason))
    db.session.commit()
    current_app.logger.warning("campaign %s paused: %s", campaign_id, reason)


# --------------------------------------------------------------------------------------------------
# Recovery, cancel, retry

def claim_timeout():
    """How old a claim is when its worker is presumed dead (NUDGE_SEND_CLAIM_TIMEOUT; a live worker holds a
    claim for about a second per batch)."""
    return dt.timedelta(seconds=current_app.config.get("SEND_CLAIM_TIMEOUT", 20))


def release_stale_claims():
    """Claims older than a live worker ever holds them were left by a dead one: queue them again."""
    cutoff = utcnow() - claim_timeout()
    result = db.session.execute(sa.update(Message).where(Message.status == "sending", Message.claimed_at < cutoff)
                                .values(status="queued", claimed_at=None),
                                execution_options={"synchronize_session": False})
    db.session.commit()
    return result.rowcount


def resume_stalled():
    """Restart sending campaigns that have queued messages but no worker (a worker died with their task)."""
    release_stale_claims()
    idle_since = utcnow() - claim_timeout()
    stalled = db.session.scalars(sa.select(Campaign.id).where(
        Campaign.status == "sending", Campaign.updated_at < idle_since)).all()
    for campaign_id in stalled:
        if not _finish(campaign_id):
            db.session.execute(sa.update(Campaign).where(Campaign.id == campaign_id).values(updated_at=utcnow()))
            db.session.commit()
            enqueue_workers(campaign_id)
    return stalled


def cancel_queued(campaign_id):
    """A cancelled campaign's unsent messages are marked cancelled (never sent later)."""
    result = db.session.execute(sa.update(Message).where(Message.campaign_id == campaign_id,
                                                         Message.status.in_(("queued", "sending")))
                                .values(status="cancelled"), execution_options={"synchronize_session": False})
    db.session.commit()
    refresh_counts(campaign_id)
    return result.rowcount


def retry_failed(campaign_id):
    """Queue the failed recipients again (their contacts must still be mailable) and restart sending."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound("No such campaign.")
    mailable = sa.select(Contact.id).where(Contact.id == Message.contact_id, Contact.status == "active")
    result = db.session.execute(sa.update(Message).where(Message.campaign_id == campaign_id, Message.status == "failed",
                                                         sa.exists(mailable))
                                .values(status="queued", attempts=0, error=None, claimed_at=None),
                                execution_options={"synchronize_session": False})
    if result.rowcount:
        campaign.status = "sending"
        campaign.paused_reason = None
        campaign.updated_at = utcnow()
    db.session.commit()
    if result.rowcount:
        refresh_counts(campaign_id)
        enqueue_workers(campaign_id)
    return result.rowcount


def failed_messages_query(account_id, campaign_id):
    return (sa.select(Message).where(Message.account_id == account_id, Message.campaign_id == campaign_id,
                                     Message.status == "failed").order_by(Message.email))


# --------------------------------------------------------------------------------------------------
# Test sends

def send_test(actor, campaign_id, emails, contact_id=None):
    """Send the campaign's current content to up to five addresses now, personalised for a real contact or
    the sample one; subject prefixed "[Test]". Returns [{"email", "status", "error"}]."""
    from nudge.delivery import selection
    from nudge.delivery.message import OutgoingMessage, compose, compose_skeleton, message_id_for
    from nudge.services import campaigns as campaigns_service
    campaign = campaigns_service.get_campaign(actor.account_id, campaign_id)
    account = db.session.get(Account, campaign.account_id)
    content = campaigns_service.current_content(campaign)
    if not content.html:
        raise ValidationError("There is no content to test yet.", [{"field": "content", "issue": "Write the email first."}])
    contact = None
    if contact_id:
        contact = db.session.scalar(sa.select(Contact).where(Contact.id == contact_id,
                                                             Contact.account_id == campaign.account_id))
        if contact is None:
            raise NotFound("No such contact.")
    base_url = current_app.config["BASE_URL"]
    context = rendering.build_context(account, contact, **rendering.preview_urls(base_url))
    html, text = rendering.CompiledVersion(content.html, content.text or rendering.html_to_text(content.html)).render(context)
    subject = "[Test] " + " ".join(rendering.TEXT_ENV.from_string(campaign.subject or "").render(context).split())
    skeleton = compose_skeleton(from_email=campaign.from_email, from_name=campaign.from_name,
                                reply_to=campaign.reply_to)
    sender = selection.FailoverSender(selection.providers_for("test", 1, current_app.config),
                                      selection.provider_factory(current_app.config))
    results = []
    try:
        for email in emails:
            outgoing = OutgoingMessage(from_email=campaign.from_email, from_name=campaign.from_name, to_email=email,
                                       reply_to=campaign.reply_to, subject=subject, html=html, text=text,
                                       message_id=message_id_for(campaign.id, uuid.uuid4(), _domain(campaign)),
                                       headers=[("X-Nudge-Test", "1")], account_id=str(campaign.account_id))
            result = sender.send(outgoing, compose(skeleton, outgoing))
            results.append({"email": email, "status": result.status, "error": result.error})
    finally:
        sender.close()
    return results


def _domain(campaign):
    return (campaign.from_email or "nudge.invalid").rsplit("@", 1)[-1]
