"""Contacts in the dashboard: the list (search, filters, sort, bulk actions), a contact's page (overview with
edit in place, tags, consent; activity), custom field definitions and the suppression list."""
import datetime as dt

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask_login import current_user, login_required
from werkzeug.datastructures import MultiDict

from nudge.blueprints.common import field_errors, paginate, render, require_permission, with_toast
from nudge.blueprints.settings import local_time
from nudge.errors import Conflict, NotFound, ValidationError
from nudge.extensions import db, htmx
from nudge.models import CUSTOM_FIELD_TYPES, SUPPRESSION_REASONS, Contact
from nudge.services import contacts as service
from nudge.services import custom_fields as fields_service
from nudge.services import suppressions as suppressions_service
from nudge.services import segments

bp = Blueprint("contacts", __name__)

STATUS_BADGES = {"active": "success", "unsubscribed": "muted", "bounced": "danger", "complained": "danger",
                 "deleted": "warning"}
STATUS_LABELS = {"active": "Active", "unsubscribed": "Unsubscribed", "bounced": "Bounced", "complained": "Complained",
                 "deleted": "Deleted"}
REASON_LABELS = {"unsubscribed": "Unsubscribed", "hard_bounce": "Hard bounce", "complaint": "Complaint",
                 "manual": "Added manually", "erased": "Erased (GDPR)"}
TYPE_LABELS = {"text": "Text", "number": "Number", "date": "Date", "boolean": "Yes / no", "choice": "Choice"}
EVENT_LABELS = {
    "contact.subscribed": "Subscribed", "contact.unsubscribed": "Unsubscribed", "contact.tag_added": "Tags added",
    "contact.tag_removed": "Tags removed", "contact.updated": "Updated", "contact.deleted": "Deleted",
    "contact.restored": "Restored", "email.sent": "Email sent", "email.delivered": "Email delivered",
    "email.opened": "Email opened", "email.clicked": "Link clicked", "email.bounced": "Email bounced",
    "email.complained": "Marked as spam", "automation.triggered": "Automation triggered",
}
# Event data kept for the machinery (which message, which provider) that a marketer has no use for: the
# activity names the campaign instead.
INTERNAL_EVENT_KEYS = frozenset({"message_id", "provider"})
FILTER_KEYS = ("q", "status", "tag", "segment_id", "sort")
PER_PAGE = 50


@bp.context_processor
def _helpers():
    tz = current_user.account.timezone if current_user.is_authenticated else "UTC"
    return {"STATUS_BADGES": STATUS_BADGES, "STATUS_LABELS": STATUS_LABELS, "REASON_LABELS": REASON_LABELS,
            "TYPE_LABELS": TYPE_LABELS, "EVENT_LABELS": EVENT_LABELS,
            "INTERNAL_EVENT_KEYS": INTERNAL_EVENT_KEYS,
            "local": lambda value, fmt="%Y-%m-%d %H:%M": local_time(value, tz).strftime(fmt) if value else "—",
            "can_write": current_user.is_authenticated and current_user.can("contacts:write"),
            "restore_window": service.RESTORE_WINDOW}


# --- The list ------------------------------------------------------------------------------------

def _segments(account_id):
    """The account's segments, for the list's segment filter."""
    return segments.list_segments(account_id)


def _list_args(source):
    """The list filters from a request's args (or a bulk form): only the keys the page uses, blanks dropped."""
    args = MultiDict()
    for key in FILTER_KEYS:
        for value in source.getlist(key):
            if value and value.strip():
                args.add(key, value.strip())
    for key in source.keys():
        if key.startswith("field.") and source.get(key, "").strip():
            args.add(key, source.get(key).strip())
    return args


def _list_context(args, errors=None, **extra):
    account_id = current_user.account_id
    try:
        filters = service.parse_filters(args, account_id)
    except ValidationError as exc:
        errors = field_errors(exc)
        filters = {}
    except NotFound:
        filters = {}
    try:
        results = paginate(service.contacts_query(account_id, filters), request.args.get("page"), PER_PAGE)
    except NotFound:  # a segment of another account, or gone
        errors = {"segment_id": "That segment does not exist."}
        filters.pop("segment_id", None)
        results = paginate(service.contacts_query(account_id, filters), request.args.get("page"), PER_PAGE)
    current = {key: args.getlist(key) if key == "tag" else args.get(key, "") for key in FILTER_KEYS}
    current.update({k: v for k, v in args.items() if k.startswith("field.")})
    active = {k: v for k, v in current.items() if v and k != "sort"}
    sort = filters.get("sort") or service.DEFAULT_SORT
    return dict(results=results, filters=current, active_filters=active, sort=sort, errors=errors or {},
                counts=service.status_counts(account_id), tags=service.all_tags(account_id),
                segments=_segments(account_id), query_args=_query_args(current), **extra)


def _query_args(current):
    """The filters as url_for keyword arguments (lists for repeated keys)."""
    return {k: v for k, v in current.items() if v}


@bp.get("/")
@login_required
@require_permission("contacts:read")
def index():
    args = _list_args(request.args)
    context = _list_context(args)
    response = render("contacts/index.html", "contacts/_results.html", **context)
    if htmx:
        # The address bar shows the filters without the form's blank fields.
        page = request.args.get("page")
        response.headers["HX-Push-Url"] = url_for(".index", **context["query_args"],
                                                  **({"page": page} if page and page != "1" else {}))
    return response


@bp.post("/bulk")
@login_required
@require_permission("contacts:write")
def bulk():
    """A bulk action on the selected ids, or on every contact matching the list's filters."""
    form = request.form
    args = _list_args(form)
    action = form.get("action", "")
    ids = form.getlist("ids")
    everything = form.get("scope") == "all"
    if form.get("restore_id"):  # a row's own Restore button in the deleted contacts view
        action, ids, everything = "restore", [form["restore_id"]], False
    message, level, undo = None, "success", None
    try:
        filters = service.parse_filters(args, current_user.account_id) if everything else None
        chosen = {"contact_ids": None if everything else ids, "filters": filters}
        if not everything and not ids:
            raise ValidationError("Select at least one contact first.")
        if action in ("add_tag", "remove_tag"):
            tag = form.get("bulk_tag", "").strip()
            if not tag:
                raise ValidationError("Type the tag to add or remove.")
            if action == "add_tag":
                count = service.add_tags(current_user, [tag], **chosen)
                message = f"Tag “{tag}” added to {count:,} contact{'s' if count != 1 else ''}."
            else:
                count = service.remove_tags(current_user, [tag], **chosen)
                message = f"Tag “{tag}” removed from {count:,} contact{'s' if count != 1 else ''}."
        elif action == "delete":
            count, deleted_at = service.delete_contacts(current_user, **chosen)
            message = f"{count:,} contact{'s' if count != 1 else ''} deleted."
            undo = {"count": count, "deleted_at": deleted_at.isoformat()}
        elif action == "restore":
            if everything:
                selection = (service.contacts_query(current_user.account_id, filters).order_by(None)
                             .with_only_columns(Contact.id))
                count = service.restore_contacts(current_user, contact_ids=selection)
            else:
                count = service.restore_contacts(current_user, contact_ids=_uuids(ids))
            message = f"{count:,} contact{'s' if count != 1 else ''} restored."
        else:
            raise ValidationError("Choose an action.")
    except (ValidationError, NotFound) as exc:
        message, level = exc.message, "error"
    response = render("contacts/index.html", "contacts/_results.html", **_list_context(args, undo=undo))
    if htmx:
        return with_toast(response, message, level)
    flash(message, level)
    return redirect(url_for(".index", **_query_args(args.to_dict(flat=False))), 303)


def _uuids(values):
    import uuid
    result = []
    for value in values:
        try:
            result.append(uuid.UUID(str(value)))
        except ValueError:
            continue
    return result


@bp.post("/undo-delete")
@login_required
@require_permission("contacts:write")
def undo_delete():
    """Restore the contacts of one bulk delete (identified by its timestamp)."""
    try:
        deleted_at = dt.datetime.fromisoformat(request.form.get("deleted_at", ""))
    except ValueError:
        abort(400)
    count = service.restore_contacts(current_user, deleted_at=deleted_at)
    message = f"{count:,} contact{'s' if count != 1 else ''} restored."
    args = _list_args(request.form)
    if htmx:
        response = render("contacts/index.html", "contacts/_results.html", **_list_context(args))
        return with_toast(response, message)
    flash(message, "success")
    return redirect(url_for(".index", **_query_args(args.to_dict(flat=False))), 303)


# --- Add a contact -------------------------------------------------------------------------------

def _form_values(form, definitions):
    """A contact's fields from a dashboard form (custom fields as cf.<name>)."""
    data = {key: form.get(key, "") for key in ("email", "first_name", "last_name")}
    data["tags"] = form.get("tags", "")
    if form.get("status"):
        data["status"] = form.get("status")
    data["custom_fields"] = {name: form.get(f"cf.{name}", "") for name in definitions if f"cf.{name}" in form}
    return data


def _contact_errors(exc):
    errors = field_errors(exc)
    return errors


@bp.route("/new", methods=["GET", "POST"])
@login_required
@require_permission("contacts:write")
def new():
    definitions = fields_service.definitions(current_user.account_id)
    if request.method == "GET":
        return render("contacts/new.html", values={"custom_fields": {}}, errors={}, definitions=definitions)
    data = _form_values(request.form, definitions)
    try:
        contact = service.create_contact(current_user, data, source="dashboard")
    except (ValidationError, Conflict) as exc:
        return render("contacts/new.html", status=422, values=data, errors=field_errors(exc), definitions=definitions)
    note = " It is on the suppression list, so it was added as unsubscribed." if contact.status == "unsubscribed" \
        and data.get("status", "active") == "active" else ""
    flash(f"{contact.email} added.{note}", "success")
    return redirect(url_for(".show", contact_id=contact.id), 303)


# --- One contact ---------------------------------------------------------------------------------

def _contact_context(contact, **extra):
    account_id = current_user.account_id
    context = dict(contact=contact, definitions=fields_service.definitions(account_id),
                   suppression=_suppression(account_id, contact.email), edit_errors={}, edit_values=None)
    context.update(extra)
    return context


def _suppression(account_id, email):
    try:
        return suppressions_service.get_suppression(account_id, email)
    except NotFound:
        return None


def _get(contact_id, include_deleted=True):
    return service.get_contact(current_user.account_id, contact_id, include_deleted=include_deleted)


@bp.get("/<uuid:contact_id>")
@login_required
@require_permission("contacts:read")
def show(contact_id):
    contact = _get(contact_id)
    tab = request.args.get("tab", "overview")
    if tab == "activity":
        history = paginate(service.contact_history(current_user.account_id, contact.id), request.args.get("page"), 50)
        return render("contacts/show.html", "contacts/_activity.html", tab=tab, history=history,
                      **_contact_context(contact))
    return render("contacts/show.html", "contacts/_overview.html", tab="overview", **_contact_context(contact))


@bp.route("/<uuid:contact_id>/edit", methods=["GET", "POST"])
@login_required
@require_permission("contacts:write")
def edit(contact_id):
    contact = _get(contact_id, include_deleted=False)
    definitions = fields_service.definitions(current_user.account_id)
    if request.method == "GET":
        if request.args.get("cancel"):
            return render("contacts/show.html", "contacts/_details.html", tab="overview", **_contact_context(contact))
        values = {"email": contact.email, "first_name": contact.first_name or "", "last_name": contact.last_name or "",
                  "custom_fields": dict(contact.custom_fields or {})}
        return render("contacts/show.html", "contacts/_edit.html", tab="overview",
                      **_contact_context(contact, edit_values=values))
    data = _form_values(request.form, definitions)
    data.pop("tags", None)
    data.pop("status", None)
    try:
        contact = service.update_contact(current_user, contact.id, data)
    except (ValidationError, Conflict) as exc:
        db.session.rollback()
        contact = _get(contact_id)
        return render("contacts/show.html", "contacts/_edit.html", status=422, tab="overview",
                      **_contact_context(contact, edit_values=data, edit_errors=field_errors(exc)))
    response = render("contacts/show.html", "contacts/_details.html", tab="overview", **_contact_context(contact))
    if htmx:
        return with_toast(response, "Contact saved")
    flash("Contact saved", "success")
    return redirect(url_for(".show", contact_id=contact.id), 303)


@bp.post("/<uuid:contact_id>/tags")
@login_required
@require_permission("contacts:write")
def tags(contact_id):
    contact = _get(contact_id, include_deleted=False)
    error = None
    try:
        if request.form.get("remove"):
            service.remove_tags(current_user, [request.form["remove"]], contact_ids=[contact.id])
        else:
            new_tags = request.form.get("tag", "")
            if not new_tags.strip():
                raise ValidationError("Type a tag to add.")
            service.add_tags(current_user, new_tags, contact_ids=[contact.id])
    except ValidationError as exc:
        db.session.rollback()
        error = exc.message
    if htmx:
        return render("contacts/show.html", "contacts/_tags.html", status=422 if error else 200, tag_error=error,
                      **_contact_context(contact))
    if error:
        flash(error, "error")
    return redirect(url_for(".show", contact_id=contact.id), 303)


@bp.post("/<uuid:contact_id>/unsubscribe")
@login_required
@require_permission("contacts:write")
def unsubscribe(contact_id):
    contact = service.unsubscribe_contact(current_user, contact_id)
    flash(f"{contact.email} is unsubscribed and on the suppression list.", "success")
    return redirect(url_for(".show", contact_id=contact.id), 303)


@bp.post("/<uuid:contact_id>/delete")
@login_required
@require_permission("contacts:write")
def delete(contact_id):
    contact = service.delete_contact(current_user, contact_id)
    flash(f"{contact.email} deleted. You can restore it from this page for 30 days.", "success")
    return redirect(url_for(".show", contact_id=contact.id), 303)


@bp.post("/<uuid:contact_id>/restore")
@login_required
@require_permission("contacts:write")
def restore(contact_id):
    try:
        contact = service.restore_contact(current_user, contact_id)
    except NotFound as exc:
        flash(exc.message, "error")
        return redirect(url_for(".index", status="deleted"), 303)
    flash(f"{contact.email} restored.", "success")
    return redirect(url_for(".show", contact_id=contact.id), 303)


# --- Custom fields -------------------------------------------------------------------------------

def _fields_context(**extra):
    fields = fields_service.list_fields(current_user.account_id)
    context = dict(fields=fields, max_fields=fields_service.MAX_FIELDS, types=CUSTOM_FIELD_TYPES,
                   values={"name": "", "label": "", "type": "text", "options": ""}, errors={}, editing=None,
                   edit_errors={}, edit_values=None)
    context.update(extra)
    return context


def _options(text):
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


@bp.get("/custom-fields")
@login_required
@require_permission("contacts:read")
def custom_fields():
    return render("contacts/custom_fields.html", **_fields_context())


@bp.post("/custom-fields")
@login_required
@require_permission("contacts:write")
def custom_field_create():
    values = {key: request.form.get(key, "") for key in ("name", "label", "type", "options")}
    try:
        field = fields_service.create_field(current_user, name=values["name"], label=values["label"] or None,
                                            type=values["type"] or "text",
                                            options=_options(values["options"]) if values["type"] == "choice" else None)
    except (ValidationError, Conflict) as exc:
        return render("contacts/custom_fields.html", status=422, **_fields_context(values=values,
                                                                                    errors=field_errors(exc)))
    flash(f"Custom field “{field.label}” ({field.name}) created.", "success")
    return redirect(url_for(".custom_fields"), 303)


@bp.route("/custom-fields/<name>/edit", methods=["GET", "POST"])
@login_required
@require_permission("contacts:write")
def custom_field_edit(name):
    field = fields_service.get_field(current_user.account_id, name)
    if request.method == "GET":
        if request.args.get("cancel"):
            return render("contacts/custom_fields.html", "contacts/_field_row.html", field=field, **_fields_context())
        values = {"label": field.label, "options": "\n".join(field.options or [])}
        return render("contacts/custom_fields.html", "contacts/_field_edit.html", field=field,
                      **_fields_context(edit_values=values))
    values = {"label": request.form.get("label", ""), "options": request.form.get("options", "")}
    try:
        field = fields_service.update_field(current_user, name, label=values["label"],
                                            options=_options(values["options"]) if field.type == "choice" else None)
    except ValidationError as exc:
        db.session.rollback()
        field = fields_service.get_field(current_user.account_id, name)
        return render("contacts/custom_fields.html", "contacts/_field_edit.html", status=422, field=field,
                      **_fields_context(edit_values=values, edit_errors=field_errors(exc)))
    if htmx:
        return with_toast(render("contacts/custom_fields.html", "contacts/_field_row.html", field=field,
                                 **_fields_context()), f"“{field.label}” saved")
    flash(f"“{field.label}” saved.", "success")
    return redirect(url_for(".custom_fields"), 303)


@bp.post("/custom-fields/<name>/delete")
@login_required
@require_permission("contacts:write")
def custom_field_delete(name):
    field = fields_service.get_field(current_user.account_id, name)
    label = field.label
    fields_service.delete_field(current_user, name)
    flash(f"Custom field “{label}” deleted; its values were removed from every contact.", "success")
    return redirect(url_for(".custom_fields"), 303)


# --- Suppressions --------------------------------------------------------------------------------

def _suppressions_context(**extra):
    q = request.args.get("q", "").strip()[:255]
    reason = request.args.get("reason", "")
    reason = reason if reason in SUPPRESSION_REASONS else ""
    results = paginate(suppressions_service.list_suppressions(current_user.account_id, q=q or None,
                                                              reason=reason or None),
                       request.args.get("page"), PER_PAGE)
    context = dict(results=results, q=q, reason=reason, reasons=SUPPRESSION_REASONS,
                   active_filters={k: v for k, v in (("q", q), ("reason", reason)) if v},
                   values={"emails": "", "reason": "manual", "note": ""}, errors={}, outcome=None)
    context.update(extra)
    return context


@bp.get("/suppressions")
@login_required
@require_permission("contacts:read")
def suppressions():
    return render("contacts/suppressions.html", "contacts/_suppression_results.html", **_suppressions_context())


@bp.post("/suppressions")
@login_required
@require_permission("contacts:write")
def suppressions_add():
    values = {key: request.form.get(key, "") for key in ("emails", "reason", "note")}
    emails = suppressions_service.emails_from_text(values["emails"])
    upload = request.files.get("file")
    if upload and upload.filename:
        raw = upload.read()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        emails += suppressions_service.emails_from_csv(text)
    try:
        if not emails:
            raise ValidationError("Paste addresses or choose a CSV file.",
                                  [{"field": "emails", "issue": "Paste addresses or choose a CSV file."}])
        outcome = suppressions_service.add_suppressions(current_user, emails, reason=values["reason"] or "manual",
                                                        note=values["note"])
    except ValidationError as exc:
        return render("contacts/suppressions.html", status=422,
                      **_suppressions_context(values=values, errors=field_errors(exc)))
    message = f"{outcome['added']:,} address{'es' if outcome['added'] != 1 else ''} added"
    if outcome["already"]:
        message += f", {outcome['already']:,} already on the list"
    if outcome["invalid"]:
        message += f", {len(outcome['invalid']):,} not valid"
    context = _suppressions_context(outcome=outcome)
    if outcome["invalid"]:
        return render("contacts/suppressions.html", **context, message=message + ".")
    flash(message + ".", "success")
    return redirect(url_for(".suppressions"), 303)


@bp.post("/suppressions/remove")
@login_required
@require_permission("contacts:write")
def suppressions_remove():
    email = request.form.get("email", "")
    removed = suppressions_service.remove_suppressions(current_user, [email])
    if removed:
        flash(f"{email} removed from the suppression list. Its contact keeps its status; re-activate it "
              "only if the person asked to subscribe again.", "success")
    else:
        flash(f"{email} was not on the suppression list.", "info")
    return redirect(url_for(".suppressions", **{k: v for k, v in request.args.items() if k in ("q", "reason")}), 303)
