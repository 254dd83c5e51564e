"""Email templates, their versions (spec section 2) and uploaded images."""
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models.types import UUID, JSONDoc, account_fk, created_column, id_column, updated_column

TEMPLATE_FORMATS = ("blocks", "mjml", "html")


class Template(db.Model):
    __tablename__ = "templates"
    __table_args__ = (
        sa.Index("ix_templates_account_id", "account_id"),
        sa.UniqueConstraint("slug", name="uq_templates_slug"),
    )
    id = id_column()
    account_id = account_fk(nullable=True)  # NULL for global templates
    name = sa.Column(sa.String(255), nullable=False)
    category = sa.Column(sa.String(50))
    thumbnail_url = sa.Column(sa.Text)
    is_global = sa.Column(sa.Boolean, nullable=False, default=False, server_default=sa.false())
    # Global (gallery) templates are kept in step with the files shipped in nudge/gallery by slug.
    slug = sa.Column(sa.String(64))
    description = sa.Column(sa.Text)
    format = sa.Column(sa.String(10), nullable=False, default="blocks", server_default="blocks")
    current_version = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    created_at = created_column()
    updated_at = updated_column()


class TemplateVersion(db.Model):
    __tablename__ = "template_versions"
    __table_args__ = (sa.UniqueConstraint("template_id", "version", name="uq_template_versions_template_id_version"),)
    id = id_column()
    template_id = sa.Column(UUID, sa.ForeignKey("templates.id", ondelete="CASCADE"), nullable=False)
    version = sa.Column(sa.Integer, nullable=False)
    # The compiled HTML with its merge tags intact: what each recipient's copy is rendered from.
    content_html = sa.Column(sa.Text, nullable=False)
    content_text = sa.Column(sa.Text)
    content_json = sa.Column(JSONDoc)
    format = sa.Column(sa.String(10), nullable=False, default="blocks", server_default="blocks")
    # What a code-view user wrote (MJML or HTML), for templates whose format is not "blocks".
    content_source = sa.Column(sa.Text)
    created_at = created_column()
    # The author: a team member (the spec points at accounts; a version's author is a person).
    created_by = sa.Column(UUID, sa.ForeignKey("users.id", ondelete="SET NULL"))


class Upload(db.Model):
    """An image a team member uploaded for their emails; the file lives under NUDGE_UPLOAD_DIR."""
    __tablename__ = "uploads"
    __table_args__ = (sa.Index("ix_uploads_account_id_created_at", "account_id", "created_at"),)
    id = id_column()
    account_id = account_fk()
    filename = sa.Column(sa.String(255), nullable=False)   # as the user named it
    stored_name = sa.Column(sa.String(80), nullable=False)  # <random>.<ext> under <upload dir>/<account id>/
    content_type = sa.Column(sa.String(50), nullable=False)
    size = sa.Column(sa.Integer, nullable=False)
    width = sa.Column(sa.Integer)
    height = sa.Column(sa.Integer)
    created_at = created_column()
    created_by = sa.Column(UUID, sa.ForeignKey("users.id", ondelete="SET NULL"))
