"""The Huey instance, its tasks and periodic tasks; tasks take ids and call services.

PriorityRedisHuey when NUDGE_REDIS_URL is set, else SqliteHuey in the instance folder. Tasks run inside an
app context: the active one when there is one (tests, immediate mode), else the worker's app.
"""
import functools
import logging
import os
import uuid

from flask import current_app, has_app_context
from huey import PriorityRedisHuey, SqliteHuey, crontab
from huey.consumer import Consumer

from nudge.config import instance_path
from nudge.services import signup, team

log = logging.getLogger("nudge.tasks")

# Huey priorities: higher runs first (transactional and test sends before marketing before bulk).
PRIORITY_TRANSACTIONAL = 100
PRIORITY_MARKETING = 50
PRIORITY_BULK = 10
PRIORITY_HOUSEKEEPING = 0


def make_huey(environ=None):
    environ = os.environ if environ is None else environ
    redis_url = environ.get("NUDGE_REDIS_URL")
    if redis_url:
        return PriorityRedisHuey("nudge", url=redis_url, utc=True)
    path = instance_path(environ)
    os.makedirs(path, exist_ok=True)
    return SqliteHuey("nudge", filename=os.path.join(path, "huey.db"), utc=True)


huey = make_huey()
_worker_app = None


def init_app(app):
    app.extensions["huey"] = huey


def use_app(app):
    """The app that tasks run in when no app context is active (the worker's own)."""
    global _worker_app
    _worker_app = app


def _app():
    global _worker_app
    if _worker_app is None:
        from nudge import create_app
        _worker_app = create_app()
    return _worker_app


def in_app_context(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if has_app_context():
            return fn(*args, **kwargs)
        with _app().app_context():
            return fn(*args, **kwargs)
    return wrapper


def task(**options):
    """@huey.task that runs in an app context."""
    def decorator(fn):
        return huey.task(**options)(in_app_context(fn))
    return decorator


def periodic_task(validate_datetime, **options):
    def decorator(fn):
        return huey.periodic_task(validate_datetime, **options)(in_app_context(fn))
    return decorator


class EmbeddedConsumer(Consumer):
    """A consumer that runs inside another process (the web server): no signal handlers of its own."""

    def _set_signal_handlers(self):
        pass


# An idle consumer polls SqliteHuey at most every half second (Huey's default backs off to 10 s), so a
# campaign's first email leaves well within a second of Send; RedisHuey blocks on the queue instead.
CONSUMER_OPTIONS = {"initial_delay": 0.05, "backoff": 1.15, "max_delay": 0.5}


def start_embedded_consumer(app, workers=2):
    use_app(app)
    consumer = EmbeddedConsumer(huey, workers=workers, worker_type="thread", periodic=True, **CONSUMER_OPTIONS)
    consumer.start()
    return consumer


@periodic_task(crontab(minute="*/15"), priority=PRIORITY_HOUSEKEEPING)
def housekeeping():
    """Retention work; a lock keeps two schedulers (several workers) from running it at once."""
    from nudge.services import housekeeping as service
    with huey.lock_task("housekeeping"):
        summary = service.run_housekeeping()
    log.info("housekeeping: %s", summary)
    return summary


@task(priority=PRIORITY_HOUSEKEEPING)
def ping(value):
    """Echo a value back, with the database it was answered from (health checks and the consumer test)."""
    from nudge.extensions import db
    return {"value": value, "database": db.engine.dialect.name, "app": current_app.name}


@task(priority=PRIORITY_BULK)
def run_contact_import(import_id):
    """Run one configured CSV contact import (services/imports.py); progress is saved per chunk."""
    from nudge.services import imports
    imp = imports.run_import(import_id)
    return {"import_id": str(import_id), "status": imp.status if imp is not None else None}


@task(priority=PRIORITY_TRANSACTIONAL)
def record_tracking_event(kind, message_id, **data):
    """An open or click from the tracking endpoints, recorded off the request path."""
    import uuid

    from nudge.services import tracking
    tracking.record(kind, uuid.UUID(message_id), **data)


@task(priority=PRIORITY_MARKETING)
def deliver_campaign(campaign_id):
    """Send a campaign's queued messages for a while, then hand over to a fresh task if more remain."""
    import uuid

    from nudge.services import sending
    if sending.deliver_chunk(uuid.UUID(campaign_id)) == "more":
        deliver_campaign(campaign_id)


@periodic_task(crontab(minute="*"), priority=PRIORITY_TRANSACTIONAL)
def resume_stalled_campaigns_periodically():
    """Every minute: requeue what a dead worker had claimed and restart campaigns left without a worker."""
    from nudge.services import sending
    sending.resume_stalled()


@task(priority=PRIORITY_TRANSACTIONAL)
def resume_stalled_campaigns():
    """Requeue what a dead worker had claimed and restart campaigns left without a worker."""
    from nudge.services import sending
    sending.resume_stalled()


@periodic_task(crontab(minute="*"), priority=PRIORITY_MARKETING)
def start_due_campaigns():
    """Start scheduled campaigns whose time has come; each is claimed by one conditional UPDATE, so two
    schedulers (several workers) never start one twice."""
    from nudge.services import campaigns
    return [str(campaign_id) for campaign_id in campaigns.start_due_campaigns()]


class MailNotSent(RuntimeError):
    """A transactional mail the providers could not take yet: Huey retries the task."""


def _require_sent(result):
    if result is not None and result.status == "transient":
        raise MailNotSent(result.error or "the providers could not take the message")


@task(priority=PRIORITY_TRANSACTIONAL, retries=5, retry_delay=60)
def mail_email_confirmation(account_id):
    """Mail the link that confirms an open sign-up's address (services/signup.py)."""
    _require_sent(signup.send_confirmation(uuid.UUID(account_id)))


@task(priority=PRIORITY_TRANSACTIONAL, retries=5, retry_delay=60)
def mail_invitation(invitation_id, sealed_token):
    """Mail a team invitation's link (services/team.py); the token travels encrypted."""
    _require_sent(team.send_invitation(invitation_id, sealed_token))


@task(priority=PRIORITY_TRANSACTIONAL, retries=5, retry_delay=60)
def mail_signup_notice(email):
    """Tell an existing user that someone tried to sign up with their address (open sign-up)."""
    _require_sent(signup.send_taken_notice(email))
@periodic_task(crontab(minute="17", hour="3"), priority=PRIORITY_HOUSEKEEPING)
def recheck_sending_domains():
    """Daily: look every sending domain up again; one whose ownership record is gone becomes unverified.
    A lock keeps two schedulers (several workers) from checking the same domains at once."""
    from nudge.services import sending_domains
    with huey.lock_task("recheck-sending-domains"):
        summary = sending_domains.recheck_domains()
    log.info("sending domains re-checked: %s", summary)
    return summary
