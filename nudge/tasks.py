"""The Huey instance, its tasks and periodic tasks; tasks take ids and call services.

RedisHuey when NUDGE_REDIS_URL is set, else SqliteHuey in the instance folder. Tasks run inside an
app context: the active one when there is one (tests, immediate mode), else the worker's app.
"""
import functools
import logging
import os

from flask import current_app, has_app_context
from huey import RedisHuey, SqliteHuey, crontab
from huey.consumer import Consumer

from nudge.config import instance_path

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
        return RedisHuey("nudge", url=redis_url, utc=True)
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


def start_embedded_consumer(app, workers=2):
    use_app(app)
    consumer = EmbeddedConsumer(huey, workers=workers, worker_type="thread", periodic=True)
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
