"""Password sign-in: credential checks, the per-(email, address) lockout, successful logins and sign-outs,
password changes."""
import datetime as dt
import math
import uuid

import sqlalchemy as sa
from flask import current_app

from nudge.errors import AuthenticationFailed, ValidationError, field_error
from nudge.extensions import db
from nudge.models import LoginAttempt, User
from nudge.models.types import utcnow
from nudge.services import audit, dialect
from nudge.services.security import check_password_strength, dummy_verify, hash_password, verify_password
from nudge.services.validation import normalize_email

INVALID_CREDENTIALS = "Email or password is incorrect."


class AccountLocked(AuthenticationFailed):
    """Too many failed attempts for this email from this address: no check until the lock runs out."""
    code = "ACCOUNT_LOCKED"


def _threshold():
    return int(current_app.config.get("LOCKOUT_THRESHOLD", 5))


def _lock_duration():
    return dt.timedelta(minutes=current_app.config.get("LOCKOUT_MINUTES", 15))


def lock_message(locked_until=None, now=None):
    """'Too many failed attempts. Try again in N minutes.' with the minutes left on the lock."""
    minutes = current_app.config.get("LOCKOUT_MINUTES", 15)
    if locked_until is not None:
        left = (locked_until - (now or utcnow())).total_seconds()
        minutes = max(1, math.ceil(left / 60))
    return f"Too many failed attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."


def login_key(email):
    """What attempts are counted against: the typed email, trimmed and lower-cased (known or not)."""
    return (email or "").strip().lower()[:255]


def _ip_key(ip):
    return str(ip or "")[:64]


def claim_attempt(login, ip, now=None):
    """Take one attempt for (login, ip) before checking anything; the attempt count if granted, None if
    the pair is locked (or its last attempts are still being checked).

    One conditional UPDATE … RETURNING, committed before the caller checks the password or code, so
    parallel requests cannot get more than LOCKOUT_THRESHOLD checks between them. Failures older than the
    lock duration, and a lock that has run out, start a fresh count."""
    now = now or utcnow()
    login, ip = login_key(login), _ip_key(ip)
    db.session.execute(dialect.insert(LoginAttempt).values(id=uuid.uuid4(), login=login, ip=ip, failures=0,
                                                           updated_at=now)
                       .on_conflict_do_nothing(index_elements=["login", "ip"]))
    stale = sa.or_(LoginAttempt.locked_until <= now,
                   sa.and_(LoginAttempt.locked_until.is_(None), LoginAttempt.updated_at < now - _lock_duration()))
    claimed = db.session.execute(
        sa.update(LoginAttempt)
        .where(LoginAttempt.login == login, LoginAttempt.ip == ip,
               sa.or_(stale, sa.and_(LoginAttempt.locked_until.is_(None), LoginAttempt.failures < _threshold())))
        .values(failures=sa.case((stale, 1), else_=LoginAttempt.failures + 1), locked_until=None, updated_at=now)
        .returning(LoginAttempt.failures)
        .execution_options(synchronize_session=False)).scalar_one_or_none()
    db.session.commit()
    return claimed


def release_attempt(login, ip):
    """Give back an attempt claimed for a check that succeeded."""
    db.session.execute(sa.update(LoginAttempt)
                       .where(LoginAttempt.login == login_key(login), LoginAttempt.ip == _ip_key(ip),
                              LoginAttempt.failures > 0)
                       .values(failures=LoginAttempt.failures - 1).execution_options(synchronize_session=False))
    db.session.commit()


def locked_until(login, ip):
    """When the lock on (login, ip) runs out, or None when there is none."""
    return db.session.scalar(sa.select(LoginAttempt.locked_until).where(
        LoginAttempt.login == login_key(login), LoginAttempt.ip == _ip_key(ip)))


def refuse_locked(login, ip, *, user=None, reason="locked"):
    """Audit a refused attempt on a locked (login, ip) and return the AccountLocked to raise."""
    until = locked_until(login, ip)
    audit.record("login.failed", account_id=user.account_id if user else None, actor=user,
                 actor_label=login_key(login), ip=ip, meta={"reason": reason})
    db.session.commit()
    return AccountLocked(lock_message(until))


def record_failed_attempt(login, ip, claimed, *, user=None, reason="wrong_password"):
    """A claimed attempt failed: audit it; the LOCKOUT_THRESHOLD-th locks (login, ip). True if it did."""
    audit.record("login.failed", account_id=user.account_id if user else None, actor=user,
                 actor_label=login_key(login), ip=ip, meta={"reason": reason})
    locked = claimed >= _threshold()
    if locked:
        db.session.execute(sa.update(LoginAttempt)
                           .where(LoginAttempt.login == login_key(login), LoginAttempt.ip == _ip_key(ip))
                           .values(locked_until=utcnow() + _lock_duration())
                           .execution_options(synchronize_session=False))
        audit.record("login.locked", account_id=user.account_id if user else None, actor=user,
                     actor_label=login_key(login), ip=ip,
                     meta={"minutes": current_app.config.get("LOCKOUT_MINUTES", 15), "reason": reason})
    db.session.commit()
    return locked


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

    An attempt for (email, ip) is claimed before the password is checked, for unknown emails too, so the
    LOCKOUT_THRESHOLD-th failure answers AccountLocked whether or not the email has a user. MFA is checked
    separately by the caller; the count is only cleared by record_login, so a password-only success does
    not reset the count an attacker is running up against the second factor."""
    typed = (email or "").strip()[:255]
    if not typed or not password:
        dummy_verify(password or "")
        if typed:
            audit.record("login.failed", account_id=None, actor_label=typed, ip=ip, meta={"reason": "missing_password"})
            db.session.commit()
        raise AuthenticationFailed(INVALID_CREDENTIALS)
    user = find_user_by_email(email)
    claimed = claim_attempt(typed, ip)
    if claimed is None:
        dummy_verify(password)  # as slow as a real check
        raise refuse_locked(typed, ip, user=user)
    if user is None:
        dummy_verify(password)  # as slow as a real check, so timing does not reveal the email
        wrong = "unknown_email"
    elif not verify_password(user.password_hash, password):
        wrong = "wrong_password"
    else:
        release_attempt(typed, ip)  # a right password is no failure (nor a success until MFA is done)
        return user
    if record_failed_attempt(typed, ip, claimed, user=user, reason=wrong):
        raise AccountLocked(lock_message())
    raise AuthenticationFailed(INVALID_CREDENTIALS)


def record_login(user, ip, *, method="password"):
    """A complete sign-in (password, plus MFA when enrolled): clear this address's failures, stamp, audit."""
    now = utcnow()
    db.session.execute(sa.delete(LoginAttempt).where(LoginAttempt.login == login_key(user.email),
                                                     LoginAttempt.ip == _ip_key(ip)))
    user.last_login_at = now
    user.last_seen = now
    audit.record("login.succeeded", account_id=user.account_id, actor=user, ip=ip, meta={"method": method})
    db.session.commit()
    return user


def record_logout(user, ip):
    """Sign-out: the session version moves on, so no copy of the session cookie works any more."""
    bump_session_version(user)
    audit.record("logout", account_id=user.account_id, actor=user, ip=ip)
    db.session.commit()


def bump_session_version(user):
    """End every session of this user (User.session_version is checked on every request)."""
    db.session.execute(sa.update(User).where(User.id == user.id)
                       .values(session_version=User.session_version + 1)
                       .execution_options(synchronize_session=False))
    db.session.refresh(user)


def purge_login_attempts(now):
    """Housekeeping: attempt rows whose failures and lock have both run out."""
    cutoff = now - _lock_duration()
    return db.session.execute(sa.delete(LoginAttempt).where(
        LoginAttempt.updated_at < cutoff,
        sa.or_(LoginAttempt.locked_until.is_(None), LoginAttempt.locked_until < now))).rowcount


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
