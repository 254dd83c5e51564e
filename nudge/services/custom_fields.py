"""Custom field definitions (at most 50 per account) and the validation of their values on every write path."""
import datetime as dt
import math
import re

import sqlalchemy as sa

from nudge.errors import Conflict, NotFound, ValidationError, field_error
from nudge.extensions import db
from nudge.models import CUSTOM_FIELD_TYPES, Contact, CustomField
from nudge.services import permissions, segment_tables
from nudge.services.dialect import json_has_key, json_remove_key
from nudge.services.validation import check_choice, require_text, validate_fields

MAX_FIELDS = 50
MAX_TEXT_LENGTH = 1000
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
RESERVED_NAMES = {"id", "email", "first_name", "last_name", "status", "tags", "custom_fields", "created_at",
                  "updated_at", "subscription_date", "source", "account_id", "deleted_at"}
TRUE_WORDS = {"true", "yes", "y", "1", "on"}
FALSE_WORDS = {"false", "no", "n", "0", "off"}


def list_fields(account_id):
    return db.session.scalars(sa.select(CustomField).where(CustomField.account_id == account_id)
                              .order_by(CustomField.created_at, CustomField.name)).all()


def definitions(account_id):
    """{name: CustomField} for one account."""
    return {field.name: field for field in list_fields(account_id)}


def get_field(account_id, name):
    field = db.session.scalar(sa.select(CustomField).where(CustomField.account_id == account_id,
                                                           CustomField.name == name))
    if field is None:
        raise NotFound(f"No custom field named {name!r}.")
    return field


def check_name(name, field="name"):
    name = (name or "").strip()
    if not NAME_PATTERN.match(name):
        raise field_error(field, "Use 1–50 lower-case letters, digits or underscores, starting with a letter "
                                 "(e.g. company or signup_source).")
    if name in RESERVED_NAMES:
        raise field_error(field, f"{name!r} is a built-in contact field; choose another name.")
    return name


def check_options(type_, options):
    if type_ != "choice":
        return None
    if not isinstance(options, list) or not options or not all(isinstance(o, str) and o.strip() for o in options):
        raise field_error("options", "A choice field needs a list of at least one option.")
    cleaned = list(dict.fromkeys(o.strip() for o in options))
    if len(cleaned) > 200:
        raise field_error("options", "A choice field may have at most 200 options.")
    return cleaned


def create_field(actor, *, name, label=None, type="text", options=None):
    """Define a custom field for the actor's account."""
    permissions.require(actor, "contacts:write")
    clean = validate_fields({
        "name": lambda: check_name(name),
        "type": lambda: check_choice(type, CUSTOM_FIELD_TYPES, "type"),
    })
    clean["label"] = require_text(label or clean["name"].replace("_", " ").capitalize(), "label", "Label", 100)
    clean["options"] = check_options(clean["type"], options)
    existing = definitions(actor.account_id)
    if clean["name"] in existing:
        raise Conflict(f"A custom field named {clean['name']!r} already exists.",
                       [{"field": "name", "issue": "Already exists."}])
    if len(existing) >= MAX_FIELDS:
        raise ValidationError(f"An account can have at most {MAX_FIELDS} custom fields.",
                              [{"field": "name", "issue": f"Limit of {MAX_FIELDS} custom fields reached."}])
    field = CustomField(account_id=actor.account_id, **clean)
    db.session.add(field)
    db.session.flush()
    # Values already under that name (written around the validation) now count for segments.
    segment_tables.sync_field(actor.account_id, field.name)
    db.session.commit()
    return field


def update_field(actor, name, *, label=None, options=None):
    """Change a field's label or choice options (its name and type are fixed: values depend on them)."""
    permissions.require(actor, "contacts:write")
    field = get_field(actor.account_id, name)
    if label is not None:
        field.label = require_text(label, "label", "Label", 100)
    if options is not None:
        field.options = check_options(field.type, options)
    db.session.commit()
    return field


def delete_field(actor, name):
    """Remove a definition and its values from every contact of the account."""
    permissions.require(actor, "contacts:write")
    field = get_field(actor.account_id, name)
    db.session.execute(sa.update(Contact).where(Contact.account_id == actor.account_id,
                                                json_has_key(Contact.custom_fields, field.name))
                       .values(custom_fields=json_remove_key(Contact.custom_fields, field.name)))
    db.session.delete(field)
    db.session.flush()
    segment_tables.sync_field(actor.account_id, field.name)
    db.session.commit()


def coerce_value(field, value, path):
    """The stored JSON form of one value, or a ValidationError at path. None and "" clear the value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    kind = field.type
    if kind == "text":
        value = value if isinstance(value, str) else str(value)
        if len(value) > MAX_TEXT_LENGTH:
            raise field_error(path, f"At most {MAX_TEXT_LENGTH} characters.")
        return value.strip()
    if kind == "number":
        return _number(field, value, path)
    if kind == "date":
        if isinstance(value, dt.datetime):
            return value.date().isoformat()
        if isinstance(value, dt.date):
            return value.isoformat()
        text = str(value).strip()
        try:
            return dt.date.fromisoformat(text[:10]).isoformat()
        except ValueError:
            raise field_error(path, f"Must be a date like 2024-05-31, not {text[:40]!r}.")
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise field_error(path, "Must be true or false.")
    if kind == "choice":
        text = str(value).strip()
        if text not in (field.options or []):
            raise field_error(path, "Must be one of: " + ", ".join(field.options or []) + ".")
        return text
    raise field_error(path, f"Unknown field type {kind}.")


def _number(field, value, path):
    """A number field's value: an int or a finite float. NaN and infinities ("nan", "inf", "Infinity",
    1e999) are refused: they are not numbers a segment can compare, and JSON cannot carry them."""
    if isinstance(value, bool):
        raise field_error(path, "Must be a number.")
    if isinstance(value, (int, float)):
        number = value
    else:
        try:
            number = float(str(value).strip().replace(",", ""))
        except ValueError:
            raise field_error(path, f"Must be a number, not {str(value)[:40]!r}.")
    try:
        finite = math.isfinite(number)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise field_error(path, f"The number field {field.name!r} must be finite, not {str(value)[:40]!r}.")
    if isinstance(value, (int, float)):
        return value
    return int(number) if number.is_integer() and "." not in str(value) else number


def validate_values(values, fields, path="custom_fields"):
    """Check a {name: value} dict against the account's definitions ({name: CustomField}).

    Returns (to_set, to_clear): coerced values and the names whose value is cleared. Undefined names are
    a ValidationError (define the field first)."""
    if values is None:
        return {}, []
    if not isinstance(values, dict):
        raise field_error(path, "Must be an object of custom field values.")
    to_set, to_clear, errors = {}, [], []
    for name, value in values.items():
        where = f"{path}.{name}"
        if name not in fields:
            errors.append({"field": where, "issue": f"Unknown custom field {name!r}; define it first."})
            continue
        try:
            coerced = coerce_value(fields[name], value, where)
        except ValidationError as exc:
            errors += exc.details
            continue
        if coerced is None:
            to_clear.append(name)
        else:
            to_set[name] = coerced
    if errors:
        raise ValidationError(errors[0]["issue"], errors)
    return to_set, to_clear
