"""Campaigns in the dashboard: the list, the wizard (details -> audience -> content -> review, each step
saved), the campaign page with live progress while sending and the counts afterwards, and the failed
recipients with a re-send."""
import datetime as dt

from flask import Blueprint, abort, current_app, flash, redirect, request, url_for
from flask_login import current_user, login_required

from nudge.blueprints.common import duration, field_errors, paginate, render, require_permission
from nudge.blueprints.settings import local_time
from nudge.blueprints.templates import preview_response
from nudge.errors import Conflict, DomainError, LimitExceeded, NotFound, ValidationError
from nudge.extensions import db, htmx
from nudge.models.types import utcnow
from nudge.services import campaigns, contacts, rendering, segments, templates

bp = Blueprint("campaigns", __name__)

STEPS = (("details", "Details"), ("audience", "Audience"), ("content", "Content"), ("review", "Review"))
STEP_ENDPOINTS = [f"campaigns.{name}" for name, _ in STEPS]
# Where each blocking readiness item is fixed.
FIX_STEPS = {"subject_missing": "details", "from_email_missing": "details", "audience_empty": "audience",
             "segment_missing": "audience", "no_recipients": "audience", "content_missing": "content",
             "unsubscribe_missing": "content", "postal_address_missing": "content"}
STATUS_FILTERS = ("draft", "scheduled", "sending", "paused", "sent", "cancelled", "failed")


def number(value):
    return f"{value or 0:,}"


@bp.context_processor
def _helpers():
    account = current_user.account if current_user.is_authenticated else None
    return {"local_time": local_time, "duration": duration, "number": number, "rate": campaigns.rate,
            "STEPS": STEPS, "tz": account.timezone if account else "UTC",
            "can_write": current_user.is_authenticated and current_user.can("campaigns:write")}


def _campaign(campaign_id):
    try:
        return campaigns.get_campaign(current_user.account_id, campaign_id)
    except NotFound:
        abort(404)


def _next_step(campaign, go, here):
    """Where a wizard step's buttons lead: the step before or after this one."""
    names = [name for name, _ in STEPS]
    index = names.index(here)
    if go == "back" and index > 0:
        return url_for(f"campaigns.{names[index - 1]}", campaign_id=campaign.id)
    if go == "next" and index < len(names) - 1:
        return url_for(f"campaigns.{names[index + 1]}", campaign_id=campaign.id)
    return url_for(f"campaigns.{here}", campaign_id=campaign.id)


def _draft_or_page(campaign):
    """Steps edit drafts only: any other campaign shows its page, saying why."""
    if campaign.status != "draft":
        flash(f"This campaign is {campaign.status}, and only drafts can be edited. " + campaigns.HINTS[campaign.status],
              "info")
        return redirect(url_for("campaigns.show", campaign_id=campaign.id))
    return None


# --------------------------------------------------------------------------------------------------
# The list

@bp.get("/")
@login_required
@require_permission("campaigns:read")
def index():
    q = request.args.get("q", "").strip()
    status = request.args.get("status") if request.args.get("status") in STATUS_FILTERS else None
    query = campaigns.campaigns_query(current_user.account_id, q=q or None, status=status)
    results = paginate(query, request.args.get("page"), 25)
    return render("campaigns/index.html", "campaigns/_results.html", results=results, q=q, status=status,
                  counts=campaigns.status_counts(current_user.account_id), statuses=STATUS_FILTERS)


# --------------------------------------------------------------------------------------------------
# Wizard: 1 Details

DETAIL_FIELDS = ("name", "subject", "from_name", "from_email", "reply_to")


def _details_page(campaign, values, errors=None, status=200):
    return render("campaigns/details.html", campaign=campaign, values=values, errors=errors or {}, status=status,
                  step=0, account=current_user.account)


@bp.route("/new", methods=["GET", "POST"])
@login_required
@require_permission("campaigns:write")
def new():
    account = current_user.account
    if request.method == "GET":
        return _details_page(None, {"name": "", "subject": "", "from_name": account.default_from_name or account.name,
                                    "from_email": account.default_from_email or "", "reply_to": ""})
    values = {name: request.form.get(name, "") for name in DETAIL_FIELDS}
    try:
        campaign = campaigns.create_campaign(current_user, values)
    except ValidationError as exc:
        db.session.rollback()
        return _details_page(None, values, field_errors(exc), 422)
    return redirect(_next_step(campaign, request.form.get("go", "next"), "details"), 303)


@bp.route("/<uuid:campaign_id>/details", methods=["GET", "POST"])
@login_required
@require_permission("campaigns:write")
def details(campaign_id):
    campaign = _campaign(campaign_id)
    refused = _draft_or_page(campaign)
    if refused:
        return refused
    if request.method == "GET":
        return _details_page(campaign, {name: getattr(campaign, name) or "" for name in DETAIL_FIELDS})
    values = {name: request.form.get(name, "") for name in DETAIL_FIELDS}
    try:
        campaigns.update_campaign(current_user, campaign.id, values)
    except ValidationError as exc:
        db.session.rollback()
        return _details_page(campaign, values, field_errors(exc), 422)
    return redirect(_next_step(campaign, request.form.get("go", "next"), "details"), 303)


# --------------------------------------------------------------------------------------------------
# Wizard: 2 Audience

def _audience_from(form):
    """The audience document from the audience form (or the live count's query string)."""
    exclude = form.getlist("exclude_segments")
    if form.get("mode", "all") == "all":
        return {"all": True, "exclude_segments": exclude}
    return {"segments": form.getlist("segments"), "exclude_segments": exclude, "tags": form.get("tags", "")}


def _audience_values(audience):
    audience = audience or {}
    return {"mode": "custom" if audience and not audience.get("all") else "all",
            "segments": [str(i) for i in audience.get("segments") or []],
            "exclude_segments": [str(i) for i in audience.get("exclude_segments") or []],
            "tags": ", ".join(audience.get("tags") or [])}


def _count_context(audience):
    """The live recipient count: (count, error message)."""
    try:
        clean = campaigns.validate_audience(current_user.account_id, audience)
        if campaigns.audience_is_empty(clean):
            return None, "Choose at least one segment or tag."
        return campaigns.recipient_count(current_user.account_id, clean), None
    except ValidationError as exc:
        db.session.rollback()
        return None, exc.message


def _audience_page(campaign, values, audience, errors=None, status=200):
    count, count_error = _count_context(audience)
    return render("campaigns/audience.html", campaign=campaign, values=values, errors=errors or {}, status=status,
                  step=1, segment_list=segments.list_segments(current_user.account_id),
                  tags=contacts.all_tags(current_user.account_id), count=count, count_error=count_error)


@bp.route("/<uuid:campaign_id>/audience", methods=["GET", "POST"])
@login_required
@require_permission("campaigns:write")
def audience(campaign_id):
    campaign = _campaign(campaign_id)
    refused = _draft_or_page(campaign)
    if refused:
        return refused
    if request.method == "GET":
        return _audience_page(campaign, _audience_values(campaign.audience), campaign.audience or {"all": True})
    chosen = _audience_from(request.form)
    values = {"mode": request.form.get("mode", "all"), "segments": request.form.getlist("segments"),
              "exclude_segments": request.form.getlist("exclude_segments"), "tags": request.form.get("tags", "")}
    try:
        campaigns.update_campaign(current_user, campaign.id, {"audience": chosen})
    except ValidationError as exc:
        db.session.rollback()
        return _audience_page(campaign, values, chosen, field_errors(exc), 422)
    return redirect(_next_step(campaign, request.form.get("go", "next"), "audience"), 303)


@bp.get("/<uuid:campaign_id>/audience/count")
@login_required
@require_permission("campaigns:read")
def audience_count(campaign_id):
    """The live recipient count of the audience form as it is (nothing saved)."""
    _campaign(campaign_id)
    count, count_error = _count_context(_audience_from(request.args))
    return render("campaigns/_count.html", "campaigns/_count.html", count=count, count_error=count_error)


# --------------------------------------------------------------------------------------------------
# Wizard: 3 Content

def _content_page(campaign, errors=None, status=200, values=None):
    templates.sync_gallery()
    template = campaigns.campaign_template(campaign)
    return render("campaigns/content.html", campaign=campaign, errors=errors or {}, status=status, step=2,
                  content=campaigns.current_content(campaign), template=template,
                  owned=campaigns.is_campaign_template(template), gallery=templates.list_gallery(),
                  own_templates=campaigns.starting_templates(current_user.account_id),
                  values=values or {"start": "gallery", "copy_of": "", "template_id": ""})


@bp.route("/<uuid:campaign_id>/content", methods=["GET", "POST"])
@login_required
@require_permission("campaigns:write")
def content(campaign_id):
    campaign = _campaign(campaign_id)
    refused = _draft_or_page(campaign)
    if refused:
        return refused
    if request.method == "GET":
        return _content_page(campaign)
    go = request.form.get("go")
    if go in ("back", "next"):
        return redirect(_next_step(campaign, go, "content"), 303)
    values = {"start": request.form.get("start", ""), "copy_of": request.form.get("copy_of", ""),
              "template_id": request.form.get("template_id", "")}
    copy_of = values["template_id"] if values["start"] == "template" else values["copy_of"]
    try:
        campaigns.set_content_from(current_user, campaign.id, values["start"], copy_of=copy_of or None)
    except (ValidationError, NotFound) as exc:
        db.session.rollback()
        errors = field_errors(exc) if isinstance(exc, ValidationError) else {"copy_of": exc.message}
        if values["start"] == "template" and "copy_of" in errors:
            errors["template_id"] = errors.pop("copy_of")
        return _content_page(campaign, errors, 422, values)
    flash("The campaign has its own copy of the design now: open the editor to write the email.", "success")
    return redirect(url_for("campaigns.content", campaign_id=campaign.id), 303)


@bp.get("/<uuid:campaign_id>/preview")
@login_required
@require_permission("campaigns:read")
def preview(campaign_id):
    """The campaign's content as a sample recipient sees it, for iframes."""
    campaign = _campaign(campaign_id)
    found = campaigns.current_content(campaign)
    if not found.html:
        abort(404)
    context = rendering.build_context(current_user.account, None,
                                      **rendering.preview_urls(current_app.config["BASE_URL"]))
    if found.version is not None:
        html, _ = rendering.render_version(found.version, context)
    else:
        html, _ = rendering.CompiledVersion(found.html, found.text or "").render(context)
    return preview_response(html)


# --------------------------------------------------------------------------------------------------
# Wizard: 4 Review, test, send, schedule

def _review_context(campaign):
    account = current_user.account
    recipients = None
    if not campaigns.audience_is_empty(campaign.audience) and \
            not campaigns.missing_segments(campaign.account_id, campaign.audience):
        recipients = campaigns.recipient_count(campaign.account_id, campaign.audience)
    items = campaigns.readiness(campaign, account, recipients)
    now_local = local_time(utcnow(), account.timezone)
    return {"campaign": campaign, "account": account, "recipients": recipients, "step": 3,
            "blocking": [item for item in items if item["blocking"]],
            "warnings": [item for item in items if not item["blocking"]],
            "fix_steps": FIX_STEPS, "audience_text": campaigns.describe_audience(campaign.account_id,
                                                                                 campaign.audience),
            "shown": campaigns.rendered_header(campaign, account),
            "used": campaigns.emails_used(account), "template": campaigns.campaign_template(campaign),
            "min_schedule": (now_local + dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M"),
            "test_emails": current_user.email}


@bp.get("/<uuid:campaign_id>/review")
@login_required
@require_permission("campaigns:write")
def review(campaign_id):
    campaign = _campaign(campaign_id)
    refused = _draft_or_page(campaign)
    if refused:
        return refused
    return render("campaigns/review.html", **_review_context(campaign))


def _review_error(campaign, exc, **extra):
    db.session.rollback()
    status = 403 if isinstance(exc, LimitExceeded) else 409 if isinstance(exc, Conflict) else 422
    return render("campaigns/review.html", status=status, error=exc.message, **_review_context(campaign), **extra)


@bp.post("/<uuid:campaign_id>/test")
@login_required
@require_permission("campaigns:write")
def test(campaign_id):
    campaign = _campaign(campaign_id)
    emails = request.form.get("emails", "")
    try:
        results = campaigns.send_test(current_user, campaign.id, emails)
    except DomainError as exc:
        db.session.rollback()
        if not htmx:
            flash(exc.message, "error")
            return redirect(url_for("campaigns.review", campaign_id=campaign.id), 303)
        return render("campaigns/_test.html", "campaigns/_test.html", status=422, campaign=campaign,
                      test_emails=emails, test_error=exc.message, results=None)
    if not htmx:
        sent = [result["email"] for result in results if result["status"] == "sent"]
        flash(f"Test sent to {', '.join(sent)}." if sent else "The test could not be sent.",
              "success" if sent else "error")
        return redirect(url_for("campaigns.review", campaign_id=campaign.id), 303)
    return render("campaigns/_test.html", "campaigns/_test.html", campaign=campaign, test_emails=emails,
                  results=results, test_error=None)


@bp.post("/<uuid:campaign_id>/send")
@login_required
@require_permission("campaigns:write")
def send(campaign_id):
    campaign = _campaign(campaign_id)
    try:
        campaigns.send_now(current_user, campaign.id)
    except DomainError as exc:
        if campaign.status != "draft":
            flash(exc.message, "error")
            return redirect(url_for("campaigns.show", campaign_id=campaign.id), 303)
        return _review_error(campaign, exc)
    flash(f"“{campaign.name}” is sending.", "success")
    return redirect(url_for("campaigns.show", campaign_id=campaign.id), 303)


@bp.post("/<uuid:campaign_id>/schedule")
@login_required
@require_permission("campaigns:write")
def schedule(campaign_id):
    campaign = _campaign(campaign_id)
    when = request.form.get("scheduled_at", "")
    try:
        campaigns.schedule(current_user, campaign.id, when)
    except DomainError as exc:
        return _review_error(campaign, exc, schedule_value=when)
    local = local_time(campaign.scheduled_at, current_user.account.timezone)
    flash(f"“{campaign.name}” is scheduled for {local:%Y-%m-%d %H:%M} ({current_user.account.timezone}).", "success")
    return redirect(url_for("campaigns.show", campaign_id=campaign.id), 303)


# --------------------------------------------------------------------------------------------------
# Status changes from the campaign page

ACTIONS = {
    "pause": (campaigns.pause, "Paused: the emails in flight finish, the rest wait for you to resume."),
    "resume": (campaigns.resume, "Resumed: sending carries on where it stopped."),
    "cancel": (campaigns.cancel, "Cancelled: no more emails of this campaign will be sent."),
    "unschedule": (campaigns.unschedule, "Unscheduled: the campaign is a draft again."),
}


@bp.post("/<uuid:campaign_id>/<any(pause, resume, cancel, unschedule):action>")
@login_required
@require_permission("campaigns:write")
def change_status(campaign_id, action):
    campaign = _campaign(campaign_id)
    change, message = ACTIONS[action]
    try:
        change(current_user, campaign.id)
        flash(message, "success")
    except DomainError as exc:
        db.session.rollback()
        flash(exc.message, "error")
    return redirect(url_for("campaigns.show", campaign_id=campaign.id), 303)


@bp.post("/<uuid:campaign_id>/duplicate")
@login_required
@require_permission("campaigns:write")
def duplicate(campaign_id):
    campaign = _campaign(campaign_id)
    copy = campaigns.duplicate_campaign(current_user, campaign.id)
    flash(f"“{copy.name}” is a new draft with the same details, audience and content.", "success")
    return redirect(url_for("campaigns.details", campaign_id=copy.id), 303)


@bp.post("/<uuid:campaign_id>/delete")
@login_required
@require_permission("campaigns:write")
def delete(campaign_id):
    campaign = _campaign(campaign_id)
    name = campaign.name
    try:
        campaigns.delete_campaign(current_user, campaign.id)
    except DomainError as exc:
        db.session.rollback()
        flash(exc.message, "error")
        return redirect(url_for("campaigns.show", campaign_id=campaign.id), 303)
    flash(f"“{name}” was deleted.", "success")
    return redirect(url_for("campaigns.index"), 303)


@bp.post("/<uuid:campaign_id>/retry-failed")
@login_required
@require_permission("campaigns:write")
def retry_failed(campaign_id):
    campaign = _campaign(campaign_id)
    try:
        count = campaigns.retry_failed(current_user, campaign.id)
    except DomainError as exc:
        db.session.rollback()
        flash(exc.message, "error")
        return redirect(url_for("campaigns.failed", campaign_id=campaign.id), 303)
    if count:
        flash(f"{count:,} failed recipient{'s' if count != 1 else ''} queued again.", "success")
    else:
        flash("None of the failed recipients can be mailed any more (they unsubscribed, bounced or were deleted).",
              "info")
    return redirect(url_for("campaigns.show", campaign_id=campaign.id), 303)


# --------------------------------------------------------------------------------------------------
# The campaign page

def _page_context(campaign):
    return {"campaign": campaign, "account": current_user.account, "progress": campaigns.progress(campaign),
            "stats": campaigns.stats(campaign), "template": campaigns.campaign_template(campaign),
            "audience_text": campaigns.describe_audience(campaign.account_id, campaign.audience),
            "has_content": bool(campaigns.current_content(campaign).html),
            "deletable": campaigns.deletable(campaign)}


@bp.get("/<uuid:campaign_id>")
@login_required
@require_permission("campaigns:read")
def show(campaign_id):
    campaign = _campaign(campaign_id)
    return render("campaigns/show.html", tab="overview", **_page_context(campaign))


@bp.get("/<uuid:campaign_id>/progress")
@login_required
@require_permission("campaigns:read")
def live(campaign_id):
    """The live part of the campaign page, polled every 2 s while sending; 286 (stop polling) after."""
    campaign = _campaign(campaign_id)
    context = _page_context(campaign)
    return render("campaigns/_live.html", "campaigns/_live.html", status=200 if context["progress"]["polling"] else 286,
                  oob=True, **context)


@bp.get("/<uuid:campaign_id>/failed")
@login_required
@require_permission("campaigns:read")
def failed(campaign_id):
    campaign = _campaign(campaign_id)
    results = paginate(campaigns.failed_messages_query(current_user.account_id, campaign.id),
                       request.args.get("page"), 50)
    return render("campaigns/failed.html", tab="failed", results=results, **_page_context(campaign))
