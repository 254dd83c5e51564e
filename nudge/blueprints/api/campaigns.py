"""Campaigns: /api/v1/campaigns (spec section 1), sending, scheduling, tests and the status changes."""
from flask import g, request

from nudge.blueprints.api import bp
from nudge.blueprints.api.auth import api_route
from nudge.blueprints.api.openapi import schema
from nudge.blueprints.api.pagination import paginated_response
from nudge.blueprints.api.responses import envelope, json_body
from nudge.errors import ValidationError, field_error
from nudge.models.types import iso
from nudge.services import campaigns

TAGS = ["Campaigns"]
STATUS_ERRORS = (409,)
SEGMENT_IDS = {"type": "array", "items": {"type": "string", "format": "uuid"},
               "maxItems": campaigns.MAX_AUDIENCE_SEGMENTS}

AUDIENCE = schema("CampaignAudience", {
    "type": ["object", "null"],
    "description": "Who receives the campaign: everyone (`all`), or contacts in any of `segments` or with any of "
                   "`tags`; minus `exclude_segments` in both cases. Only active contacts who are not on the "
                   "suppression list are ever mailed. An empty audience may be saved; it blocks sending.",
    "additionalProperties": False,
    "properties": {
        "all": {"type": "boolean"},
        "segments": SEGMENT_IDS,
        "exclude_segments": SEGMENT_IDS,
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 100}},
    },
    "example": {"segments": ["1f0b7d7e-5b9a-4c1e-9a55-0d7c1f6a9b21"], "exclude_segments": [], "tags": ["vip"]},
})

STATS = schema("CampaignStats", {
    "type": "object",
    "description": "Counters kept as the campaign sends and as recipients open, click, unsubscribe or bounce.",
    "properties": {name: {"type": "integer", "minimum": 0} for name in
                   ("recipients", "sent", "failed", "delivered", "opened", "clicked", "unsubscribed", "bounced",
                    "complained")},
})

READINESS_ITEM = {"type": "object", "required": ["code", "message", "blocking"], "properties": {
    "code": {"type": "string", "description": "subject_missing, from_email_missing, from_email_unverified (blocking "
                                              "where the server requires verified senders, a note otherwise), "
                                              "audience_empty, "
                                              "segment_missing, content_missing, unsubscribe_missing, "
                                              "postal_address_missing, account_postal_address_missing, "
                                              "merge_tag_unknown (a merge tag of the subject, preheader or "
                                              "content that names nothing, with the closest real one), or a "
                                              "render warning (size, image_alt, link_scheme)."},
    "message": {"type": "string", "description": "What is wrong and how to fix it."},
    "blocking": {"type": "boolean", "description": "True when it prevents sending and scheduling."},
    "field": {"type": "string", "description": "merge_tag_unknown only: subject, preheader or content."}}}

CAMPAIGN = schema("Campaign", {
    "type": "object",
    "required": ["id", "name", "status", "audience", "stats", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid", "readOnly": True},
        "name": {"type": "string", "maxLength": 255},
        "subject": {"type": ["string", "null"], "maxLength": 500, "description": "Merge tags allowed."},
        "from_name": {"type": ["string", "null"], "maxLength": 100},
        "from_email": {"type": ["string", "null"], "format": "email"},
        "reply_to": {"type": ["string", "null"], "format": "email"},
        "content_html": {"type": ["string", "null"],
                         "description": "The HTML with its merge tags: a draft's current content (from its "
                                        "template), the copy sent once it is scheduled or sent. Left out of lists."},
        "content_text": {"type": ["string", "null"], "description": "The plain-text part. Left out of lists."},
        "template_id": {"type": ["string", "null"], "format": "uuid",
                        "description": "The template whose latest version is sent (copied in at send time)."},
        "status": {"type": "string", "enum": list(campaigns.STATUSES), "readOnly": True},
        "scheduled_at": {"type": ["string", "null"], "format": "date-time", "readOnly": True},
        "sent_at": {"type": ["string", "null"], "format": "date-time", "readOnly": True},
        "created_at": {"type": "string", "format": "date-time", "readOnly": True},
        "updated_at": {"type": "string", "format": "date-time", "readOnly": True},
        "audience": AUDIENCE,
        "stats": STATS,
        "paused_reason": {"type": ["string", "null"], "readOnly": True,
                          "description": "Why the campaign paused itself (failure or bounce spike, providers down)."},
        "readiness": {"type": "array", "items": READINESS_ITEM, "readOnly": True,
                      "description": "The checklist before sending (single-campaign responses)."},
    },
    "example": {"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "name": "May newsletter",
                "subject": "What's new in May, {{ contact.first_name | default(\"friend\") }}",
                "from_name": "Shop", "from_email": "news@shop.example", "reply_to": None, "template_id": None,
                "status": "draft", "scheduled_at": None, "sent_at": None, "created_at": "2025-05-01T09:00:00Z",
                "updated_at": "2025-05-01T09:00:00Z", "audience": {"all": True, "exclude_segments": []},
                "stats": {"recipients": 0, "sent": 0, "failed": 0, "delivered": 0, "opened": 0, "clicked": 0,
                          "unsubscribed": 0, "bounced": 0, "complained": 0}},
})

WRITABLE = {
    "name": {"type": "string", "minLength": 1, "maxLength": 255},
    "subject": {"type": ["string", "null"], "maxLength": 500},
    "from_name": {"type": ["string", "null"], "maxLength": 100},
    "from_email": {"type": ["string", "null"], "format": "email"},
    "reply_to": {"type": ["string", "null"], "format": "email"},
    "content_html": {"type": ["string", "null"], "description": "Raw HTML (CSS is inlined, the text part derived); "
                                                                "replaces template_id."},
    "content_text": {"type": ["string", "null"]},
    "template_id": {"type": ["string", "null"], "format": "uuid",
                    "description": "One of your templates or a gallery one; not together with content_html."},
    "audience": AUDIENCE,
}
CAMPAIGN_CREATE = schema("CampaignCreate", {
    "type": "object", "required": ["name"], "additionalProperties": False, "properties": WRITABLE,
    "description": "from_name and from_email default to the account's default sender.",
    "example": {"name": "May newsletter", "subject": "What's new in May", "template_id":
                "1f0b7d7e-5b9a-4c1e-9a55-0d7c1f6a9b21", "audience": {"segments": [], "tags": ["customers"]}},
})
CAMPAIGN_UPDATE = schema("CampaignUpdate", {
    "type": "object", "minProperties": 1, "additionalProperties": False, "properties": WRITABLE,
})
SEND_REQUEST = schema("CampaignSendRequest", {
    "type": "object", "additionalProperties": False,
    "properties": {"scheduled_at": {
        "type": "string", "description": "ISO 8601. Without an offset it is read in the account's time zone. "
                                         "Omit it (or send no body) to send now."}},
    "example": {"scheduled_at": "2025-06-01T09:00"},
})
TEST_REQUEST = schema("CampaignTestRequest", {
    "type": "object", "required": ["emails"], "additionalProperties": False,
    "properties": {
        "emails": {"type": "array", "minItems": 1, "maxItems": campaigns.MAX_TEST_EMAILS,
                   "items": {"type": "string", "format": "email"}},
        "contact_id": {"type": "string", "format": "uuid",
                       "description": "Personalise for this contact; a sample contact when omitted."}},
    "example": {"emails": ["me@shop.example"]},
})
TEST_RESULT = {"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": {
    "type": "object", "required": ["email", "status"], "properties": {
        "email": {"type": "string"}, "status": {"type": "string", "description": "sent or failed"},
        "error": {"type": ["string", "null"]}}}}}}
COUNT_REQUEST = schema("CampaignAudienceCountRequest", {
    "type": "object", "required": ["audience"], "properties": {"audience": AUDIENCE}})
COUNT = {"type": "object", "required": ["count"], "properties": {"count": {"type": "integer"}}}
LIST_PARAMETERS = [
    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(campaigns.STATUSES)}},
    {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "Search name and subject."},
]


def campaign_json(campaign, *, with_content=True, readiness=None):
    """The API representation: the spec's columns, audience, status, stats (and readiness when given)."""
    data = {
        "id": str(campaign.id), "name": campaign.name, "subject": campaign.subject,
        "from_name": campaign.from_name, "from_email": campaign.from_email, "reply_to": campaign.reply_to,
        "template_id": str(campaign.template_id) if campaign.template_id else None,
        "status": campaign.status, "scheduled_at": iso(campaign.scheduled_at), "sent_at": iso(campaign.sent_at),
        "created_at": iso(campaign.created_at), "updated_at": iso(campaign.updated_at),
        "audience": campaign.audience, "stats": campaigns.stats(campaign), "paused_reason": campaign.paused_reason,
    }
    if with_content:
        content = campaigns.current_content(campaign)
        data["content_html"], data["content_text"] = content.html, content.text
    if readiness is not None:
        data["readiness"] = readiness
    return data


def _one(campaign, status=200):
    return envelope(campaign_json(campaign, readiness=campaigns.readiness(campaign)), status=status)


def _optional_body():
    """The JSON body, or {} when none was sent (POST /send without a body sends now)."""
    if not request.get_data(cache=True).strip():
        return {}
    return json_body()


@bp.get("/campaigns")
@api_route("campaigns:read", summary="List campaigns", response=CAMPAIGN, paginated=True, tags=TAGS,
           parameters=LIST_PARAMETERS, description="Newest first, without content_html and content_text.")
def list_campaigns():
    status = request.args.get("status") or None
    if status is not None and status not in campaigns.STATUSES:
        raise field_error("status", "Must be one of " + ", ".join(campaigns.STATUSES) + ".")
    query = campaigns.campaigns_query(g.api_actor.account_id, q=request.args.get("q"), status=status)
    return paginated_response(query, lambda campaign: campaign_json(campaign, with_content=False))


@bp.post("/campaigns")
@api_route("campaigns:write", summary="Create a campaign", request=CAMPAIGN_CREATE, response=CAMPAIGN, status=201,
           tags=TAGS, errors=(404,),
           description="A new draft. Give its content as `template_id` (one of your templates or a gallery one) or "
                       "raw `content_html`; a `template_id` that is neither is 404.")
def create_campaign():
    return _one(campaigns.create_campaign(g.api_actor, json_body()), status=201)


@bp.post("/campaigns/audience/count")
@api_route("campaigns:read", summary="Count an audience's recipients", request=COUNT_REQUEST, response=COUNT,
           tags=TAGS, description="How many contacts an (unsaved) audience would reach now, suppressed, "
                                  "unsubscribed, bounced and deleted contacts left out.")
def count_audience():
    body = json_body()
    if "audience" not in body:
        raise ValidationError("Send the audience to count.", [{"field": "audience", "issue": "Required."}])
    audience = campaigns.validate_audience(g.api_actor.account_id, body["audience"])
    return envelope({"count": campaigns.recipient_count(g.api_actor.account_id, audience)})


@bp.get("/campaigns/<uuid:campaign_id>")
@api_route("campaigns:read", summary="Show a campaign", response=CAMPAIGN, tags=TAGS,
           description="With `readiness`, the checklist that must be clear before it can be sent.")
def show_campaign(campaign_id):
    return _one(campaigns.get_campaign(g.api_actor.account_id, campaign_id))


@bp.put("/campaigns/<uuid:campaign_id>")
@api_route("campaigns:write", summary="Update a campaign", request=CAMPAIGN_UPDATE, response=CAMPAIGN, tags=TAGS,
           errors=STATUS_ERRORS, description="Only drafts can be changed (409 otherwise).")
def update_campaign(campaign_id):
    body = json_body()
    if not body:
        raise ValidationError("Nothing to change: send at least one field.",
                              [{"field": "body", "issue": "No fields given."}])
    return _one(campaigns.update_campaign(g.api_actor, campaign_id, body))


@bp.delete("/campaigns/<uuid:campaign_id>")
@api_route("campaigns:write", summary="Delete a campaign", status=204, tags=TAGS, errors=STATUS_ERRORS,
           description="Drafts (and campaigns cancelled before they started) only; a campaign that sent email "
                       "is kept for its report (409).")
def delete_campaign(campaign_id):
    campaigns.delete_campaign(g.api_actor, campaign_id)
    return "", 204


@bp.post("/campaigns/<uuid:campaign_id>/send")
@api_route("campaigns:write", summary="Send or schedule a campaign", request=SEND_REQUEST, response=CAMPAIGN,
           tags=TAGS, errors=STATUS_ERRORS,
           description="Without `scheduled_at` it starts sending now; with it, it is scheduled (a scheduled "
                       "campaign can be moved or sent now the same way). Refused with 400 while the readiness "
                       "checklist has blocking items (a from address that is not a verified sender, where the "
                       "server requires it, is a 400 on `from_email`), and with 403 LIMIT_EXCEEDED when the "
                       "recipients would go over the account's monthly email limit, and with 403 EMAIL_NOT_CONFIRMED while "
                       "the account's owner has not confirmed the address it signed up with (open sign-up).")
def send_campaign(campaign_id):
    body = _optional_body()
    unknown = [key for key in body if key != "scheduled_at"]
    if unknown:
        raise ValidationError("Unknown fields in the request body.",
                              [{"field": key, "issue": "Unknown field; allowed: scheduled_at."} for key in unknown])
    if "scheduled_at" in body and body["scheduled_at"] is None:
        raise field_error("scheduled_at", "Give a date and time, or leave scheduled_at out to send now.")
    if "scheduled_at" in body:
        campaign = campaigns.schedule(g.api_actor, campaign_id, body["scheduled_at"])
    else:
        campaign = campaigns.send_now(g.api_actor, campaign_id)
    return _one(campaign)


@bp.post("/campaigns/<uuid:campaign_id>/test")
@api_route("campaigns:write", summary="Send a test email", request=TEST_REQUEST, response=TEST_RESULT, tags=TAGS,
           description="The campaign as it is now, to up to 5 addresses, personalised for `contact_id` or a sample "
                       "contact. Test emails count against the monthly email limit (403 LIMIT_EXCEEDED beyond it) "
                       "and are limited per account per hour (NUDGE_TEST_SENDS_PER_HOUR, 50 by default: 429 "
                       "RATE_LIMITED with `Retry-After` beyond it). A from address that is not a verified sender, "
                       "where the server requires it, is a 400 on `from_email`. 403 EMAIL_NOT_CONFIRMED while the account's "
                       "owner has not confirmed the address it signed up with (open sign-up).")
def test_campaign(campaign_id):
    body = json_body()
    unknown = [key for key in body if key not in ("emails", "contact_id")]
    if unknown:
        raise ValidationError("Unknown fields in the request body.",
                              [{"field": key, "issue": "Unknown field; allowed: emails, contact_id."}
                               for key in unknown])
    if "emails" not in body:
        raise field_error("emails", "Required: a list of up to 5 addresses.")
    if isinstance(body["emails"], str):
        raise field_error("emails", "Must be a list of email addresses.")
    results = campaigns.send_test(g.api_actor, campaign_id, body["emails"], contact_id=body.get("contact_id"))
    return envelope({"results": results})


def _status_route(action, summary, description):
    """POST /campaigns/{id}/<action>: one status change, answering the campaign (409 when not allowed)."""
    change = getattr(campaigns, action)

    def view(campaign_id):
        return _one(change(g.api_actor, campaign_id))
    view.__name__ = f"{action}_campaign"
    bp.post(f"/campaigns/<uuid:campaign_id>/{action}")(
        api_route("campaigns:write", summary=summary, response=CAMPAIGN, tags=TAGS, errors=STATUS_ERRORS,
                  description=description)(view))


_status_route("pause", "Pause a sending campaign",
              "Stops after the emails in flight; resume carries on with the recipients not reached yet.")
_status_route("resume", "Resume a paused campaign", "Sending carries on where it stopped.")
_status_route("cancel", "Cancel a campaign",
              "A scheduled campaign is not sent; a sending or paused one stops for good (recipients not reached "
              "yet get nothing).")
_status_route("unschedule", "Unschedule a campaign", "A scheduled campaign goes back to draft, to be edited.")


@bp.post("/campaigns/<uuid:campaign_id>/duplicate")
@api_route("campaigns:write", summary="Duplicate a campaign", response=CAMPAIGN, status=201, tags=TAGS,
           description="A new draft with the same details, audience and content (any status may be duplicated).")
def duplicate_campaign(campaign_id):
    return _one(campaigns.duplicate_campaign(g.api_actor, campaign_id), status=201)
