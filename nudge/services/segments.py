"""Segments: the JSON condition language (docs/segments.md), compiled to one SQL expression over
contacts on PostgreSQL and SQLite, and the dynamic/static segments that store it.

    conditions = {"match": "all", "conditions": [
        {"field": "email", "op": "ends_with", "value": "@example.com"},
        {"match": "any", "conditions": [
            {"field": "tags", "op": "contains_any", "value": ["vip", "beta"]},
            {"event": "opened", "op": "has", "within_days": 30}]}]}

    expression = compile_conditions(account_id, conditions)   # validated; a SQL boolean over Contact
    count_matching(account_id, conditions)                     # one SELECT count(*)

Never filtered in Python; deleted contacts never match; every expression is scoped to the account.
"""
import datetime as dt
import json
import math
import uuid
import zoneinfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import aliased

from nudge.errors import Conflict, NotFound, ValidationError
from nudge.extensions import db
from nudge.models import Account, Campaign, Contact, ContactTag, ContactValue, EmailEvent, Segment, SegmentMember
from nudge.models.types import utcnow
from nudge.services import custom_fields as custom_fields_service
from nudge.services import permissions, table_stats
from nudge.services.addresses import any_address, unique_addresses
from nudge.services.dialect import is_postgres
from nudge.services.validation import as_uuid, require_text

SEGMENT_TYPES = ("dynamic", "static")
MAX_DEPTH = 5            # the root group is depth 1
MAX_CONDITIONS = 100     # every rule and nested group, the root excepted
MAX_LIST_VALUES = 500
MAX_TEXT = 1000
MAX_DAYS = 36500
MAX_MEMBERS_PER_CALL = 10000

EMPTY_CONDITIONS = {"match": "all", "conditions": []}  # compare only; never mutate or store this object

# Field kinds and the operators each offers (the builder shows exactly these).
TEXT_OPS = ("eq", "neq", "contains", "not_contains", "starts_with", "ends_with", "in", "not_in", "is_set",
            "is_not_set")
CHOICE_OPS = ("eq", "neq", "in", "not_in", "is_set", "is_not_set")
NUMBER_OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "in", "not_in", "is_set", "is_not_set")
DATE_OPS = ("eq", "before", "after", "gt", "gte", "lt", "lte", "within_days", "not_within_days", "is_set",
            "is_not_set")
BOOLEAN_OPS = ("eq", "neq", "is_set", "is_not_set")
TAG_OPS = ("contains_any", "contains_all", "contains_none", "is_set", "is_not_set")
OPS_BY_KIND = {"text": TEXT_OPS, "choice": CHOICE_OPS, "number": NUMBER_OPS, "date": DATE_OPS,
               "datetime": DATE_OPS, "boolean": BOOLEAN_OPS, "tags": TAG_OPS, "status": CHOICE_OPS}
ALL_OPS = ("eq", "neq", "contains", "not_contains", "starts_with", "ends_with", "in", "not_in", "gt", "gte",
           "lt", "lte", "is_set", "is_not_set", "before", "after", "within_days", "not_within_days",
           "contains_any", "contains_all", "contains_none")

# Built-in fields: name -> (kind, label).
BUILTIN_FIELDS = {
    "email": ("text", "Email"),
    "first_name": ("text", "First name"),
    "last_name": ("text", "Last name"),
    "status": ("status", "Status"),
    "tags": ("tags", "Tags"),
    "created_at": ("datetime", "Created"),
    "subscription_date": ("datetime", "Subscribed"),
}
MATCHABLE_STATUSES = ("active", "unsubscribed", "bounced", "complained")

EVENTS = {"sent": "email.sent", "opened": "email.opened", "clicked": "email.clicked",
          "bounced": "email.bounced", "unsubscribed": "contact.unsubscribed"}
EVENT_OPS = ("has", "has_not")

OP_LABELS = {
    "eq": "is", "neq": "is not", "contains": "contains", "not_contains": "does not contain",
    "starts_with": "starts with", "ends_with": "ends with", "in": "is any of", "not_in": "is none of",
    "gt": "is greater than", "gte": "is at least", "lt": "is less than", "lte": "is at most",
    "is_set": "is set", "is_not_set": "is not set", "before": "is before", "after": "is after",
    "within_days": "is within the last … days", "not_within_days": "is not within the last … days",
    "contains_any": "include any of", "contains_all": "include all of", "contains_none": "include none of",
}
DATE_OP_LABELS = {"eq": "is on", "gt": "is after", "gte": "is on or after", "lt": "is before",
                  "lte": "is on or before"}
EVENT_LABELS = {"sent": "was sent", "opened": "opened", "clicked": "clicked", "bounced": "bounced",
                "unsubscribed": "unsubscribed"}

NEGATIVE_OPS = ("neq", "not_contains", "not_in", "not_within_days", "contains_none", "is_not_set")
VALUELESS_OPS = ("is_set", "is_not_set")
LIST_OPS = ("in", "not_in", "contains_any", "contains_all", "contains_none")


# --------------------------------------------------------------------------------------------------
# Validation

class _Checker:
    """Walks a condition document, collecting every problem with its path, and returns a cleaned copy."""

    def __init__(self, account_id, fields, timezone):
        self.account_id = account_id
        self.fields = fields            # {name: CustomField}
        self.timezone = timezone
        self.errors = []
        self.count = 0
        self.campaign_ids = set()

    def error(self, path, issue):
        self.errors.append({"field": path or "conditions", "issue": issue})

    def group(self, node, path, depth):
        prefix = path + "." if path else ""
        if not isinstance(node, dict):
            self.error(path, 'Must be a group: {"match": "all" or "any", "conditions": [...]}.')
            return None
        unknown = sorted(set(node) - {"match", "conditions"})
        for key in unknown:
            self.error(prefix + key, "Unknown key in a group; a group has only match and conditions.")
        match = node.get("match", "all")
        if match not in ("all", "any"):
            self.error(prefix + "match", 'Must be "all" or "any".')
        children = node.get("conditions")
        if not isinstance(children, list):
            self.error(prefix + "conditions", "Must be a list of conditions.")
            return None
        if depth > 1 and not children:
            self.error(prefix + "conditions", "A nested group needs at least one condition.")
        if depth > MAX_DEPTH:
            self.error(path, f"Groups may be nested at most {MAX_DEPTH} levels deep.")
            return None
        cleaned = []
        for index, child in enumerate(children):
            self.count += 1
            if self.count == MAX_CONDITIONS + 1:
                self.error(f"{prefix}conditions[{index}]", f"A segment may have at most {MAX_CONDITIONS} conditions.")
            if self.count > MAX_CONDITIONS:
                return None
            cleaned.append(self.condition(child, f"{prefix}conditions[{index}]", depth))
        return {"match": match, "conditions": cleaned}

    def condition(self, node, path, depth):
        if not isinstance(node, dict):
            self.error(path, "Must be an object: a rule {field, op, value}, an engagement rule {event, op} "
                             "or a group {match, conditions}.")
            return None
        if "conditions" in node or "match" in node:
            return self.group(node, path, depth + 1)
        if "event" in node:
            return self.engagement(node, path)
        if "field" in node:
            return self.rule(node, path)
        self.error(path, "A condition needs field, event or conditions.")
        return None

    def rule(self, node, path):
        for key in sorted(set(node) - {"field", "op", "value"}):
            self.error(f"{path}.{key}", "Unknown key in a rule; a rule has field, op and value.")
        field, op = node.get("field"), node.get("op")
        kind, custom = self.kind_of(field, f"{path}.field")
        if kind is None:
            return None
        allowed = OPS_BY_KIND[kind]
        if op not in allowed:
            self.error(f"{path}.op", f"Must be one of {', '.join(allowed)} for {field}.")
            return None
        clean = {"field": field, "op": op}
        if op in VALUELESS_OPS:
            return clean
        if "value" not in node:
            self.error(f"{path}.value", "Required for this operator.")
            return None
        value = self.value(kind, op, node["value"], f"{path}.value", custom)
        if value is None:
            return None
        clean["value"] = value
        return clean

    def kind_of(self, field, path):
        if not isinstance(field, str) or not field:
            self.error(path, "Must be a field name: email, first_name, last_name, status, tags, created_at, "
                             "subscription_date or custom.<name>.")
            return None, None
        if field in BUILTIN_FIELDS:
            return BUILTIN_FIELDS[field][0], None
        if field.startswith("custom."):
            name = field[len("custom."):]
            definition = self.fields.get(name)
            if definition is None:
                self.error(path, f"Unknown custom field {name!r}; define it first.")
                return None, None
            return definition.type, definition
        self.error(path, f"Unknown field {field!r}; use email, first_name, last_name, status, tags, created_at, "
                         "subscription_date or custom.<name>.")
        return None, None

    def value(self, kind, op, value, path, custom):
        if op in ("within_days", "not_within_days"):
            return self.days(value, path)
        if op in LIST_OPS:
            if not isinstance(value, list) or not value:
                self.error(path, "Must be a non-empty list.")
                return None
            if len(value) > MAX_LIST_VALUES:
                self.error(path, f"At most {MAX_LIST_VALUES} values.")
                return None
            items = [self.scalar(kind, op, item, f"{path}[{i}]", custom) for i, item in enumerate(value)]
            return None if any(item is None for item in items) else list(dict.fromkeys(items))
        return self.scalar(kind, op, value, path, custom)

    def days(self, value, path):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self.error(path, "Must be a whole number of days.")
            return None
        try:
            days = int(str(value).strip())
        except ValueError:
            self.error(path, "Must be a whole number of days.")
            return None
        if not 1 <= days <= MAX_DAYS:
            self.error(path, f"Must be between 1 and {MAX_DAYS} days.")
            return None
        return days

    def scalar(self, kind, op, value, path, custom):
        if kind in ("text", "tags"):
            if not isinstance(value, str):
                self.error(path, "Must be a string.")
                return None
            if len(value) > MAX_TEXT:
                self.error(path, f"At most {MAX_TEXT} characters.")
                return None
            if kind == "tags":
                value = " ".join(value.split())
            if not value.strip() and op in ("contains", "not_contains", "starts_with", "ends_with") or (
                    kind == "tags" and not value):
                self.error(path, "Must not be empty.")
                return None
            return value
        if kind == "status":
            if value not in MATCHABLE_STATUSES:
                self.error(path, "Must be one of " + ", ".join(MATCHABLE_STATUSES) + " (deleted contacts never match).")
                return None
            return value
        if kind == "choice":
            options = {str(o).lower(): o for o in (custom.options or [])}
            if not isinstance(value, str) or value.strip().lower() not in options:
                self.error(path, "Must be one of: " + ", ".join(custom.options or []) + ".")
                return None
            return options[value.strip().lower()]
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                self.error(path, "Must be a number.")
                return None
            return value
        if kind == "boolean":
            if not isinstance(value, bool):
                self.error(path, "Must be true or false.")
                return None
            return value
        if kind in ("date", "datetime"):
            if not isinstance(value, str) or parse_when(value) is None:
                self.error(path, "Must be a date like 2024-05-01 or a date-time like 2024-05-01T09:30:00Z.")
                return None
            if kind == "date":
                return value.strip()[:10]
            return value.strip()
        self.error(path, "Unsupported field type.")
        return None

    def engagement(self, node, path):
        for key in sorted(set(node) - {"event", "op", "campaign_id", "within_days"}):
            self.error(f"{path}.{key}", "Unknown key in an engagement rule; it has event, op, campaign_id and "
                                        "within_days.")
        event, op = node.get("event"), node.get("op")
        ok = True
        if not isinstance(event, str) or event not in EVENTS:
            self.error(f"{path}.event", "Must be one of " + ", ".join(EVENTS) + ".")
            ok = False
        if op not in EVENT_OPS:
            self.error(f"{path}.op", 'Must be "has" or "has_not".')
            ok = False
        clean = {"event": event, "op": op}
        campaign_id = node.get("campaign_id")
        if campaign_id not in (None, ""):
            try:
                clean["campaign_id"] = str(uuid.UUID(str(campaign_id)))
                self.campaign_ids.add((clean["campaign_id"], f"{path}.campaign_id"))
            except ValueError:
                self.error(f"{path}.campaign_id", "Must be a campaign ID.")
                ok = False
        if node.get("within_days") not in (None, ""):
            days = self.days(node["within_days"], f"{path}.within_days")
            if days is None:
                ok = False
            clean["within_days"] = days
        return clean if ok else None

    def check_campaigns(self):
        if not self.campaign_ids:
            return
        ids = {uuid.UUID(cid) for cid, _ in self.campaign_ids}
        found = {str(cid) for cid in db.session.scalars(
            sa.select(Campaign.id).where(Campaign.account_id == self.account_id, Campaign.id.in_(ids)))}
        for cid, path in sorted(self.campaign_ids, key=lambda item: item[1]):
            if cid not in found:
                self.error(path, "No such campaign in this account.")


def parse_when(text):
    """A date or a datetime from ISO 8601 text, or None."""
    text = (text or "").strip()
    if len(text) == 10:
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None


def _account_timezone(account_id):
    name = db.session.scalar(sa.select(Account.timezone).where(Account.id == account_id)) or "UTC"
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.timezone.utc


def validate_conditions(account_id, conditions, *, fields=None):
    """The cleaned condition document, or ValidationError listing every problem by its path
    (e.g. "conditions[2].conditions[0].value"; paths are relative to the document)."""
    if fields is None:
        fields = custom_fields_service.definitions(account_id)
    checker = _Checker(account_id, fields, None)
    if not isinstance(conditions, dict):
        raise ValidationError("Conditions must be an object like {\"match\": \"all\", \"conditions\": [...]}.",
                              [{"field": "conditions", "issue": "Must be an object with match and conditions."}])
    cleaned = checker.group(conditions, "", 1)
    checker.check_campaigns()
    if checker.errors:
        first = checker.errors[0]
        raise ValidationError(f"Invalid segment conditions: {first['field']}: {first['issue']}", checker.errors)
    return cleaned


# --------------------------------------------------------------------------------------------------
# Compilation

class _Compiler:
    def __init__(self, account_id, fields, timezone, now):
        self.account_id = account_id
        self.fields = fields
        self.tz = timezone
        self.now = now                   # naive UTC
        self.pg = is_postgres()

    # ---- groups
    def group(self, node):
        parts = [self.condition(child) for child in node["conditions"]]
        if not parts:
            return sa.true()
        return sa.and_(*parts) if node["match"] == "all" else sa.or_(*parts)

    def condition(self, node):
        if "conditions" in node:
            return self.group(node)
        if "event" in node:
            return self.engagement(node)
        return self.rule(node)

    # ---- engagement
    def engagement(self, node):
        event = sa.select(sa.literal(1)).select_from(EmailEvent).where(
            EmailEvent.account_id == self.account_id,
            EmailEvent.event_type == EVENTS[node["event"]],
            EmailEvent.contact_id == Contact.id)
        if node.get("campaign_id"):
            event = event.where(EmailEvent.campaign_id == uuid.UUID(node["campaign_id"]))
        if node.get("within_days"):
            event = event.where(EmailEvent.created_at >= self.now - dt.timedelta(days=node["within_days"]))
        exists = sa.exists(event.correlate(Contact))
        return exists if node["op"] == "has" else ~exists

    # ---- field rules
    def rule(self, node):
        field, op, value = node["field"], node["op"], node.get("value")
        if field in BUILTIN_FIELDS:
            kind = BUILTIN_FIELDS[field][0]
            column = getattr(Contact, field)
            if kind == "tags":
                return self.tag_presence(op) if op in VALUELESS_OPS else self.member(self.tag_side(op, value))
            if kind == "datetime":
                return self.timestamp(column, op, value)
            if kind == "status":
                return self.exact(column, op, value, column.is_not(None))
            return self.text(column, op, value)
        return self.member(self.side_rule(node))

    @staticmethod
    def negate(positive, present):
        """Negative operators also match contacts without a value (docs/segments.md, Missing values)."""
        return sa.or_(~present, ~positive) if present is not None else ~positive

    def finish(self, op, positive, present):
        if op in NEGATIVE_OPS:
            return self.negate(positive, present)
        return sa.and_(present, positive) if present is not None else positive

    # text: case-insensitive, "" counts as not set
    def text(self, column, op, value, present=None):
        lowered = sa.func.lower(column)
        present = sa.and_(column.is_not(None), column != "") if present is None else present
        if op == "is_set":
            return present
        if op == "is_not_set":
            return ~present
        if op in ("eq", "neq"):
            positive = lowered == value.lower()
        elif op in ("in", "not_in"):
            positive = lowered.in_([v.lower() for v in value])
        elif op == "ends_with" and self.pg and column is Contact.email and _is_domain(value):
            positive = self.email_domain(value.lower())
        else:
            escaped = _like_escape(value.lower())
            pattern = {"contains": f"%{escaped}%", "not_contains": f"%{escaped}%",
                       "starts_with": f"{escaped}%", "ends_with": f"%{escaped}"}[op]
            positive = lowered.like(pattern, escape="\\")
        if op not in NEGATIVE_OPS and (value != "" if op in ("eq", "neq") else True):
            return positive  # a non-empty match implies a value: no presence test per row
        return self.finish(op, positive, present)

    @staticmethod
    def email_domain(suffix):
        """lower(email) ends with "@domain": the LIKE itself, and the text after the last "@" equal to the
        domain, which ix_contacts_segment_email_domain (migration 0005) answers without reading the heap.
        The second test follows from the first, so together they match exactly what the LIKE matches."""
        lowered = sa.func.lower(Contact.email)
        domain = sa.func.split_part(lowered, "@", -1)  # the text after the last "@"
        return sa.and_(lowered.like("%" + _like_escape(suffix), escape="\\"), domain == suffix[1:])

    def exact(self, column, op, value, present):
        if op == "is_set":
            return present
        if op == "is_not_set":
            return ~present
        positive = column == value if op in ("eq", "neq") else column.in_(value)
        return self.finish(op, positive, present)

    # timestamps (created_at, subscription_date): day boundaries in the account's time zone
    def day_start(self, day):
        local = dt.datetime.combine(day, dt.time(), tzinfo=self.tz)
        return local.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def instant(self, when):
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.tz)
        return when.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def timestamp(self, column, op, value):
        present = column.is_not(None)
        if op == "is_set":
            return present
        if op == "is_not_set":
            return ~present
        if op in ("within_days", "not_within_days"):
            positive = column.between(self.now - dt.timedelta(days=value), self.now)
            return self.finish(op, positive, present)
        when = parse_when(value)
        if isinstance(when, dt.datetime):
            at = self.instant(when)
            positive = {"eq": column == at, "before": column < at, "lt": column < at, "lte": column <= at,
                        "after": column > at, "gt": column > at, "gte": column >= at}[op]
        else:
            start, end = self.day_start(when), self.day_start(when + dt.timedelta(days=1))
            positive = {"eq": sa.and_(column >= start, column < end), "before": column < start,
                        "lt": column < start, "lte": column < end, "after": column >= end, "gt": column >= end,
                        "gte": column >= start}[op]
        return self.finish(op, positive, present)

    # tags and custom fields: the side tables contact_tags and contact_values (migration 0008)
    def member(self, side, contact_id=None):
        """The contact (Contact.id, or another contact-id column) is among the side rule's matches, or is
        not when the rule is negative. PostgreSQL plans EXISTS / NOT EXISTS as semi and anti joins; SQLite
        evaluates an uncorrelated IN (subquery) once into an ephemeral index."""
        contact_id = Contact.id if contact_id is None else contact_id
        if self.pg:
            found = sa.exists(sa.select(sa.literal(1)).where(*side.where, side.column == contact_id))
            return ~found if side.negate else found
        ids = sa.select(side.column).where(*side.where)
        return contact_id.not_in(ids) if side.negate else contact_id.in_(ids)

    def side_rule(self, node):
        """A tag or custom-field rule as a _Side over contact_tags / contact_values; None for other rules."""
        field = node.get("field")
        if field == "tags":
            return None if node["op"] in VALUELESS_OPS else self.tag_side(node["op"], node["value"])
        if field and field.startswith("custom."):
            return self.custom_side(self.fields[field[len("custom."):]], node["op"], node.get("value"))
        return None

    def tag_presence(self, op):
        """Has tags at all: the contact's own column (the side table would have to read every tag row)."""
        column = Contact.tags
        length = sa.func.cardinality(column) if self.pg else sa.func.json_array_length(column)
        present = sa.and_(column.is_not(None), length > 0)
        return present if op == "is_set" else ~sa.func.coalesce(present, False)

    def tag_side(self, op, value):
        """Tags match exactly as stored. contains_all: a chain of IN over one tag each (each a range of
        the primary key, its contact ids in order)."""
        def rows(tags):
            table = aliased(ContactTag)
            return table, [table.account_id == self.account_id,
                           table.tag == tags[0] if len(tags) == 1 else table.tag.in_(tags)]
        if op == "contains_all":
            first, where = rows(value[:1])
            for tag in value[1:]:
                table, more = rows([tag])
                where.append(first.contact_id.in_(sa.select(table.contact_id).where(*more)))
            return _Side(first.contact_id, where)
        table, where = rows(list(value))
        return _Side(table.contact_id, where, negate=op == "contains_none", unique=len(value) == 1)

    def custom_side(self, definition, op, value):
        """One row per set value of the right type: presence is a row, a negative operator is "no row
        matching its positive" (docs/segments.md, Missing values)."""
        table = aliased(ContactValue)
        column = table.number if definition.type in ("number", "boolean") else table.text
        where = [table.account_id == self.account_id, table.field == definition.name]
        if op in VALUELESS_OPS:
            where.append(column.is_not(None))
        else:
            where.append(self.compare(definition.type, op, value, column))
        return _Side(table.contact_id, where, negate=op in NEGATIVE_OPS)

    def compare(self, kind, op, value, column):
        """The positive form of a custom-field operator on its stored form (number: numbers and booleans as
        1/0; text: choice and date values as stored, text values lower-cased)."""
        if kind == "boolean":
            value = 1 if value else 0
        elif kind == "text":
            value = [v.lower() for v in value] if isinstance(value, list) else value.lower()
        if op in ("in", "not_in"):
            return column.in_(value)
        if op in ("within_days", "not_within_days"):
            today = dt.datetime.now(self.tz).date() if self.tz else self.now.date()
            return column.between((today - dt.timedelta(days=value)).isoformat(), today.isoformat())
        if op in ("contains", "not_contains", "starts_with", "ends_with"):
            escaped = _like_escape(value)
            pattern = {"contains": f"%{escaped}%", "not_contains": f"%{escaped}%", "starts_with": f"{escaped}%",
                       "ends_with": f"%{escaped}"}[op]
            return column.like(pattern, escape="\\")
        if kind == "date":
            value = value[:10]
        return {"eq": column == value, "neq": column == value, "gt": column > value, "gte": column >= value,
                "lt": column < value, "lte": column <= value, "before": column < value, "after": column > value}[op]

    # the same rules on the contact's own row, where a count reads the contacts anyway
    def row_rule(self, node):
        """A tag or custom-field rule on contacts.tags / contacts.custom_fields, meaning exactly what its
        side-table form means (values of the wrong JSON type and empty text count as not set)."""
        op, value = node["op"], node.get("value")
        if node["field"] == "tags":
            return self.tag_row(op, value)
        definition = self.fields[node["field"][len("custom."):]]
        present, positive = self.custom_row(definition, op, value)
        matched = present if op in VALUELESS_OPS else sa.and_(present, positive)
        return ~sa.func.coalesce(matched, False) if op in NEGATIVE_OPS else matched

    def tag_row(self, op, value):
        column = Contact.tags
        if self.pg:
            array = sa.cast(sa.literal(list(value), postgresql.ARRAY(sa.Text)), postgresql.ARRAY(sa.Text))
            if op == "contains_all":
                return column.op("@>", is_comparison=True)(array)
            overlap = column.op("&&", is_comparison=True)(array)
            return overlap if op == "contains_any" else sa.or_(column.is_(None), ~overlap)

        def has(tags):
            each = sa.func.json_each(column).table_valued("value", "type")
            return sa.exists(sa.select(1).select_from(each).where(each.c.type == "text", each.c.value.in_(tags)))
        if op == "contains_all":
            return sa.and_(*(has([tag]) for tag in value))
        return has(list(value)) if op == "contains_any" else ~has(list(value))

    def custom_row(self, definition, op, value):
        """(present, positive) of one custom field on the contact's JSON."""
        name, kind = definition.name, definition.type
        if self.pg:
            value_type = sa.func.jsonb_typeof(Contact.custom_fields.op("->", return_type=postgresql.JSONB)(
                sa.literal(name)))
            text = Contact.custom_fields.op("->>", return_type=sa.Text)(sa.literal(name))
        else:
            value_type = sa.func.json_type(Contact.custom_fields, _json_path(name))
            text = sa.func.json_extract(Contact.custom_fields, _json_path(name))
        if kind == "number":
            present = value_type.in_(("number",) if self.pg else ("integer", "real"))
            if op in VALUELESS_OPS:
                return present, None
            if self.pg:
                # One typed jsonpath test per row (a string never compares with a number), no cast.
                compare = {"eq": "==", "neq": "==", "in": "==", "not_in": "==", "gt": ">", "gte": ">=", "lt": "<",
                           "lte": "<="}[op]
                path = " || ".join(f"$.{json.dumps(name)} {compare} {_number_literal(v)}"
                                   for v in (value if isinstance(value, list) else [value]))
                return present, Contact.custom_fields.op("@@", is_comparison=True)(
                    sa.cast(sa.literal(path), postgresql.JSONPATH))
            return present, self.compare(kind, op, value, text)
        if kind == "boolean":
            present = value_type.in_(("boolean",) if self.pg else ("true", "false"))
            if op in VALUELESS_OPS:
                return present, None
            if self.pg:
                return present, Contact.custom_fields.op("@>", is_comparison=True)(
                    sa.cast(sa.literal({name: value}, postgresql.JSONB), postgresql.JSONB))
            return present, value_type == ("true" if value else "false")
        present = value_type == ("string" if self.pg else "text")
        if kind == "text":
            present = sa.and_(present, text != "")
            text = sa.func.lower(text)
        return present, None if op in VALUELESS_OPS else self.compare(kind, op, value, text)

    # engagement rules as sets of contact ids, where a count filters a set by them
    def event_side(self, node):
        """The contacts with such an event (any account's contact ids: only for filtering a set of the
        account's contacts), negated for has_not."""
        where = [EmailEvent.account_id == self.account_id, EmailEvent.event_type == EVENTS[node["event"]],
                 EmailEvent.contact_id.is_not(None)]
        if node.get("campaign_id"):
            where.append(EmailEvent.campaign_id == uuid.UUID(node["campaign_id"]))
        if node.get("within_days"):
            where.append(EmailEvent.created_at >= self.now - dt.timedelta(days=node["within_days"]))
        return _Side(EmailEvent.contact_id, where, negate=node["op"] == "has_not", unique=False)


class _Side:
    """A tag or custom-field rule over its side table: column (the matching contact ids) where the where
    conditions hold. The rows belong to contacts that are not deleted, of the account the conditions
    name. negate: the rule matches the account's other contacts. unique: no contact id twice."""

    def __init__(self, column, where, negate=False, unique=True):
        self.column = column
        self.where = where
        self.negate = negate
        self.unique = unique

    def ids(self):
        return sa.select(self.column.label("contact_id")).where(*self.where)


def _number_literal(value):
    """A validated finite number as a jsonpath literal."""
    return repr(int(value)) if float(value).is_integer() and abs(value) < 2 ** 53 else repr(float(value))


def _json_path(name):
    return '$."' + name.replace('"', '\\"') + '"'


def _is_domain(suffix):
    """An ends_with value of the form "@domain" (one "@", first)."""
    return suffix.startswith("@") and "@" not in suffix[1:]


def _like_escape(text):
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def base_condition(account_id):
    """Every segment query: the account's contacts that are not deleted."""
    return sa.and_(Contact.account_id == account_id, Contact.status != "deleted")


def _compiler(account_id, conditions, validated):
    """(compiler, cleaned conditions) for the account."""
    account_id = as_uuid(account_id)
    fields = custom_fields_service.definitions(account_id)
    if not validated:
        conditions = validate_conditions(account_id, conditions, fields=fields)
    return _Compiler(account_id, fields, _account_timezone(account_id), utcnow()), conditions


def compile_conditions(account_id, conditions, *, validated=False):
    """A SQL boolean over Contact: the account's non-deleted contacts matching the conditions.

    Validates first (ValidationError with paths) unless validated=True."""
    compiler, conditions = _compiler(account_id, conditions, validated)
    return sa.and_(base_condition(compiler.account_id), compiler.group(conditions))


def count_query(account_id, conditions, *, validated=False):
    """The one SELECT that counts the contacts matching conditions (validated first unless validated=True)."""
    compiler, conditions = _compiler(account_id, conditions, validated)
    return _Counter(compiler).query(conditions)


class _Counter:
    """Builds the one SELECT that counts a segment, reading tag and custom-field rules from their side tables.

    Counting "contacts WHERE <rule>" reads the account's whole list for every rule that no index on contacts
    answers, and joining contacts to contact_tags is slower still (a hash semi join over every contact:
    400-540 ms on 1,000,000 contacts). So a group becomes a set of contact ids (an _IdSet), started from a
    side table wherever one can start it:

    * a positive tag or custom-field rule is its range of contact_tags / contact_values (only contacts that
      are not deleted have rows), read from one index alone;
    * an "all" group starts from its first such set and keeps the ids that are in its other sets (IN: semi
      joins), that its negative tag and custom rules do not name and that have (or have not) its engagement
      rules' events (NOT EXISTS / NOT IN: anti joins). If it has a rule on contacts' own columns, or nothing
      positive to start from, it is one SELECT over contacts with the tag and custom rules checked on those
      rows, as before migration 0008: those contacts are read anyway;
    * an "any" group is the UNION of its sets and of one SELECT over contacts for its other rules;
    * a top group of negative tag and custom rules only is everyone minus the union of what they exclude.

    Conditions without tag or custom-field rules are counted over contacts as before (index-only where the
    indexes of migration 0005 answer them)."""

    def __init__(self, compiler):
        self.compiler = compiler
        self.account_id = compiler.account_id

    def query(self, conditions):
        if not self.uses_side_tables(conditions):
            return sa.select(sa.func.count()).select_from(Contact).where(
                base_condition(self.account_id), self.compiler.group(conditions))
        sides = [self.side_of(child) for child in conditions["conditions"]]
        if conditions["match"] == "all" and all(side is not None and side.negate for side in sides):
            everyone = sa.select(sa.func.count()).select_from(Contact).where(base_condition(self.account_id))
            excluded = self.union([_IdSet(side.ids(), side.unique) for side in sides])
            return sa.select(everyone.scalar_subquery() - self.count(excluded).scalar_subquery())
        return self.count(self.ids(conditions))

    def uses_side_tables(self, node):
        if "conditions" in node:
            return any(self.uses_side_tables(child) for child in node["conditions"])
        return self.side_of(node) is not None

    @staticmethod
    def count(id_set):
        ids = id_set.select.subquery()
        counted = sa.func.count() if id_set.unique else sa.func.count(sa.distinct(ids.c.contact_id))
        return sa.select(counted).select_from(ids)

    def contacts(self, condition):
        return _IdSet(sa.select(Contact.id.label("contact_id")).where(base_condition(self.account_id), condition))

    @staticmethod
    def union(sets):
        """One UNION of every set; a set that is a union itself gives its parts (SQLite accepts no union in
        parentheses inside another)."""
        if len(sets) == 1:
            return sets[0]
        parts = [part for s in sets for part in (s.parts or [s.select])]
        return _IdSet(sa.union(*parts), unique=True, parts=parts)

    def side_of(self, node):
        return self.compiler.side_rule(node) if "field" in node else None

    def ids(self, group):
        """The ids of the contacts matching a group, as an _IdSet."""
        return self.any_ids(group) if group["match"] == "any" else self.all_ids(group)

    def any_ids(self, group):
        sets, others = [], []
        for child in group["conditions"]:
            side = self.side_of(child)
            if side is not None and not side.negate:
                sets.append(_IdSet(side.ids(), side.unique))
            elif side is not None:
                others.append(self.compiler.row_rule(child))
            elif "conditions" in child and self.uses_side_tables(child):
                sets.append(self.ids(child))
            else:
                others.append(self.compiler.condition(child))
        if others:
            sets.append(self.contacts(sa.or_(*others)))
        return self.union(sets)

    def all_ids(self, group):
        sides, nested, fields, events = [], [], [], []
        for child in group["conditions"]:
            side = self.side_of(child)
            if side is not None:
                sides.append((child, side))
            elif "conditions" in child and self.uses_side_tables(child):
                nested.append(self.ids(child))
            elif "event" in child:
                events.append(child)
            else:
                fields.append(child)
        positives = [_IdSet(side.ids(), side.unique) for _, side in sides if not side.negate] + nested
        if fields or not positives:
            # The count reads these contacts anyway (a rule on their own columns, or nothing narrower to
            # start from): tag and custom rules are checked on the same rows, as before migration 0008.
            condition = sa.and_(sa.true(), *(self.compiler.condition(child) for child in fields + events),
                                *(self.compiler.row_rule(child) for child, _ in sides))
            return self.filtered(self.contacts(condition), nested, [])
        filters = [side for _, side in sides if side.negate] + [self.compiler.event_side(e) for e in events]
        return self.filtered(positives[0], positives[1:], filters)

    def filtered(self, driver, sets, sides):
        """The driver's ids that are in every one of sets and pass every side rule (semi and anti joins)."""
        if not sets and not sides:
            return driver
        ids = driver.select.subquery()
        contact_id = ids.c.contact_id
        query = sa.select(contact_id).where(*(contact_id.in_(s.select) for s in sets),
                                            *(self.compiler.member(side, contact_id) for side in sides))
        return _IdSet(query, driver.unique)


class _IdSet:
    """A SELECT of one column, contact_id: ids of the account's contacts that are not deleted. unique: no
    id twice (else counted with DISTINCT). parts: the SELECTs it is the union of, if it is one."""

    def __init__(self, select, unique=True, parts=None):
        self.select = select
        self.unique = unique
        self.parts = parts  # the SELECTs of a union, when it is one


def _count(query):
    """Run a count. On PostgreSQL without JIT: compiling a count's expressions costs 30-100 ms and never
    pays back on a query that is meant to take less than that."""
    if is_postgres():
        db.session.execute(sa.text("SET LOCAL jit = off"))
    return db.session.scalar(query)


def _count_where(expression):
    return _count(sa.select(sa.func.count()).select_from(Contact).where(expression))


def count_matching(account_id, conditions):
    """How many contacts match (unsaved) conditions: one SELECT."""
    return _count(count_query(account_id, conditions))


# --------------------------------------------------------------------------------------------------
# Segments

def recent_campaigns(account_id, limit=200):
    """(id, name) of the account's newest campaigns, for engagement rules about one campaign."""
    return db.session.execute(sa.select(Campaign.id, Campaign.name).where(Campaign.account_id == as_uuid(account_id))
                              .order_by(Campaign.created_at.desc()).limit(limit)).all()


def list_segments(account_id):
    return db.session.scalars(sa.select(Segment).where(Segment.account_id == as_uuid(account_id))
                              .order_by(sa.func.lower(Segment.name), Segment.id)).all()


def segments_query(account_id):
    """A select of the account's segments, by name (for paginated lists)."""
    return (sa.select(Segment).where(Segment.account_id == as_uuid(account_id))
            .order_by(sa.func.lower(Segment.name), Segment.id))


def get_segment(account_id, segment_id):
    segment_uuid = as_uuid(segment_id)
    segment = None
    if segment_uuid is not None:
        segment = db.session.scalar(sa.select(Segment).where(Segment.id == segment_uuid,
                                                             Segment.account_id == as_uuid(account_id)))
    if segment is None:
        raise NotFound("No such segment.")
    return segment


def segment_condition(segment):
    """The SQL boolean for a loaded segment: compiled conditions, or membership for a static segment."""
    if segment.type == "static":
        member = sa.exists(sa.select(1).select_from(SegmentMember).where(
            SegmentMember.segment_id == segment.id, SegmentMember.contact_id == Contact.id).correlate(Contact))
        return sa.and_(base_condition(segment.account_id), member)
    try:
        return compile_conditions(segment.account_id, segment.conditions)
    except ValidationError:
        # A stored segment whose custom field was since deleted: it matches nobody until edited.
        return sa.false()


def condition_for_segment(account_id, segment_id):
    """The SQL boolean of one of the account's segments (NotFound for another account's id)."""
    return segment_condition(get_segment(account_id, segment_id))


def segment_contacts_query(account_id, segment_id):
    """A select of the segment's contacts, newest first (stable order for pagination)."""
    return (sa.select(Contact).where(condition_for_segment(account_id, segment_id))
            .order_by(Contact.created_at.desc(), Contact.id))


def preview(account_id, conditions, limit=10):
    """The first matching contacts of (unsaved) conditions, newest first."""
    expression = compile_conditions(account_id, conditions)
    return db.session.scalars(sa.select(Contact).where(expression)
                              .order_by(Contact.created_at.desc(), Contact.id).limit(limit)).all()


def count_segment(segment):
    if segment.type == "static":
        return _count_where(segment_condition(segment))
    try:
        return _count(count_query(segment.account_id, segment.conditions))
    except ValidationError:
        return 0  # a custom field it uses was deleted: it matches nobody until edited


def refresh_count(segment, commit=True):
    """Recount a segment and store the cache (contact_count, last_calculated)."""
    segment.contact_count = count_segment(segment)
    segment.last_calculated = utcnow()
    if commit:
        db.session.commit()
    return segment.contact_count


def _check_name(account_id, name, exclude_id=None):
    name = require_text(name, "name", "Name", 255)
    query = sa.select(Segment.id).where(Segment.account_id == account_id,
                                        sa.func.lower(Segment.name) == name.lower())
    if exclude_id is not None:
        query = query.where(Segment.id != exclude_id)
    if db.session.scalar(query) is not None:
        raise Conflict(f"A segment named {name!r} already exists.", [{"field": "name", "issue": "Already exists."}])
    return name


def create_segment(actor, name, type="dynamic", conditions=None):
    permissions.require(actor, "contacts:write")
    account_id = actor.account_id
    errors = []
    try:
        name = _check_name(account_id, name)
    except ValidationError as exc:
        errors += exc.details
    if type not in SEGMENT_TYPES:
        errors.append({"field": "type", "issue": 'Must be "dynamic" or "static".'})
    if type == "static":
        if conditions is not None and conditions != EMPTY_CONDITIONS:
            errors.append({"field": "conditions", "issue": "A static segment has explicit members, not conditions."})
        conditions = {"match": "all", "conditions": []}
    elif type == "dynamic":
        if conditions is None:
            errors.append({"field": "conditions", "issue": "Required for a dynamic segment."})
        else:
            try:
                conditions = validate_conditions(account_id, conditions)
            except ValidationError as exc:
                errors += exc.details
    if errors:
        raise ValidationError(errors[0]["issue"] if len(errors) == 1 else "Please correct the highlighted fields.",
                              errors)
    segment = Segment(account_id=account_id, name=name, type=type, conditions=conditions)
    db.session.add(segment)
    db.session.flush()
    refresh_count(segment, commit=False)
    db.session.commit()
    return segment


def update_segment(actor, segment_id, *, name=None, conditions=None):
    permissions.require(actor, "contacts:write")
    segment = get_segment(actor.account_id, segment_id)
    errors = []
    if name is not None:
        try:
            segment_name = _check_name(actor.account_id, name, exclude_id=segment.id)
        except ValidationError as exc:
            errors += exc.details
    if conditions is not None:
        if segment.type == "static":
            if conditions != EMPTY_CONDITIONS:
                errors.append({"field": "conditions",
                               "issue": "A static segment has explicit members, not conditions."})
        else:
            try:
                conditions = validate_conditions(actor.account_id, conditions)
            except ValidationError as exc:
                errors += exc.details
    if errors:
        raise ValidationError(errors[0]["issue"] if len(errors) == 1 else "Please correct the highlighted fields.",
                              errors)
    if name is not None:
        segment.name = segment_name
    if conditions is not None and segment.type == "dynamic":
        segment.conditions = conditions
    refresh_count(segment, commit=False)
    db.session.commit()
    return segment


def delete_segment(actor, segment_id):
    permissions.require(actor, "contacts:write")
    segment = get_segment(actor.account_id, segment_id)
    db.session.execute(sa.delete(SegmentMember).where(SegmentMember.segment_id == segment.id))
    db.session.delete(segment)
    db.session.commit()


def _static_segment(actor, segment_id):
    permissions.require(actor, "contacts:write")
    segment = get_segment(actor.account_id, segment_id)
    if segment.type != "static":
        raise ValidationError("Only static segments have explicit members; a dynamic segment follows its conditions.",
                              [{"field": "segment", "issue": "Not a static segment."}])
    return segment


def _contact_ids(contact_ids, field="contact_ids"):
    if not isinstance(contact_ids, (list, tuple)) or not contact_ids:
        raise ValidationError("Give a non-empty list of contact IDs.", [{"field": field, "issue": "Must be a non-empty list."}])
    if len(contact_ids) > MAX_MEMBERS_PER_CALL:
        raise ValidationError(f"At most {MAX_MEMBERS_PER_CALL} contact IDs at a time.",
                              [{"field": field, "issue": f"At most {MAX_MEMBERS_PER_CALL} items."}])
    ids, errors = [], []
    for index, value in enumerate(contact_ids):
        parsed = as_uuid(value) if isinstance(value, (str, uuid.UUID)) else None
        if parsed is None:
            errors.append({"field": f"{field}[{index}]", "issue": "Not a contact ID."})
        else:
            ids.append(parsed)
    if errors:
        raise ValidationError("Some contact IDs are not valid IDs.", errors)
    return list(dict.fromkeys(ids))


def add_members(actor, segment_id, contact_ids=None, *, emails=None):
    """Add the account's (non-deleted) contacts to a static segment by id or by email, in one
    INSERT ... SELECT; ids or emails of other accounts or unknown ones are ignored. Returns the number added."""
    segment = _static_segment(actor, segment_id)
    source = sa.select(Contact.id).where(base_condition(actor.account_id))
    if emails is not None:
        from nudge.services.validation import normalize_email
        wanted = []
        for email in emails:
            try:
                wanted.append(normalize_email(email))
            except ValidationError:
                continue
        if not wanted:
            return 0
        source = source.where(any_address(Contact.email, unique_addresses(wanted)))
    else:
        source = source.where(Contact.id.in_(_contact_ids(contact_ids)))
    already = sa.select(SegmentMember.contact_id).where(SegmentMember.segment_id == segment.id)
    source = source.where(Contact.id.not_in(already))
    rows = sa.select(sa.literal(segment.id, SegmentMember.segment_id.type), Contact.id,
                     sa.literal(actor.account_id, SegmentMember.account_id.type),
                     sa.literal(utcnow(), sa.DateTime)).where(source.whereclause)
    result = db.session.execute(sa.insert(SegmentMember).from_select(
        ["segment_id", "contact_id", "account_id", "added_at"], rows))
    added = result.rowcount or 0
    db.session.flush()
    table_stats.refresh_after_bulk_change({"segment_members": added}, actor.account_id)
    refresh_count(segment, commit=False)
    db.session.commit()
    return added


def remove_members(actor, segment_id, contact_ids):
    """Remove contacts from a static segment; returns the number removed."""
    segment = _static_segment(actor, segment_id)
    ids = _contact_ids(contact_ids)
    result = db.session.execute(sa.delete(SegmentMember).where(
        SegmentMember.segment_id == segment.id, SegmentMember.account_id == actor.account_id,
        SegmentMember.contact_id.in_(ids)))
    table_stats.refresh_after_bulk_change({"segment_members": result.rowcount or 0}, actor.account_id)
    refresh_count(segment, commit=False)
    db.session.commit()
    return result.rowcount or 0


def members_query(account_id, segment_id):
    """A static segment's (non-deleted) member contacts, most recently added first."""
    segment = get_segment(account_id, segment_id)
    return (sa.select(Contact).join(SegmentMember, sa.and_(SegmentMember.contact_id == Contact.id,
                                                           SegmentMember.segment_id == segment.id))
            .where(base_condition(segment.account_id))
            .order_by(SegmentMember.added_at.desc(), Contact.id))


# --------------------------------------------------------------------------------------------------
# Describing conditions in words (read-only views)

def field_choices(account_id, fields=None):
    """[(value, label, kind, options)] of every field a rule may use, built-ins first."""
    fields = custom_fields_service.definitions(account_id) if fields is None else fields
    choices = [(name, label, kind, MATCHABLE_STATUSES if kind == "status" else None)
               for name, (kind, label) in BUILTIN_FIELDS.items()]
    choices += [(f"custom.{f.name}", f.label, f.type, f.options) for f in fields.values()]
    return choices


def op_label(kind, op):
    if kind in ("date", "datetime") and op in DATE_OP_LABELS:
        return DATE_OP_LABELS[op]
    return OP_LABELS.get(op, op)


def describe(account_id, conditions):
    """Human-readable lines for a condition document: [(depth, text)]."""
    fields = {value: (label, kind) for value, label, kind, _ in field_choices(account_id)}
    lines = []

    def walk(node, depth):
        lines.append((depth, "Contacts matching " + ("all" if node.get("match", "all") == "all" else "any")
                      + " of:" if depth == 0 else ("All of:" if node.get("match") == "all" else "Any of:")))
        for child in node.get("conditions") or []:
            if "conditions" in child:
                walk(child, depth + 1)
            elif "event" in child:
                text = ("Has " if child.get("op") == "has" else "Has not ") + EVENT_LABELS.get(child.get("event"), "?")
                if child.get("campaign_id"):
                    text += " campaign " + child["campaign_id"]
                if child.get("within_days"):
                    text += f" in the last {child['within_days']} days"
                lines.append((depth + 1, text))
            else:
                label, kind = fields.get(child.get("field"), (child.get("field"), "text"))
                value = child.get("value")
                if isinstance(value, list):
                    value = ", ".join(str(v) for v in value)
                text = f"{label} {op_label(kind, child.get('op'))}".replace(" … days", "")
                if child.get("op") in ("within_days", "not_within_days"):
                    text += f" {value} days"
                elif child.get("op") not in VALUELESS_OPS:
                    text += f" {value}"
                lines.append((depth + 1, text))
    walk(conditions or EMPTY_CONDITIONS, 0)
    return lines
