"""Who may create an account through /signup (NUDGE_SIGNUP), and the email confirmation of open sign-up.

    first   the install's first account only (the default): a fresh install signs straight up; closed after
    invite  always closed: accounts come from invitations or `nudge create-account`
    open    anyone (a hosted service): the owner confirms the address by a signed link before sending

    result = sign_up("open", account_name=..., email=..., password=..., owner_name=None, ip=ip)
    result.owner            # the new owner (first mode signs them in), None when the email had a user
    confirm_email(token)    # the link's token -> the confirmed Account
    require_confirmed_email(account)   # before any send: EmailNotConfirmed until confirmed

In open mode the answer to a sign-up is the same whether or not the email already has a sign-in: the
new owner is mailed a confirmation link, an existing user a notice that someone tried.
"""
from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy.exc import IntegrityError

from nudge.errors import EmailNotConfirmed, NotFound, SignupClosed, ValidationError
from nudge.extensions import db
from nudge.models import Account, User
from nudge.models.types import utcnow
from nudge.services import accounts, audit, system_mail
from nudge.services.security import check_password_strength, hash_password
from nudge.services.validation import as_uuid, normalize_email, optional_text, require_text, validate_fields

CLOSED_MESSAGE = ("Sign-up is closed on this server. To get access, ask an owner of an account here for an "
                  "invitation, or ask the server's operator to create an account for you "
                  "(nudge create-account).")
CONFIRM_PATH = "/signup/confirm/"       # + token: blueprints/auth.py confirm_email
CONFIRMATION_SALT = "nudge.email-confirmation"
INVALID_LINK = "This confirmation link is invalid. Sign in and send yourself a new one from the dashboard."
EXPIRED_LINK = "This confirmation link has expired. Sign in and send yourself a new one from the dashboard."
UNCONFIRMED = ("Confirm your email address before sending: open the link we sent to {email}, or send a new "
               "one from the dashboard.")
EMAIL_UNCONFIRMED_CODE = "email_unconfirmed"


@dataclass(frozen=True)
class SignupResult:
    email: str
    owner: User | None          # None: the email already had a sign-in (open mode only)


def mode():
    return current_app.config.get("SIGNUP", "first")


def signup_open(signup_mode=None):
    """Whether /signup may create an account now."""
    signup_mode = signup_mode or mode()
    if signup_mode == "open":
        return True
    if signup_mode == "invite":
        return False
    return not db.session.scalar(sa.select(sa.exists().where(Account.id.is_not(None))))


def sign_up(signup_mode=None, *, account_name, email, password, owner_name=None, ip=None):
    """Create an account through the sign-up page, as NUDGE_SIGNUP allows; SignupClosed otherwise.

    Field errors come first and are the same whether or not the email is taken."""
    signup_mode = signup_mode or mode()
    if not signup_open(signup_mode):
        raise SignupClosed(CLOSED_MESSAGE)
    clean = validate_fields({
        "account_name": lambda: require_text(account_name, "account_name", "Account name", 255),
        "name": lambda: optional_text(owner_name, "name", "Your name", 255),
        "email": lambda: normalize_email(email),
        "password": lambda: check_password_strength(password),
    })
    if signup_mode == "open" and _email_taken(clean["email"]):
        return _taken(clean["email"], password, ip)
    try:
        _, owner = accounts.create_account(
            name=clean["account_name"], email=clean["email"], password=password, plan="starter",
            owner_name=clean["name"], ip=ip, confirmed=signup_mode != "open", first=signup_mode == "first")
    except IntegrityError:
        # first: another first sign-up won the race; open: the same email signed up at the same moment.
        db.session.rollback()
        if signup_mode == "first":
            raise SignupClosed(CLOSED_MESSAGE)
        return _taken(clean["email"], None, ip)
    return SignupResult(email=owner.email, owner=owner)


def _email_taken(email):
    email = email.lower()
    return db.session.scalar(sa.select(sa.exists().where(sa.func.lower(User.email) == email))) or \
        db.session.scalar(sa.select(sa.exists().where(sa.func.lower(Account.email) == email)))


def _taken(email, password, ip):
    """An open sign-up for an address that already signs in: audited on that user's account, answered as
    any sign-up is (the caller mails the user a notice instead of a confirmation link)."""
    if password is not None:
        hash_password(password)  # the same work as creating an account, so timing does not tell either
    user = _user_by_email(email)
    audit.record("signup.email_taken", account_id=user.account_id if user else None, actor_label=email, ip=ip,
                 resources=[f"user:{user.id}"] if user else [])
    db.session.commit()
    return SignupResult(email=email, owner=None)


def _user_by_email(email):
    return db.session.scalars(sa.select(User).where(sa.func.lower(User.email) == email.lower())
                              .order_by(User.created_at)).first()


# --- email confirmation ---------------------------------------------------------------------------------

def _serializer():
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=CONFIRMATION_SALT)


def confirmation_token(account):
    """A signed token naming the account and the address it confirms (expires after EMAIL_CONFIRMATION_HOURS)."""
    return _serializer().dumps({"account": str(account.id), "email": account.email})


def confirmation_link(account):
    return current_app.config["BASE_URL"].rstrip("/") + CONFIRM_PATH + confirmation_token(account)


def is_confirmed(account):
    return account.email_confirmed_at is not None


def confirm_email(token, *, ip=None):
    """Mark the account's address confirmed from a link's token; returns the Account (again: no change)."""
    max_age = int(float(current_app.config.get("EMAIL_CONFIRMATION_HOURS", 48)) * 3600)
    try:
        data = _serializer().loads(token or "", max_age=max_age)
    except SignatureExpired:
        raise ValidationError(EXPIRED_LINK, [{"field": "token", "issue": "Expired."}])
    except BadSignature:
        raise NotFound(INVALID_LINK)
    account = _account(data)
    if account is None or account.email.lower() != str(data.get("email", "")).lower():
        raise NotFound(INVALID_LINK)
    if account.email_confirmed_at is None:
        confirmed = db.session.execute(
            sa.update(Account).where(Account.id == account.id, Account.email_confirmed_at.is_(None))
            .values(email_confirmed_at=utcnow()).execution_options(synchronize_session=False)).rowcount
        if confirmed:
            audit.record("account.email_confirmed", account_id=account.id, actor_label=account.email, ip=ip,
                         resources=[f"account:{account.id}"])
        db.session.commit()
        db.session.refresh(account)
    return account


def _account(data):
    account_id = as_uuid(data.get("account")) if isinstance(data, dict) else None
    return db.session.get(Account, account_id) if account_id else None


def send_confirmation(account_id):
    """Mail the account's owner the confirmation link (a task runs it); the SendResult, or None when there is
    nothing to confirm."""
    account = db.session.get(Account, account_id)
    if account is None or is_confirmed(account):
        return None
    hours = int(float(current_app.config.get("EMAIL_CONFIRMATION_HOURS", 48)))
    text = (f"Welcome to {system_mail.PRODUCT}!\n\n"
            f"Confirm that {account.email} is your address by opening this link within {hours} hours:\n\n"
            f"{confirmation_link(account)}\n\n"
            "Until you do, your account can be set up but cannot send emails.\n\n"
            "If you did not sign up, ignore this message: nothing is sent from an unconfirmed account.\n")
    return system_mail.send_system_email(account.email, f"Confirm your email address for {system_mail.PRODUCT}",
                                         text, account_id=account.id)


def send_taken_notice(email):
    """Tell the user with this sign-in that someone tried to sign up with it (a task runs it)."""
    user = _user_by_email(email)
    if user is None:
        return None
    base_url = current_app.config["BASE_URL"].rstrip("/")
    text = (f"Someone tried to create a new {system_mail.PRODUCT} account with {user.email}, which already "
            "signs in here.\n\n"
            f"If it was you, sign in instead: {base_url}/login\n\n"
            "If it was not you, you need not do anything: no account was created and your sign-in is "
            "unchanged.\n")
    return system_mail.send_system_email(user.email, f"Sign-up attempt with your {system_mail.PRODUCT} address",
                                         text, account_id=user.account_id)


def require_confirmed_email(account):
    """Refuse sending (send now, schedule, test) from an account whose owner has not confirmed the address."""
    if not is_confirmed(account):
        raise EmailNotConfirmed(UNCONFIRMED.format(email=account.email),
                                [{"field": "account.email", "issue": "Not confirmed yet."}])


def readiness_item(account):
    """The review checklist's blocking item for an unconfirmed account, or None."""
    if is_confirmed(account):
        return None
    return {"code": EMAIL_UNCONFIRMED_CODE, "message": UNCONFIRMED.format(email=account.email), "blocking": True}
