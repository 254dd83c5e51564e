"""Imports (dashboard): the CSV import wizard (upload -> map columns and options -> live progress -> report),
past imports, error downloads, and the streamed contact export of the current filter."""
import datetime as dt
import zoneinfo

from flask import Blueprint, Response, abort, current_app, redirect, request, stream_with_context, url_for
from flask_login import current_user, login_required
from werkzeug.exceptions import RequestEntityTooLarge

from nudge.blueprints.contacts import TYPE_LABELS
from nudge.blueprints.common import client_ip, duration, field_errors, paginate, render, require_permission
from nudge.errors import ValidationError
from nudge.extensions import db
from nudge.services import contacts, custom_fields, exports, imports, team

bp = Blueprint("imports", __name__)

# Every custom field type can be created from the mapping (a choice field with its options).
NEW_FIELD_TYPES = custom_fields.CUSTOM_FIELD_TYPES
STEPS = ("Upload", "Map columns", "Import", "Report")


def local_time(value, tz):
    if value is None:
        return None
    try:
        zone = zoneinfo.ZoneInfo(tz or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = dt.timezone.utc
    return value.replace(tzinfo=dt.timezone.utc).astimezone(zone)


@bp.context_processor
def _helpers():
    return {"local_time": local_time, "duration": duration, "STEPS": STEPS,
            "TARGET_LABELS": imports.TARGET_LABELS, "NEW_FIELD_TYPES": NEW_FIELD_TYPES, "TYPE_LABELS": TYPE_LABELS}


def _timezone():
    return getattr(getattr(current_user, "account", None), "timezone", None) or "UTC"


def _creators(items):
    return team.member_labels(current_user.account_id, (imp.created_by for imp in items))


@bp.get("/")
@login_required
@require_permission("contacts:read")
def index():
    results = paginate(imports.imports_query(current_user.account_id), request.args.get("page"), 25)
    return render("imports/index.html", results=results, creators=_creators(results.items), tz=_timezone(),
                  can_import=current_user.can("contacts:write"))


@bp.route("/new", methods=["GET", "POST"])
@login_required
@require_permission("contacts:write")
def new():
    errors = {}
    if request.method == "POST":
        try:
            upload = request.files.get("file")
        except RequestEntityTooLarge:
            upload, errors = None, {"file": "The file is too large."}
        if upload is None or not upload.filename:
            errors = errors or {"file": "Choose a CSV file to upload."}
        else:
            try:
                imp = imports.create_upload(current_user, upload.stream, upload.filename)
                return redirect(url_for("imports.mapping", import_id=imp.id), 303)
            except ValidationError as exc:
                errors = field_errors(exc)
    return render("imports/new.html", errors=errors, status=422 if errors else 200,
                  max_mb=current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024))  # the upload limit


def _pending(import_id):
    imp = imports.get_import(current_user.account_id, import_id)
    return imp


def _mapping_form(imp, data=None):
    """The mapping rows: [(index, column, samples, selected target, new-field name, new-field type,
    new-field options)]; a choice field's options start as the column's distinct sample values."""
    info = imports.preview(imp)
    fields = custom_fields.definitions(imp.account_id)
    rows = []
    for index, column in enumerate(info["header"]):
        samples = [row[index] for row in info["rows"] if index < len(row)]
        if data is None:
            target = (imp.mapping or {}).get(column) if imp.mapping else info["guessed"].get(column)
            if not target and not imp.mapping and column.strip():
                target = ""
            options = ", ".join(dict.fromkeys(value.strip() for value in samples if value.strip()))
            rows.append((index, column, samples, target or "", imports.slug(column), "text", options))
        else:
            rows.append((index, column, samples, data.get(f"map_{index}", ""),
                         data.get(f"name_{index}", imports.slug(column)), data.get(f"type_{index}", "text"),
                         data.get(f"options_{index}", "")))
    return info, fields, rows


@bp.route("/<uuid:import_id>/mapping", methods=["GET", "POST"])
@login_required
@require_permission("contacts:write")
def mapping(import_id):
    imp = _pending(import_id)
    if imp.status != "pending" or imp.options.get("queued") or not imp.file_path:
        return redirect(url_for("imports.show", import_id=imp.id))
    errors = {}
    form = request.form if request.method == "POST" else None
    info, fields, rows = _mapping_form(imp, form)
    options = {"update_existing": bool(imp.options.get("update_existing")),
               "tags": ", ".join(imp.options.get("tags") or []), "permission_confirmed": False}
    if request.method == "POST":
        options = {"update_existing": form.get("existing") == "update", "tags": form.get("tags", ""),
                   "permission_confirmed": form.get("permission_confirmed") == "yes"}
        chosen, new_fields = {}, {}
        for index, column, _, target, name, kind, choices in rows:
            if target == "new":
                name = (name or "").strip()
                target = f"custom.{name}"
                new_fields[name] = {"type": kind, "options": choices}
            chosen[column] = target or None
        try:
            imports.configure(current_user, imp.id, mapping=chosen, update_existing=options["update_existing"],
                              tags=options["tags"], new_fields=new_fields,
                              permission_confirmed=options["permission_confirmed"], require_permission=True)
            imports.start(current_user, imp.id, ip=client_ip())
            return redirect(url_for("imports.show", import_id=imp.id), 303)
        except ValidationError as exc:
            errors = field_errors(exc)
            db.session.rollback()
    return render("imports/mapping.html", imp=imp, info=info, fields=fields, rows=rows, options=options,
                  errors=errors, status=422 if errors else 200)


@bp.post("/<uuid:import_id>/discard")
@login_required
@require_permission("contacts:write")
def discard(import_id):
    try:
        imports.discard(current_user, import_id)
    except ValidationError:
        return redirect(url_for("imports.show", import_id=import_id), 303)
    return redirect(url_for("imports.index"), 303)


def _report_context(imp):
    errors = imports.first_errors(imp.account_id, imp.id, 100)
    progress = imports.progress_info(imp)
    # Poll while a job will move it: running, or queued for a worker (not an upload still waiting for its mapping).
    progress["polling"] = not progress["done"] and (imp.status == "running" or bool(imp.options.get("queued")))
    return {"imp": imp, "progress": progress, "errors": errors, "tz": _timezone(),
            "elapsed": imports.elapsed_seconds(imp), "creators": _creators([imp]),
            "permission_at": _permission_time(imp)}


def _permission_time(imp):
    """When the permission confirmation was given (naive UTC, as local_time() expects), or None."""
    stamp = ((imp.options or {}).get("permission") or {}).get("confirmed_at")
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).replace(tzinfo=None) if stamp else None
    except ValueError:
        return None


@bp.get("/<uuid:import_id>")
@login_required
@require_permission("contacts:read")
def show(import_id):
    imp = imports.get_import(current_user.account_id, import_id)
    if imp.status == "pending" and not imp.options.get("queued") and imp.file_path:
        if current_user.can("contacts:write"):
            return redirect(url_for("imports.mapping", import_id=imp.id))
    return render("imports/show.html", **_report_context(imp))


@bp.get("/<uuid:import_id>/progress")
@login_required
@require_permission("contacts:read")
def progress(import_id):
    """The progress fragment htmx polls every second; 286 (stop polling) once the import is done."""
    imp = imports.get_import(current_user.account_id, import_id)
    context = _report_context(imp)
    return render("imports/_progress.html", status=200 if context["progress"]["polling"] else 286, oob=True,
                  **context)


@bp.get("/<uuid:import_id>/errors.csv")
@login_required
@require_permission("contacts:read")
def errors_csv(import_id):
    imp = imports.get_import(current_user.account_id, import_id)
    chunks = imports.errors_csv(current_user.account_id, imp.id)
    response = Response(stream_with_context(chunks), content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="import-{imp.id}-errors.csv"'
    return response


@bp.get("/export")
@login_required
@require_permission("contacts:read")
def export():
    """Stream the contacts of the current filter (the contacts list's query string) as CSV or JSON."""
    try:
        filters = contacts.parse_filters(request.args, current_user.account_id)
        result = exports.export_contacts(current_user, filters, request.args.get("format", "csv"), ip=client_ip())
    except ValidationError as exc:
        abort(400, exc.message)
    response = Response(stream_with_context(result.chunks()), content_type=result.mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{result.filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response
