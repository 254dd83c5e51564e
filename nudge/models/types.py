"""Column types that are native on PostgreSQL and portable on SQLite."""
import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

JSONDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# none_as_null: a missing list is SQL NULL on SQLite too, as it is on PostgreSQL.
TextArray = sa.JSON(none_as_null=True).with_variant(postgresql.ARRAY(sa.Text()), "postgresql")
IPAddress = sa.String(45).with_variant(postgresql.INET(), "postgresql")
UUID = sa.Uuid


def new_id():
    return uuid.uuid4()


def utcnow():
    """Naive UTC: every timestamp column stores UTC without a zone, on both dialects."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def iso(value):
    """A naive-UTC timestamp (or a date) as ISO 8601, with a Z for timestamps; None stays None."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="seconds") + "Z"
    return value.isoformat()


def id_column():
    return sa.Column(UUID, primary_key=True, default=new_id)


def created_column():
    return sa.Column(sa.DateTime, nullable=False, default=utcnow, server_default=sa.func.now())


def updated_column():
    return sa.Column(sa.DateTime, nullable=False, default=utcnow, onupdate=utcnow, server_default=sa.func.now())


def account_fk(nullable=False, ondelete="CASCADE"):
    return sa.Column(UUID, sa.ForeignKey("accounts.id", ondelete=ondelete), nullable=nullable)
