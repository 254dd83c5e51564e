"""/api/v1/contacts: list with filters, create, show, update, soft delete, restore, history, bulk tags.

(/api/v1/contacts/import and /export belong to the import module; the id routes use <uuid:...> so
they never collide.)"""
from flask import g, request

from nudge.blueprints.api import bp
from nudge.blueprints.api.auth import api_route
from nudge.blueprints.api.openapi import schema
from nudge.blueprints.api.pagination import paginated_response
from nudge.blueprints.api.responses import envelope, json_body
from nudge.models.types import iso
from nudge.errors import ValidationError
from nudge.services import contacts
from nudge.services.contacts import WRITABLE_FIELDS

READ_ONLY = ("id", "created_at", "updated_at", "source", "unsubscribed_at", "deleted_at")
_nullable = {"type": ["string", "null"]}

CONTACT = schema("Contact", {
    "type": "object",
    "required": ["id", "email", "first_name", "last_name", "status", "tags", "custom_fields",
                 "subscription_date", "created_at", "updated_at", "source"],
    "properties": {
        "id": {"type": "string", "format": "uuid", "readOnly": True},
        "email": {"type": "string", "format": "email", "maxLength": 255},
        "first_name": {**_nullable, "maxLength": 100},
        "last_name": {**_nullable, "maxLength": 100},
        "status": {"type": "string", "enum": ["active", "unsubscribed", "bounced", "complained", "deleted"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "custom_fields": {"type": "object", "description": "Values by custom field name (see /custom-fields)."},
        "subscription_date": {"type": ["string", "null"], "format": "date-time"},
        "created_at": {"type": "string", "format": "date-time", "readOnly": True},
        "updated_at": {"type": "string", "format": "date-time", "readOnly": True},
        "source": {**_nullable, "readOnly": True, "description": "dashboard, api, import, …"},
        "unsubscribed_at": {"type": ["string", "null"], "format": "date-time", "readOnly": True},
        "deleted_at": {"type": ["string", "null"], "format": "date-time", "readOnly": True},
    },
    "example": {"id": "0d9f6a1e-3c55-4b8e-9a55-7d1c2f6a9b21", "email": "ann@example.com", "first_name": "Ann",
                "last_name": "Lee", "status": "active", "tags": ["customer", "vip"],
                "custom_fields": {"company": "Acme", "plan": "pro"}, "subscription_date": "2025-01-31T09:30:00Z",
                "created_at": "2025-01-31T09:30:00Z", "updated_at": "2025-02-02T10:00:00Z", "source": "api",
                "unsubscribed_at": None, "deleted_at": None},
})

CONTACT_WRITE = schema("ContactWrite", {
    "type": "object", "additionalProperties": False,
    "description": "Create: `email` is required. Update: any subset; `custom_fields` merges (a key set to null "
                   "or \"\" clears that value, keys left out are kept); `tags` replaces the list.",
    "properties": {
        "email": {"type": "string", "format": "email"},
        "first_name": {**_nullable, "maxLength": 100},
        "last_name": {**_nullable, "maxLength": 100},
        "status": {"type": "string", "enum": list(contacts.SETTABLE_STATUSES)},
        "tags": {"type": "array", "items": {"type": "string"}},
        "custom_fields": {"type": "object"},
        "subscription_date": {"type": ["string", "null"], "format": "date-time"},
    },
    "example": {"email": "ann@example.com", "first_name": "Ann", "tags": ["customer"],
                "custom_fields": {"company": "Acme"}},
})

EVENT = schema("ContactEvent", {
    "type": "object", "required": ["id", "event_type", "created_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "event_type": {"type": "string", "examples": ["contact.subscribed", "email.opened"]},
        "campaign_id": {"type": ["string", "null"], "format": "uuid"},
        "campaign_name": {"type": ["string", "null"], "description": "The campaign's name (null for events not "
                          "tied to a campaign).", "examples": ["Spring sale"]},
        "url": {"type": ["string", "null"], "description": "The link clicked (email.clicked events), else null."},
        "data": {"type": "object"},
        "created_at": {"type": "string", "format": "date-time"},
    },
})

TAGS_REQUEST = schema("ContactTagsChange", {
    "type": "object", "additionalProperties": False,
    "description": "Add and/or remove tags on the contacts listed in `contact_ids` (up to 10,000) or on every "
                   "contact matching `filter` (the list endpoint's filters as an object, e.g. "
                   "`{\"status\": \"active\", \"tags\": [\"vip\"], \"fields\": {\"plan\": \"pro\"}}`).",
    "properties": {
        "add": {"type": "array", "items": {"type": "string"}},
        "remove": {"type": "array", "items": {"type": "string"}},
        "contact_ids": {"type": "array", "items": {"type": "string", "format": "uuid"}, "maxItems": 10000},
        "filter": {"type": "object"},
    },
    "example": {"add": ["vip"], "remove": ["trial"], "contact_ids": ["0d9f6a1e-3c55-4b8e-9a55-7d1c2f6a9b21"]},
})

TAGS_RESULT = {"type": "object", "required": ["added", "removed"], "properties": {
    "added": {"type": "integer", "description": "Contacts that gained at least one tag."},
    "removed": {"type": "integer", "description": "Contacts that lost at least one tag."}}}


def _query(name, description, schema_=None, explode=None):
    parameter = {"name": name, "in": "query", "required": False, "description": description,
                 "schema": schema_ or {"type": "string"}}
    if explode is not None:
        parameter["explode"] = explode
    return parameter


LIST_PARAMETERS = [
    _query("email", "Exact address (case-insensitive)."),
    _query("status", "active, unsubscribed, bounced, complained or deleted; repeat or comma-separate for several. "
                     "Deleted contacts are listed only when asked for."),
    _query("tag", "Contacts having this tag; repeat for contacts having all of them.",
           {"type": "array", "items": {"type": "string"}}, explode=True),
    _query("segment_id", "Contacts in this segment.", {"type": "string", "format": "uuid"}),
    _query("q", "Search in email, first and last name."),
    _query("created_after", "Created at or after (ISO 8601 date or date-time; UTC unless a zone is given).",
           {"type": "string", "format": "date-time"}),
    _query("created_before", "Created before (ISO 8601 date or date-time).", {"type": "string", "format": "date-time"}),
    _query("sort", "created_at (default, newest first as -created_at), updated_at, email, first_name, last_name, "
                   "status, subscription_date; prefix with - for descending."),
]


def event_json(event):
    return {"id": str(event.id), "event_type": event.event_type,
            "campaign_id": str(event.campaign_id) if event.campaign_id else None,
            "campaign_name": event.campaign.name if event.campaign else None,
            "url": (event.event_data or {}).get("url"),
            "data": event.event_data or {}, "created_at": iso(event.created_at)}


def _check_fields(data, *, creating):
    errors = [{"field": f, "issue": "Read-only field."} for f in data if f in READ_ONLY]
    errors += [{"field": f, "issue": "Unknown field; writable fields are " + ", ".join(WRITABLE_FIELDS) + "."}
               for f in data if f not in READ_ONLY and f not in WRITABLE_FIELDS]
    if errors:
        raise ValidationError(errors[0]["issue"] if len(errors) == 1 else "Some fields cannot be written.", errors)
    if not creating and not data:
        raise ValidationError("Nothing to change: send at least one of " + ", ".join(WRITABLE_FIELDS) + ".",
                              [{"field": "body", "issue": "No fields given."}])


@bp.get("/contacts")
@api_route("contacts:read", summary="List contacts", response=CONTACT, paginated=True, parameters=LIST_PARAMETERS,
           errors=(404,),
           description="The account's contacts, newest first unless `sort` says otherwise. Filters combine with AND. "
                       "Custom fields filter as `field.<name>=value` (e.g. `?field.plan=pro`); an empty value "
                       "matches contacts without that field; an undefined field is a VALIDATION_ERROR; a "
                       "`segment_id` that is not one of the account's segments is 404.")
def list_contacts():
    actor = g.api_actor
    filters = contacts.parse_filters(request.args, actor.account_id)
    return paginated_response(contacts.contacts_query(actor.account_id, filters), contacts.serialize_contact)


@bp.post("/contacts")
@api_route("contacts:write", summary="Create a contact", request=CONTACT_WRITE, response=CONTACT, status=201,
           errors=(409,),
           description="Emails are normalised (trimmed, domain lower-cased) and kept as typed, but an address is "
                       "one contact in any case: `Ann@example.com` and `ann@example.com` are the same contact "
                       "(409 CONFLICT for a second one; update it with PUT or `POST /contacts/import` with "
                       "`update_existing`). The address of a deleted contact brings that contact back. "
                       "An address on the suppression list is created as `unsubscribed`, never `active`.")
def create_contact():
    data = json_body()
    _check_fields(data, creating=True)
    contact = contacts.create_contact(g.api_actor, data, source="api")
    return envelope(contacts.serialize_contact(contact), status=201,
                    links={"self": f"/api/v1/contacts/{contact.id}"},
                    headers={"Location": f"/api/v1/contacts/{contact.id}"})


@bp.get("/contacts/<uuid:contact_id>")
@api_route("contacts:read", summary="Show a contact", response=CONTACT)
def show_contact(contact_id):
    return envelope(contacts.serialize_contact(contacts.get_contact(g.api_actor.account_id, contact_id)))


@bp.put("/contacts/<uuid:contact_id>")
@api_route("contacts:write", summary="Update a contact", request=CONTACT_WRITE, response=CONTACT, errors=(409,),
           description="Partial update: fields left out keep their value. Setting `status` to `unsubscribed` "
                       "adds the address to the suppression list; a suppressed address cannot be made `active`.")
def update_contact(contact_id):
    data = json_body()
    _check_fields(data, creating=False)
    contact = contacts.update_contact(g.api_actor, contact_id, data)
    return envelope(contacts.serialize_contact(contact))


@bp.delete("/contacts/<uuid:contact_id>")
@api_route("contacts:write", summary="Delete a contact", status=204,
           response_description="Deleted (restorable for 30 days).",
           description="Soft delete: the contact disappears from every list and can be restored with "
                       "`POST /contacts/{id}/restore` for 30 days, after which it is purged.")
def delete_contact(contact_id):
    contacts.delete_contact(g.api_actor, contact_id)
    return "", 204


@bp.post("/contacts/<uuid:contact_id>/restore")
@api_route("contacts:write", summary="Restore a deleted contact", response=CONTACT,
           description="Undo a delete within 30 days. The contact gets its previous status back "
                       "(`unsubscribed` if its address has been suppressed since).")
def restore_contact(contact_id):
    contact = contacts.restore_contact(g.api_actor, contact_id)
    return envelope(contacts.serialize_contact(contact))


@bp.get("/contacts/<uuid:contact_id>/history")
@api_route("contacts:read", summary="A contact's history", response=EVENT, paginated=True,
           description="The contact's events (subscribed, unsubscribed, tags, emails sent/opened/clicked, …), "
                       "newest first.")
def contact_history(contact_id):
    return paginated_response(contacts.contact_history(g.api_actor.account_id, contact_id), event_json)


@bp.post("/contacts/tags")
@api_route("contacts:write", summary="Add or remove tags on many contacts", request=TAGS_REQUEST,
           response=TAGS_RESULT, errors=(404,),
           description="A `filter.segment_id` that is not one of the account's segments is 404.")
def change_tags():
    data = json_body()
    unknown = [k for k in data if k not in ("add", "remove", "contact_ids", "filter")]
    errors = [{"field": k, "issue": "Unknown field; use add, remove, contact_ids or filter."} for k in unknown]
    if not data.get("add") and not data.get("remove"):
        errors.append({"field": "add", "issue": "Give tags to add and/or remove."})
    if ("contact_ids" in data) == ("filter" in data):
        errors.append({"field": "contact_ids", "issue": "Give either contact_ids or filter (not both)."})
    if errors:
        raise ValidationError(errors[0]["issue"], errors)
    actor = g.api_actor
    filters = None
    if "filter" in data:
        if not isinstance(data["filter"], dict):
            raise ValidationError("filter must be an object.", [{"field": "filter", "issue": "Must be an object."}])
        try:
            filters = contacts.parse_filters(data["filter"], actor.account_id)
        except ValidationError as exc:
            details = [{**d, "field": f"filter.{d['field']}" if d.get("field") else "filter"} for d in exc.details]
            raise ValidationError(exc.message, details)
    result = contacts.change_tags(actor, add=data.get("add") or [], remove=data.get("remove") or [],
                                  contact_ids=data.get("contact_ids"), filters=filters)
    return envelope(result)
