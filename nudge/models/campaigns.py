"""Campaigns, their per-recipient messages and the email event stream (spec section 2)."""
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models.types import (UUID, IPAddress, JSONDoc, account_fk, created_column, id_column,
                                updated_column)


class Campaign(db.Model):
    __tablename__ = "campaigns"
    __table_args__ = (sa.Index("ix_campaigns_account_created", "account_id", "created_at"),)
    id = id_column()
    account_id = account_fk()
    name = sa.Column(sa.String(255), nullable=False)
    subject = sa.Column(sa.String(500))
    from_name = sa.Column(sa.String(100))
    from_email = sa.Column(sa.String(255))
    reply_to = sa.Column(sa.String(255))
    content_html = sa.Column(sa.Text)
    content_text = sa.Column(sa.Text)
    template_id = sa.Column(UUID, sa.ForeignKey("templates.id", ondelete="SET NULL"))
    status = sa.Column(sa.String(20), nullable=False, default="draft", server_default="draft")
    scheduled_at = sa.Column(sa.DateTime)
    sent_at = sa.Column(sa.DateTime)
    stats = sa.Column(JSONDoc, nullable=False, default=dict, server_default="{}")
    created_at = created_column()
    updated_at = updated_column()
    # Who receives it: {"all": true} or {"segments": [...], "exclude_segments": [...], "tags": [...]}.
    audience = sa.Column(JSONDoc)
    # The template version whose content was copied in (content_html/content_text are the campaign's own).
    template_version = sa.Column(sa.Integer)
    # The tracked links of the content as sent (click tokens carry an index into this list).
    links = sa.Column(JSONDoc)
    started_at = sa.Column(sa.DateTime)
    # Why the campaign stopped by itself (bounce/failure spike, provider down), shown in the dashboard.
    paused_reason = sa.Column(sa.Text)
    # Aggregates kept by the sending pipeline and the tracking endpoints (atomic increments), so pages
    # never recount messages or events.
    recipient_count = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    sent_count = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    failed_count = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    delivered_count = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    opened_count = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    clicked_count = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    unsubscribed_count = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    bounced_count = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    complained_count = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")


MESSAGE_STATUSES = ("queued", "sending", "sent", "failed", "cancelled")


class Message(db.Model):
    """One recipient of one send: snapshotted before the first email leaves, updated as each result comes."""
    __tablename__ = "messages"
    __table_args__ = (
        sa.UniqueConstraint("campaign_id", "contact_id", name="uq_messages_campaign_id_contact_id"),
        sa.Index("ix_messages_campaign_status", "campaign_id", "status"),
        sa.Index("ix_messages_account_contact", "account_id", "contact_id"),
    )
    id = id_column()
    account_id = account_fk()
    campaign_id = sa.Column(UUID, sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False)
    contact_id = sa.Column(UUID, sa.ForeignKey("contacts.id", ondelete="SET NULL"))
    email = sa.Column(sa.String(320), nullable=False)
    status = sa.Column(sa.String(12), nullable=False, default="queued", server_default="queued")
    provider = sa.Column(sa.String(20))
    provider_message_id = sa.Column(sa.String(255))
    attempts = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    error = sa.Column(sa.Text)
    created_at = created_column()
    claimed_at = sa.Column(sa.DateTime)
    sent_at = sa.Column(sa.DateTime)
    opened_at = sa.Column(sa.DateTime)
    clicked_at = sa.Column(sa.DateTime)


class EmailEvent(db.Model):
    __tablename__ = "email_events"
    __table_args__ = (
        # The spec's index, for campaign events only: every reader asks for one campaign (migration 0011).
        sa.Index("idx_email_events_campaign", "campaign_id", "event_type",
                 postgresql_where=sa.text("campaign_id IS NOT NULL"), sqlite_where=sa.text("campaign_id IS NOT NULL")),
        # The spec's index; on PostgreSQL it also carries each event's type and account (migration 0010), so a
        # segment's engagement rule is checked per contact of a small set without reading the table.
        sa.Index("idx_email_events_contact", "contact_id", "created_at",
                 postgresql_include=["event_type", "account_id"]),
        # Segment engagement rules (migration 0003): an index-only range scan per event type and window. Also
        # every other read of an account's events over time (monthly sending count, bounce summary) and the
        # account's cascade delete (migration 0012 dropped the (account_id, created_at) index).
        sa.Index("ix_email_events_segments", "account_id", "event_type", "created_at", "contact_id"),
    )
    id = id_column()
    account_id = account_fk(nullable=True)
    campaign_id = sa.Column(UUID, sa.ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id = sa.Column(UUID, sa.ForeignKey("contacts.id", ondelete="CASCADE"))
    event_type = sa.Column(sa.String(20), nullable=False)
    event_data = sa.Column(JSONDoc)
    ip_address = sa.Column(IPAddress)
    # Read only where asked for (the contact's activity joins it to name the campaign); never lazily.
    campaign = db.relationship("Campaign", lazy="raise", viewonly=True)
    user_agent = sa.Column(sa.Text)
    created_at = created_column()


class SendingConfig(db.Model):
    """An account's own sending settings: a provider with its credentials (encrypted, AES-256-GCM) and the
    thresholds that pause a campaign automatically (DKIM keys belong to its sending domains)."""
    __tablename__ = "sending_configs"
    __table_args__ = (sa.UniqueConstraint("account_id", name="uq_sending_configs_account_id"),)
    id = id_column()
    account_id = account_fk()
    provider = sa.Column(sa.String(20))              # None: the server's providers (NUDGE_* settings)
    credentials_encrypted = sa.Column(sa.Text)       # JSON of the provider's settings, encrypted
    pause_bounce_rate = sa.Column(sa.Float)          # e.g. 0.05: pause when over 5 % of the last sends bounced
    pause_failure_rate = sa.Column(sa.Float)
    updated_at = updated_column()
