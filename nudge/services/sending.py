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
from concurrent.futures import ThreadPoolExecutor
import time
import uuid
from typing import NamedTuple

import sqlalchemy as sa
from flask import current_app

from nudge.errors import NotFound, ValidationError
from nudge.extensions import db
from nudge.models import Account, Campaign, Contact, EmailEvent, Message
from nudge.models.types import utcnow
from nudge.services import bounces, rendering, sending_domains, sending_settings, table_stats, tracking
from nudge.services.dialect import insert as dialect_insert
from nudge.services.dialect import is_postgres, new_uuid_sql

BATCH = 200
CHUNK_SECONDS = 10            # a delivery task works this long, then re-enqueues itself
MAX_ATTEMPTS = 5
MIN_SAMPLE = 100              # sends before failure/bounce rates may pause a campaign
DEFAULT_PAUSE_FAILURE_RATE = 0.2
DEFAULT_PAUSE_BOUNCE_RATE = 0.1
TRANSIENT_STREAK_PAUSE = 50   # consecutive transient failures: every provider is down
SNAPSHOT_POLL = 0.05          # seconds between claims while the snapshot's rest goes in


# --------------------------------------------------------------------------------------------------
# Snapshot

FIRST_PART = 5_000              # recipients snapshotted before the workers start
SNAPSHOT_STALE = dt.timedelta(minutes=5)  # an incomplete snapshot untouched this long lost its process


def start_send(campaign_id):
    """Snapshot the recipients and start the workers; returns the recipient count.

    The snapshot runs in two parts so that the first email leaves within a second whatever the size of
    the list: the first FIRST_PART recipients are inserted and the workers started, then the rest is
    inserted (one INSERT … SELECT that skips those already there) while they send. Until the snapshot is
    complete the campaign's recipient_count is 0, and no worker marks it sent."""
    campaign = db.session.scalar(sa.select(Campaign).where(Campaign.id == campaign_id).with_for_update())
    if campaign is None:
        raise NotFound("No such campaign.")
    if campaign.status != "sending":  # cancelled between Send and here: snapshot nobody
        db.session.commit()
        return 0
    _, links = tracking.prepare_html(campaign.content_html or "")
    campaign.links = links
    first = db.session.execute(_snapshot_insert(campaign, limit=FIRST_PART)).rowcount
    db.session.commit()
    started = bool(first) and not _tasks_run_inline()
    if started:
        enqueue_workers(campaign_id)
    return complete_snapshot(campaign_id, workers_started=started)


def _tasks_run_inline():
    """Huey's immediate mode runs a task inside the call that queues it: no worker could send the first
    part while the rest goes in, so the workers start once the snapshot is complete."""
    from nudge.tasks import huey
    return huey.immediate


def _snapshot_insert(campaign, limit=None):
    """INSERT … SELECT of the campaign's audience (only contacts that may be mailed) into messages,
    skipping recipients already there."""
    from nudge.services import campaigns as campaigns_service
    audience = campaigns_service.audience_query(campaign.account_id, campaign.audience)
    if limit is not None:
        audience = audience.limit(limit)
    audience = audience.subquery()
    snapshot = sa.select(new_uuid_sql(), sa.literal(campaign.account_id, Message.account_id.type),
                         sa.literal(campaign.id, Message.campaign_id.type), audience.c.id, audience.c.email,
                         sa.literal("queued"), sa.literal(0), sa.literal(utcnow(), Message.created_at.type)
                         ).where(sa.true())  # SQLite needs a WHERE before ON CONFLICT in INSERT … SELECT
    return dialect_insert(Message).on_conflict_do_nothing().from_select(
        ["id", "account_id", "campaign_id", "contact_id", "email", "status", "attempts", "created_at"], snapshot)


def complete_snapshot(campaign_id, workers_started=False):
    """The rest of the snapshot (idempotent): insert the recipients not there yet, then record the
    count, which marks the snapshot complete. Returns the count."""
    campaign = db.session.get(Campaign, campaign_id)
    db.session.execute(_snapshot_insert(campaign))
    total = db.session.scalar(sa.select(sa.func.count()).select_from(Message)
                              .where(Message.campaign_id == campaign_id))
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign_id)
                       .values(recipient_count=total, updated_at=utcnow()))
    # Workers claim batches by (campaign, status): plan them with statistics that know the new rows.
    table_stats.refresh_after_bulk_change({"messages": total}, campaign.account_id)
    db.session.commit()
    status = _status(campaign_id)
    if status == "cancelled":           # cancelled while the rest went in: those are cancelled too
        cancel_queued(campaign_id)
    elif total == 0:
        _finish(campaign_id)
    elif not workers_started and status == "sending":
        enqueue_workers(campaign_id)
    return total


def snapshot_complete(campaign_id):
    return bool(db.session.scalar(sa.select(Campaign.recipient_count).where(Campaign.id == campaign_id)))


def worker_count():
    return max(1, int(current_app.config.get("SEND_WORKERS") or 4))


def enqueue_workers(campaign_id, count=None):
    """Start (or restart) the campaign's delivery tasks; extra ones find nothing to claim and stop."""
    from nudge.tasks import deliver_campaign
    for _ in range(count or worker_count()):
        deliver_campaign(str(campaign_id))


# --------------------------------------------------------------------------------------------------
# Claiming and recording

def _claimable(campaign_id, limit):
    """SELECT of up to `limit` queued messages' ids, locked (skipping rows another worker holds) on PostgreSQL.
    Any order will do: sorting 100,000 queued rows per claim cost ~200 µs per message."""
    pick = (sa.select(Message.id).where(Message.campaign_id == campaign_id, Message.status == "queued")
            .limit(limit))
    return pick.with_for_update(skip_locked=True) if is_postgres() else pick


def claim(campaign_id, limit=BATCH):
    """Mark up to `limit` queued messages as being sent by this worker; returns their ids."""
    statement = (sa.update(Message).where(Message.id.in_(_claimable(campaign_id, limit).scalar_subquery()))
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


_MESSAGES, _CONTACTS = Message.__table__, Contact.__table__
_BATCH_COLUMNS = [_MESSAGES.c.id, _MESSAGES.c.contact_id, _MESSAGES.c.email, _MESSAGES.c.attempts] + [
    _CONTACTS.c[name] for name in CONTACT_COLUMNS]


def _batch_rows(content, ids):
    """(Recipient, contact dict) pairs for claimed ids, in one Core query (the ORM's row handling cost
    ~60 µs per recipient)."""
    statement = (sa.select(*_BATCH_COLUMNS)
                 .select_from(_MESSAGES.outerjoin(_CONTACTS, _CONTACTS.c.id == _MESSAGES.c.contact_id))
                 .where(_MESSAGES.c.id.in_(ids)).order_by(_MESSAGES.c.id))
    return _pairs(content, db.session.connection().execute(statement))


def _pairs(content, rows):
    pairs = []
    for row in rows:
        recipient = Recipient(row[0], content.account_id, content.campaign_id, row[1], row[2], row[3])
        contact = dict(zip(CONTACT_COLUMNS, row[4:])) if recipient.contact_id else None
        pairs.append((recipient, contact))
    return pairs


def _commit_without_waiting_for_the_disk(connection):
    """SET LOCAL synchronous_commit = off: this transaction's commit does not wait for its WAL flush. For
    claims and a batch's bookkeeping only: a database crash losing the last of them puts claims back in
    the queue or leaves events to _finish's repair, never loses a recorded result."""
    connection.exec_driver_sql("SET LOCAL synchronous_commit = off")


def claim_batch(content, limit=BATCH):
    """Claim up to `limit` queued messages of the campaign: their (Recipient, contact dict) pairs. On
    PostgreSQL the claim and the read of the recipients' contacts are one statement (an UPDATE … RETURNING
    joined to contacts), one round trip instead of two and no list of ids sent back."""
    if not is_postgres():
        ids = claim(content.campaign_id, limit)
        return _batch_rows(content, ids) if ids else []
    claimed = (sa.update(_MESSAGES)
               .where(_MESSAGES.c.id.in_(_claimable(content.campaign_id, limit).scalar_subquery()))
               .values(status="sending", claimed_at=utcnow(), attempts=_MESSAGES.c.attempts + 1)
               .returning(_MESSAGES.c.id, _MESSAGES.c.contact_id, _MESSAGES.c.email, _MESSAGES.c.attempts)
               .cte("claimed"))
    statement = (sa.select(claimed.c.id, claimed.c.contact_id, claimed.c.email, claimed.c.attempts,
                           *[_CONTACTS.c[name] for name in CONTACT_COLUMNS])
                 .select_from(claimed.outerjoin(_CONTACTS, _CONTACTS.c.id == claimed.c.contact_id)))
    connection = db.session.connection()
    _commit_without_waiting_for_the_disk(connection)
    pairs = _pairs(content, connection.execute(statement))
    db.session.commit()
    return pairs


class Recorder:
    """Records each message's result the moment it is known, so a worker killed at any moment has at most
    the message in flight on each connection unrecorded.

    sent_later() hands a "sent" result to the committer and returns a ticket; wait(ticket) returns once it
    is committed. The sending loop renders the next email while the last result is being committed and
    waits for it before that email leaves — never two unrecorded emails on one connection. The other
    results (rare) are committed before the call returns.

    On PostgreSQL the results go through the process's GroupCommitter (one autocommit statement for every
    result waiting at that moment, asynchronous commit). On SQLite (one writer at a time) through the
    session, committed per message. The email.sent events and the campaign's counters follow per batch,
    set-based."""

    def __init__(self):
        self.committer = group_committer() if is_postgres() else None

    def _run(self, kind, values):
        self.wait(self._submit(kind, values))

    def _submit(self, kind, values):
        if self.committer is not None:
            return self.committer.submit(kind, values)
        db.session.connection().exec_driver_sql(SQLITE_RESULT_SQL[kind], values)
        db.session.commit()
        return None

    def wait(self, ticket):
        """Return once the result of this ticket (or None: nothing pending) is committed."""
        if ticket is not None:
            self.committer.wait(ticket)

    def _id(self, message_id):
        return str(message_id) if self.committer is not None else message_id.hex

    def _time(self, value):
        return value if self.committer is not None else value.isoformat(" ")

    def sent_later(self, message_id, provider, provider_message_id):
        """Hand over a sent result; returns the ticket to wait() for."""
        return self._submit("sent", (provider, provider_message_id, self._time(utcnow()), self._id(message_id)))

    def sent(self, message_id, provider, provider_message_id):
        self.wait(self.sent_later(message_id, provider, provider_message_id))

    def failed(self, message_id, provider, error):
        self._run("other", ("failed", provider, (error or "")[:1000], self._id(message_id)))

    def defer(self, message_id):
        """Back to the queue untried (its domain's rate limit is used up for now)."""
        self._run("defer", (self._id(message_id),))

    def requeue(self, message_id, provider, error):
        self._run("other", ("queued", provider, (error or "")[:1000], self._id(message_id)))

    def close(self):
        if self.committer is not None:
            self.committer.release()


def _result_sql(mark):
    return {
        "sent": (f"UPDATE messages SET status = 'sent', provider = {mark}, provider_message_id = {mark}, "
                 f"sent_at = {mark}, error = NULL WHERE id = {mark}"),
        "other": (f"UPDATE messages SET status = {mark}, provider = {mark}, error = {mark}, claimed_at = NULL "
                  f"WHERE id = {mark}"),
        "defer": f"UPDATE messages SET status = 'queued', claimed_at = NULL, attempts = attempts - 1 WHERE id = {mark}",
    }


SQLITE_RESULT_SQL = _result_sql("?")
POSTGRES_RESULT_SQL = _result_sql("%s")
# Every "sent" result waiting at one moment, in one statement (four arrays: psycopg2 adapts lists in C).
POSTGRES_SENT_GROUP_SQL = ("UPDATE messages AS m SET status = 'sent', provider = v.provider, "
                           "provider_message_id = v.provider_message_id, sent_at = v.sent_at, error = NULL "
                           "FROM unnest(%s::text[], %s::text[], %s::timestamp[], %s::uuid[]) "
                           "AS v (provider, provider_message_id, sent_at, id) WHERE m.id = v.id")


class _Pending:
    """One result handed to the committer. `unwritten` is held until the result is written: the sending
    thread waiting for it blocks on that lock alone (a shared condition would wake every thread per group)."""
    __slots__ = ("kind", "values", "unwritten", "error")

    def __init__(self, kind, values):
        self.kind, self.values, self.error = kind, values, None
        self.unwritten = threading.Lock()
        self.unwritten.acquire()

    def written(self, error):
        self.error = error
        self.unwritten.release()

    def wait(self):
        with self.unwritten:      # free once written; released again so that waiting twice returns too
            pass


class GroupCommitter:
    """Group commit of per-message results on PostgreSQL, shared by a worker process's sending threads.

    Threads hand results over (submit) and wait for them (wait). A committer thread writes every result
    queued at that moment — all "sent" results in one UPDATE … FROM unnest(…), the rare others one by
    one — in autocommit with synchronous_commit off, then wakes the waiting threads: one statement per
    group instead of one per message, and no timer (a result is written as soon as a committer is free).
    COMMITTERS threads, each with its own connection, write groups side by side (one alone was busy 80 %
    of the time at 1,700 emails/s). They live while some Recorder is open; then their connections go back
    to the pool and they end."""

    COMMITTERS = 2

    def __init__(self, engine):
        self.engine = engine
        self.lock = threading.Lock()
        self.work = threading.Condition(self.lock)      # committer threads wait for results
        self.queue = []
        self.users = 0
        self.threads = 0
        self.idle = 0

    def acquire(self):
        with self.lock:
            self.users += 1
        return self

    def release(self):
        with self.lock:
            self.users -= 1
            self.work.notify_all()

    def submit(self, kind, values):
        """Queue a result for the next group; returns the ticket to wait() for."""
        entry = _Pending(kind, values)
        with self.lock:
            self.queue.append(entry)
            if self.idle:
                self.work.notify()
            elif self.threads < self.COMMITTERS:
                self.threads += 1
                threading.Thread(target=self._run, name="nudge-group-commit", daemon=True).start()
        return entry

    def wait(self, entry):
        entry.wait()
        if entry.error is not None:
            raise RuntimeError(f"The send result could not be recorded: {entry.error}") from entry.error

    def _run(self):
        connection = _CommitConnection(self.engine)
        try:
            while True:
                with self.lock:
                    while not self.queue and self.users > 0:
                        self.idle += 1
                        self.work.wait()
                        self.idle -= 1
                    if not self.queue:              # nobody sends any more
                        self.threads -= 1
                        return
                    group, self.queue = self.queue, []
                error = connection.commit(group)
                for pending in group:
                    pending.written(error)
        finally:
            connection.close()


class _CommitConnection:
    """A committer thread's connection: autocommit, synchronous_commit off; back to the pool when closed."""

    def __init__(self, engine):
        self.engine = engine
        self.pooled = None

    def _cursor(self):
        if self.pooled is None:
            self.pooled = self.engine.raw_connection()
            connection = self.pooled.driver_connection  # the psycopg2 connection itself
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SET synchronous_commit = off")
        return self.pooled.driver_connection.cursor()

    def commit(self, group):
        """Write one group; returns None or the exception every thread of the group re-raises."""
        try:
            with self._cursor() as cursor:
                sent = [entry.values for entry in group if entry.kind == "sent"]
                if sent:
                    cursor.execute(POSTGRES_SENT_GROUP_SQL, [list(column) for column in zip(*sent)])
                for entry in group:
                    if entry.kind != "sent":
                        cursor.execute(POSTGRES_RESULT_SQL[entry.kind], entry.values)
            return None
        except Exception as exc:            # the connection may be broken: start afresh next time
            if self.pooled is not None:
                pooled, self.pooled = self.pooled, None
                pooled.invalidate()
            return exc

    def close(self):
        pooled, self.pooled = self.pooled, None
        _give_back(pooled)


def _give_back(pooled):
    """Return the committer's connection to the pool with its session settings reset."""
    if pooled is None:
        return
    try:
        with pooled.driver_connection.cursor() as cursor:
            cursor.execute("RESET synchronous_commit")
        pooled.driver_connection.autocommit = False
        pooled.close()
    except Exception:                       # a broken connection: the pool discards it
        pooled.invalidate()


def group_committer():
    """The app's GroupCommitter (one per worker process and database), registered as in use."""
    extensions = current_app.extensions
    with _content_lock:
        committer = extensions.get("nudge.group_committer")
        if committer is None:
            committer = extensions["nudge.group_committer"] = GroupCommitter(db.engine)
    return committer.acquire()


def _sent_event_select(*conditions):
    """SELECT of email.sent event rows for the sent messages matching conditions."""
    if is_postgres():
        data = sa.func.jsonb_build_object("message_id", sa.cast(Message.id, sa.Text), "provider", Message.provider)
    else:
        data = sa.func.json_object("message_id", Message.id, "provider", Message.provider)
    return (sa.select(new_uuid_sql(), Message.account_id, Message.campaign_id, Message.contact_id,
                      sa.literal("email.sent"), data, Message.sent_at)
            .where(Message.status == "sent", *conditions))


def _insert_events(select):
    return db.session.execute(sa.insert(EmailEvent).from_select(
        ["id", "account_id", "campaign_id", "contact_id", "event_type", "event_data", "created_at"], select)).rowcount


def sent_events_for(message_ids):
    """email.sent events for the sent messages among these ids, in one INSERT … SELECT."""
    return _insert_events(_sent_event_select(Message.id.in_(message_ids)))


def missing_sent_events(campaign_id):
    """Sent messages whose email.sent event a killed worker did not get to write: written now. NOT IN over
    the campaign's recorded contacts is one hashed subplan (a correlated NOT EXISTS could become a nested
    loop over every event of the campaign)."""
    recorded = (sa.select(EmailEvent.contact_id)
                .where(EmailEvent.campaign_id == campaign_id, EmailEvent.event_type == "email.sent",
                       EmailEvent.contact_id.is_not(None)))
    return _insert_events(_sent_event_select(Message.campaign_id == campaign_id, Message.contact_id.is_not(None),
                                             Message.contact_id.not_in(recorded)))


def add_counts(campaign_id, sent, failed):
    """Add one batch's results to the counters of a campaign still sending or paused (recounted exactly
    when it finishes); False when it has ended meanwhile (sent or cancelled: its ending recounted)."""
    if not (sent or failed):
        return True
    return db.session.execute(
        sa.update(Campaign).where(Campaign.id == campaign_id, Campaign.status.in_(("sending", "paused"))).values(
            sent_count=Campaign.sent_count + sent, delivered_count=Campaign.delivered_count + sent,
            failed_count=Campaign.failed_count + failed, updated_at=utcnow())).rowcount == 1


def record_batch(campaign_id, ids, sent, failed):
    """A batch's email.sent events and its counts on the campaign, in one transaction, once every result of
    the batch is committed. No event and no count is ever written twice, even when the campaign ended
    while this was on its way:
    - finished: _finish (which takes the campaign's row before it repairs missing events and recounts)
      already included this batch, so nothing is written;
    - cancelled (or otherwise ended): the events are written and the campaign recounted, this batch's
      results included (a cancel recounts once, possibly before them)."""
    if is_postgres():
        _commit_without_waiting_for_the_disk(db.session.connection())
    sent_events_for(ids)
    if add_counts(campaign_id, sent, failed):
        db.session.commit()
    elif _status(campaign_id) == "sent":
        db.session.rollback()
    else:
        refresh_counts(campaign_id)


class BatchBookkeeper:
    """Runs record_batch for a sending thread: on PostgreSQL on a thread of its own, one batch at a time and
    in order, so the sending thread claims and sends its next batch meanwhile (a batch's events cost
    PostgreSQL ~100 µs per email: its indexes and foreign keys); an error is raised by the next submit() or
    by flush(). On SQLite (one writer at a time) in the sending thread. A worker killed with a batch
    pending loses nothing: _finish writes missing events and recounts."""

    def __init__(self):
        self.app = current_app._get_current_object()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="nudge-bookkeeping") if is_postgres() else None
        self.pending = None

    def submit(self, campaign_id, ids, sent, failed):
        if self.executor is None:
            record_batch(campaign_id, ids, sent, failed)
            return
        self.flush()
        self.pending = self.executor.submit(self._run, campaign_id, ids, sent, failed)

    def _run(self, *batch):
        with self.app.app_context():
            record_batch(*batch)

    def flush(self):
        """Return once the last batch is recorded (raising its error, if any)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def close(self):
        try:
            self.flush()
        finally:
            if self.executor is not None:
                self.executor.shutdown()


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
    """Mark the campaign sent when nothing is queued or in flight (once, whoever gets here first), then
    write the events a killed worker did not get to and recount, in the same transaction. Marking it first
    takes the campaign's row: a batch's bookkeeping in flight either committed before (its events are seen
    here) or finds the campaign sent and rolls back (record_batch)."""
    busy = db.session.scalar(sa.select(sa.func.count()).select_from(Message).where(
        Message.campaign_id == campaign_id, Message.status.in_(("queued", "sending"))))
    if busy:
        return False
    result = db.session.execute(sa.update(Campaign).where(Campaign.id == campaign_id, Campaign.status == "sending")
                                .values(status="sent", sent_at=utcnow()))
    if result.rowcount != 1:
        db.session.rollback()
        return False
    missing_sent_events(campaign_id)
    refresh_counts(campaign_id)
    return True


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
        self.account_key = str(campaign.account_id)
        self.skeleton = compose_skeleton(from_email=campaign.from_email, from_name=campaign.from_name,
                                         reply_to=campaign.reply_to)
        self.dkim = sending_domains.dkim_for(campaign.account_id, campaign.from_email)
        self.tracking_key = tracking.signing_key()

    def raw(self, outgoing):
        """The composed bytes of one recipient's email, DKIM-signed when the account has a key."""
        from nudge.delivery.message import compose, dkim_sign
        raw = compose(self.skeleton, outgoing)
        if self.dkim:
            selector, domain, key = self.dkim
            raw = dkim_sign(raw, selector, domain, key)
        return raw

    def context(self, message, contact):
        urls = tracking.urls_for(tracking.token_for(message.id, self.campaign_id, self.tracking_key), self.base_url)
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
        from nudge.delivery.message import OutgoingMessage, list_unsubscribe_headers, message_id_for
        subject, html, text, context = self.render(message, contact)
        to_name = " ".join(part for part in ((contact or {}).get("first_name"), (contact or {}).get("last_name"))
                           if part)
        return OutgoingMessage(
            from_email=self.from_email, from_name=self.from_name, to_email=message.email, to_name=to_name,
            reply_to=self.reply_to,
            subject=subject, html=html, text=text,
            message_id=message_id_for(self.campaign_id, message.contact_id or message.id, self.domain),
            headers=[*list_unsubscribe_headers(context["unsubscribe_url"]), ("X-Nudge-Message-Id", str(message.id))],
            account_id=self.account_key)


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
# A sending thread sends in waves, one email on each of its connections at once, their SMTP round trips
# overlapped (two per wave instead of two per email). Each connection sends its next email only once its
# last result is committed. NUDGE_SEND_CONNECTIONS overrides it.
CONNECTIONS_PER_THREAD = 8
STATUS_CHECK_SECONDS = 0.25     # how often a sending thread looks whether its campaign was paused or cancelled
PROVIDER_SETTINGS = ("SMTP_URL", "SES_REGION", "SES_ENDPOINT_URL", "SENDGRID_API_KEY", "SENDGRID_API_URL", "OUTBOX_DIR")


def connections_per_thread():
    return max(1, int(current_app.config.get("SEND_CONNECTIONS") or CONNECTIONS_PER_THREAD))


def sender_for(account_id, size, slot=0, from_email=None):
    """This thread's failover sender number `slot` for an account's provider chain — its own provider
    (Settings → Sending) first, then the server's (unless from_email may not use them, sending_domains) —
    kept open across tasks until the settings change."""
    from nudge.delivery import selection
    from nudge.models import SendingConfig
    from nudge.services import sending_settings
    config = current_app.config
    changed = db.session.scalar(sa.select(SendingConfig.updated_at).where(SendingConfig.account_id == account_id))
    names, factory = sending_settings.account_providers(account_id, "marketing", size, config, from_email=from_email)
    key = (account_id, slot, changed, tuple(names)) + tuple(config.get(name) for name in PROVIDER_SETTINGS)
    senders = getattr(_local, "senders", None)
    if senders is None:
        senders = _local.senders = {}
    sender = senders.get(key)
    if sender is None:
        for stale in [k for k in senders if k[:2] == key[:2]]:
            senders.pop(stale).close()
        sender = senders[key] = selection.FailoverSender(list(names), factory)
    return sender


def _senders(account_id, recipients, from_email=None):
    """This thread's senders, one per connection of a wave: connections_per_thread() of them when the
    account's first provider overlaps its connections' round trips (SMTP), else one (an HTTP API is called
    one message at a time either way, and a wave would only leave more results unrecorded at a time)."""
    first = sender_for(account_id, recipients, 0, from_email)
    if not first.overlaps_connections:
        return [first]
    return [first] + [sender_for(account_id, recipients, slot, from_email)
                      for slot in range(1, connections_per_thread())]


def _status(campaign_id):
    db.session.expire_all()
    return db.session.scalar(sa.select(Campaign.status).where(Campaign.id == campaign_id))


def deliver_chunk(campaign_id, seconds=CHUNK_SECONDS):
    """Claim and send batches for up to `seconds`; returns "done", "stopped" or "more"."""
    recorder = Recorder()
    bookkeeper = BatchBookkeeper()
    try:
        return _deliver(campaign_id, seconds, recorder, bookkeeper)
    finally:
        try:
            bookkeeper.close()
        finally:
            recorder.close()


def _deliver(campaign_id, seconds, recorder, bookkeeper):
    deadline = time.monotonic() + seconds
    content = campaign_content(campaign_id)
    recipients = db.session.scalar(sa.select(Campaign.recipient_count).where(Campaign.id == campaign_id)) or 0
    senders = _senders(content.account_id, recipients, content.from_email)
    heartbeat_seconds = claim_timeout().total_seconds() / 4
    limiter = domain_limiter()
    streak = [0]        # consecutive transient failures
    complete = False
    while time.monotonic() < deadline:
        if _status(campaign_id) != "sending":
            return "stopped"
        # Read before the claim: the rest of the snapshot commits with the count, so a claim made after the
        # count was seen sees every recipient, and an empty one means there is nothing left to send.
        complete = complete or snapshot_complete(campaign_id)
        rows = claim_batch(content)
        if not rows:
            if not complete:
                time.sleep(SNAPSHOT_POLL)   # the rest of the recipients are going in: they come next
                continue
            bookkeeper.flush()
            _finish(campaign_id)
            return "done"
        batch = _Batch(rows)
        last_touch = last_check = time.monotonic()
        stopped = False
        while not batch.done():
            if time.monotonic() - last_check > STATUS_CHECK_SECONDS:
                if _status(campaign_id) != "sending":
                    release(batch.unsent())
                    stopped = True
                    break
                last_check = time.monotonic()
            if time.monotonic() - last_touch > heartbeat_seconds:
                touch_claims(campaign_id, batch.unsent())
                last_touch = time.monotonic()
            _send_wave(content, senders, batch, recorder, limiter, streak)
            if streak[0] >= TRANSIENT_STREAK_PAUSE:
                release(batch.unsent())
                auto_pause(campaign_id, "Every email provider failed for the last "
                                        f"{TRANSIENT_STREAK_PAUSE} emails; check the sending settings, then resume.")
                stopped = True
                break
        for ticket in batch.committing:
            recorder.wait(ticket)
        tally, bounced = batch.tally, batch.bounced
        bookkeeper.submit(campaign_id, [message.id for message, _ in rows], tally["sent"], tally["failed"])
        if bounced:
            bounces.record_send_bounces(campaign_id, _recorded_errors(bounced))
        if tally["deferred"] and not tally["sent"]:
            time.sleep(MAX_DOMAIN_WAIT)  # only rate-limited domains are left: let their buckets refill
        if stopped or check_rates(campaign_id):
            return "stopped"
    return "more"


def _recorded_errors(message_ids):
    """[(message id, the error recorded for it)] for these messages."""
    return db.session.execute(sa.select(Message.id, Message.error).where(Message.id.in_(message_ids))).all()


def domain_limiter():
    """This process's per-receiving-domain limiter (NUDGE_DOMAIN_RATE_LIMITS), shared by its threads."""
    from nudge.delivery.ratelimit import DomainLimiter
    limits = current_app.config.get("DOMAIN_RATE_LIMITS") or {}
    global _limiter
    with _content_lock:
        if _limiter is None or _limiter[0] != limits:
            _limiter = (dict(limits), DomainLimiter(limits))
        return _limiter[1]


_limiter = None
MAX_DOMAIN_WAIT = 0.25  # seconds a thread may wait for a domain's next slot; longer, the message goes back


class _Batch:
    """A claimed batch as it goes out, wave by wave: rows[position:] are still to be rendered; `held` are
    rendered ones whose domain had no slot yet (they lead the next wave); `committing` the tickets of the
    last wave's results."""

    def __init__(self, rows):
        self.rows, self.position, self.held, self.committing = rows, 0, [], []
        self.tally = {"sent": 0, "failed": 0, "transient": 0, "deferred": 0}
        self.bounced = []       # ids of the recipients the server refused outright (hard bounces)

    def done(self):
        return self.position >= len(self.rows) and not self.held

    def unsent(self):
        """Ids of the claimed messages not sent yet."""
        return [entry[0].id for entry in self.held] + [message.id for message, _ in self.rows[self.position:]]


def _send_wave(content, senders, batch, recorder, limiter, streak):
    """Render, send and record one wave of the batch: up to one message per connection. The wave is
    rendered while the last wave's results are being committed and leaves only once they are: never two
    unrecorded emails on one connection. Each message takes its domain's rate-limit slot just before it
    leaves; one without a slot yet waits for the next wave. Counts outcomes into the batch's tally and
    consecutive transient failures into streak[0]."""
    from nudge.delivery.selection import send_wave
    ready = list(batch.held)
    while batch.position < len(batch.rows) and len(ready) < len(senders):
        message, contact = batch.rows[batch.position]
        batch.position += 1
        outgoing = _prepare(content, message, contact, recorder)
        if outgoing is None:
            batch.tally["failed"] += 1
            continue
        ready.append((message, outgoing, content.raw(outgoing) if senders[0].needs_raw else None))
    for ticket in batch.committing:
        recorder.wait(ticket)
    leaving, batch.held = _take_domain_slots(limiter, ready, recorder, batch.tally)
    results = send_wave(senders[:len(leaving)], [(outgoing, raw) for _, outgoing, raw in leaving])
    batch.committing = []
    for (message, _, _), result in zip(leaving, results):
        outcome, ticket = _record(recorder, message, result)
        if ticket is not None:
            batch.committing.append(ticket)
        if outcome == "bounced":
            batch.bounced.append(message.id)
            outcome = "failed"
        batch.tally[outcome] += 1
        streak[0] = streak[0] + 1 if outcome == "transient" else 0


def _take_domain_slots(limiter, ready, recorder, tally):
    """(the rendered messages that may leave now, those held for the next wave). A message whose domain
    has no slot within MAX_DOMAIN_WAIT goes back to the queue; when every one must wait a little, the
    shortest wait is slept."""
    while True:
        leaving, held = [], []
        for entry in ready:
            wait = limiter.acquire(entry[0].email.rsplit("@", 1)[-1].lower())
            if wait <= 0:
                leaving.append(entry)
            elif wait > MAX_DOMAIN_WAIT:
                recorder.defer(entry[0].id)
                tally["deferred"] += 1
            else:
                held.append((entry, wait))
        if leaving or not held:
            return leaving, [entry for entry, _ in held]
        time.sleep(min(wait for _, wait in held))
        ready = [entry for entry, _ in held]


def _prepare(content, message, contact, recorder):
    """One recipient's OutgoingMessage, or None when it cannot be personalised (recorded as failed with the
    reason)."""
    try:
        return content.outgoing(message, contact)
    except ValidationError as exc:
        recorder.failed(message.id, None, exc.message)
        return None


def _record(recorder, message, result):
    """Record one send result: ("sent" | "failed" | "bounced" | "transient", the ticket of a sent result
    while it is being committed, or None)."""
    if result.status == "sent":
        return "sent", recorder.sent_later(message.id, result.provider, result.provider_message_id)
    if result.status == "permanent" or message.attempts >= MAX_ATTEMPTS:
        error = result.error or "Rejected by the provider."
        if result.status != "permanent":
            error = f"Gave up after {message.attempts} attempts: {error}"
        recorder.failed(message.id, result.provider, error)
        return ("bounced" if result.bounce else "failed"), None
    recorder.requeue(message.id, result.provider, result.error)
    return "transient", None


def check_rates(campaign_id):
    """Pause the campaign when its failure rate spikes past the account's (or the default) threshold."""
    from nudge.models import SendingConfig
    # The counters alone: loading the campaign would parse its frozen content on every batch (~6 ms).
    campaign = db.session.execute(sa.select(Campaign.account_id, Campaign.sent_count, Campaign.failed_count,
                                            Campaign.bounced_count).where(Campaign.id == campaign_id)).one()
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
        if not snapshot_complete(campaign_id):
            if db.session.scalar(sa.select(Campaign.updated_at).where(Campaign.id == campaign_id)) \
                    < utcnow() - SNAPSHOT_STALE:
                complete_snapshot(campaign_id)  # the process taking it died between its two parts
            continue
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
    from nudge.delivery.message import OutgoingMessage, compose, compose_skeleton, dkim_sign, message_id_for
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
    with rendering.time_limit():  # one runaway render budget for the body and the subject
        text = content.text or rendering.html_to_text(content.html)
        html, text = rendering.CompiledVersion(content.html, text).render(context)
        subject = "[Test] " + " ".join(rendering.TEXT_ENV.from_string(campaign.subject or "").render(context).split())
    skeleton = compose_skeleton(from_email=campaign.from_email, from_name=campaign.from_name,
                                reply_to=campaign.reply_to)
    names, factory = sending_settings.account_providers(campaign.account_id, "test", 1, current_app.config,
                                                         from_email=campaign.from_email)
    sender = selection.FailoverSender(names, factory)
    dkim = sending_domains.dkim_for(campaign.account_id, campaign.from_email)
    results = []
    try:
        for email in emails:
            outgoing = OutgoingMessage(from_email=campaign.from_email, from_name=campaign.from_name, to_email=email,
                                       reply_to=campaign.reply_to, subject=subject, html=html, text=text,
                                       message_id=message_id_for(campaign.id, uuid.uuid4(), _domain(campaign)),
                                       headers=[("X-Nudge-Test", "1")], account_id=str(campaign.account_id))
            raw = compose(skeleton, outgoing) if sender.needs_raw else None
            if raw is not None and dkim:
                raw = dkim_sign(raw, *dkim)
            result = sender.send(outgoing, raw)
            results.append({"email": email, "status": result.status, "error": result.error})
    finally:
        sender.close()
    return results


def _domain(campaign):
    return (campaign.from_email or "nudge.invalid").rsplit("@", 1)[-1]
