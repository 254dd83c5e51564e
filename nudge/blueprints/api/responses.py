"""The API's success envelope {"data", "meta", "links"} (spec section 1) and JSON request bodies."""
import json

from flask import jsonify, request

from nudge.errors import NotFound, ValidationError
from nudge.services.validation import MAX_JSON_DEPTH, JSONTooDeep, loads_json

# PostgreSQL text cannot hold U+0000 (a query binding one fails), and no address, name or template
# needs it: input carrying one is refused, in the body, the query and the form alike.
NUL_MESSAGE = "Text may not contain the NUL character (U+0000)."
NUL_ISSUE = "Contains the NUL character (U+0000)."

JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
              float: "a number", type(None): "null"}


def request_path():
    """This request's path and query string, relative, as the spec's links show them."""
    query = request.query_string.decode("latin-1")
    return request.path + ("?" + query if query else "")


def envelope(data, *, status=200, meta=None, links=None, headers=None):
    """A success response in the spec's envelope; links.self defaults to this request."""
    body = {"data": data, "meta": meta or {}, "links": links or {"self": request_path()}}
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def is_json_mimetype(mimetype):
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw):
    """Parse bytes as JSON; raises ValidationError with the position of the first problem."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError("The request body is not UTF-8 encoded JSON.",
                              [{"field": "body", "issue": "Must be UTF-8 encoded JSON."}])
    if not text.strip():
        raise ValidationError("The request body is empty; send a JSON object.",
                              [{"field": "body", "issue": "Empty body; expected a JSON object."}])
    try:
        data = loads_json(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        issue = f"Malformed JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        raise ValidationError("The request body is not valid JSON.", [{"field": "body", "issue": issue}])
    except JSONTooDeep:
        raise ValidationError("The request body is nested too deeply.",
                              [{"field": "body", "issue": f"JSON may be nested at most {MAX_JSON_DEPTH} levels deep."}])
    except ValueError as exc:
        raise ValidationError("The request body is not valid JSON.",
                              [{"field": "body", "issue": f"Malformed JSON: {exc}."}])
    field = _json_path_with_nul(data)
    if field is not None:
        raise ValidationError(NUL_MESSAGE, [{"field": field, "issue": NUL_ISSUE}])
    return data


def _json_path_with_nul(data):
    """The path (e.g. `contacts[2].custom_fields.plan`) of the first key or string holding a NUL, or None.
    Iterative, so a deeply nested document costs no recursion."""
    pending = [(data, None)]
    while pending:
        value, path = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path or "body"
        elif isinstance(value, dict):
            for key, item in value.items():
                child = key if path is None else f"{path}.{key}"
                if "\x00" in key:
                    return child.replace("\x00", "\\u0000")
                pending.append((item, child))
        elif isinstance(value, list):
            pending.extend((item, f"{path or 'body'}[{index}]") for index, item in enumerate(value))
    return None


def form_field_with_nul(fields):
    """The name of the first (name, value) pair holding a NUL, or None."""
    for name, value in fields:
        name, value = name or "", value or ""  # a multipart part may come without a name
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "\\u0000")
    return None


def refuse_nul_characters():
    """400 for a NUL in the query string or a form field, 404 for one in the path (no resource has one)."""
    fields = list(request.args.items(multi=True))
    if request.mimetype == "multipart/form-data":
        fields += request.form.items(multi=True)
    name = form_field_with_nul(fields)
    if name is not None:
        raise ValidationError(NUL_MESSAGE, [{"field": name, "issue": NUL_ISSUE}])
    if any(isinstance(value, str) and "\x00" in value for value in (request.view_args or {}).values()):
        raise NotFound("No such resource.")


def json_body():
    """The request's JSON object body, or a 400 VALIDATION_ERROR saying what is wrong with it."""
    mimetype = request.mimetype or ""
    if not is_json_mimetype(mimetype):
        got = mimetype or "no Content-Type"
        raise ValidationError("Send the request body as JSON with Content-Type: application/json.",
                              [{"field": "body", "issue": f"Content-Type must be application/json, not {got}."}])
    data = parse_json(request.get_data(cache=True))
    if not isinstance(data, dict):
        kind = JSON_TYPES.get(type(data), type(data).__name__)
        raise ValidationError("The request body must be a JSON object.",
                              [{"field": "body", "issue": f"Expected a JSON object, got {kind}."}])
    return data
