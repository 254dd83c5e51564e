"""/api/v1/sending-domains: the account's sending domains, the DNS records to publish and a live check.
Owner-level (`account:admin`), as in the dashboard (owners and admins)."""
from flask import g

from nudge.blueprints.api import bp
from nudge.blueprints.api.auth import api_route
from nudge.blueprints.api.openapi import schema
from nudge.blueprints.api.responses import envelope, json_body
from nudge.errors import ValidationError
from nudge.models.types import iso
from nudge.services import sending_domains

TAGS = ["Sending domains"]
SCOPE = "account:admin"

RECORD = {"type": ["object", "null"], "required": ["type", "name", "value"], "properties": {
    "type": {"type": "string", "enum": ["TXT"]}, "name": {"type": "string"}, "value": {"type": "string"}}}
CHECK = {"type": ["object", "null"], "description": "null until the domain has been checked.",
         "required": ["status", "name", "found", "expected", "note"], "properties": {
             "status": {"type": "string", "enum": ["ok", "missing", "wrong", "error"],
                        "description": "`error`: the lookup itself failed (it never unverifies a domain)."},
             "name": {"type": "string", "description": "The DNS name looked up."},
             "found": {"type": "array", "items": {"type": "string"}, "description": "The TXT records found there."},
             "expected": {"type": "string", "description": "What to publish there."},
             "note": {"type": "string"}}}

DOMAIN = schema("SendingDomain", {
    "type": "object",
    "required": ["id", "domain", "status", "verified", "verify_record", "dkim_selector", "dkim_record", "checks",
                 "verified_at", "checked_at", "created_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid", "readOnly": True},
        "domain": {"type": "string", "description": "ASCII (internationalised names IDNA-encoded), lower case."},
        "status": {"type": "string", "enum": ["pending", "verified"]},
        "verified": {"type": "boolean"},
        "verify_record": {**RECORD, "type": "object",
                          "description": "The TXT record that proves ownership: `nudge-verify=<token>` at the domain."},
        "dkim_selector": {"type": "string"},
        "dkim_record": {**RECORD, "description": "The domain's DKIM public key record (null if its key is unreadable)."},
        "checks": {"type": "object", "required": list(sending_domains.CHECKS),
                   "properties": {name: CHECK for name in sending_domains.CHECKS}},
        "verified_at": {"type": ["string", "null"], "format": "date-time"},
        "checked_at": {"type": ["string", "null"], "format": "date-time"},
        "created_at": {"type": "string", "format": "date-time"},
    },
})

DOMAIN_CREATE = schema("SendingDomainCreate", {
    "type": "object", "required": ["domain"], "additionalProperties": False,
    "properties": {"domain": {"type": "string", "maxLength": 253}},
    "example": {"domain": "shop.example"},
})


def domain_json(row):
    data = sending_domains.describe_domain(row)
    data.pop("dkim_key_unreadable")
    data.pop("dkim_key")
    for key in ("verified_at", "checked_at", "created_at"):
        data[key] = iso(data[key])
    return data


@bp.get("/sending-domains")
@api_route(SCOPE, summary="List sending domains", response={"type": "array", "items": DOMAIN}, tags=TAGS,
           description="The account's sending domains by name (at most "
                       f"{sending_domains.MAX_DOMAINS}), each with its records to publish and the last DNS check.")
def list_sending_domains():
    rows = sending_domains.list_domains(g.api_actor)
    return envelope([domain_json(row) for row in rows], meta={"total": len(rows)})


@bp.post("/sending-domains")
@api_route(SCOPE, summary="Add a sending domain", request=DOMAIN_CREATE, response=DOMAIN, status=201, tags=TAGS,
           errors=(409,), description="A new, unverified domain with its ownership token and its own DKIM key. "
                                      "Publish `verify_record` (and `dkim_record`), then check it. 409 when the "
                                      "domain was added already; 403 LIMIT_EXCEEDED beyond "
                                      f"{sending_domains.MAX_DOMAINS} domains.")
def create_sending_domain():
    body = json_body()
    unknown = [key for key in body if key != "domain"]
    if unknown or "domain" not in body:
        raise ValidationError("Send {\"domain\": \"example.com\"}.",
                              [{"field": key, "issue": "Unknown field."} for key in unknown]
                              or [{"field": "domain", "issue": "Required."}])
    return envelope(domain_json(sending_domains.add_domain(g.api_actor, body["domain"])), status=201)


@bp.get("/sending-domains/<uuid:domain_id>")
@api_route(SCOPE, summary="Show a sending domain", response=DOMAIN, tags=TAGS)
def show_sending_domain(domain_id):
    return envelope(domain_json(sending_domains.get_domain(g.api_actor, domain_id)))


@bp.post("/sending-domains/<uuid:domain_id>/check")
@api_route(SCOPE, summary="Check a sending domain's DNS now", response=DOMAIN, tags=TAGS,
           description="Looks up the ownership record, SPF, DKIM and DMARC now (time-bounded) and answers what was "
                       "found. The domain is verified while its ownership record is published; a daily re-check "
                       "unverifies it when the record is gone.")
def check_sending_domain(domain_id):
    return envelope(domain_json(sending_domains.check_domain(g.api_actor, domain_id)))


@bp.delete("/sending-domains/<uuid:domain_id>")
@api_route(SCOPE, summary="Remove a sending domain", status=204, tags=TAGS, response_description="Removed.",
           description="Its DKIM key is deleted: mail from it is no longer signed.")
def delete_sending_domain(domain_id):
    sending_domains.remove_domain(g.api_actor, domain_id)
    return "", 204
