"""/api/v1/suppressions: the account's suppression list (addresses never mailed again)."""
from flask import g, request

from nudge.blueprints.api import bp
from nudge.blueprints.api.auth import api_route
from nudge.blueprints.api.openapi import schema
from nudge.blueprints.api.pagination import paginated_response
from nudge.blueprints.api.responses import envelope, is_json_mimetype, json_body
from nudge.models.types import iso
from nudge.errors import ValidationError
from nudge.models import SUPPRESSION_REASONS
from nudge.services import suppressions

SUPPRESSION = schema("Suppression", {
    "type": "object", "required": ["email", "reason", "created_at"],
    "properties": {
        "email": {"type": "string", "format": "email"},
        "reason": {"type": "string", "enum": list(SUPPRESSION_REASONS)},
        "note": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
    },
    "example": {"email": "gone@example.com", "reason": "unsubscribed", "note": None,
                "created_at": "2025-01-31T09:30:00Z"},
})

SUPPRESSION_ADD = schema("SuppressionAdd", {
    "type": "object", "required": ["emails"], "additionalProperties": False,
    "properties": {
        "emails": {"type": "array", "items": {"type": "string"}, "maxItems": suppressions.MAX_BULK},
        "reason": {"type": "string", "enum": list(SUPPRESSION_REASONS), "default": "manual"},
        "note": {"type": "string", "maxLength": 1000},
    },
    "example": {"emails": ["gone@example.com", "spam-trap@example.org"], "reason": "manual"},
})

ADD_RESULT = {"type": "object", "required": ["added", "already", "invalid"], "properties": {
    "added": {"type": "integer", "description": "Addresses newly suppressed."},
    "already": {"type": "integer", "description": "Addresses that were already on the list (their first reason is kept)."},
    "invalid": {"type": "array", "items": {"type": "object", "properties": {
        "email": {"type": "string"}, "issue": {"type": "string"}}}}}}

REMOVE_REQUEST = {"type": "object", "required": ["emails"], "additionalProperties": False,
                  "properties": {"emails": {"type": "array", "items": {"type": "string"}}}}
REMOVE_RESULT = {"type": "object", "required": ["removed"], "properties": {"removed": {"type": "integer"}}}


def suppression_json(row):
    return {"email": row.email, "reason": row.reason, "note": row.note, "created_at": iso(row.created_at)}


@bp.get("/suppressions")
@api_route("contacts:read", summary="List suppressed addresses", response=SUPPRESSION, paginated=True,
           parameters=[{"name": "q", "in": "query", "required": False, "schema": {"type": "string"},
                        "description": "Part of an address."},
                       {"name": "reason", "in": "query", "required": False,
                        "schema": {"type": "string", "enum": list(SUPPRESSION_REASONS)}}],
           description="Newest first. Suppressions outlive deleted contacts.")
def list_suppressions():
    reason = request.args.get("reason") or None
    if reason and reason not in SUPPRESSION_REASONS:
        raise ValidationError("Unknown reason.", [{"field": "reason", "issue": "Must be one of "
                                                   + ", ".join(SUPPRESSION_REASONS) + "."}])
    query = suppressions.list_suppressions(g.api_actor.account_id, q=request.args.get("q"), reason=reason)
    return paginated_response(query, suppression_json)


@bp.post("/suppressions")
@api_route("contacts:write", summary="Suppress addresses", response=ADD_RESULT,
           request_content={"required": True, "content": {
               "application/json": {"schema": SUPPRESSION_ADD},
               "text/csv": {"schema": {"type": "string"},
                            "example": "email\ngone@example.com\nspam-trap@example.org\n"}}},
           description="Send `{\"emails\": [...], \"reason\": \"manual\"}`, or a CSV body (`Content-Type: text/csv`) "
                       "whose first column holds the addresses (a header row is skipped; the reason is `manual`, "
                       "or `?reason=`). An address is one entry in any case (`ANN@example.com` is already listed "
                       "when `ann@example.com` is). Active contacts with these addresses, in any case, become "
                       "`unsubscribed`.")
def add_suppressions():
    mimetype = request.mimetype or ""
    if mimetype in ("text/csv", "text/plain", "application/csv"):
        raw = request.get_data(cache=True)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        emails = suppressions.emails_from_csv(text)
        reason, note = request.args.get("reason", "manual"), request.args.get("note")
    elif is_json_mimetype(mimetype) or not mimetype:
        data = json_body()
        unknown = [k for k in data if k not in ("emails", "reason", "note")]
        if unknown:
            raise ValidationError("Unknown field.", [{"field": k, "issue": "Unknown field; use emails, reason, note."}
                                                     for k in unknown])
        if "emails" not in data:
            raise ValidationError("emails is required.", [{"field": "emails", "issue": "Required."}])
        emails, reason, note = data["emails"], data.get("reason", "manual"), data.get("note")
        if note is not None and not isinstance(note, str):
            raise ValidationError("note must be a string.", [{"field": "note", "issue": "Must be a string."}])
    else:
        raise ValidationError("Send JSON (application/json) or CSV (text/csv).",
                              [{"field": "body", "issue": f"Unsupported Content-Type {mimetype}."}])
    result = suppressions.add_suppressions(g.api_actor, emails, reason=reason, note=note)
    return envelope(result)


@bp.delete("/suppressions")
@api_route("contacts:write", summary="Remove addresses from the suppression list", request=REMOVE_REQUEST,
           response=REMOVE_RESULT,
           description="Removing a suppression does not re-activate the contact; update its status separately.")
def remove_suppressions():
    data = json_body()
    if "emails" not in data or [k for k in data if k != "emails"]:
        raise ValidationError("Send {\"emails\": [...]}.", [{"field": "emails", "issue": "Required (a list)."}])
    return envelope({"removed": suppressions.remove_suppressions(g.api_actor, data["emails"])})


@bp.delete("/suppressions/<path:email>")
@api_route("contacts:write", summary="Remove one address from the suppression list", status=204,
           response_description="Removed.",
           description="404 when the address is not on the list. The contact keeps its status.")
def remove_suppression(email):
    suppressions.get_suppression(g.api_actor.account_id, email)
    suppressions.remove_suppressions(g.api_actor, [email])
    return "", 204
