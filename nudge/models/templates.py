"""Email templates and their versions (spec section 2)."""
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models.types import UUID, JSONDoc, account_fk, created_column, id_column


class Template(db.Model):
    __tablename__ = "templates"
    __table_args__ = (sa.Index("ix_templates_account_id", "account_id"),)
    id = id_column()
    account_id = account_fk(nullable=True)  # NULL for global templates
    name = sa.Column(sa.String(255), nullable=False)
    category = sa.Column(sa.String(50))
    thumbnail_url = sa.Column(sa.Text)
    is_global = sa.Column(sa.Boolean, nullable=False, default=False, server_default=sa.false())


class TemplateVersion(db.Model):
    __tablename__ = "template_versions"
    __table_args__ = (sa.UniqueConstraint("template_id", "version", name="uq_template_versions_template_id_version"),)
    id = id_column()
    template_id = sa.Column(UUID, sa.ForeignKey("templates.id", ondelete="CASCADE"), nullable=False)
    version = sa.Column(sa.Integer, nullable=False)
    content_html = sa.Column(sa.Text, nullable=False)
    content_json = sa.Column(JSONDoc)
    created_at = created_column()
    # The author: a team member (the spec points at accounts; a version's author is a person).
    created_by = sa.Column(UUID, sa.ForeignKey("users.id", ondelete="SET NULL"))
