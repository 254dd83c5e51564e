"""Input checks shared by every way in (dashboard, API, import, CLI)."""
import json
import re
import uuid
import zoneinfo

from email_validator import EmailNotValidError, validate_email

from nudge.delivery.message import InvalidAddress, ascii_domain
from nudge.errors import ValidationError, field_error

DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


# JSON from outside (API bodies, the editor's document, form fields holding JSON) may nest this deep:
# far more than any document of ours needs, few enough for every walk over it (docs/security.md).
MAX_JSON_DEPTH = 64


class JSONTooDeep(ValueError):
    """JSON nested deeper than MAX_JSON_DEPTH (json.loads itself gives up with RecursionError near 1,000)."""

    def __init__(self):
        super().__init__(f"nested more than {MAX_JSON_DEPTH} levels deep")


def loads_json(text, **options):
    """json.loads for text from outside: a document nested deeper than MAX_JSON_DEPTH raises JSONTooDeep
    (a ValueError) instead of a RecursionError, here or in whatever walks the result later."""
    try:
        value = json.loads(text, **options)
    except RecursionError:
        raise JSONTooDeep() from None
    _check_depth(value)
    return value


def _check_depth(value):
    stack = [(value, 1)]
    while stack:  # iterative: the check must not recurse itself
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > MAX_JSON_DEPTH:
            raise JSONTooDeep()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _text(value, field):
    """A text input trimmed ("" for none); anything but a string (a JSON number, list, object) is a field error."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise field_error(field, "Must be a string.")
    return value.strip()


def normalize_email(value, field="email"):
    """Trimmed, validated (no DNS lookups), domain lower-cased; raises a field ValidationError."""
    value = _text(value, field)
    if not value:
        raise field_error(field, "Email address is required.")
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise field_error(field, f"Must be a valid email address: {_one_clause(str(exc))}.")
    return result.normalized


def _one_clause(text):
    """email-validator's explanation ("The part after the @-sign is not valid. It should have a period.") as
    one clause to follow a colon: sentences joined by semicolons, no final full stop, each first letter lower-case."""
    sentences = [part.strip().rstrip(".") for part in text.strip().split(". ") if part.strip(" .")]
    return "; ".join(sentence[:1].lower() + sentence[1:] for sentence in sentences)


def require_text(value, field, label, max_length):
    value = _text(value, field)
    if not value:
        raise field_error(field, f"{label} is required.")
    if len(value) > max_length:
        raise field_error(field, f"{label} must be at most {max_length} characters.")
    return value


def optional_text(value, field, label, max_length):
    value = _text(value, field)
    if len(value) > max_length:
        raise field_error(field, f"{label} must be at most {max_length} characters.")
    return value or None


def check_choice(value, choices, field):
    if value not in choices:
        raise field_error(field, "Must be one of " + ", ".join(choices) + ".")
    return value


def check_timezone(value, field="timezone"):
    value = _text(value, field)
    if value not in zoneinfo.available_timezones():
        raise field_error(field, "Must be an IANA time zone such as Europe/Berlin or America/New_York.")
    return value


def validate_fields(checks):
    """Run every check (field -> zero-argument callable) and report all problems in one ValidationError."""
    results, errors = {}, []
    for field, check in checks.items():
        try:
            results[field] = check()
        except ValidationError as exc:
            errors += exc.details or [{"field": field, "issue": exc.message}]
    if errors:
        raise ValidationError(errors[0]["issue"], errors)
    return results


def as_uuid(value):
    """A UUID from a UUID or its text; None when it is not one (callers answer NotFound)."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


def hostname(value, field, issue, min_labels=2):
    """A DNS name in ASCII (internationalised names IDNA-encoded) with at least min_labels labels."""
    try:
        name = ascii_domain(value)
    except InvalidAddress:
        raise field_error(field, issue)
    labels = name.split(".")
    if len(name) > 253 or len(labels) < min_labels or not all(DNS_LABEL.match(label) for label in labels) \
            or labels[-1].isdigit():
        raise field_error(field, issue)
    return name
