"""Password sign-in rules: generic failures, the per-(email, address) lockout and its atomic claim, successful
logins, sign-outs and password changes."""
import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from flask import current_app

from nudge.errors import AuthenticationFailed, ValidationError
from nudge.extensions import db
from nudge.models import AuditLog, LoginAttempt, User
from nudge.models.types import utcnow
from nudge.services import auth
from nudge.services.security import verify_password
from tests.conftest import PASSWORD

STRANGER, OWNER_IP = "203.0.113.66", "198.51.100.20"


def audit_actions(**filters):
    query = sa.select(AuditLog).order_by(AuditLog.created_at, AuditLog.id)
    for key, value in filters.items():
        query = query.where(getattr(AuditLog, key) == value)
    return [entry.action for entry in db.session.scalars(query)]


def test_authenticate_returns_the_user_for_the_right_password(make_account):
    _, owner = make_account(email="Ann@Shop.example")
    assert auth.authenticate("ann@shop.example", PASSWORD).id == owner.id
    assert auth.authenticate("  Ann@shop.example ", PASSWORD).id == owner.id


def test_unknown_email_and_wrong_password_fail_with_the_same_message(make_account):
    _, owner = make_account()
    with pytest.raises(AuthenticationFailed) as wrong_password:
        auth.authenticate(owner.email, "Wrong-password-1!", ip="203.0.113.9")
    with pytest.raises(AuthenticationFailed) as unknown:
        auth.authenticate("nobody@nowhere.example", PASSWORD, ip="203.0.113.9")
    assert wrong_password.value.message == unknown.value.message == "Email or password is incorrect."
    assert type(wrong_password.value) is type(unknown.value) is AuthenticationFailed

    failures = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "login.failed")
                                  .order_by(AuditLog.created_at, AuditLog.id)).all()
    assert [(f.actor, f.meta["reason"], f.ip_address) for f in failures] == [
        (owner.email, "wrong_password", "203.0.113.9"),
        ("nobody@nowhere.example", "unknown_email", "203.0.113.9"),
    ]
    assert failures[0].account_id == owner.account_id and failures[0].user_id == owner.id
    assert failures[1].account_id is None


def attempts(email, ip):
    return db.session.scalar(sa.select(LoginAttempt).where(LoginAttempt.login == email.lower(),
                                                            LoginAttempt.ip == (ip or "")))


def test_five_failures_lock_the_email_from_that_address_for_fifteen_minutes(make_account):
    _, owner = make_account()
    for _ in range(4):
        with pytest.raises(AuthenticationFailed) as exc:
            auth.authenticate(owner.email, "Wrong-password-1!", ip=STRANGER)
        assert not isinstance(exc.value, auth.AccountLocked)
    with pytest.raises(auth.AccountLocked) as exc:
        auth.authenticate(owner.email, "Wrong-password-1!", ip=STRANGER)
    assert exc.value.message == "Too many failed attempts. Try again in 15 minutes."

    row = attempts(owner.email, STRANGER)
    assert dt.timedelta(minutes=14) < row.locked_until - utcnow() <= dt.timedelta(minutes=15)
    assert audit_actions(user_id=owner.id).count("login.locked") == 1

    # Even the right password is refused from that address while the lock lasts ...
    with pytest.raises(auth.AccountLocked):
        auth.authenticate(owner.email, PASSWORD, ip=STRANGER)
    # ... but the owner, from their own address, signs in: a stranger cannot lock them out.
    assert auth.authenticate(owner.email, PASSWORD, ip=OWNER_IP).id == owner.id

    row.locked_until = utcnow() - dt.timedelta(seconds=1)
    db.session.commit()
    assert auth.authenticate(owner.email, PASSWORD, ip=STRANGER).id == owner.id


def test_the_fifth_failure_does_not_tell_whether_the_email_exists(make_account):
    _, owner = make_account()
    answers = {}
    for email in (owner.email, "nobody@nowhere.example"):
        for _ in range(4):
            with pytest.raises(AuthenticationFailed):
                auth.authenticate(email, "Wrong-password-1!", ip=STRANGER)
        with pytest.raises(AuthenticationFailed) as fifth:
            auth.authenticate(email, "Wrong-password-1!", ip=STRANGER)
        with pytest.raises(AuthenticationFailed) as sixth:
            auth.authenticate(email, PASSWORD, ip=STRANGER)
        answers[email] = [(type(e.value), e.value.message, e.value.code) for e in (fifth, sixth)]
    assert answers[owner.email] == answers["nobody@nowhere.example"]
    assert answers[owner.email][0] == (auth.AccountLocked, "Too many failed attempts. Try again in 15 minutes.",
                                       "ACCOUNT_LOCKED")


def test_old_failures_do_not_add_up_to_a_lock(make_account):
    _, owner = make_account()
    for _ in range(4):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(owner.email, "nope", ip=STRANGER)
    row = attempts(owner.email, STRANGER)
    row.updated_at = utcnow() - dt.timedelta(minutes=16)  # the last failure was longer ago than a lock lasts
    db.session.commit()
    with pytest.raises(AuthenticationFailed) as exc:
        auth.authenticate(owner.email, "nope", ip=STRANGER)
    assert not isinstance(exc.value, auth.AccountLocked)
    assert attempts(owner.email, STRANGER).failures == 1


def test_lockout_threshold_and_duration_come_from_config(make_app, make_account):
    make_app(LOCKOUT_THRESHOLD=2, LOCKOUT_MINUTES=3)
    _, owner = make_account()
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(owner.email, "nope")
    with pytest.raises(auth.AccountLocked) as exc:
        auth.authenticate(owner.email, "nope")
    assert "3 minutes" in exc.value.message


def test_record_login_resets_failures_and_audits(make_account):
    _, owner = make_account()
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(owner.email, "nope", ip="198.51.100.4")
    user = auth.authenticate(owner.email, PASSWORD, ip="198.51.100.4")
    assert attempts(owner.email, "198.51.100.4").failures == 3  # the second factor is still to come
    auth.record_login(user, "198.51.100.4", method="totp")
    user = db.session.get(User, owner.id)
    assert attempts(owner.email, "198.51.100.4") is None
    assert user.last_login_at is not None and user.last_seen is not None
    entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "login.succeeded"))
    assert entry.user_id == owner.id and entry.ip_address == "198.51.100.4" and entry.meta == {"method": "totp"}


def test_failed_mfa_attempts_count_toward_the_lock(make_account):
    _, owner = make_account()
    for n in range(1, 5):
        claimed = auth.claim_attempt(owner.email, STRANGER)
        assert claimed == n
        assert auth.record_failed_attempt(owner.email, STRANGER, claimed, user=owner, reason="wrong_mfa_code") is False
    claimed = auth.claim_attempt(owner.email, STRANGER)
    assert auth.record_failed_attempt(owner.email, STRANGER, claimed, user=owner, reason="wrong_mfa_code") is True
    assert auth.claim_attempt(owner.email, STRANGER) is None
    assert auth.locked_until(owner.email, STRANGER) > utcnow()


def test_the_attempt_is_claimed_and_committed_before_the_password_is_checked(make_account, monkeypatch):
    """Proof of the order: when the password is checked, another connection already sees the attempt
    counted, so a parallel request for the same email and address can only claim the next one."""
    _, owner = make_account()
    seen = []
    real_verify = auth.verify_password

    def observing_verify(password_hash, password):
        with db.engine.connect() as other:
            seen.append(other.scalar(sa.select(LoginAttempt.failures).where(LoginAttempt.login == owner.email)))
        return real_verify(password_hash, password)
    monkeypatch.setattr(auth, "verify_password", observing_verify)
    for _ in range(4):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(owner.email, "nope", ip=STRANGER)
    with pytest.raises(auth.AccountLocked):
        auth.authenticate(owner.email, "nope", ip=STRANGER)
    with pytest.raises(auth.AccountLocked):
        auth.authenticate(owner.email, PASSWORD, ip=STRANGER)
    assert seen == [1, 2, 3, 4, 5]  # the sixth attempt was refused without a check


def test_parallel_guesses_get_no_more_checks_than_the_threshold(make_account, monkeypatch):
    """Twelve wrong passwords at once for one email from one address: five are checked, the rest refused."""
    _, owner = make_account()
    email = owner.email  # the threads use only plain values, never this session's objects
    app = current_app._get_current_object()
    checks, lock = [], threading.Lock()
    real_verify = auth.verify_password

    def counting_verify(password_hash, password):
        with lock:
            checks.append(password)
        return real_verify(password_hash, password)
    monkeypatch.setattr(auth, "verify_password", counting_verify)
    start = threading.Barrier(12)

    def guess(n):
        with app.app_context():
            start.wait(timeout=30)
            try:
                auth.authenticate(email, f"Guess-{n}", ip=STRANGER)
            except auth.AccountLocked:
                return "locked"
            except AuthenticationFailed:
                return "failed"
            finally:
                db.session.remove()
            return "in"

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(guess, range(12)))
    assert len(checks) == 5
    assert answers.count("failed") == 4 and answers.count("locked") == 8
    assert attempts(owner.email, STRANGER).locked_until > utcnow()


def test_housekeeping_purges_attempts_whose_lock_ran_out(make_account):
    _, owner = make_account()
    for ip in (STRANGER, OWNER_IP):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(owner.email, "nope", ip=ip)
    old = attempts(owner.email, STRANGER)
    old.updated_at = utcnow() - dt.timedelta(hours=1)
    db.session.commit()
    assert auth.purge_login_attempts(utcnow()) == 1
    db.session.commit()
    assert attempts(owner.email, STRANGER) is None and attempts(owner.email, OWNER_IP) is not None


def test_logout_bumps_the_session_version(make_account):
    _, owner = make_account()
    version = owner.session_version
    auth.record_logout(owner, "192.0.2.1")
    assert db.session.get(User, owner.id).session_version == version + 1
    assert "logout" in audit_actions(user_id=owner.id)


def test_change_password_checks_the_current_one_and_the_rule(make_account):
    _, owner = make_account()
    with pytest.raises(ValidationError) as exc:
        auth.change_password(owner, "wrong", "Brand-New-Pass-7?")
    assert exc.value.details == [{"field": "current_password", "issue": "Your current password is incorrect."}]
    with pytest.raises(ValidationError) as exc:
        auth.change_password(owner, PASSWORD, "short1!A")
    assert exc.value.details[0]["field"] == "new_password"
    with pytest.raises(ValidationError) as exc:
        auth.change_password(owner, PASSWORD, PASSWORD)
    assert exc.value.details[0]["field"] == "new_password"
    db.session.rollback()

    version = owner.session_version
    auth.change_password(owner, PASSWORD, "Brand-New-Pass-7?", ip="192.0.2.1")
    user = db.session.get(User, owner.id)
    assert verify_password(user.password_hash, "Brand-New-Pass-7?")
    assert user.session_version == version + 1
    assert "password.changed" in audit_actions(user_id=owner.id)
