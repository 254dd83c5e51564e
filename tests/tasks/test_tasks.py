"""Background jobs: app context handling in immediate mode, housekeeping, and a real consumer process."""
import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pytest

from nudge.extensions import db
from nudge.models import EmailEvent, Invitation
from nudge.models.types import utcnow
from nudge.tasks import housekeeping, huey, ping
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL


def test_task_reuses_the_active_app_context_in_immediate_mode(app):
    result = ping("hello")
    assert result() == {"value": "hello", "database": db.engine.dialect.name, "app": "nudge"}


def _old_rows(account, owner):
    long_ago = utcnow() - dt.timedelta(days=800)
    db.session.add_all([
        EmailEvent(account_id=account.id, event_type="email.sent", created_at=long_ago),
        EmailEvent(account_id=account.id, event_type="email.sent"),
        Invitation(account_id=account.id, email="late@team.example", role="viewer", token_hash="x" * 64,
                   invited_by=owner.id, expires_at=utcnow() - dt.timedelta(days=40)),
    ])
    db.session.commit()


def test_housekeeping_removes_what_is_past_retention_and_keeps_the_rest(app, make_account):
    account, owner = make_account()
    _old_rows(account, owner)
    summary = housekeeping.call_local()
    assert summary == {"invitations": 1, "email_events": 1, "contacts": 0, "uploads": 0, "stalled_imports": 0,
                       "sign_in_records": 0, "legacy_import_uploads": 0}
    assert db.session.query(EmailEvent).count() == 1
    assert db.session.query(Invitation).count() == 0


@pytest.fixture
def real_queue():
    """Switch Huey from immediate mode to its real storage (Redis in the PostgreSQL pass) for one test."""
    huey.immediate = False
    huey.flush()
    yield huey
    huey.flush()
    huey.immediate = True


def _start_worker():
    env = dict(os.environ, NUDGE_DATABASE_URL=TEST_DATABASE_URL)
    if TEST_REDIS_URL:
        env["NUDGE_REDIS_URL"] = TEST_REDIS_URL
    nudge = os.path.join(os.path.dirname(sys.executable), "nudge")
    return subprocess.Popen([nudge, "worker", "-w", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def _eventually(check, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        db.session.rollback()  # a fresh snapshot each time
        if check():
            return True
        time.sleep(0.2)
    return False


def _stop(worker):
    os.killpg(worker.pid, signal.SIGINT)
    try:
        _, err = worker.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        _, err = worker.communicate()
    print(err.decode(errors="replace")[-3000:])  # shown by pytest when the test fails


def test_a_real_consumer_process_runs_tasks_against_the_database(app, make_account, real_queue):
    account, owner = make_account()
    _old_rows(account, owner)
    worker = _start_worker()
    try:
        pong = ping("over the queue")
        assert pong.get(blocking=True, timeout=60) == {
            "value": "over the queue", "database": db.engine.dialect.name, "app": "nudge"}
        housekeeping()  # periodic tasks keep no result: watch its effect instead
        assert _eventually(lambda: db.session.query(EmailEvent).count() == 1)
        assert db.session.query(Invitation).count() == 0
    finally:
        _stop(worker)
    expected_backend = "PriorityRedisHuey" if TEST_REDIS_URL else "SqliteHuey"
    assert type(huey).__name__ == expected_backend


def test_huey_backend_follows_the_configuration():
    from nudge.tasks import make_huey
    assert type(make_huey({"NUDGE_REDIS_URL": "redis://127.0.0.1:6379/0"})).__name__ == "PriorityRedisHuey"
    assert type(make_huey({"NUDGE_INSTANCE_PATH": "/tmp/nudge-huey-test"})).__name__ == "SqliteHuey"


def test_housekeeping_purges_contacts_deleted_more_than_30_days_ago(app, make_account):
    from nudge.models import Contact
    from nudge.services import contacts
    account, owner = make_account()
    old = contacts.create_contact(owner, {"email": "old@example.com"})
    recent = contacts.create_contact(owner, {"email": "recent@example.com"})
    kept = contacts.create_contact(owner, {"email": "kept@example.com"})
    old_id = old.id
    contacts.delete_contacts(owner, contact_ids=[old.id, recent.id])
    db.session.expire_all()
    old.deleted_at = utcnow() - dt.timedelta(days=31)
    recent.deleted_at = utcnow() - dt.timedelta(days=29)
    db.session.commit()
    summary = housekeeping.call_local()
    assert summary["contacts"] == 1
    db.session.expire_all()
    assert sorted(db.session.scalars(db.select(Contact.email)).all()) == ["kept@example.com", "recent@example.com"]
    assert db.session.query(EmailEvent).filter(EmailEvent.contact_id == old_id).count() == 0
    assert contacts.restore_contact(owner, recent.id).status == "active"
    assert kept.status == "active"


def test_housekeeping_removes_uploads_abandoned_before_mapping(app, make_account, tmp_path):
    from nudge.models import Import
    account, owner = make_account()
    old_file, new_file = tmp_path / "old.csv", tmp_path / "new.csv"
    for path in (old_file, new_file):
        path.write_text("email\na@x.example\n")
    db.session.add_all([
        Import(account_id=account.id, status="pending", file_path=str(old_file), created_at=utcnow() - dt.timedelta(days=2)),
        Import(account_id=account.id, status="pending", file_path=str(new_file)),
        Import(account_id=account.id, status="completed", created_at=utcnow() - dt.timedelta(days=9)),
    ])
    db.session.commit()
    assert housekeeping.call_local()["uploads"] == 1
    assert not old_file.exists() and new_file.exists()
    assert sorted(i.status for i in db.session.query(Import)) == ["completed", "pending"]


def test_housekeeping_fails_imports_whose_worker_died(app, make_account):
    from nudge.models import Import
    account, owner = make_account()
    long_ago = utcnow() - dt.timedelta(minutes=30)
    db.session.add_all([
        Import(account_id=account.id, status="running", started_at=long_ago, updated_at=long_ago, processed_rows=20000),
        Import(account_id=account.id, status="running", started_at=long_ago, updated_at=utcnow()),
    ])
    db.session.commit()
    assert housekeeping.call_local()["stalled_imports"] == 1
    stalled, alive = sorted(db.session.query(Import), key=lambda i: i.processed_rows, reverse=True)
    assert stalled.status == "failed" and "upload the file again" in stalled.message
    assert stalled.processed_rows == 20000  # what it had written is still reported
    assert alive.status == "running"
