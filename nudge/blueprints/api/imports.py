"""/api/v1/contacts/import (JSON batch or CSV upload), /api/v1/imports, /api/v1/contacts/export."""

from flask import Response, g, request, stream_with_context

from nudge.blueprints.api import bp
from nudge.blueprints.api.auth import api_route
from nudge.blueprints.api.openapi import schema, success_response
from nudge.blueprints.api.pagination import paginated_response
from nudge.blueprints.api.responses import envelope, json_body
from nudge.models.types import iso
from nudge.blueprints.common import client_ip
from nudge.errors import ValidationError, field_error
from nudge.services import contacts, exports, imports
from nudge.services.validation import loads_json

ERRORS_PREVIEW = 50

IMPORT_ERROR = schema("ImportError", {
    "type": "object", "required": ["row", "field", "value", "message"],
    "properties": {
        "row": {"type": "integer", "minimum": 1,
                "description": "The position in the `contacts` list (1-based) for a JSON batch; for a CSV file the "
                               "row as a spreadsheet shows it: the header is row 1, so the first data row is 2."},
        "field": {"type": ["string", "null"], "description": "The field (JSON) or column (CSV) at fault."},
        "value": {"type": ["string", "null"],
                  "description": f"The rejected value as given (JSON values other than strings as JSON text; at most "
                                 f"{imports.MAX_SHOWN_VALUE} characters), \"\" for an empty cell, null when none "
                                 "applies (imports before this field was added)."},
        "message": {"type": "string", "description": "Why the row was rejected: one sentence."},
    },
    "example": {"row": 2, "field": "email", "value": "ann@example",
                "message": "Must be a valid email address: the part after the @-sign is not valid; it should have "
                           "a period."},
})

IMPORT = schema("Import", {
    "type": "object",
    "required": ["id", "status", "source", "processed_rows", "created", "updated", "skipped", "error_count"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "status": {"type": "string", "enum": ["pending", "running", "completed", "failed"]},
        "source": {"type": "string", "enum": ["csv", "api", "cli"]},
        "filename": {"type": ["string", "null"]},
        "mapping": {"type": "object", "description": "CSV column -> field (null: ignored)."},
        "update_existing": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "total_rows": {"type": ["integer", "null"], "description": "An estimate until the import completes."},
        "processed_rows": {"type": "integer"},
        "percent": {"type": "integer", "minimum": 0, "maximum": 100},
        "created": {"type": "integer"}, "updated": {"type": "integer"},
        "skipped": {"type": "integer", "description": "Valid rows that changed nothing (existing contact, "
                                                     "update_existing off, or identical)."},
        "error_count": {"type": "integer", "description": "Rejected rows (see errors)."},
        "errors": {"type": "array", "items": IMPORT_ERROR, "description": f"The first {ERRORS_PREVIEW} errors; "
                   "all of them at /imports/{id}/errors."},
        "message": {"type": ["string", "null"], "description": "Why a failed import stopped."},
        "permission_confirmed": {"type": "boolean", "description": "Whoever started the import confirmed that "
                                 "these contacts gave permission to be emailed."},
        "permission_confirmed_by": {"type": ["string", "null"], "description": "Who confirmed it (a user's email "
                                    "or `api:<client_id>`)."},
        "permission_confirmed_at": {"type": ["string", "null"], "format": "date-time"},
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": {"type": ["string", "null"], "format": "date-time"},
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
    },
})

PERMISSION_FIELD = {
    "type": "boolean", "default": False,
    "description": "true: you confirm that these contacts gave permission to be emailed (the dashboard's "
                   "required checkbox). Recorded with who and when on the import (`permission_confirmed_by`, "
                   "`permission_confirmed_at`) and in the audit log (`contact.imported`)."}

IMPORT_REQUEST = schema("ContactImport", {
    "type": "object", "required": ["contacts"], "additionalProperties": False,
    "properties": {
        "contacts": {"type": "array", "maxItems": imports.MAX_API_ROWS, "items": {
            "type": "object", "required": ["email"], "properties": {
                "email": {"type": "string", "format": "email"},
                "first_name": {"type": ["string", "null"], "maxLength": 100},
                "last_name": {"type": ["string", "null"], "maxLength": 100},
                "tags": {"type": "array", "items": {"type": "string"}},
                "custom_fields": {"type": "object"}}}},
        "update_existing": {"type": "boolean", "default": False,
                            "description": "Update contacts that exist (names, custom fields merged, tags added); "
                                           "otherwise they are skipped. Statuses never change."},
        "tags": {"type": "array", "items": {"type": "string"}, "description": "Added to every imported contact."},
        "permission_confirmed": PERMISSION_FIELD,
    },
    "example": {"contacts": [{"email": "ann@example.com", "first_name": "Ann", "custom_fields": {"company": "Acme"}}],
                "update_existing": True, "tags": ["webinar-2025"], "permission_confirmed": True},
})

IMPORT_RESULT = schema("ContactImportResult", {
    "type": "object", "required": ["created", "updated", "skipped", "errors"],
    "properties": {
        "import_id": {"type": "string", "format": "uuid"},
        "created": {"type": "integer"}, "updated": {"type": "integer"}, "skipped": {"type": "integer"},
        "errors": {"type": "array", "items": IMPORT_ERROR},
    },
    "example": {"import_id": "6c1d2f5e-1a2b-4c3d-9e8f-0a1b2c3d4e5f", "created": 1, "updated": 0, "skipped": 0,
                "errors": [{"row": 2, "field": "email", "value": "ann@",
                            "message": "Must be a valid email address: there must be something after the @-sign."}]},
})

IMPORT_DESCRIPTION = (
    "Two forms:\n\n"
    f"* `application/json`: up to {imports.MAX_API_ROWS:,} contacts, imported during the request; answers 200 "
    "with the counts and every rejected row. `row` in errors is **1-based** (the first contact is row 1).\n"
    "* `multipart/form-data` with a CSV `file` (any size; UTF-8/UTF-16 with BOM/cp1252; `,` `;` tab or `|` "
    "separated), an optional `mapping` (a JSON object column -> `email`, `first_name`, `last_name`, `tags`, "
    "`custom.<name>` or null to ignore; guessed from the header when left out; an undefined `custom.<name>` "
    "is created as a text field, or `{\"field\": \"custom.score\", \"type\": \"number\"}`; any custom field type, "
    "a choice with its options: `{\"field\": \"custom.plan\", \"type\": \"choice\", \"options\": [\"free\", \"pro\"]}`), "
    "`update_existing` (true/false) and `tags` (comma-separated): answers 202 with the import; follow it at "
    "`/imports/{id}`. Rejected rows are numbered as a spreadsheet shows the file (the header is row 1).\n\n"
    "Both take `permission_confirmed` (true: these contacts gave permission to be emailed), recorded on the import "
    "and in the audit log.\n\n"
    "Rows land or are reported, never half-written; an address is one contact in any case (`ANN@example.com` "
    "updates or skips the contact `ann@example.com`, whose address keeps its spelling); duplicates inside one "
    "import (in any case) keep the first occurrence; "
    "new addresses on the suppression list (in any case) are rejected; existing contacts keep their status "
    "(an import never re-subscribes anyone); re-running the same data changes nothing.")

MULTIPART = {"type": "object", "required": ["file"], "properties": {
    "file": {"type": "string", "format": "binary"},
    "mapping": {"type": "string", "description": "JSON object: column -> field."},
    "update_existing": {"type": "boolean"},
    "tags": {"type": "string", "description": "Comma-separated tags added to every contact."},
    "permission_confirmed": PERMISSION_FIELD}}


def import_json(imp, with_errors=True):
    options = imp.options or {}
    permission = options.get("permission") or {}
    info = imports.progress_info(imp)
    data = {
        "id": str(imp.id), "status": imp.status, "source": imp.source, "filename": imp.filename,
        "mapping": imp.mapping or {}, "update_existing": bool(options.get("update_existing")),
        "tags": options.get("tags") or [], "total_rows": imp.total_rows, "processed_rows": imp.processed_rows,
        "percent": info["percent"], "created": imp.created_count, "updated": imp.updated_count,
        "skipped": imp.skipped_count, "error_count": imp.error_count, "message": imp.message,
        "permission_confirmed": bool(permission), "permission_confirmed_by": permission.get("confirmed_by_label"),
        "permission_confirmed_at": permission.get("confirmed_at"),
        "created_at": iso(imp.created_at), "started_at": iso(imp.started_at), "finished_at": iso(imp.finished_at),
    }
    if with_errors:
        data["errors"] = [imports.error_json(e) for e in imports.first_errors(imp.account_id, imp.id, ERRORS_PREVIEW)]
    return data


def import_links(imp):
    return {"self": f"/api/v1/imports/{imp.id}", "errors": f"/api/v1/imports/{imp.id}/errors"}


def _form_bool(value):
    if value is None or value == "":
        return False
    return value


def _form_tags(value):
    if not value:
        return []
    value = value.strip()
    if value.startswith("["):
        try:
            return loads_json(value)
        except ValueError:
            raise field_error("tags", "Must be comma-separated tags or a JSON array.")
    return value


@bp.post("/contacts/import")
@api_route("contacts:write", summary="Import contacts (JSON batch or CSV upload)", description=IMPORT_DESCRIPTION,
           request_content={"required": True, "content": {
               "application/json": {"schema": IMPORT_REQUEST},
               "multipart/form-data": {"schema": MULTIPART}}},
           responses={"200": success_response(IMPORT_RESULT, "The JSON batch, imported."),
                      "202": success_response(IMPORT, "The CSV upload, accepted: an Import to follow.")})
def import_contacts():
    actor = g.api_actor
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            raise field_error("file", "Attach the CSV file as `file`.")
        mapping = None
        raw_mapping = request.form.get("mapping")
        if raw_mapping:
            try:
                mapping = loads_json(raw_mapping)
            except ValueError:
                raise field_error("mapping", "Must be a JSON object of column -> field.")
        imp = imports.create_csv_import(actor, upload.stream, upload.filename, mapping=mapping,
                                        update_existing=_form_bool(request.form.get("update_existing")),
                                        tags=_form_tags(request.form.get("tags")),
                                        permission_confirmed=request.form.get("permission_confirmed"),
                                        ip=client_ip())
        return envelope(import_json(imp), status=202, links=import_links(imp),
                        headers={"Location": f"/api/v1/imports/{imp.id}"})
    body = json_body()
    unknown = [key for key in body if key not in ("contacts", "update_existing", "tags", "permission_confirmed")]
    if unknown:
        raise ValidationError(f"Unknown field {unknown[0]!r}.",
                              [{"field": key, "issue": "Unknown field."} for key in unknown])
    if "contacts" not in body:
        raise field_error("contacts", "Send the contacts to import as an array.")
    imp, errors = imports.import_contacts(actor, body.get("contacts"), update_existing=body.get("update_existing"),
                                          tags=body.get("tags"), permission_confirmed=body.get("permission_confirmed"),
                                          ip=client_ip())
    return envelope({"import_id": str(imp.id), "created": imp.created_count, "updated": imp.updated_count,
                     "skipped": imp.skipped_count, "errors": errors}, links=import_links(imp))


@bp.get("/imports")
@api_route("contacts:read", summary="List imports", description="Newest first.", response=IMPORT, paginated=True)
def list_imports():
    return paginated_response(imports.imports_query(g.api_actor.account_id), lambda imp: import_json(imp, False))


@bp.get("/imports/<uuid:import_id>")
@api_route("contacts:read", summary="Show an import: progress, counts and the first errors", response=IMPORT)
def show_import(import_id):
    imp = imports.get_import(g.api_actor.account_id, import_id)
    return envelope(import_json(imp), links=import_links(imp))


@bp.get("/imports/<uuid:import_id>/errors")
@api_route("contacts:read", summary="List an import's rejected rows", description="Ordered by row number.",
           response=IMPORT_ERROR, paginated=True)
def list_import_errors(import_id):
    return paginated_response(imports.errors_query(g.api_actor.account_id, import_id), imports.error_json)


EXPORT_PARAMETERS = [
    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["csv", "json"], "default": "csv"}},
    {"name": "segment_id", "in": "query", "schema": {"type": "string", "format": "uuid"}},
    {"name": "status", "in": "query", "schema": {"type": "string"}},
    {"name": "tag", "in": "query", "schema": {"type": "string"}, "description": "Repeatable: contacts having all."},
    {"name": "q", "in": "query", "schema": {"type": "string"}},
    {"name": "email", "in": "query", "schema": {"type": "string"}},
    {"name": "created_after", "in": "query", "schema": {"type": "string", "format": "date-time"}},
    {"name": "created_before", "in": "query", "schema": {"type": "string", "format": "date-time"}},
]


@bp.get("/contacts/export")
@api_route("contacts:read", summary="Export contacts as CSV or JSON (streamed)",
           description="The list's filters (`status`, `tag`, `q`, `email`, `created_after`, `created_before`, "
                       "`field.<name>=value`) or `segment_id` (404 when it is not one of the account's segments). "
                       "CSV columns: email, first_name, last_name, status, tags (comma-separated), "
                       "subscription_date, created_at and one per custom field. JSON: an array of Contact objects. "
                       "Sent as an attachment, streamed.",
           parameters=EXPORT_PARAMETERS,
           errors=(404,), responses={"200": {**success_response(None, "The export file."), "content": {
               "text/csv": {"schema": {"type": "string"}},
               "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Contact"}}}}}})
def export_contacts():
    actor = g.api_actor
    filters = contacts.parse_filters(request.args, actor.account_id)
    export = exports.export_contacts(actor, filters, request.args.get("format", "csv"), ip=client_ip())
    return streamed_export(export)


def streamed_export(export):
    response = Response(stream_with_context(export.chunks()), mimetype=export.mimetype.split(";")[0])
    if export.format == "csv":
        response.headers["Content-Type"] = export.mimetype
    response.headers["Content-Disposition"] = f'attachment; filename="{export.filename}"'
    response.headers["X-Total-Count"] = str(export.count)
    response.headers["Cache-Control"] = "no-store"
    return response
