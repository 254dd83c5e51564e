"""Accounts: sign-up, settings and usage."""
import datetime as dt
import functools

import sqlalchemy as sa

from nudge.config import PLAN_EMAIL_LIMITS, PLANS
from nudge.errors import Conflict, ValidationError, field_error
from nudge.extensions import db
from nudge.models import Account, EmailEvent, FirstSignup, User
from nudge.models.types import utcnow
from nudge.services import audit, permissions
from nudge.services.security import check_password_strength, hash_password
from nudge.services.validation import (check_choice, check_timezone, normalize_email, optional_text, require_text,
                                       validate_fields)

SETTINGS_FIELDS = ("name", "postal_address", "default_from_name", "default_from_email", "timezone")


def email_in_use(email):
    return db.session.scalar(sa.select(sa.func.count()).select_from(User).where(User.email == email)) > 0 or \
        db.session.scalar(sa.select(sa.func.count()).select_from(Account).where(Account.email == email)) > 0


def create_account(*, name, email, password, plan="starter", owner_name=None, ip=None, confirmed=True, first=False):
    """Create an account and its owner; returns (account, owner).

    confirmed=False: the owner must still confirm the email address before the account sends anything
    (open sign-up). first=True: the install's first account through sign-up; the FirstSignup row written
    in the same transaction makes a second, simultaneous one fail with IntegrityError."""
    clean = validate_fields({
        "name": lambda: require_text(name, "name", "Account name", 255),
        "email": lambda: normalize_email(email),
        "password": lambda: check_password_strength(password),
        "plan": lambda: check_choice(plan, PLANS, "plan"),
    })
    name, email = clean["name"], clean["email"]
    if email_in_use(email):
        raise Conflict("An account with this email already exists.", [{"field": "email", "issue": "Already registered."}])

    account = Account(name=name, email=email, plan_type=plan, monthly_email_limit=PLAN_EMAIL_LIMITS[plan],
                      default_from_email=email, default_from_name=name,
                      email_confirmed_at=utcnow() if confirmed else None)
    owner = User(account=account, email=email, name=(owner_name or "").strip() or None,
                 password_hash=hash_password(password), role="owner")
    db.session.add_all([account, owner])
    db.session.flush()
    if first:
        db.session.add(FirstSignup(id=1, account_id=account.id))
        db.session.flush()
    audit.record("account.created", account_id=account.id, actor=owner, ip=ip,
                 resources=[f"account:{account.id}"], meta={"plan": plan})
    db.session.commit()
    return account, owner


def _check_string_setting(check, field, value):
    if value is not None and not isinstance(value, str):
        raise field_error(field, "Must be a string.")
    return check(value)


def get_account(account_id):
    return db.session.get(Account, account_id)


def emails_sent_this_month(account_id, now=None):
    now = now or dt.datetime.utcnow()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(EmailEvent).where(
            EmailEvent.account_id == account_id, EmailEvent.event_type == "email.sent",
            EmailEvent.created_at >= month_start))


def update_settings(actor, account, changes, *, ip=None):
    """Change the writable settings (name, postal address, default sender, timezone)."""
    permissions.require(actor, "account:write")
    unknown = sorted(set(changes) - set(SETTINGS_FIELDS))
    if unknown:
        raise ValidationError("Unknown or read-only fields.",
                              [{"field": f, "issue": "Unknown or read-only field."} for f in unknown])
    checks = {
        "name": lambda v: require_text(v, "name", "Account name", 255),
        "postal_address": lambda v: optional_text(v, "postal_address", "Postal address", 1000),
        "default_from_name": lambda v: optional_text(v, "default_from_name", "Default from name", 100),
        "default_from_email": lambda v: normalize_email(v, "default_from_email") if (v or "").strip() else None,
        "timezone": check_timezone,
    }
    clean = validate_fields({field: functools.partial(_check_string_setting, checks[field], field, value)
                             for field, value in changes.items()})
    before = {field: getattr(account, field) for field in clean}
    for field, value in clean.items():
        setattr(account, field, value)
    changed = sorted(f for f in clean if before[f] != clean[f])
    if changed:
        audit.record("account.updated", account_id=account.id, actor=actor, ip=ip,
                     resources=[f"account:{account.id}"], meta={"fields": changed})
    db.session.commit()
    return account

