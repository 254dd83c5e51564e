"""Password sign-in rules: generic failures, lockout, successful logins and password changes."""
import datetime as dt

import pytest
import sqlalchemy as sa

from nudge.errors import AuthenticationFailed, ValidationError
from nudge.extensions import db
from nudge.models import AuditLog, User
from nudge.models.types import utcnow
from nudge.services import auth
from nudge.services.security import verify_password
from tests.conftest import PASSWORD


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


def test_five_failures_lock_the_user_for_fifteen_minutes(make_account):
    _, owner = make_account()
    for _ in range(4):
        with pytest.raises(AuthenticationFailed) as exc:
            auth.authenticate(owner.email, "Wrong-password-1!")
        assert not isinstance(exc.value, auth.AccountLocked)
    with pytest.raises(auth.AccountLocked) as exc:
        auth.authenticate(owner.email, "Wrong-password-1!")
    assert exc.value.message == "Too many failed attempts. Try again in 15 minutes."

    user = db.session.get(User, owner.id)
    assert user.is_locked()
    assert dt.timedelta(minutes=14) < user.locked_until - utcnow() <= dt.timedelta(minutes=15)
    assert audit_actions(user_id=owner.id).count("login.locked") == 1

    # Even the right password is refused while the lock lasts.
    with pytest.raises(auth.AccountLocked):
        auth.authenticate(owner.email, PASSWORD)

    user.locked_until = utcnow() - dt.timedelta(seconds=1)
    db.session.commit()
    assert auth.authenticate(owner.email, PASSWORD).id == owner.id


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
            auth.authenticate(owner.email, "nope")
    user = auth.authenticate(owner.email, PASSWORD)
    assert user.failed_login_count == 3  # the second factor is still to come
    auth.record_login(user, "198.51.100.4", method="totp")
    user = db.session.get(User, owner.id)
    assert user.failed_login_count == 0 and user.last_login_at is not None and user.last_seen is not None
    entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "login.succeeded"))
    assert entry.user_id == owner.id and entry.ip_address == "198.51.100.4" and entry.meta == {"method": "totp"}


def test_failed_mfa_attempts_count_toward_the_lock(make_account):
    _, owner = make_account()
    for _ in range(4):
        assert auth.record_failed_attempt(owner, None, reason="wrong_mfa_code") is False
    assert auth.record_failed_attempt(owner, None, reason="wrong_mfa_code") is True
    assert db.session.get(User, owner.id).is_locked()


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
