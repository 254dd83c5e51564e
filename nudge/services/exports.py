"""Contact export: CSV or JSON of a filter or a segment, streamed (memory stays flat whatever the size).

The rows come from contacts.contacts_query (the list's filters, or segment_id) read with yield_per
(a server-side cursor on PostgreSQL); the generators yield text chunks for a streamed response.
Each export is recorded in the audit log as contact.exported with its format and count (spec section 5)."""
import io
import json

from nudge.errors import field_error
from nudge.extensions import db
from nudge.models.types import utcnow
from nudge.services import audit, contacts, custom_fields, permissions
from nudge.services.csv_safe import SafeWriter
from nudge.services.pagination import count_rows

FORMATS = ("csv", "json")
BATCH = 1000
BASE_COLUMNS = ("email", "first_name", "last_name", "status", "tags", "subscription_date", "created_at")
MIMETYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


class Export:
    """A prepared export: .chunks() yields the text, .filename/.mimetype/.count describe it."""

    def __init__(self, query, fmt, field_names, count):
        self.query, self.format, self.field_names, self.count = query, fmt, field_names, count
        self.filename = f"contacts-{utcnow():%Y%m%d-%H%M%S}.{fmt}"
        self.mimetype = MIMETYPES[fmt]

    def columns(self):
        return list(BASE_COLUMNS) + list(self.field_names)

    def _contacts(self):
        result = db.session.execute(self.query.execution_options(yield_per=BATCH))
        for contact in result.scalars():
            yield contact

    def chunks(self):
        return self._csv() if self.format == "csv" else self._json()

    def _csv(self):
        buffer = io.StringIO()
        writer = SafeWriter(buffer)
        writer.writerow(self.columns())
        names = self.field_names
        for n, contact in enumerate(self._contacts(), 1):
            data = contacts.serialize_contact(contact)
            values = data["custom_fields"]
            writer.writerow([data["email"], data["first_name"] or "", data["last_name"] or "", data["status"],
                             ",".join(data["tags"]), data["subscription_date"] or "", data["created_at"] or ""]
                            + [csv_value(values.get(name)) for name in names])
            if n % BATCH == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    def _json(self):
        yield "["
        separator = "\n"
        parts = []
        for n, contact in enumerate(self._contacts(), 1):
            parts.append(separator + json.dumps(contacts.serialize_contact(contact), ensure_ascii=False))
            separator = ",\n"
            if n % BATCH == 0:
                yield "".join(parts)
                parts = []
        yield "".join(parts) + "\n]\n"


def csv_value(value):
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def export_contacts(actor, filters, fmt="csv", ip=None):
    """Prepare an export of the actor's contacts matching filters (contacts.parse_filters' dict).

    Counts the rows, records the audit entry (committed), and returns an Export to stream."""
    permissions.require(actor, "contacts:read")
    fmt = (fmt or "csv").lower()
    if fmt not in FORMATS:
        raise field_error("format", "Must be csv or json.")
    query = contacts.contacts_query(actor.account_id, filters or {})
    count = count_rows(query)
    names = [field.name for field in custom_fields.list_fields(actor.account_id)]
    resources = []
    if (filters or {}).get("segment_id"):
        resources.append(f"segment:{filters['segment_id']}")
    audit.record("contact.exported", account_id=actor.account_id, actor=actor, ip=ip, resources=resources,
                 meta={"format": fmt, "count": count})
    db.session.commit()
    return Export(query, fmt, names, count)

