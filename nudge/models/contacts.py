"""Contacts and segments (spec section 2)."""
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models.types import JSONDoc, TextArray, account_fk, created_column, id_column, updated_column, utcnow


class Contact(db.Model):
    __tablename__ = "contacts"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "email", name="uq_contacts_account_id_email"),
        sa.Index("idx_contacts_account_email", "account_id", "email"),
        sa.Index("idx_contacts_tags", "tags", postgresql_using="gin"),
    )
    id = id_column()
    account_id = account_fk()
    email = sa.Column(sa.String(255), nullable=False)
    first_name = sa.Column(sa.String(100))
    last_name = sa.Column(sa.String(100))
    status = sa.Column(sa.String(20), nullable=False, default="active", server_default="active")
    subscription_date = sa.Column(sa.DateTime, default=utcnow, server_default=sa.func.now())
    custom_fields = sa.Column(JSONDoc, nullable=False, default=dict, server_default="{}")
    tags = sa.Column(TextArray)
    created_at = created_column()
    updated_at = updated_column()


class Segment(db.Model):
    __tablename__ = "segments"
    __table_args__ = (sa.Index("ix_segments_account_id", "account_id"),)
    id = id_column()
    account_id = account_fk()
    name = sa.Column(sa.String(255), nullable=False)
    type = sa.Column(sa.String(20), nullable=False, default="dynamic", server_default="dynamic")
    conditions = sa.Column(JSONDoc, nullable=False)
    contact_count = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    last_calculated = sa.Column(sa.DateTime)
    created_at = created_column()
