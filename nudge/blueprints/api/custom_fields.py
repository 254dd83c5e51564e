"""/api/v1/custom-fields: the account's custom field definitions (at most 50)."""
from flask import g

from nudge.blueprints.api import bp
from nudge.blueprints.api.auth import api_route
from nudge.blueprints.api.openapi import schema
from nudge.blueprints.api.pagination import paginate_list
from nudge.blueprints.api.responses import envelope, json_body
from nudge.models.types import iso
from nudge.errors import ValidationError
from nudge.models import CUSTOM_FIELD_TYPES
from nudge.services import custom_fields

CUSTOM_FIELD = schema("CustomField", {
    "type": "object", "required": ["name", "label", "type", "options", "created_at"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,49}$",
                 "description": "The key in a contact's `custom_fields` and in `field.<name>` filters."},
        "label": {"type": "string", "maxLength": 100},
        "type": {"type": "string", "enum": list(CUSTOM_FIELD_TYPES)},
        "options": {"type": ["array", "null"], "items": {"type": "string"},
                    "description": "The allowed values of a `choice` field."},
        "created_at": {"type": "string", "format": "date-time", "readOnly": True},
    },
    "example": {"name": "plan", "label": "Plan", "type": "choice", "options": ["free", "pro"],
                "created_at": "2025-01-31T09:30:00Z"},
})

CUSTOM_FIELD_CREATE = schema("CustomFieldCreate", {
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,49}$"},
        "label": {"type": "string", "maxLength": 100},
        "type": {"type": "string", "enum": list(CUSTOM_FIELD_TYPES), "default": "text"},
        "options": {"type": "array", "items": {"type": "string"}},
    },
    "example": {"name": "plan", "label": "Plan", "type": "choice", "options": ["free", "pro"]},
})

CUSTOM_FIELD_UPDATE = schema("CustomFieldUpdate", {
    "type": "object", "additionalProperties": False, "minProperties": 1,
    "description": "The label and (for choice fields) the options can change; name and type are fixed.",
    "properties": {"label": {"type": "string", "maxLength": 100},
                   "options": {"type": "array", "items": {"type": "string"}}},
    "example": {"label": "Subscription plan"},
})


def field_json(field):
    return {"name": field.name, "label": field.label, "type": field.type,
            "options": list(field.options) if field.options is not None else None, "created_at": iso(field.created_at)}


def _only(data, allowed):
    errors = [{"field": k, "issue": "Unknown or read-only field; allowed: " + ", ".join(allowed) + "."}
              for k in data if k not in allowed]
    if errors:
        raise ValidationError(errors[0]["issue"], errors)


@bp.get("/custom-fields")
@api_route("contacts:read", summary="List custom fields", response=CUSTOM_FIELD, paginated=True,
           description=f"The account's custom field definitions (at most {custom_fields.MAX_FIELDS}).")
def list_custom_fields():
    body = paginate_list(custom_fields.list_fields(g.api_actor.account_id), field_json)
    return envelope(body["data"], meta=body["meta"], links=body["links"])


@bp.post("/custom-fields")
@api_route("contacts:write", summary="Create a custom field", request=CUSTOM_FIELD_CREATE, response=CUSTOM_FIELD,
           status=201, errors=(409,),
           description=f"Types: {', '.join(CUSTOM_FIELD_TYPES)}. A `choice` field needs `options`. "
                       f"An account can have at most {custom_fields.MAX_FIELDS} fields.")
def create_custom_field():
    data = json_body()
    _only(data, ("name", "label", "type", "options"))
    for key in ("name", "label", "type"):
        if key in data and not isinstance(data[key], str):
            raise ValidationError(f"{key} must be a string.", [{"field": key, "issue": "Must be a string."}])
    field = custom_fields.create_field(g.api_actor, name=data.get("name"), label=data.get("label"),
                                       type=data.get("type", "text"), options=data.get("options"))
    return envelope(field_json(field), status=201, links={"self": f"/api/v1/custom-fields/{field.name}"})


@bp.put("/custom-fields/<name>")
@api_route("contacts:write", summary="Update a custom field", request=CUSTOM_FIELD_UPDATE, response=CUSTOM_FIELD)
def update_custom_field(name):
    data = json_body()
    _only(data, ("label", "options"))
    if not data:
        raise ValidationError("Nothing to change: send label and/or options.",
                              [{"field": "body", "issue": "No fields given."}])
    if "label" in data and not isinstance(data["label"], str):
        raise ValidationError("label must be a string.", [{"field": "label", "issue": "Must be a string."}])
    field = custom_fields.update_field(g.api_actor, name, label=data.get("label"), options=data.get("options"))
    return envelope(field_json(field))


@bp.delete("/custom-fields/<name>")
@api_route("contacts:write", summary="Delete a custom field", status=204, response_description="Deleted.",
           description="Removes the definition and its value from every contact of the account.")
def delete_custom_field(name):
    custom_fields.delete_field(g.api_actor, name)
    return "", 204
