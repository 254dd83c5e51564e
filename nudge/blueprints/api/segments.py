"""Segments: /api/v1/segments (docs/segments.md has the condition language)."""
from flask import g

from nudge.blueprints.api import bp
from nudge.blueprints.api.auth import api_route
from nudge.blueprints.api.openapi import ref, schema
from nudge.blueprints.api.pagination import paginated_response
from nudge.blueprints.api.responses import envelope, json_body
from nudge.models.types import iso
from nudge.errors import ValidationError
from nudge.services import segments

CONDITION_GROUP = schema("SegmentConditions", {
    "type": "object",
    "description": "A group of conditions; see docs/segments.md for every field, operator and their semantics.",
    "required": ["match", "conditions"],
    "properties": {
        "match": {"type": "string", "enum": ["all", "any"]},
        "conditions": {"type": "array", "maxItems": segments.MAX_CONDITIONS, "items": {"oneOf": [
            {"$ref": "#/components/schemas/SegmentConditions"},
            {"type": "object", "title": "Field rule", "required": ["field", "op"], "properties": {
                "field": {"type": "string", "description": "email, first_name, last_name, status, tags, created_at, "
                                                           "subscription_date or custom.<name>"},
                "op": {"type": "string", "enum": list(segments.ALL_OPS)},
                "value": {"description": "A string, number, boolean, ISO date or list, depending on field and op."}}},
            {"type": "object", "title": "Engagement rule", "required": ["event", "op"], "properties": {
                "event": {"type": "string", "enum": list(segments.EVENTS)},
                "op": {"type": "string", "enum": list(segments.EVENT_OPS)},
                "campaign_id": {"type": "string", "format": "uuid"},
                "within_days": {"type": "integer", "minimum": 1}}},
        ]}},
    },
    "example": {"match": "all", "conditions": [
        {"field": "email", "op": "ends_with", "value": "@example.com"},
        {"match": "any", "conditions": [
            {"field": "tags", "op": "contains_any", "value": ["vip"]},
            {"event": "opened", "op": "has", "within_days": 30}]}]},
})

SEGMENT = schema("Segment", {
    "type": "object",
    "required": ["id", "name", "type", "conditions", "contact_count", "last_calculated", "created_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid", "readOnly": True},
        "name": {"type": "string", "maxLength": 255},
        "type": {"type": "string", "enum": list(segments.SEGMENT_TYPES),
                 "description": "dynamic: live conditions; static: explicit members (POST /segments/{id}/members)."},
        "conditions": CONDITION_GROUP,
        "contact_count": {"type": "integer", "readOnly": True,
                          "description": "Cached count, refreshed on save, on membership changes and on GET of one segment."},
        "last_calculated": {"type": ["string", "null"], "format": "date-time", "readOnly": True},
        "created_at": {"type": "string", "format": "date-time", "readOnly": True},
    },
    "example": {"id": "1f0b7d7e-5b9a-4c1e-9a55-0d7c1f6a9b21", "name": "Engaged VIPs", "type": "dynamic",
                "conditions": {"match": "all", "conditions": [
                    {"field": "tags", "op": "contains_any", "value": ["vip"]},
                    {"event": "opened", "op": "has", "within_days": 30}]},
                "contact_count": 1234, "last_calculated": "2025-01-31T09:30:00Z", "created_at": "2025-01-02T10:00:00Z"},
})

SEGMENT_CREATE = schema("SegmentCreate", {
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 255},
        "type": {"type": "string", "enum": list(segments.SEGMENT_TYPES), "default": "dynamic"},
        "conditions": CONDITION_GROUP,
    },
    "example": {"name": "Gmail users", "conditions": {"match": "all", "conditions": [
        {"field": "email", "op": "ends_with", "value": "@gmail.com"}]}},
})

SEGMENT_UPDATE = schema("SegmentUpdate", {
    "type": "object", "minProperties": 1, "additionalProperties": False,
    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 255}, "conditions": CONDITION_GROUP},
})

COUNT_REQUEST = schema("SegmentCountRequest", {
    "type": "object", "required": ["conditions"], "properties": {"conditions": CONDITION_GROUP},
})
COUNT = {"type": "object", "required": ["count"], "properties": {"count": {"type": "integer"}}}

MEMBERS_REQUEST = schema("SegmentMembersRequest", {
    "type": "object", "required": ["contact_ids"], "properties": {
        "contact_ids": {"type": "array", "minItems": 1, "maxItems": segments.MAX_MEMBERS_PER_CALL,
                        "items": {"type": "string", "format": "uuid"}}},
    "example": {"contact_ids": ["6d1f4a6e-0b57-4d5c-9f0e-1a2b3c4d5e6f"]},
})
MEMBERS_RESULT = {"type": "object", "properties": {
    "added": {"type": "integer", "description": "Contacts added (unknown ids and current members are skipped)."},
    "removed": {"type": "integer"},
    "contact_count": {"type": "integer"}}}


def segment_json(segment):
    return {
        "id": str(segment.id),
        "name": segment.name,
        "type": segment.type,
        "conditions": segment.conditions,
        "contact_count": segment.contact_count,
        "last_calculated": iso(segment.last_calculated),
        "created_at": iso(segment.created_at),
    }


def _check_keys(body, allowed):
    unknown = [{"field": key, "issue": "Unknown field; allowed: " + ", ".join(allowed) + "."}
               for key in body if key not in allowed]
    if unknown:
        raise ValidationError("Unknown fields in the request body.", unknown)


@bp.get("/segments")
@api_route("contacts:read", summary="List segments", response=SEGMENT, paginated=True, tags=["Segments"],
           description="The account's segments by name, with their cached contact counts.")
def list_segments():
    return paginated_response(segments.segments_query(g.api_actor.account_id), segment_json)


@bp.post("/segments")
@api_route("contacts:write", summary="Create a segment", request=SEGMENT_CREATE, response=SEGMENT, status=201,
           tags=["Segments"], errors=(409,),
           description="A dynamic segment needs `conditions`; a static one (`\"type\": \"static\"`) starts empty "
                       "and gets members through `POST /segments/{id}/members`.")
def create_segment():
    body = json_body()
    _check_keys(body, ("name", "type", "conditions"))
    segment = segments.create_segment(g.api_actor, body.get("name"), body.get("type", "dynamic"), body.get("conditions"))
    return envelope(segment_json(segment), status=201)


@bp.post("/segments/count")
@api_route("contacts:read", summary="Count contacts matching conditions", request=COUNT_REQUEST, response=COUNT,
           tags=["Segments"], description="For unsaved conditions (a segment builder's live count).")
def count_segment():
    body = json_body()
    if "conditions" not in body:
        raise ValidationError("Send the conditions to count.", [{"field": "conditions", "issue": "Required."}])
    return envelope({"count": segments.count_matching(g.api_actor.account_id, body["conditions"])})


@bp.get("/segments/<uuid:segment_id>")
@api_route("contacts:read", summary="Show a segment", response=SEGMENT, tags=["Segments"],
           description="Recounts the segment (the count is live) and returns it.")
def show_segment(segment_id):
    segment = segments.get_segment(g.api_actor.account_id, segment_id)
    segments.refresh_count(segment)
    return envelope(segment_json(segment))


@bp.put("/segments/<uuid:segment_id>")
@api_route("contacts:write", summary="Update a segment", request=SEGMENT_UPDATE, response=SEGMENT,
           tags=["Segments"], errors=(409,),
           description="Change the name and, for a dynamic segment, the conditions. The type is fixed.")
def update_segment(segment_id):
    body = json_body()
    if "type" in body:
        segment = segments.get_segment(g.api_actor.account_id, segment_id)
        if body["type"] != segment.type:
            raise ValidationError("A segment's type cannot change; create a new segment.",
                                  [{"field": "type", "issue": "Read-only after creation."}])
        body = {k: v for k, v in body.items() if k != "type"}
    _check_keys(body, ("name", "conditions"))
    if not body:
        raise ValidationError("Nothing to change: send name or conditions.",
                              [{"field": "body", "issue": "No fields given."}])
    segment = segments.update_segment(g.api_actor, segment_id, name=body.get("name"),
                                      conditions=body.get("conditions"))
    return envelope(segment_json(segment))


@bp.delete("/segments/<uuid:segment_id>")
@api_route("contacts:write", summary="Delete a segment", status=204, tags=["Segments"],
           description="Deletes the segment (and a static segment's membership list); the contacts stay.")
def delete_segment(segment_id):
    segments.delete_segment(g.api_actor, segment_id)
    return "", 204


@bp.get("/segments/<uuid:segment_id>/contacts")
@api_route("contacts:read", summary="List a segment's contacts", response=ref("Contact"), paginated=True,
           tags=["Segments"], description="The contacts matching the segment now, newest first.")
def segment_contacts(segment_id):
    from nudge.services.contacts import serialize_contact
    return paginated_response(segments.segment_contacts_query(g.api_actor.account_id, segment_id), serialize_contact)


def _contact_ids_body():
    body = json_body()
    if "contact_ids" not in body:
        raise ValidationError("Send contact_ids, a list of contact IDs.", [{"field": "contact_ids", "issue": "Required."}])
    return body["contact_ids"]


@bp.post("/segments/<uuid:segment_id>/members")
@api_route("contacts:write", summary="Add contacts to a static segment", request=MEMBERS_REQUEST,
           response=MEMBERS_RESULT, tags=["Segments"],
           description="IDs that are not this account's (non-deleted) contacts, and current members, are skipped.")
def add_members(segment_id):
    added = segments.add_members(g.api_actor, segment_id, _contact_ids_body())
    segment = segments.get_segment(g.api_actor.account_id, segment_id)
    return envelope({"added": added, "contact_count": segment.contact_count})


@bp.delete("/segments/<uuid:segment_id>/members")
@api_route("contacts:write", summary="Remove contacts from a static segment", request=MEMBERS_REQUEST,
           response=MEMBERS_RESULT, tags=["Segments"])
def remove_members(segment_id):
    removed = segments.remove_members(g.api_actor, segment_id, _contact_ids_body())
    segment = segments.get_segment(g.api_actor.account_id, segment_id)
    return envelope({"removed": removed, "contact_count": segment.contact_count})
