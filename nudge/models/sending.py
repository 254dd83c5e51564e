"""Who an account may send as through the server's providers: its sending domains (each with a DNS
ownership token and its own DKIM key) and single verified From addresses; and its test sends (counted
against the monthly limit and an hourly cap)."""
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models.types import JSONDoc, account_fk, created_column, id_column, updated_column


class SendingDomain(db.Model):
    """A domain an account sends from: verified while `nudge-verify=<verify_token>` is published at it."""
    __tablename__ = "sending_domains"
    __table_args__ = (sa.UniqueConstraint("account_id", "domain", name="uq_sending_domains_account_domain"),)
    id = id_column()
    account_id = account_fk()
    domain = sa.Column(sa.String(253), nullable=False)        # ASCII (IDNA), lower case
    verify_token = sa.Column(sa.String(64), nullable=False)
    verified_at = sa.Column(sa.DateTime)                      # None: not (or no longer) verified
    checked_at = sa.Column(sa.DateTime)
    checks = sa.Column(JSONDoc, nullable=False, default=dict, server_default="{}")   # last DNS findings
    dkim_selector = sa.Column(sa.String(63), nullable=False)
    dkim_key_encrypted = sa.Column(sa.Text)                   # PEM, encrypted like every secret
    created_at = created_column()
    updated_at = updated_column()

    @property
    def verified(self):
        return self.verified_at is not None


class VerifiedSender(db.Model):
    """One From address proved by a confirmation link mailed to it (a sender on a free-mail domain)."""
    __tablename__ = "verified_senders"
    __table_args__ = (sa.UniqueConstraint("account_id", "email", name="uq_verified_senders_account_email"),)
    id = id_column()
    account_id = account_fk()
    email = sa.Column(sa.String(255), nullable=False)         # lower case: identity of the address
    confirmed_at = sa.Column(sa.DateTime)
    requested_at = sa.Column(sa.DateTime, nullable=False)     # when the last confirmation link was mailed
    created_at = created_column()

    @property
    def verified(self):
        return self.confirmed_at is not None


class TestSend(db.Model):
    """Emails one test send mailed: they count against the monthly limit and the hourly test cap."""
    __tablename__ = "test_sends"
    __table_args__ = (sa.Index("ix_test_sends_account_sent", "account_id", "sent_at"),)
    __test__ = False      # not a pytest test class
    id = id_column()
    account_id = account_fk()
    sent_at = sa.Column(sa.DateTime, nullable=False)
    emails = sa.Column(sa.Integer, nullable=False)
