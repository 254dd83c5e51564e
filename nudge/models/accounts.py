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
    failed_login_count = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    locked_until = sa.Column(sa.DateTime)
    last_seen = sa.Column(sa.DateTime)
    last_login_at = sa.Column(sa.DateTime)
    # Bumped when the password or MFA changes, so other sessions of this user end.
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

    def is_locked(self, now=None):
        return self.locked_until is not None and self.locked_until > (now or utcnow())


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
