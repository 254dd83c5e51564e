"""Accounts (tenants), their team members, invitations, API clients and the audit log."""
import sqlalchemy as sa
from flask_login import UserMixin

from nudge.extensions import db
from nudge.models.types import (UUID, IPAddress, JSONDoc, account_fk, created_column, id_column,
                                updated_column, utcnow)

ROLES = ("owner", "admin", "marketer", "viewer")


class Account(db.Model):
    __tablename__ = "accounts"
    id = id_column()
    name = sa.Column(sa.String(255), nullable=False)
    email = sa.Column(sa.String(255), nullable=False, unique=True)
    plan_type = sa.Column(sa.String(50), nullable=False, default="starter", server_default="starter")
    monthly_email_limit = sa.Column(sa.Integer, nullable=False, default=10000, server_default="10000")
    postal_address = sa.Column(sa.Text)
    default_from_name = sa.Column(sa.String(100))
    default_from_email = sa.Column(sa.String(255))
    timezone = sa.Column(sa.String(64), nullable=False, default="UTC", server_default="UTC")
    created_at = created_column()
    updated_at = updated_column()
    settings = sa.Column(JSONDoc, nullable=False, default=dict, server_default="{}")
    # When the owner who signed up proved the address (NUDGE_SIGNUP=open); NULL: nothing may be sent yet.
    # Accounts made any other way (first sign-up, `nudge create-account`) are confirmed when created.
    email_confirmed_at = sa.Column(sa.DateTime)


class User(UserMixin, db.Model):
    """A team member who signs in to the dashboard; belongs to one account."""
    __tablename__ = "users"
    __table_args__ = (sa.Index("ix_users_account_id", "account_id"),)
    id = id_column()
    account_id = account_fk()
    email = sa.Column(sa.String(255), nullable=False, unique=True)
    name = sa.Column(sa.String(255))
    password_hash = sa.Column(sa.String(255), nullable=False)
    role = sa.Column(sa.String(20), nullable=False, default="viewer")
    totp_secret_encrypted = sa.Column(sa.Text)
    mfa_enabled_at = sa.Column(sa.DateTime)
    recovery_codes = sa.Column(JSONDoc, nullable=False, default=list, server_default="[]")
    last_seen = sa.Column(sa.DateTime)
    last_login_at = sa.Column(sa.DateTime)
    # Bumped when the password or MFA changes and at sign-out, so the user's sessions end.
    session_version = sa.Column(sa.Integer, nullable=False, default=1, server_default="1")
    created_at = created_column()
    updated_at = updated_column()

    account = db.relationship(Account, lazy="joined")

    @property
    def mfa_enabled(self):
        return self.mfa_enabled_at is not None

    def can(self, permission):
        from nudge.services.permissions import role_can
        return role_can(self.role, permission)

    @property
    def label(self):
        return self.email

    def get_id(self):
        return f"{self.id}:{self.session_version}"


class FirstSignup(db.Model):
    """At most one row (id 1): written with the account NUDGE_SIGNUP=first creates, so two simultaneous
    first sign-ups cannot both succeed (the second insert breaks the primary key)."""
    __tablename__ = "first_signup"
    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)
    id = sa.Column(sa.Integer, primary_key=True, autoincrement=False)
    account_id = account_fk()
    created_at = created_column()


class LoginAttempt(db.Model):
    """Failed sign-in attempts (password or second factor) for one typed email from one client address.

    Keyed by the email as typed (lower case), known or not, so an unknown email locks like a real one;
    per address, so a stranger's failures lock only the stranger. `failures` is claimed (incremented)
    before each check; a success deletes the row."""
    __tablename__ = "login_attempts"
    __table_args__ = (sa.UniqueConstraint("login", "ip", name="uq_login_attempts_login_ip"),)
    id = id_column()
    login = sa.Column(sa.String(255), nullable=False)
    ip = sa.Column(sa.String(64), nullable=False)
    failures = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    locked_until = sa.Column(sa.DateTime)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, server_default=sa.func.now())


class UsedTotpCode(db.Model):
    """A TOTP time step a user has already signed in with (RFC 6238 5.2), when there is no Redis to
    remember it in: every process sees the database. Rows older than a few minutes are purged."""
    __tablename__ = "used_totp_codes"
    user_id = sa.Column(UUID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    step = sa.Column(sa.BigInteger, primary_key=True, autoincrement=False)
    used_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class Invitation(db.Model):
    """A pending invitation to join an account's team; the link carries a token stored only as a hash."""
    __tablename__ = "invitations"
    __table_args__ = (sa.Index("ix_invitations_account_id", "account_id"),)
    id = id_column()
    account_id = account_fk()
    email = sa.Column(sa.String(255), nullable=False)
    role = sa.Column(sa.String(20), nullable=False)
    token_hash = sa.Column(sa.String(64), nullable=False, unique=True)
    invited_by = sa.Column(UUID, sa.ForeignKey("users.id", ondelete="SET NULL"))
    expires_at = sa.Column(sa.DateTime, nullable=False)
    accepted_at = sa.Column(sa.DateTime)
    created_at = created_column()


class ApiClient(db.Model):
    """OAuth 2.0 client-credentials client; the secret is shown once and stored hashed."""
    __tablename__ = "api_clients"
    __table_args__ = (sa.Index("ix_api_clients_account_id", "account_id"),)
    id = id_column()
    account_id = account_fk()
    name = sa.Column(sa.String(255), nullable=False)
    client_id = sa.Column(sa.String(64), nullable=False, unique=True)
    secret_hash = sa.Column(sa.String(255), nullable=False)
    scopes = sa.Column(JSONDoc, nullable=False, default=list)
    created_by = sa.Column(UUID, sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at = created_column()
    revoked_at = sa.Column(sa.DateTime)
    last_used_at = sa.Column(sa.DateTime)

    @property
    def is_active(self):
        return self.revoked_at is None


class AuditLog(db.Model):
    """Spec section 5: {action, user, ip, timestamp, resources, metadata}."""
    __tablename__ = "audit_logs"
    __table_args__ = (sa.Index("ix_audit_logs_account_created", "account_id", "created_at"),)
    id = id_column()
    account_id = account_fk(nullable=True)
    user_id = sa.Column(UUID, sa.ForeignKey("users.id", ondelete="SET NULL"))
    actor = sa.Column(sa.String(255))
    action = sa.Column(sa.String(64), nullable=False)
    ip_address = sa.Column(IPAddress)
    resources = sa.Column(JSONDoc, nullable=False, default=list)
    meta = sa.Column("metadata", JSONDoc, nullable=False, default=dict)
    created_at = created_column()
