"""Campaigns: drafts and their content, the audience, the readiness checklist and the moves between
statuses. Sending itself (recipient snapshot, workers, providers) is nudge/services/sending.py.

    campaign = create_campaign(actor, {"name": "May news", "subject": "Hi {{ contact.first_name }}",
                                       "audience": {"segments": [segment_id], "tags": ["vip"]}})
    set_content_from(actor, campaign.id, "gallery", copy_of=gallery_template_id)   # the editor edits it
    readiness(campaign)                  # [{"code", "message", "blocking"}]
    send_now(actor, campaign.id)         # or schedule(actor, campaign.id, "2025-06-01T09:00")

    draft --schedule--> scheduled --unschedule--> draft
    draft/scheduled --send_now / due--> sending --pause--> paused --resume--> sending
    scheduled/sending/paused --cancel--> cancelled;   sending --(pipeline)--> sent / failed

A draft's content lives in a template the campaign owns (category "Campaign"), edited in the block
editor; when the campaign is sent or scheduled, the template's latest version is copied into the
campaign, which keeps that copy. Status changes are conditional UPDATEs, so two clicks, two workers or a
click racing the scheduler never start a campaign twice.
"""
import datetime as dt
import logging
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app

from nudge.errors import Conflict, LimitExceeded, NotFound, ValidationError, field_error
from nudge.extensions import db
from nudge.models import Account, Campaign, Contact, Message, Segment, Template, TemplateVersion
from nudge.models.types import utcnow
from nudge.services import audit, custom_fields, permissions, rendering, sending_domains, signup, templates
from nudge.services.dialect import is_postgres, tags_contain_any
from nudge.services.segments import segment_condition
from nudge.services.suppressions import suppressed
from nudge.services.tags import normalize_tags
from nudge.services.usage import account_zone as _zone
from nudge.services.usage import check_monthly_limit, claim_test_sends, emails_used  # noqa: F401 (emails_used: the views)
from nudge.services.validation import as_uuid, normalize_email, optional_text, require_text, validate_fields

log = logging.getLogger("nudge.campaigns")

STATUSES = ("draft", "scheduled", "sending", "paused", "sent", "cancelled", "failed")
# Marks the templates that hold a campaign's own content (the Templates list leaves them out).
CAMPAIGN_CATEGORY = "Campaign"
MAX_TEST_EMAILS = 5
MAX_AUDIENCE_SEGMENTS = 50
FIELDS = ("name", "subject", "from_name", "from_email", "reply_to", "content_html", "content_text", "template_id",
          "audience")
CONTENT_STARTS = ("gallery", "template", "blocks", "mjml", "html")
# What to do instead, by the status that refused an action.
HINTS = {
    "draft": "Review and send it first.",
    "scheduled": "Unschedule it first (it goes back to draft).",
    "sending": "Pause or cancel it first.",
    "paused": "Resume or cancel it.",
    "sent": "Duplicate it to send it again.",
    "cancelled": "Duplicate it to send it again.",
    "failed": "Duplicate it to send it again.",
}


def _pipeline():
    """The sending pipeline (start_send, enqueue_workers, cancel_queued, send_test, retry_failed)."""
    from nudge.services import sending
    return sending


def _account(account_id):
    return db.session.get(Account, account_id)


# --------------------------------------------------------------------------------------------------
# Reading

def campaigns_query(account_id, *, q=None, status=None):
    """The account's campaigns, newest first; q searches name and subject, status narrows to one."""
    query = sa.select(Campaign).where(Campaign.account_id == account_id)
    if q:
        needle = q.strip().lower()
        query = query.where(sa.or_(sa.func.lower(Campaign.name).contains(needle, autoescape=True),
                                   sa.func.lower(Campaign.subject).contains(needle, autoescape=True)))
    if status:
        query = query.where(Campaign.status == status)
    return query.order_by(Campaign.created_at.desc(), Campaign.id)


def status_counts(account_id):
    """{status: number of campaigns} of the account (for the list's filter chips)."""
    rows = db.session.execute(sa.select(Campaign.status, sa.func.count()).where(Campaign.account_id == account_id)
                              .group_by(Campaign.status)).all()
    return dict(rows)


def has_sent_a_campaign(account_id):
    """Whether any campaign of the account has started sending (sending, paused, sent)."""
    return db.session.scalar(sa.select(sa.exists().where(
        Campaign.account_id == account_id, Campaign.status.in_(("sending", "paused", "sent"))))) is True


def get_campaign(account_id, campaign_id):
    """One of the account's campaigns; NotFound for another account's or a junk id."""
    campaign_uuid = as_uuid(campaign_id)
    campaign = None
    if campaign_uuid is not None:
        campaign = db.session.scalar(sa.select(Campaign).where(Campaign.id == campaign_uuid,
                                                               Campaign.account_id == account_id))
    if campaign is None:
        raise NotFound("No such campaign.")
    return campaign


def stats(campaign):
    """The aggregate counters kept on the campaign (never recounted here)."""
    return {"recipients": campaign.recipient_count, "sent": campaign.sent_count, "failed": campaign.failed_count,
            "delivered": campaign.delivered_count, "opened": campaign.opened_count,
            "clicked": campaign.clicked_count, "unsubscribed": campaign.unsubscribed_count,
            "bounced": campaign.bounced_count, "complained": campaign.complained_count}


def rate(count, base):
    """count as a percentage of base with one decimal ("25.0%"), or "—" when there is no base."""
    return f"{100.0 * count / base:.1f}%" if base else "—"


def progress(campaign, now=None):
    """Sent / failed / remaining, rate per minute and ETA of a send, from the aggregates only."""
    now = now or utcnow()
    total = campaign.recipient_count or 0
    done = (campaign.sent_count or 0) + (campaign.failed_count or 0)
    remaining = max(total - done, 0)
    minutes = (now - campaign.started_at).total_seconds() / 60 if campaign.started_at else 0
    per_minute = done / minutes if minutes > 0 and done else None
    eta = remaining / per_minute * 60 if per_minute and remaining and campaign.status == "sending" else None
    return {"total": total, "sent": campaign.sent_count or 0, "failed": campaign.failed_count or 0, "done": done,
            "remaining": remaining, "percent": min(100, int(100 * done / total)) if total else 0,
            "per_minute": per_minute, "eta_seconds": eta, "polling": campaign.status == "sending",
            # The first recipients are on their way while the rest of the list is snapshotted (sending.py).
            "preparing": campaign.status == "sending" and not total}


def failed_messages_query(account_id, campaign_id):
    """The campaign's recipients whose email failed, with their errors, by address."""
    campaign = get_campaign(account_id, campaign_id)
    return (sa.select(Message).where(Message.account_id == account_id, Message.campaign_id == campaign.id,
                                     Message.status == "failed")
            .order_by(Message.email, Message.id))


# --------------------------------------------------------------------------------------------------
# Content

@dataclass
class Content:
    """What a campaign would send now: HTML and text with merge tags, and the template version they came
    from (None for content the campaign holds itself)."""
    html: str | None
    text: str | None
    version: TemplateVersion | None = None

    def __iter__(self):
        # `html, text = current_content(campaign)` reads the two parts the sending pipeline needs.
        return iter((self.html, self.text))


def is_campaign_template(template):
    return template is not None and not template.is_global and template.category == CAMPAIGN_CATEGORY


def campaign_template(campaign):
    """The template a campaign's content comes from, or None."""
    if campaign.template_id is None:
        return None
    template = db.session.get(Template, campaign.template_id)
    if template is None or not (template.is_global or template.account_id == campaign.account_id):
        return None
    return template


def campaign_for_template(account_id, template):
    """The campaign whose own content a template is (the editor links back to it), or None."""
    if not is_campaign_template(template):
        return None
    return db.session.scalar(sa.select(Campaign).where(Campaign.account_id == account_id,
                                                       Campaign.template_id == template.id)
                             .order_by(Campaign.created_at.desc()).limit(1))


def current_content(campaign):
    """The content a draft would send now (its template's latest version), or the copy a scheduled or
    sent campaign keeps."""
    if campaign.status == "draft" or not campaign.content_html:
        template = campaign_template(campaign)
        version = templates.latest_version(template.id) if template is not None else None
        if version is not None:
            return Content(version.content_html, version.content_text, version)
    return Content(campaign.content_html or None, campaign.content_text or None)


def _content_values(campaign):
    """The columns that freeze a campaign's content: the template's latest version, or its own HTML."""
    content = current_content(campaign)
    text = content.text
    if content.html and text is None:
        text = rendering.html_to_text(content.html)
    return {"content_html": content.html, "content_text": text,
            "template_version": content.version.version if content.version is not None else None}


def starting_templates(account_id, limit=200):
    """The account's own templates a campaign can start from (not other campaigns' content), by name."""
    return db.session.scalars(
        sa.select(Template).where(Template.account_id == account_id,
                                  sa.or_(Template.category.is_(None), Template.category != CAMPAIGN_CATEGORY))
        .order_by(sa.func.lower(Template.name), Template.id).limit(limit)).all()


def _new_content_template(actor, campaign, start, copy_of):
    """A new campaign-owned template for a start: a copy of a (gallery) template, blank blocks, or code."""
    name = campaign.name[:255]
    if start in ("gallery", "template"):
        if not copy_of:
            raise field_error("copy_of", "Choose the design to start from.")
        return templates.create_template(actor, campaign.account_id, name=name, category=CAMPAIGN_CATEGORY,
                                         for_campaign=True, copy_of=copy_of)
    if start == "blocks":
        return templates.create_template(actor, campaign.account_id, name=name, category=CAMPAIGN_CATEGORY,
                                         for_campaign=True)
    if start in ("mjml", "html"):
        source = templates.starter_source(start)
        if start == "html" and campaign.content_html and campaign.template_id is None:
            source = campaign.content_html  # content given through the API becomes editable as code
        return templates.create_template(actor, campaign.account_id, name=name, category=CAMPAIGN_CATEGORY,
                                         for_campaign=True, format=start, content_source=source)
    raise field_error("start", "Choose a starter design, one of your templates, a blank design or code.")


def _drop_owned_template(actor, template_id, keep_for=None):
    """Delete a campaign-owned template that no campaign (other than keep_for's) uses any more."""
    template = db.session.get(Template, template_id) if template_id else None
    if not is_campaign_template(template):
        return
    users = sa.select(sa.func.count()).select_from(Campaign).where(Campaign.template_id == template.id)
    if keep_for is not None:
        users = users.where(Campaign.id != keep_for)
    if db.session.scalar(users) == 0:
        templates.delete_template(actor, template.account_id, template.id)


def set_content_from(actor, campaign_id, start, copy_of=None):
    """Give a draft new content in a template of its own: a gallery design or one of the account's
    templates (copied, so the original stays as it is), a blank design, or MJML/HTML code."""
    permissions.require(actor, "campaigns:write")
    campaign = _draft(actor.account_id, campaign_id, "change its content")
    template = _new_content_template(actor, campaign, start, copy_of)
    previous = campaign.template_id
    campaign = get_campaign(actor.account_id, campaign_id)
    campaign.template_id = template.id
    campaign.updated_at = utcnow()
    db.session.commit()
    if previous and previous != template.id:
        _drop_owned_template(actor, previous, keep_for=campaign.id)
    return campaign


# --------------------------------------------------------------------------------------------------
# Audience

def _id_list(value, field):
    if value is None:
        return []
    if not isinstance(value, list):
        raise field_error(field, "Must be a list of segment IDs.")
    if len(value) > MAX_AUDIENCE_SEGMENTS:
        raise field_error(field, f"At most {MAX_AUDIENCE_SEGMENTS} segments.")
    ids = []
    for index, item in enumerate(value):
        parsed = as_uuid(item) if isinstance(item, (str, uuid.UUID)) else None
        if parsed is None:
            raise field_error(f"{field}[{index}]", "Not a segment ID.")
        ids.append(parsed)
    return list(dict.fromkeys(ids))


def _account_segments(account_id, ids):
    """{id: Segment} of those ids that are the account's segments (one query)."""
    if not ids:
        return {}
    found = db.session.scalars(sa.select(Segment).where(Segment.account_id == account_id, Segment.id.in_(ids))).all()
    return {segment.id: segment for segment in found}


def validate_audience(account_id, audience):
    """The cleaned audience: None (not chosen yet), {"all": true[, "exclude_segments"]} or
    {"segments", "exclude_segments", "tags"}; segment ids must be the account's."""
    if audience is None or audience == {}:
        return None
    if not isinstance(audience, dict):
        raise field_error("audience", 'Must be {"all": true} or {"segments": [...], "exclude_segments": [...], '
                                      '"tags": [...]}.')
    unknown = sorted(set(audience) - {"all", "segments", "exclude_segments", "tags"})
    if unknown:
        raise ValidationError("Unknown keys in the audience.", [
            {"field": f"audience.{key}", "issue": "Unknown key; use all, segments, exclude_segments or tags."}
            for key in unknown])
    everyone = audience.get("all", False)
    if not isinstance(everyone, bool):
        raise field_error("audience.all", "Must be true or false.")
    include = _id_list(audience.get("segments"), "audience.segments")
    exclude = _id_list(audience.get("exclude_segments"), "audience.exclude_segments")
    tags = normalize_tags(audience.get("tags"), "audience.tags")
    if everyone and (include or tags):
        raise field_error("audience.all", "Send to everyone, or choose segments and tags, not both.")
    known = _account_segments(account_id, include + exclude)
    errors = [{"field": f"{field}[{index}]", "issue": "No such segment in this account."}
              for field, ids in (("audience.segments", include), ("audience.exclude_segments", exclude))
              for index, segment_id in enumerate(ids) if segment_id not in known]
    errors += [{"field": "audience.exclude_segments", "issue": f"“{known[segment_id].name}” is both included and "
                                                              "excluded."}
               for segment_id in include if segment_id in exclude and segment_id in known]
    if errors:
        raise ValidationError(errors[0]["issue"], errors)
    if everyone:
        return {"all": True, "exclude_segments": [str(i) for i in exclude]}
    return {"segments": [str(i) for i in include], "exclude_segments": [str(i) for i in exclude], "tags": tags}


def audience_is_empty(audience):
    """True when nobody has been chosen: no "all", no segment, no tag."""
    audience = audience or {}
    return not (audience.get("all") or audience.get("segments") or audience.get("tags"))


def missing_segments(account_id, audience):
    """Segment ids in an audience that no longer exist (deleted since it was saved)."""
    audience = audience or {}
    ids = [as_uuid(i) for i in (audience.get("segments") or []) + (audience.get("exclude_segments") or [])]
    known = _account_segments(account_id, [i for i in ids if i is not None])
    return [str(i) for i in ids if i not in known]


def mailable(account_id):
    """Contacts that may be mailed at all: the account's, active (not unsubscribed, bounced, complained
    or deleted) and not on its suppression list."""
    return sa.and_(Contact.account_id == account_id, Contact.status == "active", Contact.deleted_at.is_(None),
                   sa.not_(suppressed(account_id, Contact.email)))


def audience_condition(account_id, audience):
    """One SQL boolean over Contact: mailable contacts in the audience. An empty audience matches nobody; a
    segment deleted since the audience was saved is a ValidationError (never silently dropped)."""
    audience = audience or {}
    if audience_is_empty(audience):
        return sa.false()
    account_id = as_uuid(account_id)
    include = [as_uuid(i) for i in audience.get("segments") or []]
    exclude = [as_uuid(i) for i in audience.get("exclude_segments") or []]
    known = _account_segments(account_id, [i for i in include + exclude if i is not None])
    if any(i not in known for i in include + exclude):
        raise field_error("audience", "A segment of this audience was deleted; choose the segments again.")
    parts = [mailable(account_id)]
    if not audience.get("all"):
        chosen = [segment_condition(known[i]) for i in include]
        if audience.get("tags"):
            chosen.append(tags_contain_any(Contact.tags, audience["tags"]))
        parts.append(sa.or_(*chosen))
    for segment_id in exclude:
        # NOT of a rule on a NULL column is NULL, which would drop the contact: unknown means "not in it".
        parts.append(sa.not_(sa.func.coalesce(segment_condition(known[segment_id]), sa.false())))
    return sa.and_(*parts)


def audience_query(account_id, audience):
    """SELECT id, email of the contacts who would receive a campaign with this audience now."""
    return sa.select(Contact.id, Contact.email).where(audience_condition(account_id, audience))


def recipient_count(account_id, audience):
    """How many contacts the audience reaches now: one SELECT count(*)."""
    condition = audience_condition(account_id, audience)
    if is_postgres():
        # Compiling a count's expressions with JIT costs more than the count itself (segments.py).
        db.session.execute(sa.text("SET LOCAL jit = off"))
    return db.session.scalar(sa.select(sa.func.count()).select_from(Contact).where(condition))


def describe_audience(account_id, audience):
    """The audience in words: "All active contacts", "Segments VIP, Beta; tagged vip; except Churned"."""
    audience = audience or {}
    if audience_is_empty(audience):
        return "Nobody chosen yet"
    ids = [as_uuid(i) for i in (audience.get("segments") or []) + (audience.get("exclude_segments") or [])]
    names = {str(k): v.name for k, v in _account_segments(account_id, [i for i in ids if i]).items()}

    def segment_names(key):
        return ", ".join(names.get(str(i), "(deleted segment)") for i in audience.get(key) or [])
    parts = []
    if audience.get("all"):
        parts.append("All active contacts")
    if audience.get("segments"):
        parts.append(("Segment " if len(audience["segments"]) == 1 else "Segments ") + segment_names("segments"))
    if audience.get("tags"):
        parts.append("tagged " + " or ".join(audience["tags"]))
    text = " or ".join(parts) if not audience.get("all") else parts[0]
    if audience.get("exclude_segments"):
        text += ", except " + segment_names("exclude_segments")
    return text


# --------------------------------------------------------------------------------------------------
# Creating and editing drafts

def _check_subject(subject):
    subject = optional_text(subject, "subject", "Subject", 500)
    if subject and "{" in subject:
        rendering._checked(subject, "subject", rendering.TEXT_ENV)
    return subject


def _check_template_id(account_id, template_id):
    if template_id in (None, ""):
        return None
    template = templates.get_template(account_id, as_uuid(template_id)) if as_uuid(template_id) else None
    if template is None:
        raise NotFound("No such template.")
    return template.id


def _check_html(html):
    if html in (None, ""):
        return None
    if not isinstance(html, str):
        raise field_error("content_html", "Must be a string of HTML.")
    try:
        compiled = rendering.compile_template(html=html, base_url=current_app.config["BASE_URL"])
    except ValidationError as exc:
        raise ValidationError(exc.message, [{"field": "content_html", "issue": d.get("issue")} for d in exc.details])
    return compiled


def _clean(account_id, data, *, partial):
    """Validated column values of a create (partial=False) or update payload."""
    if not isinstance(data, dict):
        raise field_error("body", "Must be an object.")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        read_only = {"scheduled_at": "Schedule with POST /campaigns/{id}/send and scheduled_at.",
                     "status": "Change the status with send, pause, resume or cancel."}
        raise ValidationError("Unknown or read-only fields.", [
            {"field": key, "issue": read_only.get(key, "Unknown or read-only field.")} for key in unknown])
    for name in ("name", "subject", "from_name", "from_email", "reply_to", "content_text"):
        if data.get(name) is not None and not isinstance(data.get(name), str):
            raise field_error(name, "Must be a string.")
    checks = {
        "name": lambda: require_text(data.get("name"), "name", "Name", 255),
        "subject": lambda: _check_subject(data.get("subject")),
        "from_name": lambda: optional_text(data.get("from_name"), "from_name", "From name", 100),
        "from_email": lambda: (normalize_email(data.get("from_email"), "from_email")
                               if (data.get("from_email") or "").strip() else None),
        "reply_to": lambda: (normalize_email(data.get("reply_to"), "reply_to")
                             if (data.get("reply_to") or "").strip() else None),
        "template_id": lambda: _check_template_id(account_id, data.get("template_id")),
        "content_html": lambda: _check_html(data.get("content_html")),
        "content_text": lambda: optional_text(data.get("content_text"), "content_text", "Text version", 1_000_000),
        "audience": lambda: validate_audience(account_id, data.get("audience")),
    }
    if partial:
        checks = {name: check for name, check in checks.items() if name in data}
    clean = validate_fields(checks)
    if clean.get("template_id") and clean.get("content_html"):
        raise field_error("content_html", "Give template_id or content_html, not both.")
    return clean


def _apply(campaign, clean):
    compiled = clean.pop("content_html", False)
    for name, value in clean.items():
        setattr(campaign, name, value)
    if compiled is not False:
        # Raw HTML replaces any template: the campaign holds its own content (CSS inlined, text derived).
        campaign.content_html = compiled.html if compiled else None
        if not clean.get("content_text"):
            campaign.content_text = compiled.text if compiled else None
        if compiled:
            campaign.template_id = None
    elif clean.get("template_id"):
        campaign.content_html = campaign.content_text = None


def create_campaign(actor, data):
    """A new draft; the from-fields default to the account's default sender."""
    permissions.require(actor, "campaigns:write")
    account = _account(actor.account_id)
    clean = _clean(account.id, data, partial=False)
    if not clean.get("from_name"):
        clean["from_name"] = account.default_from_name or account.name[:100]
    if not clean.get("from_email"):
        clean["from_email"] = account.default_from_email
    campaign = Campaign(account_id=account.id, status="draft")
    _apply(campaign, clean)
    db.session.add(campaign)
    db.session.commit()
    return campaign


def _draft(account_id, campaign_id, doing):
    campaign = get_campaign(account_id, campaign_id)
    if campaign.status != "draft":
        raise _not_allowed(campaign, doing)
    return campaign


def update_campaign(actor, campaign_id, data):
    """Change a draft (only drafts are editable)."""
    permissions.require(actor, "campaigns:write")
    campaign = _draft(actor.account_id, campaign_id, "edited")
    clean = _clean(actor.account_id, data, partial=True)
    previous = campaign.template_id
    _apply(campaign, clean)
    campaign.updated_at = utcnow()
    db.session.commit()
    if previous and previous != campaign.template_id:
        _drop_owned_template(actor, previous, keep_for=campaign.id)
    return campaign


def deletable(campaign):
    """Drafts, and campaigns cancelled before they started, may be deleted; anything that sent mail is
    kept for its report and the contacts' history."""
    return campaign.status == "draft" or (campaign.status == "cancelled" and campaign.started_at is None)


def delete_campaign(actor, campaign_id):
    permissions.require(actor, "campaigns:write")
    campaign = get_campaign(actor.account_id, campaign_id)
    if not deletable(campaign):
        if campaign.status in ("sent", "cancelled", "failed"):
            raise Conflict("A campaign that has sent email is kept for its report and the contacts' history; "
                           "it cannot be deleted.", [{"field": "status", "issue": f"Is {campaign.status}."}])
        raise _not_allowed(campaign, "deleted")
    template_id = campaign.template_id
    audit.record("campaign.deleted", account_id=campaign.account_id, actor=actor,
                 resources=[f"campaign:{campaign.id}"], meta={"name": campaign.name})
    db.session.delete(campaign)
    db.session.commit()
    _drop_owned_template(actor, template_id)


def duplicate_campaign(actor, campaign_id):
    """A new draft with the same details, audience and content (its own copy of a campaign template)."""
    permissions.require(actor, "campaigns:write")
    source = get_campaign(actor.account_id, campaign_id)
    name = source.name[:248] + " (copy)"
    template = campaign_template(source)
    template_id = None
    if is_campaign_template(template):
        template_id = templates.create_template(actor, source.account_id, name=name, category=CAMPAIGN_CATEGORY,
                                                for_campaign=True, copy_of=template.id).id
    elif template is not None:
        template_id = template.id
    source = get_campaign(actor.account_id, campaign_id)
    copy = Campaign(account_id=source.account_id, status="draft", name=name, subject=source.subject,
                    from_name=source.from_name, from_email=source.from_email, reply_to=source.reply_to,
                    audience=source.audience, template_id=template_id,
                    content_html=None if template_id else source.content_html,
                    content_text=None if template_id else source.content_text)
    db.session.add(copy)
    db.session.commit()
    return copy


# --------------------------------------------------------------------------------------------------
# Readiness

FIX_FIELDS = {"subject_missing": "subject", "from_email_missing": "from_email", "from_email_unverified": "from_email",
              "audience_empty": "audience",
              "segment_missing": "audience", "content_missing": "content", "unsubscribe_missing": "content",
              "postal_address_missing": "content", "account_postal_address_missing": "account.postal_address",
              "no_recipients": "audience", signup.EMAIL_UNCONFIRMED_CODE: "account.email"}
BLOCKING_CONTENT_CODES = ("unsubscribe_missing", "postal_address_missing")


def preheader(content):
    """The preheader of a block-document design (the line inboxes show after the subject), or None."""
    doc = content.version.content_json if content.version is not None else None
    settings = doc.get("settings") if isinstance(doc, dict) else None
    value = settings.get("preheader") if isinstance(settings, dict) else None
    return value if isinstance(value, str) and value.strip() else None


def merge_tag_problems(campaign, content=None):
    """[{"field", "message"}] for every merge tag of the subject, preheader and content that names nothing
    (no contact field, custom field of the account or link): such a tag would go out blank."""
    content = content or current_content(campaign)
    names = [field.name for field in custom_fields.list_fields(campaign.account_id)]
    found, problems = set(), []
    for field, label, source in (("subject", "The subject", campaign.subject),
                                 ("preheader", "The preheader", preheader(content)),
                                 ("content", "The content", content.html)):
        for problem in rendering.unknown_merge_tags(source, names):
            if problem["tag"] not in found:  # the preheader is in the content's HTML too
                found.add(problem["tag"])
                problems.append({"field": field, "tag": problem["tag"], "suggestion": problem["suggestion"],
                                 "message": f"{label}: {problem['message']}"})
    return problems


def require_known_merge_tags(campaign, content=None):
    """A 400 naming each unknown merge tag and the closest real one."""
    problems = merge_tag_problems(campaign, content)
    if problems:
        raise ValidationError(problems[0]["message"], [{"field": item["field"], "issue": item["message"]}
                                                       for item in problems])


def rendered_header(campaign, account, content=None):
    """{"subject", "preheader"} as the sample contact (Alex Sample) would see them, for the review; a part
    that cannot be rendered is None."""
    content = content or current_content(campaign)
    context = rendering.sample_context(account)
    shown = {}
    for name, source in (("subject", campaign.subject), ("preheader", preheader(content))):
        try:
            with rendering.time_limit():
                text = rendering.TEXT_ENV.from_string(source).render(context) if source else ""
        except Exception:  # noqa: BLE001 - a broken tag is reported by the checks; the review shows nothing
            text = None
        shown[name] = " ".join(text.split()) if text is not None else None
    return shown


def readiness(campaign, account=None, recipients=None):
    """The checklist before sending: [{"code", "message", "blocking"}], blocking items first. Blocking: no
    subject, from address, audience or content; no unsubscribe link or postal address in the content; no
    postal address on the account (or, when recipients is given, nobody to send to); a merge tag naming
    nothing in the subject, preheader or content. The render warnings
    (size, alt text, links) do not block."""
    account = account or _account(campaign.account_id)
    items = []

    def add(code, message, blocking=True):
        items.append({"code": code, "message": message, "blocking": blocking})
    unconfirmed = signup.readiness_item(account)  # open sign-up: the owner has not confirmed the address yet
    if unconfirmed:
        items.append(unconfirmed)
    if not (campaign.subject or "").strip():
        add("subject_missing", "The subject line is empty: write one in the campaign's details.")
    if not (campaign.from_email or "").strip():
        add("from_email_missing", "The from address is empty: set it in the campaign's details.")
    else:
        unverified = sending_domains.from_problem(campaign.account_id, campaign.from_email)
        if unverified:
            add("from_email_unverified", unverified[1], blocking=unverified[0])
    if audience_is_empty(campaign.audience):
        add("audience_empty", "Nobody is chosen to receive it: choose all contacts, segments or tags.")
    elif missing_segments(campaign.account_id, campaign.audience):
        add("segment_missing", "A segment of the audience was deleted: choose the audience again.")
    elif recipients == 0:
        add("no_recipients", "The audience matches no contact who can be mailed (unsubscribed, bounced and "
                             "suppressed contacts are left out): choose a wider audience.")
    if not (account.postal_address or "").strip():
        add("account_postal_address_missing", "Your account has no postal address, which the law requires in "
                                              "every email: add it in Settings → Account.")
    content = current_content(campaign)
    for problem in merge_tag_problems(campaign, content):
        items.append({"code": "merge_tag_unknown", "message": problem["message"], "blocking": True,
                      "field": problem["field"]})
    if not content.html:
        add("content_missing", "There is no content yet: choose a design and write the email.")
    else:
        for warning in rendering.check_content(content.html, content.text):
            add(warning["code"], warning["message"], blocking=warning["code"] in BLOCKING_CONTENT_CODES)
    return sorted(items, key=lambda item: not item["blocking"])


def _require_ready(campaign, account, recipients):
    blocking = [item for item in readiness(campaign, account, recipients) if item["blocking"]]
    if blocking:
        raise ValidationError("This campaign cannot be sent yet: " + blocking[0]["message"],
                              [{"field": item.get("field") or FIX_FIELDS.get(item["code"], "content"),
                                "issue": item["message"]}
                               for item in blocking])


# --------------------------------------------------------------------------------------------------
# Status changes

def _not_allowed(campaign, doing):
    return Conflict(f"This campaign is {campaign.status} and cannot be {doing}. {HINTS[campaign.status]}",
                    [{"field": "status", "issue": f"Is {campaign.status}."}])


def _move(campaign, from_statuses, **values):
    """Conditionally change a campaign: UPDATE … WHERE status IN from_statuses. True if this call won."""
    values.setdefault("updated_at", utcnow())
    result = db.session.execute(
        sa.update(Campaign).where(Campaign.id == campaign.id, Campaign.status.in_(from_statuses)).values(**values)
        .execution_options(synchronize_session=False))
    db.session.commit()
    db.session.refresh(campaign)
    return result.rowcount == 1


def _checked_for_sending(campaign, account, when):
    """The checks before a send or a schedule; returns the recipient count."""
    signup.require_confirmed_email(account)
    if audience_is_empty(campaign.audience) or missing_segments(campaign.account_id, campaign.audience):
        _require_ready(campaign, account, None)
    recipients = recipient_count(campaign.account_id, campaign.audience)
    _require_ready(campaign, account, recipients)
    check_monthly_limit(account, recipients, when)
    return recipients


def send_now(actor, campaign_id, now=None):
    """Check, freeze the content, mark the campaign sending and hand it to the pipeline."""
    permissions.require(actor, "campaigns:write")
    now = now or utcnow()
    campaign = get_campaign(actor.account_id, campaign_id)
    if campaign.status not in ("draft", "scheduled"):
        raise _not_allowed(campaign, "sent now")
    account = _account(campaign.account_id)
    _checked_for_sending(campaign, account, now)
    if not _move(campaign, ("draft", "scheduled"), status="sending", started_at=now, scheduled_at=None,
                 paused_reason=None, **_content_values(campaign)):
        raise _not_allowed(campaign, "sent now")
    audit.record("campaign.sent", account_id=campaign.account_id, actor=actor, resources=[f"campaign:{campaign.id}"],
                 meta={"name": campaign.name})
    db.session.commit()
    _hand_over(campaign, back_to="draft")
    return campaign


def _hand_over(campaign, back_to):
    """Start the pipeline for a campaign just marked sending. If that fails before any recipient was
    snapshotted, the campaign goes back to back_to (nothing was sent) and the error propagates."""
    try:
        _pipeline().start_send(campaign.id)
    except Exception:
        db.session.rollback()
        snapshotted = db.session.scalar(sa.select(sa.func.count()).select_from(Message)
                                        .where(Message.campaign_id == campaign.id))
        if not snapshotted:
            reverted = {"status": back_to, "started_at": None}
            if back_to == "draft":
                reverted["scheduled_at"] = None
            _move(campaign, ("sending",), **reverted)
        raise
    db.session.refresh(campaign)


def parse_schedule(account, value, now=None):
    """A schedule time from ISO 8601 as naive UTC: with an offset as given, without one in the account's
    time zone. It must be in the future."""
    now = now or utcnow()
    if not isinstance(value, str) or not value.strip():
        raise field_error("scheduled_at", "Give the date and time to send, e.g. 2025-06-01T09:00.")
    text = value.strip()
    try:
        when = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    except ValueError:
        raise field_error("scheduled_at", "Must be an ISO 8601 date and time, e.g. 2025-06-01T09:00 or "
                                          "2025-06-01T09:00:00+02:00.")
    if when.tzinfo is None:
        when = when.replace(tzinfo=_zone(account))
    when = when.astimezone(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    if when <= now:
        local = when.replace(tzinfo=dt.timezone.utc).astimezone(_zone(account))
        raise field_error("scheduled_at", f"Must be in the future; {local:%Y-%m-%d %H:%M} in {account.timezone} "
                                          "has passed.")
    return when


def schedule(actor, campaign_id, scheduled_at, now=None):
    """Schedule a draft (or move a scheduled campaign's time); the content is frozen now, so what was
    reviewed is what is sent."""
    permissions.require(actor, "campaigns:write")
    now = now or utcnow()
    campaign = get_campaign(actor.account_id, campaign_id)
    if campaign.status not in ("draft", "scheduled"):
        raise _not_allowed(campaign, "scheduled")
    account = _account(campaign.account_id)
    when = parse_schedule(account, scheduled_at, now)
    _checked_for_sending(campaign, account, when)
    if not _move(campaign, ("draft", "scheduled"), status="scheduled", scheduled_at=when,
                 **_content_values(campaign)):
        raise _not_allowed(campaign, "scheduled")
    audit.record("campaign.scheduled", account_id=campaign.account_id, actor=actor,
                 resources=[f"campaign:{campaign.id}"], meta={"name": campaign.name, "scheduled_at": when.isoformat()})
    db.session.commit()
    return campaign


def unschedule(actor, campaign_id):
    """Back to draft, to edit it."""
    permissions.require(actor, "campaigns:write")
    campaign = get_campaign(actor.account_id, campaign_id)
    if not _move(campaign, ("scheduled",), status="draft", scheduled_at=None):
        raise _not_allowed(campaign, "unscheduled")
    return campaign


def pause(actor, campaign_id):
    """Stop a send after the messages in flight; resume carries on where it stopped."""
    permissions.require(actor, "campaigns:write")
    campaign = get_campaign(actor.account_id, campaign_id)
    if not _move(campaign, ("sending",), status="paused"):
        raise _not_allowed(campaign, "paused")
    return campaign


def resume(actor, campaign_id):
    permissions.require(actor, "campaigns:write")
    campaign = get_campaign(actor.account_id, campaign_id)
    if not _move(campaign, ("paused",), status="sending", paused_reason=None):
        raise _not_allowed(campaign, "resumed")
    _pipeline().enqueue_workers(campaign.id)
    db.session.refresh(campaign)
    return campaign


def cancel(actor, campaign_id):
    """Cancel a scheduled campaign, or stop a send for good (recipients not reached yet get nothing)."""
    permissions.require(actor, "campaigns:write")
    campaign = get_campaign(actor.account_id, campaign_id)
    if _move(campaign, ("scheduled",), status="cancelled"):
        pass
    elif _move(campaign, ("sending", "paused"), status="cancelled"):
        _pipeline().cancel_queued(campaign.id)
    else:
        raise _not_allowed(campaign, "cancelled")
    audit.record("campaign.cancelled", account_id=campaign.account_id, actor=actor,
                 resources=[f"campaign:{campaign.id}"], meta={"name": campaign.name})
    db.session.commit()
    db.session.refresh(campaign)
    return campaign


def retry_failed(actor, campaign_id):
    """Queue the campaign's failed recipients again; returns how many."""
    permissions.require(actor, "campaigns:write")
    campaign = get_campaign(actor.account_id, campaign_id)
    if campaign.status not in ("sending", "paused", "sent", "failed"):
        raise _not_allowed(campaign, "re-sent")
    if not campaign.failed_count:
        raise Conflict("No recipient of this campaign has failed.", [{"field": "failed", "issue": "None failed."}])
    count = _pipeline().retry_failed(campaign.id)
    db.session.refresh(campaign)
    return count


def check_test_emails(emails):
    """1 to 5 valid, distinct addresses (a list, or text separated by commas or new lines)."""
    if isinstance(emails, str):
        emails = [part for chunk in emails.splitlines() for part in chunk.split(",")]
    if not isinstance(emails, list):
        raise field_error("emails", "Must be a list of email addresses.")
    emails = [e.strip() if isinstance(e, str) else e for e in emails]
    emails = [e for e in emails if e != ""]
    if not emails:
        raise field_error("emails", "Give at least one address to send the test to.")
    if len(emails) > MAX_TEST_EMAILS:
        raise field_error("emails", f"At most {MAX_TEST_EMAILS} addresses per test.")
    clean, errors = [], []
    for index, email in enumerate(emails):
        if not isinstance(email, str):
            errors.append({"field": f"emails[{index}]", "issue": "Must be an email address."})
            continue
        try:
            clean.append(normalize_email(email, f"emails[{index}]"))
        except ValidationError as exc:
            errors += exc.details
    if errors:
        raise ValidationError(errors[0]["issue"], errors)
    return list(dict.fromkeys(clean))


def send_test(actor, campaign_id, emails, contact_id=None):
    """Send the campaign as it is now to up to 5 addresses, personalised for a real contact or a sample one;
    returns the pipeline's [{"email", "status", "error"}]."""
    permissions.require(actor, "campaigns:write")
    campaign = get_campaign(actor.account_id, campaign_id)
    signup.require_confirmed_email(_account(campaign.account_id))
    clean = check_test_emails(emails)
    contact = None
    if contact_id not in (None, ""):
        contact_uuid = as_uuid(contact_id)
        contact = db.session.scalar(sa.select(Contact).where(Contact.account_id == campaign.account_id,
                                                             Contact.id == contact_uuid)) if contact_uuid else None
        if contact is None or contact.status == "deleted":
            raise field_error("contact_id", "No such contact in this account.")
    content = current_content(campaign)
    if not content.html:
        raise field_error("content", "There is no content to test yet: choose a design first.")
    require_known_merge_tags(campaign, content)
    if not campaign.from_email:
        raise field_error("from_email", "Set the from address first.")
    sending_domains.require_sendable_from(campaign.account_id, campaign.from_email)
    claim_test_sends(_account(campaign.account_id), len(clean))
    return _pipeline().send_test(actor, campaign.id, clean, contact_id=contact.id if contact else None)


# --------------------------------------------------------------------------------------------------
# The scheduler

def _start_scheduled(campaign_id, now):
    """Claim one due campaign (only one worker wins) and start it, or mark it failed with the reason."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None or not _move(campaign, ("scheduled",), status="sending", started_at=now):
        return False
    account = _account(campaign.account_id)
    try:
        recipients = recipient_count(campaign.account_id, campaign.audience)
        _require_ready(campaign, account, recipients)
        check_monthly_limit(account, recipients, now)
    except (ValidationError, LimitExceeded) as exc:
        db.session.rollback()
        _move(campaign, ("sending",), status="failed", paused_reason=f"It could not start at its scheduled time: "
                                                                     f"{exc.message}")
        return False
    _hand_over(campaign, back_to="scheduled")  # an infrastructure failure: the next run tries again
    return True


def start_due_campaigns(now=None, limit=100):
    """Start the scheduled campaigns whose time has come; safe to run from several workers at once.
    Returns the ids started by this call."""
    now = now or utcnow()
    due = db.session.scalars(sa.select(Campaign.id).where(Campaign.status == "scheduled",
                                                          Campaign.scheduled_at <= now)
                             .order_by(Campaign.scheduled_at).limit(limit)).all()
    started = []
    for campaign_id in due:
        try:
            if _start_scheduled(campaign_id, now):
                started.append(campaign_id)
        except Exception:  # noqa: BLE001 - one campaign's failure must not hold back the others
            db.session.rollback()
            log.exception("could not start scheduled campaign %s", campaign_id)
    return started
