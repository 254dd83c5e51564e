"""Two-factor authentication: TOTP enrolment and checks, single-use recovery codes, owner resets."""
import datetime as dt
import hmac
import re
import secrets
import time
import uuid

import pyotp
import segno
import sqlalchemy as sa
from flask import current_app
from limits.storage import storage_from_string

from nudge.errors import Forbidden, NotFound, ValidationError, field_error
from nudge.extensions import db
from nudge.models import UsedTotpCode, User
from nudge.models.types import utcnow
from nudge.services import audit, dialect
from nudge.services.security import decrypt, encrypt, hash_token

ISSUER = "NudgeCampaign"
RECOVERY_CODE_COUNT = 10
# Crockford's base32 alphabet, lower case: 32 symbols, so 16 of them carry 80 bits; no i, l, o or u.
RECOVERY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_RECOVERY_LOOKALIKES = str.maketrans({"o": "0", "i": "1", "l": "1"})
_TOTP_CODE = re.compile(r"^[0-9]{6}$")
WRONG_CODE = "That code didn't match. Enter the newest 6-digit code from your authenticator app."


# --- TOTP ---------------------------------------------------------------------------------------

def begin_enrolment():
    """A new random TOTP secret (160 bits, base32); kept by the caller until the user confirms it."""
    return pyotp.random_base32()


def provisioning_uri(secret, email):
    """The otpauth:// URI authenticator apps read from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def qr_svg(uri):
    """The URI as an inline SVG QR code (no scripts or style attributes, so the CSP allows it)."""
    return segno.make(uri, error="m").svg_inline(
        scale=4, border=4, dark="#000", light="#fff", svgclass="qr-code", lineclass=None,
        title="QR code for your authenticator app")


def format_key(secret):
    """The secret in groups of four, for typing into an app by hand."""
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


def clean_totp_code(code):
    """The code without spaces, or None when it is not six digits."""
    code = re.sub(r"\s+", "", code or "")
    return code if _TOTP_CODE.match(code) else None


def _matching_step(secret, code, now=None):
    """The time step (previous, current or next 30 s window) whose code this is, or None."""
    code = clean_totp_code(code)
    if not code:
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now or time.time())
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


# A code is valid for at most three 30 s steps; it is remembered a little longer than that.
USED_CODE_SECONDS = 120


def _redis_store():
    """The rate-limit store when it is Redis (shared by every process), else None."""
    uri = current_app.config.get("RATELIMIT_STORAGE_URI") or ""
    if not uri.startswith(("redis://", "rediss://", "redis+")):
        return None
    store = current_app.extensions.get("nudge_totp_used")
    if store is None:
        store = storage_from_string(uri)
        current_app.extensions["nudge_totp_used"] = store
    return store


def _first_use(user_id, step):
    """True the first time this user's code for this step is accepted (RFC 6238 section 5.2).

    Remembered in Redis when configured, else in the database (used_totp_codes): never in one process's
    memory, which another web or worker process would not see."""
    if not current_app.config.get("MFA_REJECT_REUSED_CODES", True):
        return True
    store = _redis_store()
    if store is not None:
        return store.incr(f"nudge:totp-used:{user_id}:{step}", USED_CODE_SECONDS) == 1
    now = utcnow()
    db.session.execute(sa.delete(UsedTotpCode).where(
        UsedTotpCode.user_id == user_id, UsedTotpCode.used_at < now - dt.timedelta(seconds=USED_CODE_SECONDS)))
    first = db.session.execute(dialect.insert(UsedTotpCode).values(user_id=user_id, step=step, used_at=now)
                               .on_conflict_do_nothing(index_elements=["user_id", "step"])).rowcount == 1
    db.session.commit()
    return first


def purge_used_codes(now):
    """Housekeeping: used codes too old to be valid again."""
    return db.session.execute(sa.delete(UsedTotpCode).where(
        UsedTotpCode.used_at < now - dt.timedelta(seconds=USED_CODE_SECONDS))).rowcount


def _check_code(user_id, secret, code):
    step = _matching_step(secret, code)
    return step is not None and _first_use(user_id, step)


def verify_totp(user, code):
    """True when code is the user's current TOTP code (one step of clock drift allowed, never reused)."""
    if not user.mfa_enabled or not user.totp_secret_encrypted:
        return False
    return _check_code(user.id, decrypt(user.totp_secret_encrypted), code)


# --- recovery codes -----------------------------------------------------------------------------

def new_recovery_codes(count=RECOVERY_CODE_COUNT):
    """count fresh codes like 'k3m9-x2qa-...' (80 random bits each)."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(16))
        codes.append("-".join(raw[i:i + 4] for i in range(0, 16, 4)))
    return codes


def normalize_recovery_code(code):
    """The canonical xxxx-xxxx-xxxx-xxxx form of what the user typed, or None if it cannot be one."""
    raw = re.sub(r"[\s-]+", "", (code or "").lower()).translate(_RECOVERY_LOOKALIKES)
    if len(raw) != 16 or any(ch not in RECOVERY_ALPHABET for ch in raw):
        return None
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def _store_new_recovery_codes(user):
    codes = new_recovery_codes()
    user.recovery_codes = [hash_token(code) for code in codes]
    return codes


def use_recovery_code(user, code):
    """Accept one unused recovery code and strike it off; True when it was valid."""
    code = normalize_recovery_code(code)
    if code is None or not user.mfa_enabled:
        return False
    # Read the codes under a row lock so two requests cannot spend the same one (PostgreSQL; SQLite
    # serialises writers).
    stored = db.session.execute(
        sa.select(User.recovery_codes).where(User.id == user.id).with_for_update()).scalar_one() or []
    wanted = hash_token(code)
    remaining = [h for h in stored if not hmac.compare_digest(h, wanted)]
    if len(remaining) == len(stored):
        db.session.rollback()
        return False
    user.recovery_codes = remaining
    audit.record("mfa.recovery_code_used", account_id=user.account_id, actor=user,
                 resources=[f"user:{user.id}"], meta={"remaining": len(remaining)})
    db.session.commit()
    return True


def recovery_codes_left(user):
    return len(user.recovery_codes or [])


# --- enrolment and changes ----------------------------------------------------------------------

def confirm_enrolment(user, secret, code, *, ip=None):
    """Turn on MFA with the secret the user scanned, once they prove it with a code.

    Returns the plain recovery codes: the only time they exist outside their hashes."""
    if user.mfa_enabled:
        raise ValidationError("Two-factor authentication is already on.",
                              [{"field": "code", "issue": "Two-factor authentication is already on."}])
    if not secret or not _check_code(user.id, secret, code):
        raise field_error("code", WRONG_CODE)
    user.totp_secret_encrypted = encrypt(secret)
    user.mfa_enabled_at = utcnow()
    codes = _store_new_recovery_codes(user)
    audit.record("mfa.enabled", account_id=user.account_id, actor=user, ip=ip, resources=[f"user:{user.id}"])
    db.session.commit()
    return codes


def regenerate_recovery_codes(user, code, *, ip=None):
    """Replace all recovery codes (the old ones stop working); needs a current TOTP code."""
    if not user.mfa_enabled:
        raise ValidationError("Turn on two-factor authentication first.",
                              [{"field": "code", "issue": "Turn on two-factor authentication first."}])
    if not verify_totp(user, code):
        raise field_error("code", WRONG_CODE)
    codes = _store_new_recovery_codes(user)
    audit.record("mfa.recovery_codes_regenerated", account_id=user.account_id, actor=user, ip=ip,
                 resources=[f"user:{user.id}"])
    db.session.commit()
    return codes


def _clear(user):
    user.totp_secret_encrypted = None
    user.mfa_enabled_at = None
    user.recovery_codes = []
    # Other sessions of this user end (see User.session_version).
    user.session_version = (user.session_version or 1) + 1


def disable_mfa(user, code, *, ip=None):
    """Turn off MFA (only allowed when the instance does not require it); needs a current TOTP code."""
    if current_app.config.get("REQUIRE_MFA"):
        raise Forbidden("Two-factor authentication is required on this server and cannot be turned off.")
    if not user.mfa_enabled:
        return user
    if not verify_totp(user, code):
        raise field_error("code", WRONG_CODE)
    _clear(user)
    audit.record("mfa.disabled", account_id=user.account_id, actor=user, ip=ip, resources=[f"user:{user.id}"])
    db.session.commit()
    return user


def reset_mfa(actor, member_id, *, ip=None):
    """An owner clears a member's MFA (lost phone); the member enrols again at their next sign-in."""
    if not isinstance(actor, User) or actor.role != "owner":
        raise Forbidden("Only an owner can reset a member's two-factor authentication.")
    try:
        member_uuid = member_id if isinstance(member_id, uuid.UUID) else uuid.UUID(str(member_id))
    except ValueError:
        raise NotFound("Team member not found.")
    member = db.session.get(User, member_uuid)
    if member is None or member.account_id != actor.account_id:
        raise NotFound("Team member not found.")
    _clear(member)
    audit.record("mfa.reset", account_id=actor.account_id, actor=actor, ip=ip,
                 resources=[f"user:{member.id}"], meta={"member": member.email})
    db.session.commit()
    return member
