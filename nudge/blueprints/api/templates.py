"""Templates: /api/v1/templates, their versions, and rendering (docs/editor.md has content_json)."""
from flask import current_app, g, request

from nudge.blueprints.api import bp
from nudge.blueprints.api.auth import api_route, current_account
from nudge.blueprints.api.openapi import schema
from nudge.blueprints.api.pagination import paginated_response
from nudge.blueprints.api.responses import envelope, json_body
from nudge.errors import ValidationError
from nudge.models.types import iso
from nudge.services import rendering
from nudge.services import templates as templates_service

TAGS = ["Templates"]
CONTENT_PROPERTIES = {
    "content_json": {"type": ["object", "null"],
                     "description": "The block editor's document (docs/editor.md), for format blocks; null otherwise."},
    "content_source": {"type": ["string", "null"],
                       "description": "MJML or HTML source, for formats mjml and html; null for blocks."},
}

TEMPLATE = schema("Template", {
    "type": "object",
    "required": ["id", "name", "category", "format", "is_global", "current_version", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid", "readOnly": True},
        "name": {"type": "string", "maxLength": 255},
        "category": {"type": ["string", "null"], "maxLength": 50},
        "format": {"type": "string", "enum": list(templates_service.FORMATS)},
        "is_global": {"type": "boolean", "readOnly": True,
                      "description": "A gallery template: readable by every account, copied on use (copy_of)."},
        "thumbnail_url": {"type": ["string", "null"], "readOnly": True},
        "description": {"type": ["string", "null"], "readOnly": True},
        "current_version": {"type": "integer", "readOnly": True},
        "created_at": {"type": "string", "format": "date-time", "readOnly": True},
        "updated_at": {"type": "string", "format": "date-time", "readOnly": True},
        "content": {"$ref": "#/components/schemas/TemplateVersion",
                    "description": "The current version (in single-template responses)."},
    },
})

VERSION = schema("TemplateVersion", {
    "type": "object",
    "required": ["version", "format", "created_at"],
    "properties": {
        "version": {"type": "integer"},
        "format": {"type": "string", "enum": list(templates_service.FORMATS)},
        "created_at": {"type": "string", "format": "date-time"},
        "created_by": {"type": ["string", "null"], "format": "uuid", "description": "The team member who saved it."},
        "content_html": {"type": "string", "description": "Compiled HTML with its merge tags (single-version responses)."},
        "content_text": {"type": ["string", "null"],
                         "description": "The generated plain-text part, with merge tags (null when none was made)."},
        **CONTENT_PROPERTIES,
    },
})

TEMPLATE_CREATE = schema("TemplateCreate", {
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 255},
        "category": {"type": ["string", "null"], "maxLength": 50},
        "format": {"type": "string", "enum": list(templates_service.FORMATS), "default": "blocks"},
        "copy_of": {"type": "string", "format": "uuid",
                    "description": "Start as a copy of this template (yours or a gallery one)."},
        **CONTENT_PROPERTIES,
    },
    "example": {"name": "Monthly newsletter", "category": "Newsletter", "format": "mjml",
                "content_source": "<mjml><mj-body><mj-section><mj-column><mj-text>Hi {{ contact.first_name }}"
                                  "</mj-text></mj-column></mj-section></mj-body></mjml>"},
})

TEMPLATE_UPDATE = schema("TemplateUpdate", {
    "type": "object", "minProperties": 1, "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 255},
        "category": {"type": ["string", "null"], "maxLength": 50},
        "base_version": {"type": "integer", "minimum": 0,
                         "description": "The version your edit started from. If someone saved since, your content "
                                        "still becomes a new version and meta.conflict is true."},
        **CONTENT_PROPERTIES,
    },
})

RENDER_REQUEST = schema("TemplateRenderRequest", {
    "type": "object", "additionalProperties": False,
    "properties": {
        "content_json": {"type": "object", "description": "A block editor document (docs/editor.md)."},
        "mjml": {"type": "string"},
        "html": {"type": "string", "description": "Raw HTML; CSS is inlined."},
        "contact": {"type": "object", "description": "Values for the merge tags: email, first_name, last_name, tags, "
                                                     "custom_fields. A sample contact when omitted."},
    },
    "example": {"mjml": "<mjml><mj-body><mj-section><mj-column><mj-text>Hello {{ contact.first_name | "
                        "default(\"there\") }}</mj-text></mj-column></mj-section></mj-body></mjml>",
                "contact": {"first_name": "Ann", "email": "ann@example.com"}},
})
RENDER_RESULT = {"type": "object", "required": ["html", "text", "warnings"], "properties": {
    "html": {"type": "string"}, "text": {"type": "string"},
    "warnings": {"type": "array", "items": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}}}}}}


def version_json(version, with_content=True):
    data = {"version": version.version, "format": version.format, "created_at": iso(version.created_at),
            "created_by": str(version.created_by) if version.created_by else None}
    if with_content:
        data.update(content_html=version.content_html, content_text=version.content_text,
                    content_json=version.content_json, content_source=version.content_source)
    return data


def template_json(template, version=None):
    data = {"id": str(template.id), "name": template.name, "category": template.category, "format": template.format,
            "is_global": template.is_global, "thumbnail_url": _absolute(template.thumbnail_url),
            "description": template.description, "current_version": template.current_version,
            "created_at": iso(template.created_at), "updated_at": iso(template.updated_at)}
    if version is not None:
        data["content"] = version_json(version)
    return data


def _absolute(url):
    return current_app.config["BASE_URL"] + url if url and url.startswith("/") else url


def _check_keys(body, allowed):
    unknown = [{"field": key, "issue": "Unknown field; allowed: " + ", ".join(allowed) + "."}
               for key in body if key not in allowed]
    if unknown:
        raise ValidationError("Unknown fields in the request body.", unknown)


def _flag(name):
    value = request.args.get(name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise ValidationError(f"{name} must be true or false.", [{"field": name, "issue": "Use true or false."}])
    return value == "true"


@bp.get("/templates")
@api_route("campaigns:read", summary="List templates", response=TEMPLATE, paginated=True, tags=TAGS,
           parameters=[{"name": "q", "in": "query", "schema": {"type": "string"}, "description": "Name contains."},
                       {"name": "category", "in": "query", "schema": {"type": "string"}},
                       {"name": "is_global", "in": "query", "schema": {"type": "boolean"},
                        "description": "true: only the gallery; false: only yours. Both when omitted."}],
           description="Your templates (most recently changed first), then the starter gallery's.")
def list_templates():
    templates_service.sync_gallery()
    query = templates_service.api_templates_query(g.api_actor.account_id, q=request.args.get("q"),
                                                  category=request.args.get("category"), is_global=_flag("is_global"))
    return paginated_response(query, template_json)


@bp.post("/templates")
@api_route("campaigns:write", summary="Create a template", request=TEMPLATE_CREATE, response=TEMPLATE, status=201,
           tags=TAGS, errors=(404,),
           description="Version 1 is made from content_json (format blocks), content_source (mjml/html), a copy of "
                       "another template (copy_of: yours or a gallery one, else 404), or an empty block document.")
def create_template():
    body = json_body()
    _check_keys(body, ("name", "category", "format", "copy_of", "content_json", "content_source"))
    template = templates_service.create_template(
        g.api_actor, g.api_actor.account_id, name=body.get("name"), category=body.get("category"),
        format=body.get("format", "blocks"), content_json=body.get("content_json"),
        content_source=body.get("content_source"), copy_of=body.get("copy_of"))
    return envelope(template_json(template, templates_service.latest_version(template.id)), status=201)


@bp.post("/templates/render")
@api_route("campaigns:read", summary="Render content for a contact", request=RENDER_REQUEST, response=RENDER_RESULT,
           tags=TAGS, description="Compiles exactly one of content_json, mjml or html and renders it for the given "
                                  "(or a sample) contact: the HTML and plain-text parts, and content warnings "
                                  "(size over 102 KB, images without alt text, non-http(s) links, a missing "
                                  "unsubscribe link or postal address).")
def render_template():
    body = json_body()
    _check_keys(body, ("content_json", "mjml", "html", "contact"))
    content_json, mjml, html = templates_service.check_render_input(body)
    contact = body.get("contact")
    if contact is not None and not isinstance(contact, dict):
        raise ValidationError("contact must be an object.", [{"field": "contact", "issue": "Send an object."}])
    result = rendering.preview(current_account(), content_json=content_json, mjml=mjml, html=html, contact=contact,
                               base_url=current_app.config["BASE_URL"])
    return envelope(result)


@bp.get("/templates/<uuid:template_id>")
@api_route("campaigns:read", summary="Show a template", response=TEMPLATE, tags=TAGS,
           description="The template with its current version's content.")
def show_template(template_id):
    template = templates_service.get_template(g.api_actor.account_id, template_id)
    return envelope(template_json(template, templates_service.latest_version(template.id)))


@bp.put("/templates/<uuid:template_id>")
@api_route("campaigns:write", summary="Update a template", request=TEMPLATE_UPDATE, response=TEMPLATE, tags=TAGS,
           errors=(403,),
           description="Rename/re-categorise, and save new content as a new version (content identical to the "
                       "current version makes none: meta.unchanged). Gallery templates are read-only (403).")
def update_template(template_id):
    body = json_body()
    _check_keys(body, ("name", "category", "base_version", "content_json", "content_source"))
    actor, account_id = g.api_actor, g.api_actor.account_id
    template = templates_service.get_editable_template(account_id, template_id)
    meta = {}
    if "content_json" in body or "content_source" in body:
        result = templates_service.save_version(actor, account_id, template_id, content_json=body.get("content_json"),
                                                content_source=body.get("content_source"),
                                                base_version=body.get("base_version"))
        meta = {"unchanged": result.unchanged, "conflict": result.conflict, "warnings": result.warnings}
    if "name" in body or "category" in body:
        template = templates_service.update_details(actor, account_id, template_id, name=body.get("name"),
                                                    category=body.get("category", template.category))
    return envelope(template_json(template, templates_service.latest_version(template.id)), meta=meta or None)


@bp.delete("/templates/<uuid:template_id>")
@api_route("campaigns:write", summary="Delete a template", status=204, tags=TAGS, errors=(403,),
           description="Deletes the template and its versions. Campaigns keep their own copy of the content.")
def delete_template(template_id):
    templates_service.delete_template(g.api_actor, g.api_actor.account_id, template_id)
    return "", 204


@bp.get("/templates/<uuid:template_id>/versions")
@api_route("campaigns:read", summary="List a template's versions", response=VERSION, paginated=True, tags=TAGS,
           description="Newest first, without their content (GET one version for it).")
def list_versions(template_id):
    query = templates_service.versions_query(g.api_actor.account_id, template_id)
    return paginated_response(query, lambda version: version_json(version, with_content=False))


@bp.get("/templates/<uuid:template_id>/versions/<int:version>")
@api_route("campaigns:read", summary="Show one version", response=VERSION, tags=TAGS)
def show_version(template_id, version):
    return envelope(version_json(templates_service.get_version(g.api_actor.account_id, template_id, version)))


@bp.post("/templates/<uuid:template_id>/versions/<int:version>/restore")
@api_route("campaigns:write", summary="Restore a version", response=VERSION, status=201, tags=TAGS, errors=(403,),
           description="Saves that version's content as a new version (history is never rewritten).")
def restore_version(template_id, version):
    restored = templates_service.restore_version(g.api_actor, g.api_actor.account_id, template_id, version)
    return envelope(version_json(restored), status=201)
