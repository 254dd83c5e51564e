"""Campaigns and the email event stream (spec section 2)."""
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


class EmailEvent(db.Model):
    __tablename__ = "email_events"
    __table_args__ = (
        sa.Index("idx_email_events_campaign", "campaign_id", "event_type"),
        sa.Index("idx_email_events_contact", "contact_id", "created_at"),
        sa.Index("ix_email_events_account_created", "account_id", "created_at"),
        # Segment engagement rules (migration 0003): an index-only range scan per event type and window.
        sa.Index("ix_email_events_segments", "account_id", "event_type", "created_at", "contact_id"),
    )
    id = id_column()
    account_id = account_fk(nullable=True)
    campaign_id = sa.Column(UUID, sa.ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id = sa.Column(UUID, sa.ForeignKey("contacts.id", ondelete="CASCADE"))
    event_type = sa.Column(sa.String(20), nullable=False)
    event_data = sa.Column(JSONDoc)
    ip_address = sa.Column(IPAddress)
    user_agent = sa.Column(sa.Text)
    created_at = created_column()
