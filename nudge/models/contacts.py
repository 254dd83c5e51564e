"""Contacts, their custom field definitions, the suppression list, imports and segments (spec section 2)."""
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models.types import (UUID, JSONDoc, TextArray, account_fk, created_column, id_column, updated_column,
                                utcnow)

CONTACT_STATUSES = ("active", "unsubscribed", "bounced", "complained", "deleted")
CUSTOM_FIELD_TYPES = ("text", "number", "date", "boolean", "choice")
SUPPRESSION_REASONS = ("unsubscribed", "hard_bounce", "complaint", "manual", "erased")


class Contact(db.Model):
    __tablename__ = "contacts"
    __table_args__ = (
        # One contact per address: identity is the lower-cased address (migration 0016); the address itself is
        # kept as first typed. The import's ON CONFLICT target; segment rules on email (case-insensitive) use it too.
        sa.Index("uq_contacts_account_lower_email", "account_id", sa.text("lower(email)"), unique=True),
        sa.Index("idx_contacts_account_email", "account_id", "email"),
        sa.Index("idx_contacts_tags", "tags", postgresql_using="gin"),
        # status is in the key so segment counts ("not deleted") are index-only scans (migration 0005).
        sa.Index("ix_contacts_account_created", "account_id", "created_at", "status"),
        sa.Index("ix_contacts_account_status", "account_id", "status"),
        # Segment counts as index-only scans (migration 0005): each index holds every column such a count
        # mentions (status, and the column behind an expression). On PostgreSQL the name expressions use
        # text_pattern_ops (prefix LIKE); the email domain index exists there only (SQLite has no split_part).
        sa.Index("ix_contacts_segment_first_name", "account_id", sa.text("lower(first_name)"), "first_name", "status"),
        sa.Index("ix_contacts_segment_last_name", "account_id", sa.text("lower(last_name)"), "last_name", "status"),
        sa.Index("ix_contacts_segment_email_domain", "account_id", sa.text("split_part(lower(email), '@', -1)"),
                 postgresql_include=["email", "status"]).ddl_if(dialect="postgresql"),
        sa.Index("ix_contacts_segment_subscribed", "account_id", "subscription_date", "status"),
        # The ids (and on PostgreSQL addresses) of contacts whose status is not active, for index-only id sets
        # of segment rules on such a status (migration 0009). Partial: imports create active contacts only.
        sa.Index("ix_contacts_segment_status_other", "account_id", "status", postgresql_include=["id", "email"],
                 postgresql_where=sa.text("status <> 'active'"), sqlite_where=sa.text("status <> 'active'")),
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
    # Where the contact came from (dashboard, api, import, form) and, for consent records, when/how.
    source = sa.Column(sa.String(50))
    unsubscribed_at = sa.Column(sa.DateTime)
    # Soft delete: status "deleted" for 30 days (restorable to status_before_delete), then purged.
    deleted_at = sa.Column(sa.DateTime)
    status_before_delete = sa.Column(sa.String(20))
    created_at = created_column()
    updated_at = updated_column()


class ContactTag(db.Model):
    """One tag of one contact that is not deleted: contacts.tags unrolled, so a segment count on a tag is a
    range of the primary key (docs/performance.md, Segments). Written only by the triggers on contacts
    (migration 0008); read by nudge.services.segments."""
    __tablename__ = "contact_tags"
    __table_args__ = ({"sqlite_with_rowid": False},)
    account_id = sa.Column(UUID, primary_key=True)
    tag = sa.Column(sa.Text, primary_key=True)
    contact_id = sa.Column(UUID, primary_key=True)


class ContactValue(db.Model):
    """One custom-field value of one contact that is not deleted, typed by its definition: number fields and
    booleans (1/0) in number; choice and date fields as stored, text fields lower-cased and non-empty, in
    text. Values of the wrong JSON type have no row (they count as not set). Written only by the triggers
    on contacts (migration 0008) and services.segment_tables when a definition is created or deleted."""
    __tablename__ = "contact_values"
    __table_args__ = (
        # Partial: each row is in exactly one of them, where its whole key finds it; a rule is one range
        # of one of them, its contact ids in order. No primary key (inserting rows took twice as long with one).
        sa.Index("ix_contact_values_number", "account_id", "field", "number", "contact_id",
                 postgresql_where=sa.text("number IS NOT NULL"), sqlite_where=sa.text("number IS NOT NULL")),
        sa.Index("ix_contact_values_text", "account_id", "field", "text", "contact_id",
                 postgresql_where=sa.text("text IS NOT NULL"), sqlite_where=sa.text("text IS NOT NULL")),
    )
    account_id = sa.Column(UUID, nullable=False)
    field = sa.Column(sa.String(50), nullable=False)
    contact_id = sa.Column(UUID, nullable=False)
    number = sa.Column(sa.Numeric)
    text = sa.Column(sa.Text)
    # The ORM needs an identity; the table has none (a contact has at most one row per field).
    __mapper_args__ = {"primary_key": [account_id, field, contact_id]}


class CustomField(db.Model):
    """An account's custom field definition; contacts.custom_fields holds the values by name."""
    __tablename__ = "custom_fields"
    __table_args__ = (sa.UniqueConstraint("account_id", "name", name="uq_custom_fields_account_id_name"),)
    id = id_column()
    account_id = account_fk()
    name = sa.Column(sa.String(50), nullable=False)
    label = sa.Column(sa.String(100), nullable=False)
    type = sa.Column(sa.String(20), nullable=False)
    options = sa.Column(JSONDoc)  # the allowed values of a "choice" field
    created_at = created_column()


class Suppression(db.Model):
    """An address the account must never mail again; outlives the contact. One entry per address in any case."""
    __tablename__ = "suppressions"
    __table_args__ = (sa.Index("uq_suppressions_account_lower_email", "account_id", sa.text("lower(email)"),
                               unique=True),)
    id = id_column()
    account_id = account_fk()
    email = sa.Column(sa.String(255), nullable=False)
    reason = sa.Column(sa.String(20), nullable=False)
    note = sa.Column(sa.Text)
    created_at = created_column()


class Import(db.Model):
    """A contact import (CSV upload or API batch) and its progress and outcome."""
    __tablename__ = "imports"
    __table_args__ = (sa.Index("ix_imports_account_created", "account_id", "created_at"),)
    id = id_column()
    account_id = account_fk()
    created_by = sa.Column(UUID, sa.ForeignKey("users.id", ondelete="SET NULL"))
    source = sa.Column(sa.String(20), nullable=False, default="csv")  # csv, api, cli
    filename = sa.Column(sa.String(255))
    file_path = sa.Column(sa.Text)  # the uploaded file under the instance folder, removed when done
    status = sa.Column(sa.String(20), nullable=False, default="pending")  # pending, running, completed, failed
    mapping = sa.Column(JSONDoc, nullable=False, default=dict)  # CSV column -> contact field
    options = sa.Column(JSONDoc, nullable=False, default=dict)  # update_existing, tags, delimiter, encoding
    total_rows = sa.Column(sa.Integer)
    processed_rows = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    created_count = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    updated_count = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    skipped_count = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    error_count = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    message = sa.Column(sa.Text)  # why a failed import failed
    created_at = created_column()
    started_at = sa.Column(sa.DateTime)
    updated_at = sa.Column(sa.DateTime)  # a running import's heartbeat: stamped with every chunk
    finished_at = sa.Column(sa.DateTime)


class ImportError_(db.Model):
    """One rejected row of an import: row number as a spreadsheet shows it (the header is row 1, so 2 is the
    first data row; imports before issue 15 counted data rows from 1), column, reason and rejected value.

    `message` is the reason; `value` the rejected value as given ("" for an empty cell; None when none
    was recorded, as for errors stored before migration 0017)."""
    __tablename__ = "import_errors"
    __table_args__ = (sa.Index("ix_import_errors_import_row", "import_id", "row_number"),)
    id = sa.Column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True)
    import_id = sa.Column(UUID, sa.ForeignKey("imports.id", ondelete="CASCADE"), nullable=False)
    row_number = sa.Column(sa.Integer, nullable=False)
    field = sa.Column(sa.String(100))
    message = sa.Column(sa.Text, nullable=False)
    value = sa.Column(sa.Text)

    @property
    def reason(self):
        return self.message


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


class SegmentMember(db.Model):
    """An explicit member of a static segment."""
    __tablename__ = "segment_members"
    __table_args__ = (sa.Index("ix_segment_members_contact", "contact_id"),)
    segment_id = sa.Column(UUID, sa.ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True)
    contact_id = sa.Column(UUID, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    account_id = account_fk()
    added_at = created_column()
