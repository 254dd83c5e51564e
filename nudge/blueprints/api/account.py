"""GET/PUT /api/v1/account: the token's own account."""
from flask import g

from nudge.blueprints.api import bp
from nudge.blueprints.api.auth import api_route, current_account
from nudge.blueprints.api.openapi import schema
from nudge.blueprints.api.responses import envelope, json_body
from nudge.models.types import iso
from nudge.blueprints.common import client_ip
from nudge.errors import ValidationError
from nudge.services import accounts

WRITABLE = accounts.SETTINGS_FIELDS
READ_ONLY = ("id", "email", "plan_type", "monthly_email_limit", "usage", "created_at")

_nullable_string = {"type": ["string", "null"]}

ACCOUNT = schema("Account", {
    "type": "object",
    "required": ["id", "name", "email", "plan_type", "monthly_email_limit", "usage", "postal_address",
                 "default_from_name", "default_from_email", "timezone", "created_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid", "readOnly": True},
        "name": {"type": "string", "maxLength": 255},
        "email": {"type": "string", "format": "email", "readOnly": True},
        "plan_type": {"type": "string", "enum": ["starter", "professional", "enterprise"], "readOnly": True},
        "monthly_email_limit": {"type": "integer", "readOnly": True},
        "usage": {"type": "object", "readOnly": True, "required": ["emails_sent_this_month"],
                  "properties": {"emails_sent_this_month": {"type": "integer"}}},
        "postal_address": {**_nullable_string, "maxLength": 1000,
                           "description": "Physical postal address printed in every email (CAN-SPAM, CASL)."},
        "default_from_name": {**_nullable_string, "maxLength": 100},
        "default_from_email": {"type": ["string", "null"], "format": "email"},
        "timezone": {"type": "string", "description": "IANA time zone, e.g. Europe/Berlin."},
        "created_at": {"type": "string", "format": "date-time", "readOnly": True},
    },
    "example": {"id": "5b0f0e3c-2f0a-4c8e-9a55-0d7c1f6a9b21", "name": "Acme Shop", "email": "owner@acme.example",
                "plan_type": "starter", "monthly_email_limit": 10000, "usage": {"emails_sent_this_month": 1200},
                "postal_address": "1 Main St, Springfield, 12345, USA", "default_from_name": "Acme Shop",
                "default_from_email": "news@acme.example", "timezone": "America/New_York",
                "created_at": "2025-01-31T09:30:00Z"},
})

ACCOUNT_UPDATE = schema("AccountUpdate", {
    "type": "object", "minProperties": 1, "additionalProperties": False,
    "description": "Any of the writable fields; the others are read-only.",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 255},
        "postal_address": {**_nullable_string, "maxLength": 1000},
        "default_from_name": {**_nullable_string, "maxLength": 100},
        "default_from_email": {"type": ["string", "null"], "format": "email"},
        "timezone": {"type": "string"},
    },
    "example": {"postal_address": "1 Main St, Springfield, 12345, USA", "timezone": "America/New_York"},
})


def account_json(account):
    return {
        "id": str(account.id),
        "name": account.name,
        "email": account.email,
        "plan_type": account.plan_type,
        "monthly_email_limit": account.monthly_email_limit,
        "usage": {"emails_sent_this_month": accounts.emails_sent_this_month(account.id)},
        "postal_address": account.postal_address,
        "default_from_name": account.default_from_name,
        "default_from_email": account.default_from_email,
        "timezone": account.timezone,
        "created_at": iso(account.created_at),
    }


@bp.get("/account")
@api_route("account:read", summary="Show the account", response=ACCOUNT,
           description="The account the access token belongs to, with this month's usage.")
def show_account():
    return envelope(account_json(current_account()))


@bp.put("/account")
@api_route("account:admin", summary="Update the account settings", request=ACCOUNT_UPDATE, response=ACCOUNT,
           description="Change any of `name`, `postal_address`, `default_from_name`, `default_from_email` "
                       "and `timezone`. Fields left out keep their value.")
def update_account():
    changes = json_body()
    errors = [{"field": f, "issue": "Read-only field."} for f in changes if f in READ_ONLY]
    errors += [{"field": f, "issue": "Unknown field; writable fields are " + ", ".join(WRITABLE) + "."}
               for f in changes if f not in READ_ONLY and f not in WRITABLE]
    if errors:
        raise ValidationError("Only " + ", ".join(WRITABLE) + " can be changed.", errors)
    if not changes:
        raise ValidationError("Nothing to change: send at least one of " + ", ".join(WRITABLE) + ".",
                              [{"field": "body", "issue": "No fields given."}])
    account = accounts.update_settings(g.api_actor, current_account(), changes, ip=client_ip())
    return envelope(account_json(account))
