"""Email templates and their versions: every save that changes content is a new, immutable version.

A template's format decides its source: "blocks" (the editor's content_json, docs/editor.md), "mjml" or
"html" (content_source, written in the code view). Each version also stores the compiled HTML and text
parts with their merge tags intact, so sending renders per recipient without compiling again. Global
(gallery) templates belong to no account: every account may read and copy them, none may change them.
"""
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask import current_app

from nudge.errors import Forbidden, NotFound, ValidationError, field_error
from nudge.extensions import db
from nudge.models import Campaign, Template, TemplateVersion, User
from nudge.models.templates import TEMPLATE_FORMATS
from nudge.models.types import utcnow
from nudge.services import custom_fields, email_doc, permissions, rendering
from nudge.services.validation import as_uuid, optional_text, require_text

FORMATS = TEMPLATE_FORMATS
CATEGORIES = ("Newsletter", "Announcement", "Promotion", "Welcome", "Transactional", "Plain", "Other")
# A campaign's own content lives in a template of this category (services.campaigns); the Templates
# list leaves them out and no one else may use the name.
CAMPAIGN_CATEGORY = "Campaign"
SORTS = {"updated": Template.updated_at.desc(), "name": Template.name.asc(), "created": Template.created_at.desc()}


@dataclass
class SaveResult:
    """What a save did: the version now current, whether it changed anything, and whether another
    editor had saved since the version the caller started from (their work is kept either way)."""
    version: TemplateVersion
    unchanged: bool = False
    conflict: bool = False
    latest_before: int | None = None
    warnings: list = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Reading

def templates_query(account_id, *, q=None, category=None, sort="updated"):
    """The account's own templates (not campaigns' own content), newest change first unless sorted otherwise."""
    query = sa.select(Template).where(Template.account_id == account_id, _not_campaign_content())
    if q:
        query = query.where(sa.func.lower(Template.name).contains(q.strip().lower(), autoescape=True))
    if category:
        query = query.where(Template.category == category)
    return query.order_by(SORTS.get(sort, SORTS["updated"]), Template.id)


def _not_campaign_content():
    return sa.or_(Template.category.is_(None), Template.category != CAMPAIGN_CATEGORY)


def api_templates_query(account_id, *, q=None, category=None, is_global=None):
    """The account's templates and the gallery's, for the API (is_global narrows to one or the other)."""
    query = sa.select(Template)
    if is_global is None:
        query = query.where(sa.or_(Template.account_id == account_id, Template.is_global.is_(True)))
    elif is_global:
        query = query.where(Template.is_global.is_(True))
    else:
        query = query.where(Template.account_id == account_id)
    query = query.where(_not_campaign_content())
    if q:
        query = query.where(sa.func.lower(Template.name).contains(q.strip().lower(), autoescape=True))
    if category:
        query = query.where(Template.category == category)
    return query.order_by(Template.is_global, Template.updated_at.desc(), Template.id)


def versions_query(account_id, template_id):
    """A template's versions, newest first."""
    get_template(account_id, template_id)
    return (sa.select(TemplateVersion).where(TemplateVersion.template_id == template_id)
            .order_by(TemplateVersion.version.desc()))


def list_gallery():
    """Global templates, in the gallery's order (nudge/gallery/index.json)."""
    order = {slug: position for position, slug in enumerate(gallery_slugs())}
    found = db.session.scalars(sa.select(Template).where(Template.is_global.is_(True))).all()
    return sorted(found, key=lambda template: (order.get(template.slug, len(order)), template.name))


def gallery_slugs():
    from nudge import gallery
    return [entry["slug"] for entry in gallery.gallery_index()]


def get_template(account_id, template_id):
    """One of the account's templates or a global one (read-only)."""
    template_id = as_uuid(template_id)
    template = db.session.get(Template, template_id) if template_id else None
    if template is None or not (template.is_global or template.account_id == account_id):
        raise NotFound("No such template.")
    return template


def get_editable_template(account_id, template_id):
    """One of the account's own templates; a global template is read-only."""
    template = get_template(account_id, template_id)
    if template.is_global:
        raise Forbidden("Gallery templates are read-only: use the template to make your own copy.")
    return template


def latest_version(template_id):
    return db.session.scalar(sa.select(TemplateVersion).where(TemplateVersion.template_id == template_id)
                             .order_by(TemplateVersion.version.desc()).limit(1))


def list_versions(account_id, template_id):
    """Versions newest first, with their authors' names (one query)."""
    get_template(account_id, template_id)
    rows = db.session.execute(
        sa.select(TemplateVersion, User.name, User.email)
        .outerjoin(User, User.id == TemplateVersion.created_by)
        .where(TemplateVersion.template_id == template_id)
        .order_by(TemplateVersion.version.desc())).all()
    return [(version, name or email) for version, name, email in rows]


def get_version(account_id, template_id, number):
    get_template(account_id, template_id)
    version = db.session.scalar(sa.select(TemplateVersion).where(TemplateVersion.template_id == template_id,
                                                                 TemplateVersion.version == number))
    if version is None:
        raise NotFound(f"This template has no version {number}.")
    return version


def usage_counts(account_id, template_ids):
    """{template id: number of campaigns using it} for a page of templates."""
    if not template_ids:
        return {}
    rows = db.session.execute(sa.select(Campaign.template_id, sa.func.count())
                              .where(Campaign.account_id == account_id, Campaign.template_id.in_(template_ids))
                              .group_by(Campaign.template_id)).all()
    return dict(rows)


# --------------------------------------------------------------------------------------------------
# Writing

def _check_name(name):
    return require_text(name, "name", "Name", 255)


def _check_category(category, allow_campaign=False):
    category = optional_text(category, "category", "Category", 50)
    if category == CAMPAIGN_CATEGORY and not allow_campaign:
        raise field_error("category", "“Campaign” is kept for campaigns' own content: choose another category.")
    return category or None


def _check_format(format_):
    if format_ not in FORMATS:
        raise field_error("format", f"Choose one of {', '.join(FORMATS)}.")
    return format_


def _compile(format_, content_json, content_source):
    """(content_json, content_source, Compiled) for a format, validating what was given."""
    base_url = current_app.config["BASE_URL"]
    if format_ == "blocks":
        if content_json is None:
            content_json = email_doc.new_document()
        doc = email_doc.validate_document(content_json)
        return doc, None, rendering.compile_template(content_json=doc, base_url=base_url)
    if not isinstance(content_source, str) or not content_source.strip():
        raise field_error("content_source", f"Write the template's {format_.upper()} source.")
    email_doc.check_source_size(len(content_source.encode()), "content_source")
    if format_ == "mjml":
        return None, content_source, rendering.compile_template(mjml=content_source, base_url=base_url)
    return None, content_source, rendering.compile_template(html=content_source, base_url=base_url)


def _add_version(template, actor, content_json, content_source, compiled):
    template.current_version += 1
    template.updated_at = utcnow()
    version = TemplateVersion(template_id=template.id, version=template.current_version, format=template.format,
                              content_html=compiled.html, content_text=compiled.text,
                              content_json=content_json, content_source=content_source,
                              created_by=actor.id if isinstance(actor, User) else None)
    db.session.add(version)
    return version


def _copy_source(account_id, copy_of):
    """(format, content_json, content_source, category) of a template or gallery entry to copy."""
    source = get_template(account_id, copy_of)
    version = latest_version(source.id)
    if version is None:
        raise NotFound("That template has no content to copy.")
    return source.format, version.content_json, version.content_source, source.category


def create_template(actor, account_id, *, name, category=None, format="blocks", content_json=None,
                    content_source=None, copy_of=None, for_campaign=False):
    """A new template with its version 1: empty, from given content, or a copy of another (gallery) one.
    for_campaign: the content of a campaign (services.campaigns), kept out of the Templates list."""
    permissions.require(actor, "campaigns:write")
    name = _check_name(name)
    category = _check_category(category, allow_campaign=for_campaign)
    if copy_of:
        format, content_json, content_source, copied_category = _copy_source(account_id, copy_of)
        if copied_category == CAMPAIGN_CATEGORY and not for_campaign:
            copied_category = None
        category = category or copied_category
    content_json, content_source, compiled = _compile(_check_format(format), content_json, content_source)
    template = Template(account_id=account_id, name=name, category=category, format=format, is_global=False,
                        current_version=0)
    db.session.add(template)
    db.session.flush()
    _add_version(template, actor, content_json, content_source, compiled)
    db.session.commit()
    return template


def update_details(actor, account_id, template_id, *, name=None, category=None):
    """Rename or re-categorise a template (not a new version: content is unchanged)."""
    permissions.require(actor, "campaigns:write")
    template = get_editable_template(account_id, template_id)
    if name is not None:
        template.name = _check_name(name)
    if category is not None:
        template.category = _check_category(category, allow_campaign=template.category == CAMPAIGN_CATEGORY)
    template.updated_at = utcnow()
    db.session.commit()
    return template


def _lock(template):
    """Serialise saves of one template so version numbers never collide (a row lock on PostgreSQL;
    SQLite serialises writers already)."""
    db.session.execute(sa.select(Template.id).where(Template.id == template.id).with_for_update())
    db.session.refresh(template)


def content_warnings(account_id, html, text):
    """The content warnings of compiled HTML and text, merge tags naming nothing in this account included."""
    names = [field.name for field in custom_fields.list_fields(account_id)]
    return rendering.check_content(html, text) + rendering.merge_tag_warnings(html, names)


def save_version(actor, account_id, template_id, *, content_json=None, content_source=None, base_version=None):
    """Save content as a new version, unless it equals the latest one. A save based on an older version
    than the latest still lands (no one's work is lost) and says so, so the editor can tell its user."""
    permissions.require(actor, "campaigns:write")
    template = get_editable_template(account_id, template_id)
    if base_version is not None and (not isinstance(base_version, int) or base_version < 0):
        raise field_error("base_version", "Give the version number the edit started from.")
    content_json, content_source, compiled = _compile(template.format, content_json, content_source)
    _lock(template)
    latest = latest_version(template.id)
    conflict = base_version is not None and latest is not None and base_version < latest.version
    if latest is not None and latest.content_json == content_json and latest.content_source == content_source:
        db.session.commit()
        return SaveResult(latest, unchanged=True, conflict=conflict, latest_before=latest.version,
                          warnings=content_warnings(account_id, compiled.html, compiled.text))
    version = _add_version(template, actor, content_json, content_source, compiled)
    db.session.commit()
    return SaveResult(version, conflict=conflict, latest_before=latest.version if latest else None,
                      warnings=content_warnings(account_id, compiled.html, compiled.text))


def restore_version(actor, account_id, template_id, number):
    """Make an old version current again by saving its content as a new version."""
    permissions.require(actor, "campaigns:write")
    template = get_editable_template(account_id, template_id)
    old = get_version(account_id, template_id, number)
    content_json, content_source, compiled = _compile(old.format, old.content_json, old.content_source)
    _lock(template)
    template.format = old.format
    version = _add_version(template, actor, content_json, content_source, compiled)
    db.session.commit()
    return version


def switch_to_code(actor, account_id, template_id, format, source):
    """Turn a template into hand-written MJML or HTML (the block editor closes for it; restoring an
    earlier block version brings it back)."""
    permissions.require(actor, "campaigns:write")
    if format not in ("mjml", "html"):
        raise field_error("format", "Choose mjml or html.")
    template = get_editable_template(account_id, template_id)
    _, content_source, compiled = _compile(format, None, source)
    _lock(template)
    template.format = format
    version = _add_version(template, actor, None, content_source, compiled)
    db.session.commit()
    return version


def delete_template(actor, account_id, template_id):
    """Delete a template and its versions; campaigns keep their own copy of the content."""
    permissions.require(actor, "campaigns:write")
    template = get_editable_template(account_id, template_id)
    db.session.delete(template)
    db.session.commit()


def sync_gallery():
    """Keep the global templates in step with the gallery shipped in nudge/gallery, by slug: a missing one
    is created, a changed one gets a new version. Cheap when nothing changed (one query, six comparisons)."""
    from nudge import gallery
    base_url = current_app.config["BASE_URL"]
    existing = {template.slug: template for template in
                db.session.scalars(sa.select(Template).where(Template.is_global.is_(True))).all()}
    changed = False
    for entry in gallery.load_gallery(base_url):
        template = existing.get(entry["slug"])
        if template is None:
            template = Template(account_id=None, is_global=True, slug=entry["slug"], name=entry["name"],
                                format="blocks", current_version=0)
            db.session.add(template)
            db.session.flush()
        for attribute, value in (("name", entry["name"]), ("category", entry["category"]),
                                 ("description", entry["description"]), ("thumbnail_url", entry["thumbnail"])):
            if getattr(template, attribute) != value:
                setattr(template, attribute, value)
                changed = True
        doc = email_doc.validate_document(entry["content_json"])
        latest = latest_version(template.id)
        if latest is None or latest.content_json != doc:
            _add_version(template, None, doc, None, rendering.compile_template(content_json=doc, base_url=base_url))
            changed = True
    if not changed:
        return
    try:
        db.session.commit()
    except sa.exc.IntegrityError:  # another process seeded the same gallery at the same moment
        db.session.rollback()


STARTER_SOURCES = {
    "mjml": """<mjml>
  <mj-body background-color="#f3f4f6">
    <mj-section background-color="#ffffff" padding="24px">
      <mj-column>
        <mj-text font-size="24px" font-weight="700">Hello {{ contact.first_name | default("there") }}</mj-text>
        <mj-text>Write your message here.</mj-text>
      </mj-column>
    </mj-section>
    <mj-section padding="16px 24px">
      <mj-column>
        <mj-text font-size="12px" color="#6b7280" align="center">{{ account.postal_address }}<br>
          <a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
""",
    "html": """<!doctype html>
<html>
<head>
<meta charset="utf-8">
<style>
  body { margin: 0; background: #f3f4f6; font-family: Helvetica, Arial, sans-serif; color: #1f2937; }
  .wrap { max-width: 600px; margin: 0 auto; background: #ffffff; padding: 24px; }
  .footer { font-size: 12px; color: #6b7280; text-align: center; padding: 16px; }
</style>
</head>
<body>
<div class="wrap">
  <h1>Hello {{ contact.first_name | default("there") }}</h1>
  <p>Write your message here.</p>
</div>
<p class="footer">{{ account.postal_address }}<br><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body>
</html>
""",
}


def starter_source(format):
    """The first version of a template written in code: a valid skeleton with the required footer."""
    return STARTER_SOURCES[format]


def source_for_editing(template, version):
    """The MJML a code-view user starts from: the stored source, or the blocks compiled to MJML."""
    if version.content_source is not None:
        return version.content_source
    return email_doc.to_mjml(version.content_json or email_doc.new_document(),
                             base_url=current_app.config["BASE_URL"])


def check_render_input(payload):
    """(content_json, mjml, html) from an API render request: exactly one of them."""
    given = [key for key in ("content_json", "mjml", "html") if payload.get(key) is not None]
    if len(given) != 1:
        raise ValidationError("Give exactly one of content_json, mjml or html.",
                              [{"field": "content_json", "issue": "Exactly one of content_json, mjml or html."}])
    return payload.get("content_json"), payload.get("mjml"), payload.get("html")
