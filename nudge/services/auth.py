"""Password sign-in: credential checks, failed-attempt lockout, successful logins, password changes."""
import datetime as dt
import math

import sqlalchemy as sa
from flask import current_app

from nudge.errors import AuthenticationFailed, ValidationError, field_error
from nudge.extensions import db
from nudge.models import User
from nudge.models.types import utcnow
from nudge.services import audit
from nudge.services.security import check_password_strength, dummy_verify, hash_password, verify_password
from nudge.services.validation import normalize_email

INVALID_CREDENTIALS = "Email or password is incorrect."


class AccountLocked(AuthenticationFailed):
    """Too many failed attempts: the user may not sign in until locked_until."""
    code = "ACCOUNT_LOCKED"


def lock_message(user=None, now=None):
    """'Too many failed attempts. Try again in N minutes.' with the minutes left on the lock."""
    minutes = current_app.config.get("LOCKOUT_MINUTES", 15)
    if user is not None and user.locked_until is not None:
        left = (user.locked_until - (now or utcnow())).total_seconds()
        minutes = max(1, math.ceil(left / 60))
    return f"Too many failed attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."


def find_user_by_email(email):
    """The user with this sign-in email (case-insensitive), or None."""
    try:
        email = normalize_email(email)
    except ValidationError:
        return None
    users = db.session.scalars(sa.select(User).where(sa.func.lower(User.email) == email.lower())).all()
    for user in users:
        if user.email == email:
            return user
    return users[0] if users else None


def authenticate(email, password, *, ip=None):
    """The user whose email and password these are, or AuthenticationFailed with the generic message.

    A locked user gets AccountLocked even with the right password. MFA is checked separately by the
    caller; the failed-attempt count is only reset by record_login, so a password-only success does
    not reset the count an attacker is running up against the second factor."""
    typed = (email or "").strip()[:255]
    user = find_user_by_email(email) if typed and password else None
    if user is None:
        dummy_verify(password or "")  # as slow as a real check, so timing does not reveal the email
        if typed:
            audit.record("login.failed", account_id=None, actor_label=typed, ip=ip,
                         meta={"reason": "unknown_email" if password else "missing_password"})
            db.session.commit()
        raise AuthenticationFailed(INVALID_CREDENTIALS)
    if user.is_locked():
        dummy_verify(password)
        audit.record("login.failed", account_id=user.account_id, actor=user, actor_label=typed, ip=ip,
                     meta={"reason": "locked"})
        db.session.commit()
        raise AccountLocked(lock_message(user))
    if not verify_password(user.password_hash, password):
        if record_failed_attempt(user, ip, reason="wrong_password", actor_label=typed):
            raise AccountLocked(lock_message(user))
        raise AuthenticationFailed(INVALID_CREDENTIALS)
    return user


def record_failed_attempt(user, ip, *, reason="wrong_password", actor_label=None):
    """Count a failed password or MFA code; the threshold-th failure locks the user. True if it did."""
    # Counted in SQL, so parallel attempts all count.
    failures = db.session.execute(
        sa.update(User).where(User.id == user.id)
        .values(failed_login_count=User.failed_login_count + 1)
        .returning(User.failed_login_count)
        .execution_options(synchronize_session="fetch")).scalar_one()
    audit.record("login.failed", account_id=user.account_id, actor=user, actor_label=actor_label, ip=ip,
                 meta={"reason": reason})
    locked = False
    if failures >= current_app.config.get("LOCKOUT_THRESHOLD", 5):
        minutes = current_app.config.get("LOCKOUT_MINUTES", 15)
        user.locked_until = utcnow() + dt.timedelta(minutes=minutes)
        user.failed_login_count = 0  # the next lock needs a fresh run of failures
        audit.record("login.locked", account_id=user.account_id, actor=user, ip=ip,
                     meta={"minutes": minutes, "reason": reason})
        locked = True
    db.session.commit()
    return locked


def record_login(user, ip, *, method="password"):
    """A complete sign-in (password, plus MFA when enrolled): clear failures, stamp, audit."""
    now = utcnow()
    user.failed_login_count = 0
    user.locked_until = None
    user.last_login_at = now
    user.last_seen = now
    audit.record("login.succeeded", account_id=user.account_id, actor=user, ip=ip, meta={"method": method})
    db.session.commit()
    return user


def record_logout(user, ip):
    audit.record("logout", account_id=user.account_id, actor=user, ip=ip)
    db.session.commit()


def touch(user, now=None):
    """Update last_seen, at most once a minute (it is shown to owners, not used for security)."""
    now = now or utcnow()
    if user.last_seen is None or now - user.last_seen >= dt.timedelta(minutes=1):
        db.session.execute(sa.update(User).where(User.id == user.id).values(last_seen=now))
        db.session.commit()


def change_password(user, current, new, *, ip=None):
    """Set a new password after checking the current one; the user's other sessions end."""
    if not verify_password(user.password_hash, current or ""):
        raise field_error("current_password", "Your current password is incorrect.")
    check_password_strength(new, field="new_password")
    if verify_password(user.password_hash, new):
        raise field_error("new_password", "Choose a password different from your current one.")
    user.password_hash = hash_password(new)
    user.session_version = (user.session_version or 1) + 1
    audit.record("password.changed", account_id=user.account_id, actor=user, ip=ip, resources=[f"user:{user.id}"])
    db.session.commit()
    return user
