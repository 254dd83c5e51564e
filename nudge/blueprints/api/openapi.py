"""The OpenAPI 3.1 document, generated from the code: the app's /api/v1 url rules plus the metadata
that `document()` (and `api_route()`, which calls it) attach to each handler. No hand-kept file.

    ACCOUNT = schema("Account", {"type": "object", "properties": {...}})

    @bp.get("/account")
    @api_route("account:read", summary="Show the account", response=ACCOUNT)
    def show_account(): ...
"""
import copy
import re

from flask import current_app

from nudge.blueprints.api.pagination import DEFAULT_PER_PAGE, MAX_PAGE, MAX_PER_PAGE
from nudge.services.permissions import SCOPES

API_PREFIX = "/api/v1"
TOKEN_URL = API_PREFIX + "/oauth/token"

SCOPE_DESCRIPTIONS = {
    "campaigns:read": "View campaign data",
    "campaigns:write": "Create/modify campaigns",
    "contacts:read": "Access contact info",
    "contacts:write": "Manage contacts",
    "automations:execute": "Trigger workflows",
    "analytics:read": "Access reports",
    "account:admin": "Full access: every other scope, plus account management",
}
assert set(SCOPE_DESCRIPTIONS) == set(SCOPES)

# Every token may read its own account (GET /account); no scope needs to be requested for it.
IMPLIED_SCOPES = ("account:read",)

_SCHEMAS = {}


def schema(name, definition):
    """Register a named schema under components/schemas; returns a $ref to it."""
    _SCHEMAS[name] = definition
    return ref(name)


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def document(*, summary, description=None, tags=None, scope=None, auth=True, request=None,
             request_content=None, response=None, status=200, response_description=None,
             paginated=False, parameters=None, errors=(), responses=None, security=None, hidden=False):
    """Attach OpenAPI metadata to a view function (the generator reads it from the url map).

    request / response: JSON Schemas (plain dicts or schema() refs) of the request body and of
    the envelope's `data` (for paginated lists: of one item). request_content replaces the generated
    requestBody; responses replaces the generated success response (several successes, another
    content type, the OAuth token endpoint's own errors).
    errors: statuses this operation answers besides the ones every operation of its kind can
    (see error_statuses()), e.g. 404 for an id in the body or query, 409 for a state conflict."""
    doc = dict(summary=summary, description=description, tags=tags, scope=scope, auth=auth, request=request,
               request_content=request_content, response=response, status=status,
               response_description=response_description, paginated=paginated, parameters=parameters or [],
               errors=tuple(errors), responses=responses, security=security, hidden=hidden)

    def decorator(view):
        view.api_doc = doc
        return view
    return decorator


COMMON_SCHEMAS = {
    "ErrorDetail": {"type": "object", "required": ["field", "issue"], "properties": {
        "field": {"type": ["string", "null"], "description": "The request field (or `body`, `scope`) at fault."},
        "issue": {"type": "string"}}},
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message", "details"], "properties": {
            "code": {"type": "string", "enum": ["VALIDATION_ERROR", "UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND",
                                                "METHOD_NOT_ALLOWED", "CONFLICT", "LIMIT_EXCEEDED", "EMAIL_NOT_CONFIRMED",
                                                "PAYLOAD_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE", "RATE_LIMITED",
                                                "SERVER_ERROR"]},
            "message": {"type": "string"},
            "details": {"type": "array", "items": ref("ErrorDetail")}}}},
        "example": {"error": {"code": "VALIDATION_ERROR", "message": "Invalid email format",
                              "details": [{"field": "email", "issue": "Must be valid email address"}]}}},
    "Links": {"type": "object", "required": ["self"], "properties": {"self": {"type": "string"}}},
    "PageMeta": {"type": "object", "required": ["total", "page", "per_page"], "properties": {
        "total": {"type": "integer", "minimum": 0}, "page": {"type": "integer", "minimum": 1},
        "per_page": {"type": "integer", "minimum": 1, "maximum": 100}},
        "example": {"total": 150, "page": 1, "per_page": 50}},
    "PageLinks": {"type": "object", "required": ["self", "first", "last"], "properties": {
        "self": {"type": "string"}, "first": {"type": "string"}, "last": {"type": "string"},
        "next": {"type": "string", "description": "Absent on the last page."},
        "prev": {"type": "string", "description": "Absent on the first page."}},
        "example": {"self": "/api/v1/contacts?page=1", "next": "/api/v1/contacts?page=2",
                    "first": "/api/v1/contacts?page=1", "last": "/api/v1/contacts?page=3"}},
}

RATE_HEADERS = {
    "RateLimit-Limit": {"description": "Requests allowed in the current window (per account).",
                        "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "Requests left in the current window.", "schema": {"type": "integer"}},
    "RateLimit-Reset": {"description": "Seconds until a request is freed in the window.",
                        "schema": {"type": "integer"}},
    "RateLimit-Policy": {"description": "The limit as `<requests>;w=<window seconds>`.", "schema": {"type": "string"}},
}

ERROR_RESPONSES = {
    400: ("BadRequest", "Invalid input (`VALIDATION_ERROR`, details name the field): malformed or too deeply "
                        "nested JSON, a wrong field, bad pagination parameters, a NUL character (U+0000) anywhere "
                        "in the query string or body."),
    401: ("Unauthorized", "Missing, invalid, expired or revoked access token."),
    403: ("Forbidden", "The token lacks the scope this operation needs (`FORBIDDEN`; the message and details "
                       "name it), or an account limit forbids it (`LIMIT_EXCEEDED`)."),
    404: ("NotFound", "The resource, or one the request refers to by id, does not exist in this account."),
    409: ("Conflict", "The request conflicts with the resource's current state."),
    413: ("PayloadTooLarge", "The request body is larger than this endpoint accepts (`PAYLOAD_TOO_LARGE`)."),
    429: ("RateLimited", "A rate limit is exhausted; retry after `Retry-After` seconds."),
}


def _error_response(status, description):
    body = {"description": description, "content": {"application/json": {"schema": ref("Error")}}}
    if status == 401:
        body["headers"] = {"WWW-Authenticate": {"description": "`Bearer` with the RFC 6750 error.",
                                                "schema": {"type": "string"}}}
    if status == 429:
        body["headers"] = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}},
                           **{name: {"$ref": f"#/components/headers/{name}"} for name in RATE_HEADERS}}
    return body


def openapi_path(rule):
    """/api/v1/contacts/<uuid:contact_id> -> (/api/v1/contacts/{contact_id}, [path parameters])."""
    parameters = []

    def replace(match):
        converter, name = match.group(1), match.group(2)
        kind = {"int": {"type": "integer"}, "float": {"type": "number"},
                "uuid": {"type": "string", "format": "uuid"}}.get(converter, {"type": "string"})
        parameters.append({"name": name, "in": "path", "required": True, "schema": kind})
        return "{" + name + "}"

    path = re.sub(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>", replace, rule.rule)
    return path, parameters


def success_response(data, description=None, paginated=False):
    """A success response: `data` (None: no body, as for 204) in the envelope, with the rate-limit headers."""
    response = {"description": description or "OK",
                "headers": {name: {"$ref": f"#/components/headers/{name}"} for name in RATE_HEADERS}}
    if data is not None:
        response["content"] = {"application/json": {"schema": envelope_schema(data, paginated)}}
    return response


def error_statuses(doc, path_parameters):
    """Every error status the operation can answer: its own (doc["errors"]) and the ones that come with
    its shape. Any request body can be malformed (400) or too large (413); query parameters can be
    invalid, and an authenticated operation refuses a NUL character in any of them (400); a token can be
    missing or bad (401) or lack the scope (403); a path can name a resource that does not exist (404);
    every operation is rate limited (429)."""
    statuses = set(doc["errors"]) | {429}
    if doc["request"] or doc["request_content"]:
        statuses |= {400, 413}
    if doc["paginated"] or doc["parameters"]:
        statuses.add(400)
    if doc["auth"]:
        statuses |= {400, 401}
        if doc["scope"] not in (None, *IMPLIED_SCOPES):
            statuses.add(403)
    if path_parameters:
        statuses.add(404)
    return statuses


def envelope_schema(data, paginated):
    if paginated:
        return {"type": "object", "required": ["data", "meta", "links"], "properties": {
            "data": {"type": "array", "items": data or {}}, "meta": ref("PageMeta"), "links": ref("PageLinks")}}
    return {"type": "object", "required": ["data", "meta", "links"], "properties": {
        "data": data or {}, "meta": {"type": "object"}, "links": ref("Links")}}


def _tag_for(path):
    segment = path[len(API_PREFIX):].strip("/").split("/")[0]
    return {"oauth": "Authentication"}.get(segment, segment.replace("-", " ").capitalize() or "API")


def operation(doc, rule, endpoint, method, path_parameters):
    path = openapi_path(rule)[0]
    op = {"operationId": endpoint.replace(".", "_") + ("" if len(rule.methods - {"HEAD", "OPTIONS"}) == 1
                                                        else "_" + method.lower()),
          "summary": doc["summary"], "tags": doc["tags"] or [_tag_for(path)]}
    scope = doc["scope"]
    if doc["description"] or doc["auth"]:
        if scope in (None, *IMPLIED_SCOPES):
            needs = "Any valid access token."
        elif scope == "account:admin":
            needs = "Requires the `account:admin` scope."
        else:
            needs = f"Requires the `{scope}` scope (or `account:admin`)."
        op["description"] = "\n\n".join(part for part in (doc["description"], needs if doc["auth"] else None) if part)
    parameters = list(path_parameters) + list(doc["parameters"])
    if doc["paginated"]:
        parameters += [{"$ref": "#/components/parameters/page"}, {"$ref": "#/components/parameters/per_page"}]
    if parameters:
        op["parameters"] = parameters
    if doc["request_content"]:
        op["requestBody"] = doc["request_content"]
    elif doc["request"]:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": doc["request"]}}}

    if doc["responses"]:
        responses = copy.deepcopy(doc["responses"])
    else:
        body = None if doc["status"] == 204 else doc["response"] or {}
        responses = {str(doc["status"]): success_response(body, doc["response_description"], doc["paginated"])}
    for status in sorted(error_statuses(doc, path_parameters)):
        responses.setdefault(str(status), {"$ref": f"#/components/responses/{ERROR_RESPONSES[status][0]}"})
    op["responses"] = dict(sorted(responses.items()))

    if doc["security"] is not None:
        op["security"] = doc["security"]
    elif doc["auth"]:
        op["security"] = [{"oauth2": [] if scope in (None, *IMPLIED_SCOPES) else [scope]}]
    else:
        op["security"] = []
    return op


def build_document(app):
    """The OpenAPI 3.1 description of every documented /api/v1 route of this app."""
    paths = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        if not rule.rule.startswith(API_PREFIX + "/"):
            continue
        view = app.view_functions.get(rule.endpoint)
        doc = getattr(view, "api_doc", None)
        if doc is None or doc["hidden"]:
            continue
        path, path_parameters = openapi_path(rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = operation(doc, rule, rule.endpoint, method, path_parameters)

    from nudge import __version__
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "NudgeCampaign API",
            "version": "v1",
            "summary": "Contacts, campaigns, automations and analytics of a NudgeCampaign account.",
            "description": (
                "Authenticate with the OAuth 2.0 client-credentials grant at `POST /api/v1/oauth/token` "
                "(create the client under Settings → API clients), then send `Authorization: Bearer <token>`.\n\n"
                "Every response except the token endpoint's is the envelope `{\"data\", \"meta\", \"links\"}`; "
                "errors are `{\"error\": {\"code\", \"message\", \"details\"}}`. Lists take `page` and "
                "`per_page` (default 50, max 100). Rate limits are per account and per plan.\n\n"
                f"Server version {__version__}."),
            "license": {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
        },
        "servers": [{"url": app.config.get("BASE_URL") or "/"}],
        "tags": [{"name": "Authentication", "description": "OAuth 2.0 client credentials → JWT access token."},
                 {"name": "Account", "description": "The token's own account."}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "oauth2": {"type": "oauth2", "description": "OAuth 2.0 client-credentials grant; the access "
                           "token is a JWT sent as `Authorization: Bearer <token>`.",
                           "flows": {"clientCredentials": {"tokenUrl": TOKEN_URL, "scopes": dict(SCOPE_DESCRIPTIONS)}}},
                "clientBasic": {"type": "http", "scheme": "basic",
                                "description": "client_id and client_secret (client_secret_basic); "
                                               "token endpoint only."},
            },
            "schemas": {**copy.deepcopy(COMMON_SCHEMAS), **copy.deepcopy(_SCHEMAS)},
            "parameters": {
                "page": {"name": "page", "in": "query", "required": False, "description": "Page number, from 1.",
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1}},
                "per_page": {"name": "per_page", "in": "query", "required": False, "description": "Items per page.",
                             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE,
                                        "default": DEFAULT_PER_PAGE}},
            },
            "headers": copy.deepcopy(RATE_HEADERS),
            "responses": {name: _error_response(status, description)
                          for status, (name, description) in ERROR_RESPONSES.items()},
        },
    }


def openapi_document():
    """The document for the current app, built once per app (routes do not change after start-up)."""
    app = current_app._get_current_object()
    cached = app.extensions.get("nudge_openapi")
    if cached is None:
        cached = app.extensions["nudge_openapi"] = build_document(app)
    return cached
