"""Contact imports: CSV files of any size (dashboard, API upload, CLI) and JSON batches (API).

The engine streams the file (never loads it whole), validates each row in Python without ORM objects
and writes set-based, one chunk per transaction:

* PostgreSQL: COPY the chunk into a TEMP staging table, then one INSERT ... SELECT ... ON CONFLICT
  (account_id, lower(email)) DO UPDATE ... WHERE <something differs> RETURNING (xmax = 0).

An address is one contact in any case (migration 0016): a row whose address exists in another spelling
updates (or skips) that contact, whose address keeps its first spelling.
* SQLite: executemany into a TEMP staging table, then UPDATE ... FROM the staging table (only rows that
  differ) and INSERT ... SELECT of the new addresses, in one transaction.

Semantics (docs/imports.md in short):

* Row numbers are a spreadsheet's: the header is row 1, so the first data row is 2 (a blank line keeps its
  number; a quoted cell spanning lines is one row). For JSON batches, the 1-based position in the list.
* Every row ends in exactly one of: created, updated, skipped, error. processed = their sum.
  - error: the row is rejected and listed with its column and reason: a bad email, a too-long name,
    a value of the wrong type for its custom field, a duplicate (in any case) of an earlier row of the same file
    ("first occurrence wins"), or a NEW address that is on the suppression list (such addresses are
    never created: "on the suppression list").
  - skipped: a valid row whose contact exists and either update_existing is off, or nothing differs
    (so re-running a file reports 0 created, 0 updated, N skipped and changes nothing).
  - updated (update_existing only): names replaced when the file gives them (an empty cell keeps the
    stored value), custom fields merged (file values win, others kept), tags added (never removed).
* Imports never set a status: new contacts are active; existing contacts keep theirs (unsubscribed,
  bounced, complained are never reactivated). A soft-deleted contact is revived only with
  update_existing, to the status it had before deletion (never "active" when its address is suppressed).
* Every chunk commits on its own (good rows land even if a later chunk fails) and updates the import's
  progress. At most MAX_STORED_ERRORS errors are stored per import; error_count keeps counting.
* contact.subscribed is emitted (set-based) for every created contact.
"""
import array
import codecs
import csv
import datetime as dt
import io
import json
import logging
import os
import queue
import random
import re
import shutil
import threading
import time
import types
import uuid

import sqlalchemy as sa
from flask import current_app

from nudge.errors import NotFound, ValidationError, field_error
from nudge.extensions import db
from nudge.models import Contact, Import, ImportError_
from nudge.models.types import iso, utcnow
from nudge.services import audit
from nudge.services import custom_fields as custom_fields_service
from nudge.services import events, permissions, table_stats
from nudge.services.csv_safe import SafeWriter
from nudge.services.dialect import is_postgres
from nudge.services.tags import MAX_TAG_LENGTH, normalize_tags
from nudge.services.validation import normalize_email

log = logging.getLogger("nudge.imports")

CHUNK_ROWS = 10_000
MAX_STORED_ERRORS = 50_000
MAX_API_ROWS = 10_000
MAX_NAME_LENGTH = 100
MAX_SHOWN_VALUE = 200  # characters of a rejected value kept in the error report
PREVIEW_ROWS = 5
DELIMITERS = (",", ";", "\t", "|")
BUILTIN_TARGETS = ("email", "first_name", "last_name", "tags")
TARGET_LABELS = {"email": "Email", "first_name": "First name", "last_name": "Last name", "tags": "Tags"}
API_ROW_KEYS = ("email", "first_name", "last_name", "tags", "custom_fields")

# Header names (lower-cased, without spaces, dashes, underscores or dots) that auto-map to a field.
ALIASES = {
    "email": {"email", "emailaddress", "mail", "emailaddr", "emails", "e-mail"},
    "first_name": {"firstname", "fname", "givenname", "forename", "first", "name"},
    "last_name": {"lastname", "lname", "surname", "familyname", "last"},
    "tags": {"tags", "tag", "labels", "label", "groups"},
}


# --- Reading files ---------------------------------------------------------------------------------

def detect_encoding(path):
    """UTF-8 (with or without BOM), UTF-16 with a BOM, else cp1252 (latin-1 when cp1252 cannot decode).

    Reads the file once in blocks (an incremental decoder: memory stays flat)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith(codecs.BOM_UTF16_LE) or head.startswith(codecs.BOM_UTF16_BE):
            return "utf-16"
        handle.seek(0)
        for encoding in ("utf-8", "cp1252"):
            decoder = codecs.getincrementaldecoder(encoding)()
            handle.seek(0)
            try:
                while True:
                    block = handle.read(1 << 20)
                    if not block:
                        decoder.decode(b"", final=True)
                        return encoding
                    decoder.decode(block)
            except UnicodeDecodeError:
                continue
    return "latin-1"


def sniff_delimiter(sample):
    """The delimiter among , ; tab | that splits the first lines most consistently."""
    lines = [line for line in sample.splitlines()[:20] if line.strip()]
    if not lines:
        return ","
    try:
        dialect = csv.Sniffer().sniff("\n".join(lines), delimiters="".join(DELIMITERS))
        if dialect.delimiter in DELIMITERS:
            return dialect.delimiter
    except csv.Error:
        pass
    best, best_count = ",", 0
    for delimiter in DELIMITERS:
        try:
            counts = [len(row) for row in csv.reader(lines, delimiter=delimiter)]
        except csv.Error:
            continue
        if counts[0] > 1 and counts[0] > best_count:
            best, best_count = delimiter, counts[0]
    return best


def count_lines(path):
    """Newlines in the file (an estimate of its rows for the progress bar), read in blocks."""
    total, last = 0, b""
    with open(path, "rb") as handle:
        while True:
            block = handle.read(1 << 20)
            if not block:
                break
            total += block.count(b"\n")
            last = block
    if last and not last.endswith(b"\n"):
        total += 1
    return total


def open_text(path, encoding):
    return open(path, "r", encoding=encoding, newline="", errors="strict")


def clean_header(header):
    """Column names: trimmed, blank ones named "Column N", repeated ones suffixed " (2)"."""
    names, seen = [], {}
    for index, name in enumerate(header):
        name = (name or "").strip().lstrip("\ufeff").strip() or f"Column {index + 1}"
        if name in seen:
            seen[name] += 1
            name = f"{name} ({seen[name]})"
        else:
            seen[name] = 1
        names.append(name)
    return names


def inspect_file(path):
    """{encoding, delimiter, header, preview (first rows), estimated_rows}; ValidationError when unusable."""
    encoding = detect_encoding(path)
    with open_text(path, encoding) as handle:
        sample = handle.read(64 * 1024)
    if not sample.strip():
        raise field_error("file", "The file is empty.")
    if "\x00" in sample:  # a zip, spreadsheet or image; PostgreSQL text could not even hold its header
        raise field_error("file", "This is not a CSV file: it holds binary data. Export the sheet as CSV first.")
    delimiter = sniff_delimiter(sample)
    with open_text(path, encoding) as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = next(reader)
            preview = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                preview.append(row)
                if len(preview) >= PREVIEW_ROWS:
                    break
        except csv.Error as exc:
            raise field_error("file", f"This does not look like a CSV file ({exc}).")
    if not header or not any(cell.strip() for cell in header):
        raise field_error("file", "The first line must name the columns (e.g. email,first_name,last_name).")
    header = clean_header(header)
    lines = count_lines(path)
    return {"encoding": encoding, "delimiter": delimiter, "header": header,
            "preview": [row + [""] * (len(header) - len(row)) for row in preview],
            "estimated_rows": max(lines - 1, 0)}


# --- Mapping ---------------------------------------------------------------------------------------

def _key(text):
    return re.sub(r"[\s_\-.]+", "", (text or "").lower())


def guess_target(column, fields):
    """The field a column header most likely means: a built-in field, an existing custom field, or None."""
    key = _key(column)
    if key.startswith("custom") and key[6:] in fields:
        return "custom." + key[6:]
    for target, aliases in ALIASES.items():
        if key in {_key(alias) for alias in aliases}:
            return target
    if "email" in key or "e-mail" in (column or "").lower():
        return "email"
    for name, field in fields.items():
        if key in (_key(name), _key(field.label)):
            return "custom." + name
    return None


def guess_mapping(header, fields):
    """{column: target or None}; one column per built-in field (the first that matches)."""
    mapping, used = {}, set()
    for column in header:
        target = guess_target(column, fields)
        if target in used and target != "tags":
            target = None
        if target:
            used.add(target)
        mapping[column] = target
    # "Name" only means the first name when no other column does.
    return mapping


def slug(column):
    """A custom field name made from a column header ("Signup Source" -> signup_source)."""
    name = re.sub(r"[^a-z0-9]+", "_", (column or "").lower()).strip("_")
    if not name or not name[0].isalpha():
        name = "field_" + name
    name = name[:50].rstrip("_")
    if name in custom_fields_service.RESERVED_NAMES:
        name = ("custom_" + name)[:50]
    return name


def parse_target(target):
    """Normalise a mapping value: "" / None / "ignore" -> None; "custom.x" or a built-in name."""
    if target is None:
        return None
    if isinstance(target, dict):
        target = target.get("field")
    if not isinstance(target, str):
        raise ValueError
    target = target.strip()
    if target in ("", "ignore", "-"):
        return None
    if target in BUILTIN_TARGETS or target.startswith("custom."):
        return target
    if target.startswith("custom_fields."):
        return "custom." + target[len("custom_fields."):]
    raise ValueError


def new_field_spec(spec, path):
    """(type, options) of a custom field the mapping creates, from a type name or {"type", "options"}; every
    custom field type is offered, a choice field with its options (a list, or one comma-separated string)."""
    if not isinstance(spec, dict):
        spec = {"type": spec}
    kind = spec.get("type") or "text"
    if kind not in custom_fields_service.CUSTOM_FIELD_TYPES:
        raise field_error(f"{path}.type", "A new field's type must be one of "
                                          + ", ".join(custom_fields_service.CUSTOM_FIELD_TYPES) + ".")
    options = spec.get("options")
    if kind != "choice":
        return kind, None
    if isinstance(options, str):
        options = [option.strip() for option in options.split(",") if option.strip()]
    try:
        return kind, custom_fields_service.check_options(kind, options)
    except ValidationError as exc:
        raise field_error(f"{path}.options", exc.details[0]["issue"])


def resolve_mapping(actor, header, mapping, new_fields=None, *, create=True):
    """Validate a {column: target} mapping against the header and the account's custom fields.

    Targets: email, first_name, last_name, tags, custom.<name>, or None/"" (the column is ignored).
    A mapping value may also be {"field": "custom.<name>", "type": "number"} (a choice field adds "options").
    custom.<name> that is not defined yet is created (type text unless new_fields[name], a type name or
    {"type", "options"}, or the value's "type" says otherwise).
    Returns the clean mapping {column: target} for every header column."""
    if not isinstance(mapping, dict):
        raise field_error("mapping", "Must be an object of column name -> field.")
    new_fields = dict(new_fields or {})
    errors, clean = [], {}
    for column, target in mapping.items():
        if column not in header:
            errors.append({"field": f"mapping.{column}", "issue": "No such column in the file's header."})
            continue
        if isinstance(target, dict) and target.get("type"):
            name = str(target.get("field", "")).split(".", 1)[-1]
            new_fields.setdefault(name, {"type": target.get("type"), "options": target.get("options")})
        try:
            clean[column] = parse_target(target)
        except ValueError:
            errors.append({"field": f"mapping.{column}",
                           "issue": "Must be email, first_name, last_name, tags, custom.<name> or empty (ignore)."})
    targets = [t for t in clean.values() if t]
    for target in set(targets):
        if target != "tags" and targets.count(target) > 1:
            errors.append({"field": "mapping", "issue": f"Only one column can be mapped to {target}."})
    if "email" not in targets and not errors:
        errors.append({"field": "mapping", "issue": "Map one column to email."})
    fields = custom_fields_service.definitions(actor.account_id)
    to_create = {}  # name -> (type, options) of the fields to define
    for target in targets:
        if target.startswith("custom."):
            name = target[len("custom."):]
            if name not in fields and name not in to_create:
                try:
                    custom_fields_service.check_name(name, f"mapping.{target}")
                except ValidationError as exc:
                    errors += exc.details
                    continue
                try:
                    to_create[name] = new_field_spec(new_fields.get(name), f"mapping.{target}")
                except ValidationError as exc:
                    errors += exc.details
    if len(fields) + len(to_create) > custom_fields_service.MAX_FIELDS:
        errors.append({"field": "mapping", "issue": f"An account can have at most {custom_fields_service.MAX_FIELDS} custom fields."})
    if errors:
        raise ValidationError(errors[0]["issue"], errors)
    if create:
        for name, (kind, options) in to_create.items():
            custom_fields_service.create_field(actor, name=name, type=kind, options=options)
    return {column: clean.get(column) for column in header}


# --- Row validation --------------------------------------------------------------------------------

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_FAST_EMAIL = re.compile(
    rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+[A-Za-z]{{2,63}})")
_SPECIAL_TLDS = frozenset(("arpa", "invalid", "local", "localhost", "onion", "test"))


def fast_normalize_email(value):
    """normalize_email() for plain ASCII addresses without calling email-validator; None when unsure.

    Accepts only what email-validator accepts and returns the same result (local part kept, domain
    lower-cased); anything unusual (quotes, Unicode, IDNA, "--" in a label, special-use domains,
    length limits) is left to the full validator."""
    match = _FAST_EMAIL.fullmatch(value)
    if match is None:
        return None
    local, domain = match.groups()
    if len(local) > 64 or len(value) > 254 or "--" in domain:
        return None
    domain = domain.lower()
    if domain.rsplit(".", 1)[1] in _SPECIAL_TLDS:
        return None
    return local + "@" + domain


def check_email(value):
    value = value.strip()
    return fast_normalize_email(value) or normalize_email(value)


class SeenAddresses:
    """hash(email) -> row number of its first occurrence, for de-duplicating a file of any size.

    An open-addressing table in two arrays (12 bytes a slot, ~24 MB for a million addresses) instead
    of a dict of Python ints (~120 MB). Addresses are compared by their 64-bit hash: two different
    addresses collide with a probability of about n²/2⁶⁵ (3e-8 for a million rows)."""

    def __init__(self, capacity=1 << 14):
        self.keys = array.array("q", [0]) * capacity
        self.rows = array.array("i", [0]) * capacity
        self.mask = capacity - 1
        self.count = 0

    def get(self, key):
        key = key or 1  # 0 marks an empty slot
        keys, mask = self.keys, self.mask
        i = key & mask
        while True:
            found = keys[i]
            if found == key:
                return self.rows[i]
            if found == 0:
                return None
            i = (i + 1) & mask

    def add(self, key, row):
        key = key or 1
        if (self.count + 1) * 10 > len(self.keys) * 7:
            self._grow()
        keys, mask = self.keys, self.mask
        i = key & mask
        while keys[i] != 0 and keys[i] != key:
            i = (i + 1) & mask
        if keys[i] == 0:
            self.count += 1
        keys[i] = key
        self.rows[i] = row

    def _grow(self):
        old_keys, old_rows = self.keys, self.rows
        capacity = len(old_keys) * 2
        self.keys = array.array("q", [0]) * capacity
        self.rows = array.array("i", [0]) * capacity
        self.mask = capacity - 1
        keys, rows, mask = self.keys, self.rows, self.mask
        for key, row in zip(old_keys, old_rows):
            if key:
                i = key & mask
                while keys[i] != 0:
                    i = (i + 1) & mask
                keys[i] = key
                rows[i] = row


class RowValidator:
    """Turns one input row into a record (email, first_name, last_name, tags, custom) or errors.

    Shared by CSV rows (a list of cells + the column mapping) and API rows (dicts)."""

    def __init__(self, fields, extra_tags=(), header=None, mapping=None):
        # Plain copies of the definitions: the parser may run in another thread, after commits expired the ORM objects.
        self.fields = {name: types.SimpleNamespace(name=f.name, label=f.label, type=f.type, options=list(f.options or []))
                       for name, f in fields.items()}
        self.extra_tags = list(extra_tags)
        self.seen = SeenAddresses()  # hash(email) -> first row number (first occurrence wins)
        self.columns = []  # (index, column name, target) of the mapped columns
        if header is not None:
            for index, column in enumerate(header):
                target = (mapping or {}).get(column)
                if target:
                    self.columns.append((index, column, target))
            self.email_index = next(i for i, _, t in self.columns if t == "email")
            self.email_column = next(c for _, c, t in self.columns if t == "email")
            self.other_columns = [(i, c, t) for i, c, t in self.columns if t != "email"]

    def _email(self, raw, field, row_number, errors):
        try:
            email = check_email(raw or "")
        except ValidationError as exc:
            errors.append((row_number, field, exc.details[0]["issue"] if exc.details else exc.message, raw))
            return None
        key = hash(email.lower())  # one contact per address in any case (migration 0016)
        first = self.seen.get(key)
        if first is not None:
            errors.append((row_number, field, f"Duplicate of row {first} in this file (the first occurrence is imported).",
                           raw))
            return None
        return email

    def _finish(self, row_number, email, first_name, last_name, tags, custom, errors, field):
        if errors:
            return None
        self.seen.add(hash(email.lower()), row_number)
        if self.extra_tags:
            tags = list(dict.fromkeys((tags or []) + self.extra_tags))
        return (row_number, email, first_name, last_name, tags or None, custom)

    def csv_row(self, row_number, cells, errors):
        """A record from a CSV row (list of cells), or None with (row, column, reason) added to errors."""
        n = len(cells)
        first_error = len(errors)
        email = None
        raw = cells[self.email_index] if self.email_index < n else ""
        first_name = last_name = tags = None
        custom = {}
        for index, column, target in self.other_columns:
            value = cells[index].strip() if index < n else ""
            if not value:
                continue
            if target == "first_name" or target == "last_name":
                if len(value) > MAX_NAME_LENGTH:
                    errors.append((row_number, column, f"At most {MAX_NAME_LENGTH} characters.", value))
                elif target == "first_name":
                    first_name = value
                else:
                    last_name = value
            elif target == "tags":
                # normalize_tags' rules, inlined (hot loop): trimmed, inner whitespace collapsed, no empties/duplicates.
                more = tags if tags is not None else []
                for tag in value.replace(";", ",").split(","):
                    tag = " ".join(tag.split())
                    if tag and tag not in more:
                        if len(tag) > MAX_TAG_LENGTH:
                            errors.append((row_number, column, f"A tag may have at most {MAX_TAG_LENGTH} characters.",
                                           tag))
                            break
                        more.append(tag)
                tags = more
            else:
                name = target[7:]
                field = self.fields.get(name)
                if field is None:
                    continue
                if field.type == "text" and len(value) <= custom_fields_service.MAX_TEXT_LENGTH:
                    custom[name] = value
                    continue
                try:
                    custom[name] = custom_fields_service.coerce_value(field, value, column)
                except ValidationError as exc:
                    errors.append((row_number, column, exc.details[0]["issue"], value))
        if len(errors) == first_error:
            email = self._email(raw, self.email_column, row_number, errors)
        else:
            # Report a bad email too, but never count this row as the first occurrence of its address.
            try:
                check_email(raw or "")
            except ValidationError as exc:
                errors.append((row_number, self.email_column,
                               exc.details[0]["issue"] if exc.details else exc.message, raw))
        return self._finish(row_number, email, first_name, last_name, tags, custom, errors[first_error:], None)

    def api_row(self, row_number, item, errors):
        """A record from one JSON contact object, or None with (row, field, reason) added to errors."""
        first_error = len(errors)
        if not isinstance(item, dict):
            errors.append((row_number, None, "Must be an object with at least an email.", item))
            return None
        for key in item:
            if key not in API_ROW_KEYS:
                errors.append((row_number, key, "Unknown field; an import sets only " + ", ".join(API_ROW_KEYS) + ".",
                               item[key]))
        names = {}
        for key in ("first_name", "last_name"):
            value = item.get(key)
            if value is None:
                names[key] = None
            elif not isinstance(value, str):
                errors.append((row_number, key, "Must be a string.", value))
            elif len(value.strip()) > MAX_NAME_LENGTH:
                errors.append((row_number, key, f"At most {MAX_NAME_LENGTH} characters.", value))
            else:
                names[key] = value.strip() or None
        tags = None
        try:
            tags = normalize_tags(item.get("tags"), "tags") or None
        except ValidationError as exc:
            errors.append((row_number, "tags", exc.details[0]["issue"], item.get("tags")))
        custom = {}
        try:
            custom, _ = custom_fields_service.validate_values(item.get("custom_fields"), self.fields)
        except ValidationError as exc:
            for detail in exc.details:
                errors.append((row_number, detail["field"], detail["issue"], _custom_value(item, detail["field"])))
        email = None
        if len(errors) == first_error:
            if not isinstance(item.get("email"), str):
                errors.append((row_number, "email", "Email address is required.", item.get("email")))
            else:
                email = self._email(item["email"], "email", row_number, errors)
        return self._finish(row_number, email, names.get("first_name"), names.get("last_name"), tags, custom,
                            errors[first_error:], None)


def _custom_value(item, field):
    """The value an API row gave for a custom field error at "custom_fields.<name>" (the whole object otherwise)."""
    values = item.get("custom_fields")
    if isinstance(values, dict) and field.startswith("custom_fields."):
        return values.get(field[len("custom_fields."):])
    return values


def shown_value(value):
    """A rejected value as the error report shows it: text as given, anything else as compact JSON, at most
    MAX_SHOWN_VALUE characters (an error report lists what was wrong, not a copy of the file)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = text.replace("\x00", "")  # PostgreSQL text cannot hold NUL
    return text if len(text) <= MAX_SHOWN_VALUE else text[:MAX_SHOWN_VALUE - 1] + "…"


def one_sentence(message):
    """A reason as one sentence ending in a single full stop: wrapped messages (a validator's text inside
    ours) otherwise end in ".)." or "..", and one reason per row reads best as one sentence."""
    text = " ".join(str(message).split()).rstrip(" .;:,")
    return (text[:1].upper() + text[1:] + ".") if text else "Not valid."


# --- Writing chunks --------------------------------------------------------------------------------

STAGE = "nudge_import_stage"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


_NEEDS_COPY_ESCAPE = re.compile(r"[\\\t\n\r]")
_json_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _copy_text(value):
    if value is None:
        return "\\N"
    return value.translate(_COPY_ESCAPES) if _NEEDS_COPY_ESCAPE.search(value) else value


def _pg_array(tags):
    if tags is None:
        return "\\N"
    return _copy_text("{" + ",".join('"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in tags) + "}")


def _dumps(value):
    return _json_encode(value)


_MASK_62 = (1 << 62) - 1


def time_ordered_ids(count):
    """count new UUIDv7s (RFC 9562: 48-bit Unix ms, version 7, 74 random bits) as 32 hex digits.

    New contacts' ids are time-ordered so that the primary key (and email_events' contact index)
    grow at their right edge instead of at random pages: measured ~1.5x faster inserts on a
    million-row table. 32 hex digits are what sa.Uuid stores on SQLite and valid uuid input on PostgreSQL."""
    base = (time.time_ns() // 1_000_000 << 80) | (0x7 << 76) | (0b10 << 62)
    bits = random.getrandbits
    ids = []
    for _ in range(count):
        r = bits(74)
        ids.append(f"{base | (r >> 62) << 64 | (r & _MASK_62):032x}")
    return ids


def encode_postgres(records):
    """A chunk's records as the text of a COPY ... FROM STDIN (built in the parser thread)."""
    return "".join([
        f"{new_id}\t{row_number}\t{_copy_text(email)}\t{_copy_text(first_name)}\t{_copy_text(last_name)}\t"
        f"{_pg_array(tags)}\t{_copy_text(_json_encode(custom)) if custom else '{}'}\n"
        for new_id, (row_number, email, first_name, last_name, tags, custom)
        in zip(time_ordered_ids(len(records)), records)])


def encode_sqlite(records):
    """A chunk's records as executemany parameters (built in the parser thread)."""
    return [(new_id, row_number, email, first_name, last_name, _json_encode(tags) if tags else None,
             _json_encode(custom) if custom else "{}")
            for new_id, (row_number, email, first_name, last_name, tags, custom)
            in zip(time_ordered_ids(len(records)), records)]


_PG_MERGE = f"""
WITH merged AS (
INSERT INTO contacts AS c (id, account_id, email, first_name, last_name, status, subscription_date,
                           custom_fields, tags, source, created_at, updated_at)
SELECT s.id, %(account)s::uuid, s.email, s.first_name, s.last_name, 'active', %(now)s,
       s.custom, s.tags, 'import', %(now)s, %(now)s
FROM {STAGE} s
ON CONFLICT (account_id, lower(email)) DO {{action}}
RETURNING (xmax = 0) AS inserted)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged
"""

_PG_UPDATE = """UPDATE SET
  first_name = coalesce(EXCLUDED.first_name, c.first_name),
  last_name = coalesce(EXCLUDED.last_name, c.last_name),
  custom_fields = c.custom_fields || EXCLUDED.custom_fields,
  tags = CASE WHEN EXCLUDED.tags IS NULL OR coalesce(c.tags, '{}') @> EXCLUDED.tags THEN c.tags
              ELSE coalesce(c.tags, '{}') || ARRAY(SELECT u.t FROM unnest(EXCLUDED.tags) WITH ORDINALITY AS u(t, n)
                                                  WHERE u.t <> ALL(coalesce(c.tags, '{}')) ORDER BY u.n) END,
  status = CASE WHEN c.status <> 'deleted' THEN c.status
                WHEN coalesce(c.status_before_delete, 'active') = 'active' AND EXISTS (
                     SELECT 1 FROM suppressions p WHERE p.account_id = c.account_id AND lower(p.email) = lower(c.email))
                THEN 'unsubscribed'
                ELSE coalesce(c.status_before_delete, 'active') END,
  deleted_at = CASE WHEN c.status = 'deleted' THEN NULL ELSE c.deleted_at END,
  status_before_delete = CASE WHEN c.status = 'deleted' THEN NULL ELSE c.status_before_delete END,
  updated_at = EXCLUDED.updated_at
WHERE c.status = 'deleted'
   OR (EXCLUDED.first_name IS NOT NULL AND EXCLUDED.first_name IS DISTINCT FROM c.first_name)
   OR (EXCLUDED.last_name IS NOT NULL AND EXCLUDED.last_name IS DISTINCT FROM c.last_name)
   OR NOT (c.custom_fields @> EXCLUDED.custom_fields)
   OR NOT (coalesce(c.tags, '{}') @> coalesce(EXCLUDED.tags, '{}'))"""

_SUPPRESSED_NEW = f"""
DELETE FROM {STAGE}
WHERE EXISTS (SELECT 1 FROM suppressions p WHERE p.account_id = {{account}} AND lower(p.email) = lower({STAGE}.email))
  AND NOT EXISTS (SELECT 1 FROM contacts c WHERE c.account_id = {{account}} AND lower(c.email) = lower({STAGE}.email))
RETURNING row_number, email
"""

_SQLITE_UPDATE = f"""
UPDATE contacts AS c SET
  first_name = coalesce(s.first_name, c.first_name),
  last_name = coalesce(s.last_name, c.last_name),
  custom_fields = json_patch(c.custom_fields, s.custom),
  tags = CASE WHEN s.tags IS NULL OR NOT EXISTS (
                   SELECT 1 FROM json_each(s.tags) n WHERE n.value NOT IN (SELECT value FROM json_each(coalesce(c.tags, '[]'))))
              THEN c.tags
              ELSE (SELECT json_group_array(value) FROM (
                      SELECT value FROM json_each(coalesce(c.tags, '[]'))
                      UNION ALL
                      SELECT n.value FROM json_each(s.tags) n
                      WHERE n.value NOT IN (SELECT value FROM json_each(coalesce(c.tags, '[]'))))) END,
  status = CASE WHEN c.status <> 'deleted' THEN c.status
                WHEN coalesce(c.status_before_delete, 'active') = 'active' AND EXISTS (
                     SELECT 1 FROM suppressions p WHERE p.account_id = c.account_id AND lower(p.email) = lower(c.email))
                THEN 'unsubscribed'
                ELSE coalesce(c.status_before_delete, 'active') END,
  deleted_at = CASE WHEN c.status = 'deleted' THEN NULL ELSE c.deleted_at END,
  status_before_delete = CASE WHEN c.status = 'deleted' THEN NULL ELSE c.status_before_delete END,
  updated_at = :now
FROM {STAGE} s
WHERE c.account_id = :account AND lower(c.email) = lower(s.email) AND (
      c.status = 'deleted'
   OR (s.first_name IS NOT NULL AND s.first_name IS NOT c.first_name)
   OR (s.last_name IS NOT NULL AND s.last_name IS NOT c.last_name)
   OR json_patch(c.custom_fields, s.custom) <> json(c.custom_fields)
   OR (s.tags IS NOT NULL AND EXISTS (
         SELECT 1 FROM json_each(s.tags) n WHERE n.value NOT IN (SELECT value FROM json_each(coalesce(c.tags, '[]'))))))
"""

_SQLITE_INSERT = f"""
INSERT INTO contacts (id, account_id, email, first_name, last_name, status, subscription_date, custom_fields, tags,
                      source, created_at, updated_at)
SELECT s.id, :account, s.email, s.first_name, s.last_name, 'active', :now, s.custom, s.tags,
       'import', :now, :now
FROM {STAGE} s
WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.account_id = :account AND lower(c.email) = lower(s.email))
"""

_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


def _write_postgres(account_id, encoded, update_existing, now):
    """(created, updated, suppressed (row number, email) pairs) for one encoded chunk; the caller commits."""
    raw = db.session.connection().connection.dbapi_connection
    cursor = raw.cursor()
    try:
        # A chunk is safe to repeat (the merge is idempotent), so its commit need not wait for the WAL
        # flush: a crash can lose at most the last moment's chunks, with their progress, never half a chunk.
        cursor.execute("SET LOCAL synchronous_commit TO off")
        cursor.execute(f"CREATE TEMP TABLE {STAGE} (id uuid, row_number integer, email text, first_name text, "
                       f"last_name text, tags text[], custom jsonb) ON COMMIT DROP")
        buffer = io.StringIO(encoded)
        cursor.copy_expert(f"COPY {STAGE} FROM STDIN", buffer)
        buffer.close()
        params = {"account": str(account_id), "now": now}
        cursor.execute(_SUPPRESSED_NEW.format(account="%(account)s::uuid"), params)
        suppressed = [(row[0], row[1]) for row in cursor.fetchall()]
        action = _PG_UPDATE if update_existing else "NOTHING"
        cursor.execute(_PG_MERGE.format(action=action), params)
        created, updated = cursor.fetchone()
        cursor.execute(f"DROP TABLE {STAGE}")
    finally:
        cursor.close()
    return created, updated, suppressed


SQLITE_IMPORT_CACHE_KIB = 64 * 1024


def _write_sqlite(account_id, encoded, update_existing, now):
    raw = db.session.connection().connection.dbapi_connection
    cursor = raw.cursor()
    try:
        # A chunk touches pages all over the indexes; with SQLite's default 2 MB page cache it spills dirty
        # pages to the journal mid-transaction (measured: 2x slower at 300k rows). 64 MB while importing;
        # ChunkWriter.close() puts the default back.
        cursor.execute(f"PRAGMA cache_size = -{SQLITE_IMPORT_CACHE_KIB}")
        cursor.execute("PRAGMA temp_store = MEMORY")
        if not raw.in_transaction:
            # The write lock first, waiting for another writer (a sending campaign) if there is one. A chunk
            # that read before writing would hold a read lock that the other writer's commit must wait for,
            # and SQLite would end that deadlock by failing this chunk with "database is locked".
            cursor.execute("BEGIN IMMEDIATE")
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} (id TEXT, row_number INTEGER, email TEXT, first_name TEXT, "
                       f"last_name TEXT, tags TEXT, custom TEXT)")
        cursor.execute(f"DELETE FROM {STAGE}")
        cursor.executemany(f"INSERT INTO {STAGE} VALUES (?, ?, ?, ?, ?, ?, ?)", encoded)
        params = {"account": account_id.hex, "now": now.strftime(_SQLITE_TIME)}
        cursor.execute(_SUPPRESSED_NEW.format(account=":account"), params)
        suppressed = [(row[0], row[1]) for row in cursor.fetchall()]
        updated = 0
        if update_existing:
            cursor.execute(_SQLITE_UPDATE, params)
            updated = max(cursor.rowcount, 0)
        cursor.execute(_SQLITE_INSERT, params)
        created = max(cursor.rowcount, 0)
        cursor.execute(f"DELETE FROM {STAGE}")
    finally:
        cursor.close()
    return created, updated, suppressed


class ChunkWriter:
    """Writes chunks of records for one import and keeps its counts; each chunk is one transaction."""

    def __init__(self, imp, update_existing):
        self.imp_id = imp.id
        self.account_id = imp.account_id
        self.update_existing = update_existing
        self.postgres = is_postgres()
        self.encode = encode_postgres if self.postgres else encode_sqlite  # pure Python: any thread
        self.last_now = None
        self.counts = {"processed": 0, "created": 0, "updated": 0, "skipped": 0, "errors": 0}
        self.stored_errors = 0
        self.lock = threading.Lock()  # counts, error quota and chunk timestamps are shared by writers
        self.on_progress = None  # called with the rows processed so far after each chunk is counted

    def close(self):
        """Give the connection its default page cache back (SQLite; the import raised it)."""
        if not self.postgres:
            try:
                raw = db.session.connection().connection.dbapi_connection
                raw.execute("PRAGMA cache_size = -2000")
                raw.execute("PRAGMA temp_store = DEFAULT")
            except Exception:  # noqa: BLE001 - best effort
                log.warning("could not reset the SQLite page cache size", exc_info=True)

    def _now(self):
        """A timestamp no other chunk of this import has: it identifies the chunk's new contacts."""
        with self.lock:
            now = utcnow()
            if self.last_now is not None and now <= self.last_now:
                now = self.last_now + dt.timedelta(microseconds=1)
            self.last_now = now
            return now

    def table_changes(self):
        """Rows changed per table so far (for the statistics refresh): contacts created or updated, their side
        rows, and one contact.subscribed event per created contact."""
        changes = table_stats.contact_changes(self.counts["created"] + self.counts["updated"], events=False)
        changes["email_events"] = self.counts["created"]
        return changes

    def write_records(self, records, errors, rows_seen):
        self.write(self.encode(records), len(records), errors, rows_seen)

    def write(self, encoded, valid_rows, errors, rows_seen):
        """Write one chunk (its own transaction), then count it on the Import row (a short second one)."""
        self._record(*self._write_chunk(encoded, valid_rows, errors, rows_seen))

    def _write_chunk(self, encoded, valid_rows, errors, rows_seen):
        """The chunk's contacts, events and error rows, committed together; returns what to count."""
        now = self._now()
        created = updated = 0
        suppressed = []
        if valid_rows:
            writer = _write_postgres if self.postgres else _write_sqlite
            created, updated, suppressed = writer(self.account_id, encoded, self.update_existing, now)
        if suppressed:
            errors = errors + [(row, None, "On the suppression list: not imported.", email) for row, email in suppressed]
        if created:
            ids = sa.select(Contact.id).where(Contact.account_id == self.account_id, Contact.created_at == now,
                                              Contact.source == "import")
            events.emit_for_contacts(self.account_id, "contact.subscribed", ids,
                                     {"source": "import", "import_id": str(self.imp_id)})
        with self.lock:
            room = MAX_STORED_ERRORS - self.stored_errors
            kept = sorted(errors, key=lambda e: e[0])[:max(room, 0)] if errors else []
            self.stored_errors += len(kept)
        if kept:
            db.session.execute(sa.insert(ImportError_), [
                {"import_id": self.imp_id, "row_number": row, "field": (field or None) and str(field)[:100],
                 "message": one_sentence(message), "value": shown_value(value)}
                for row, field, message, value in kept])
        db.session.commit()
        return rows_seen, created, updated, valid_rows - len(suppressed)

    def _record(self, rows_seen, created, updated, written):
        with self.lock:
            c = self.counts
            c["processed"] += rows_seen
            c["created"] += created
            c["updated"] += updated
            c["skipped"] += written - created - updated
            c["errors"] += rows_seen - written  # rejected rows (one row may have several error entries)
            values = dict(processed_rows=c["processed"], created_count=c["created"], updated_count=c["updated"],
                          skipped_count=c["skipped"], error_count=c["errors"], updated_at=utcnow())
            # Under the lock: two writers' progress updates reach the row in the order of their counts.
            db.session.execute(sa.update(Import).where(Import.id == self.imp_id).values(**values))
            db.session.commit()
            if self.on_progress:
                self.on_progress(c["processed"])


def write_chunks(writer, chunks, progress=None, writers=1):
    """Write encoded chunks in order, or with writers > 1 on that many connections at once.

    Parallel chunks never touch the same contact (the file is de-duplicated before writing) nor a shared
    row inside their transactions (progress is counted afterwards), so they cannot deadlock."""
    writer.on_progress = progress
    if writers <= 1:
        for chunk in chunks:
            writer.write(*chunk)
        return
    app = current_app._get_current_object()
    work = queue.Queue(maxsize=writers)
    failures = []

    def drain():
        with app.app_context():
            while (chunk := work.get()) is not _DONE:
                if failures:
                    continue  # a chunk failed: stop writing, keep draining so the producer never blocks
                try:
                    writer.write(*chunk)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                    db.session.rollback()
                    failures.append(exc)

    threads = [threading.Thread(target=drain, name=f"import-writer-{n}", daemon=True) for n in range(writers)]
    for thread in threads:
        thread.start()
    try:
        for chunk in chunks:
            if failures:
                break
            work.put(chunk)
    finally:
        for _ in threads:
            work.put(_DONE)
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]


# --- Running imports -------------------------------------------------------------------------------

def upload_dir():
    """Where uploaded CSVs wait for their import: IMPORT_DIR, a private folder (never the public uploads folder),
    readable by the owner only (they hold subscribers' data)."""
    path = current_app.config.get("IMPORT_DIR") or os.path.join(_instance_path(), "imports")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _instance_path():
    return current_app.config.get("INSTANCE_PATH") or current_app.instance_path


def legacy_upload_dir():
    """Where uploads were stored before: inside the (publicly served) uploads folder."""
    return os.path.join(_instance_path(), "uploads", "imports")


def move_legacy_uploads():
    """Move the files of imports waiting to be configured out of the old, public location into upload_dir(), and
    delete files there that no import waits for. An import queued or running keeps its file where it is (its
    worker holds the path; it removes the file when it ends, and the next pass removes the folder).
    Returns how many files moved."""
    legacy = legacy_upload_dir()
    if not os.path.isdir(legacy):
        return 0
    legacy = os.path.abspath(legacy)
    in_legacy = Import.file_path.startswith(legacy + os.sep, autoescape=True)
    waiting = db.session.scalars(sa.select(Import).where(Import.status.in_(("pending", "running")), in_legacy)).all()
    moved, kept = 0, set()
    for imp in waiting:
        if imp.status != "pending" or imp.options.get("queued"):
            kept.add(imp.file_path)
            continue
        target = os.path.join(upload_dir(), os.path.basename(imp.file_path))
        try:
            shutil.move(imp.file_path, target)
        except FileNotFoundError:
            continue
        imp.file_path = target
        moved += 1
    db.session.commit()
    for name in os.listdir(legacy):
        path = os.path.join(legacy, name)
        if path not in kept and os.path.isfile(path):
            os.remove(path)
    if not os.listdir(legacy):
        os.rmdir(legacy)
    return moved


def _actor_id(actor):
    from nudge.models import User
    return actor.id if isinstance(actor, User) else None


def get_import(account_id, import_id):
    try:
        import_id = uuid.UUID(str(import_id))
    except ValueError:
        raise NotFound("No such import.")
    imp = db.session.scalar(sa.select(Import).where(Import.id == import_id, Import.account_id == account_id))
    if imp is None:
        raise NotFound("No such import.")
    return imp


def imports_query(account_id):
    return sa.select(Import).where(Import.account_id == account_id).order_by(Import.created_at.desc(), Import.id.desc())


def errors_query(account_id, import_id):
    imp = get_import(account_id, import_id)
    return sa.select(ImportError_).where(ImportError_.import_id == imp.id).order_by(ImportError_.row_number,
                                                                                      ImportError_.id)


def first_errors(account_id, import_id, limit):
    """The first stored errors of an import, by row."""
    return db.session.scalars(errors_query(account_id, import_id).limit(limit)).all()


def error_json(error):
    """One stored error as the API lists it."""
    return {"row": error.row_number, "field": error.field, "value": error.value, "message": error.reason}


def errors_csv(account_id, import_id):
    """The import's stored errors as CSV text chunks (row, column, value, reason), streamed from the database."""
    query = errors_query(account_id, import_id)
    buffer = io.StringIO()
    writer = SafeWriter(buffer)
    writer.writerow(["row", "column", "value", "reason"])
    for count, error in enumerate(db.session.scalars(query.execution_options(yield_per=2000)), 1):
        writer.writerow([error.row_number, error.field or "", error.value or "", error.reason])
        if count % 2000 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def create_upload(actor, stream, filename, *, source="csv"):
    """Store an uploaded CSV (streamed to disk) as a pending import and inspect it."""
    permissions.require(actor, "contacts:write")
    filename = os.path.basename((filename or "").replace("\\", "/"))[:255] or "contacts.csv"
    imp = Import(account_id=actor.account_id, created_by=_actor_id(actor), source=source, filename=filename,
                 status="pending", mapping={}, options={})
    db.session.add(imp)
    db.session.flush()
    path = os.path.join(upload_dir(), f"{imp.id}.csv")
    with open(path, "wb") as out:
        while True:
            block = stream.read(1 << 20)
            if not block:
                break
            out.write(block)
    try:
        info = inspect_file(path)
    except ValidationError:
        os.remove(path)
        db.session.rollback()
        raise
    imp.file_path = path
    imp.total_rows = info["estimated_rows"]
    imp.options = {"encoding": info["encoding"], "delimiter": info["delimiter"], "header": info["header"]}
    db.session.commit()
    return imp


def preview(imp):
    """{header, rows (first 5), guessed mapping} of a pending upload."""
    info = inspect_file(imp.file_path)
    fields = custom_fields_service.definitions(imp.account_id)
    return {"header": info["header"], "rows": info["preview"], "guessed": guess_mapping(info["header"], fields),
            "encoding": info["encoding"], "delimiter": info["delimiter"]}


def parse_options(update_existing, tags):
    errors = []
    if isinstance(update_existing, str):
        update_existing = update_existing.strip().lower() in ("1", "true", "yes", "on", "update")
    elif update_existing is None:
        update_existing = False
    elif not isinstance(update_existing, bool):
        errors.append({"field": "update_existing", "issue": "Must be true or false."})
    try:
        tags = normalize_tags(tags if not isinstance(tags, str) else tags.replace(";", ","), "tags")
    except ValidationError as exc:
        errors += exc.details
    if errors:
        raise ValidationError(errors[0]["issue"], errors)
    return bool(update_existing), tags


PERMISSION_REQUIRED = "Confirm that these contacts gave permission to be emailed."


def permission_record(actor, confirmed, *, required=False):
    """The import's record of the "these contacts gave permission to be emailed" confirmation: who and when
    ({"confirmed_by", "confirmed_by_label", "confirmed_at"}), or None when it was not given. Kept in the
    import's options (and the audit log's contact.imported entry), so no schema change was needed."""
    if isinstance(confirmed, str):  # a form field
        word = confirmed.strip().lower()
        if word not in custom_fields_service.TRUE_WORDS | custom_fields_service.FALSE_WORDS | {""}:
            raise field_error("permission_confirmed", "Must be true or false.")
        confirmed = word in custom_fields_service.TRUE_WORDS
    elif confirmed is None:
        confirmed = False
    elif not isinstance(confirmed, bool):
        raise field_error("permission_confirmed", "Must be true or false.")
    if not confirmed:
        if required:
            raise field_error("permission_confirmed", PERMISSION_REQUIRED)
        return None
    return {"confirmed_by": str(actor.id) if _actor_id(actor) else None, "confirmed_by_label": actor.label,
            "confirmed_at": iso(utcnow())}


def _audit_import(actor, imp, ip):
    """contact.imported in the audit log: which import, and whether (and by whom) permission was confirmed."""
    permission = (imp.options or {}).get("permission")
    audit.record("contact.imported", account_id=imp.account_id, actor=actor, ip=ip, resources=[f"import:{imp.id}"],
                 meta={"source": imp.source, "filename": imp.filename, "permission_confirmed": bool(permission),
                       **({"permission_confirmed_at": permission["confirmed_at"]} if permission else {})})


def configure(actor, import_id, *, mapping, update_existing=False, tags=None, new_fields=None,
              permission_confirmed=False, require_permission=False):
    """Set a pending import's column mapping and options (creating custom fields the mapping asks for).

    require_permission: the dashboard's wizard refuses to go on without the permission confirmation."""
    permissions.require(actor, "contacts:write")
    imp = get_import(actor.account_id, import_id)
    if imp.status != "pending" or imp.file_path is None:
        raise ValidationError("This import has already started.", [{"field": "import", "issue": "Already started."}])
    header = imp.options.get("header") or inspect_file(imp.file_path)["header"]
    problems = []
    try:
        update_existing, tags = parse_options(update_existing, tags)
    except ValidationError as exc:
        problems += exc.details
    try:
        permission = permission_record(actor, permission_confirmed, required=require_permission)
    except ValidationError as exc:
        problems += exc.details
    try:
        clean = resolve_mapping(actor, header, mapping, new_fields, create=not problems)
    except ValidationError as exc:
        problems += exc.details
    if problems:  # every problem at once, and no custom field created for a form that is sent back
        raise ValidationError(problems[0]["issue"], problems)
    imp.mapping = clean
    options = {key: value for key, value in imp.options.items() if key != "permission"}
    imp.options = {**options, "update_existing": update_existing, "tags": tags, "configured": True,
                   **({"permission": permission} if permission else {})}
    db.session.commit()
    return imp


def start(actor, import_id, *, ip=None):
    """Queue a configured import (a Huey job; inline in immediate mode), recorded in the audit log."""
    permissions.require(actor, "contacts:write")
    imp = get_import(actor.account_id, import_id)
    if not imp.options.get("configured"):
        raise ValidationError("Map the columns first.", [{"field": "mapping", "issue": "Map the columns first."}])
    if imp.status != "pending" or imp.options.get("queued"):
        return imp
    imp.options = {**imp.options, "queued": True}
    _audit_import(actor, imp, ip)
    db.session.commit()
    from nudge.tasks import run_contact_import
    run_contact_import(str(imp.id))
    db.session.expire_all()
    return get_import(actor.account_id, imp.id)


def create_csv_import(actor, stream, filename, *, mapping=None, update_existing=False, tags=None, source="csv",
                      permission_confirmed=False, ip=None):
    """Upload + configure + start in one call (the API's multipart path). mapping None: auto-guessed."""
    imp = create_upload(actor, stream, filename, source=source)
    try:
        if mapping is None:
            mapping = guess_mapping(imp.options["header"], custom_fields_service.definitions(actor.account_id))
        configure(actor, imp.id, mapping=mapping, update_existing=update_existing, tags=tags,
                  permission_confirmed=permission_confirmed)
    except Exception:
        discard(actor, imp.id)
        raise
    return start(actor, imp.id, ip=ip)


def discard(actor, import_id):
    """Delete a pending import (and its uploaded file)."""
    permissions.require(actor, "contacts:write")
    imp = get_import(actor.account_id, import_id)
    if imp.status != "pending":
        raise ValidationError("Only an import that has not started can be discarded.",
                              [{"field": "import", "issue": "Already started."}])
    _remove_file(imp)
    db.session.delete(imp)
    db.session.commit()


ABANDONED_UPLOAD_AGE = dt.timedelta(days=1)
# A running import stamps updated_at with every chunk (seconds apart); this long without one, its worker died.
STALLED_AFTER = dt.timedelta(minutes=10)
STALLED_MESSAGE = ("The import stopped when its worker did. Every row written before that is kept: upload the "
                   "file again and those rows will be reported as skipped.")


def fail_stalled_imports(now):
    """Mark running imports whose worker died as failed, with a message that says what to do."""
    stalled = db.session.scalars(sa.select(Import).where(
        Import.status == "running",
        sa.func.coalesce(Import.updated_at, Import.started_at, Import.created_at) < now - STALLED_AFTER)).all()
    for imp in stalled:
        imp.status, imp.finished_at, imp.message = "failed", now, STALLED_MESSAGE
        _remove_file(imp)
        imp.file_path = None
    return len(stalled)


def purge_abandoned_uploads(now):
    """Delete uploads that were never mapped and started within a day, with their files."""
    stale = db.session.scalars(sa.select(Import).where(
        Import.status == "pending", Import.created_at < now - ABANDONED_UPLOAD_AGE)).all()
    for imp in stale:
        _remove_file(imp)
        db.session.delete(imp)
    return len(stale)


def _remove_file(imp):
    if imp.file_path and not imp.options.get("keep_file"):
        try:
            os.remove(imp.file_path)
        except FileNotFoundError:
            pass


def parse_chunks(path, encoding, delimiter, validator, chunk_rows):
    """Yield (records, errors, rows) per chunk of a CSV file, streamed (pure Python, no database)."""
    with open_text(path, encoding) as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        next(reader, None)  # the header
        records, errors, seen = [], [], 0
        csv_row = validator.csv_row
        append = records.append
        # Rows are numbered as a spreadsheet shows the file: the header is row 1, so the first data row is 2;
        # a blank line keeps its number (it is a row in the sheet) but is not counted as processed.
        for row_number, cells in enumerate(reader, 2):
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # blank line
            seen += 1
            record = csv_row(row_number, cells, errors)
            if record is not None:
                append(record)
            if seen >= chunk_rows:
                yield records, errors, seen
                records, errors, seen = [], [], 0
                append = records.append
        if seen:
            yield records, errors, seen


_DONE = object()


def prefetch(chunks, depth=1):
    """Run a chunk generator in a thread, `depth` chunks ahead: parsing the next chunk overlaps the
    database writing the current one (the driver releases the GIL while the server works).

    Memory stays bounded (at most depth + 2 chunks alive). Exceptions surface in the consumer."""
    out = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in chunks:
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            out.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            out.put(exc)

    thread = threading.Thread(target=produce, name="import-parser", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def import_writers():
    """Parallel writer connections for a CSV import: PostgreSQL takes IMPORT_WRITERS (default 2); SQLite has one writer."""
    return max(1, int(current_app.config["IMPORT_WRITERS"])) if is_postgres() else 1


def run_import(import_id, progress=None, chunk_rows=CHUNK_ROWS):
    """Run a configured CSV import (the Huey job, or the CLI in process). progress(processed) per chunk."""
    imp = db.session.get(Import, uuid.UUID(str(import_id)))
    if imp is None or imp.status != "pending":
        return imp
    imp.status, imp.started_at = "running", utcnow()
    imp.updated_at = imp.started_at
    db.session.commit()
    options = dict(imp.options)
    writer = ChunkWriter(imp, options.get("update_existing", False))
    try:
        fields = custom_fields_service.definitions(imp.account_id)
        encoding, delimiter = options.get("encoding") or "utf-8", options.get("delimiter") or ","
        with open_text(imp.file_path, encoding) as handle:
            header = clean_header(next(csv.reader(handle, delimiter=delimiter), []))
        validator = RowValidator(fields, options.get("tags") or [], header, imp.mapping)
        chunks = parse_chunks(imp.file_path, encoding, delimiter, validator, chunk_rows)
        encoded = ((writer.encode(records), len(records), errors, seen) for records, errors, seen in chunks)
        write_chunks(writer, prefetch(encoded), progress, writers=import_writers())
        imp = db.session.get(Import, imp.id)
        imp.status, imp.finished_at, imp.total_rows = "completed", utcnow(), writer.counts["processed"]
    except Exception as exc:  # noqa: BLE001 - the import is marked failed; the chunks written so far stay
        db.session.rollback()
        log.exception("import %s failed", imp.id)
        imp = db.session.get(Import, imp.id)
        imp.status, imp.finished_at = "failed", utcnow()
        imp.message = _failure_message(exc)
    # Before the import shows as finished: the first segment count afterwards must plan with fresh statistics.
    table_stats.refresh_after_bulk_change(writer.table_changes(), imp.account_id)
    _remove_file(imp)
    if not options.get("keep_file"):
        imp.file_path = None
    db.session.commit()
    writer.close()
    return imp


def _failure_message(exc):
    if isinstance(exc, UnicodeDecodeError):
        return "The file's text encoding changed part-way through; save it as UTF-8 and import it again."
    if isinstance(exc, csv.Error):
        return f"The file is not valid CSV ({exc})."
    if isinstance(exc, ValidationError):
        return exc.message
    return "The import stopped because of an internal error; the rows before it were imported."


def import_file(actor, path, *, mapping=None, update_existing=False, tags=None, source="cli", progress=None):
    """Import a CSV file in place (the CLI; the file is read, never moved or deleted)."""
    permissions.require(actor, "contacts:write")
    info = inspect_file(path)
    fields = custom_fields_service.definitions(actor.account_id)
    if mapping is None:
        mapping = guess_mapping(info["header"], fields)
    update_existing, tags = parse_options(update_existing, tags)
    clean = resolve_mapping(actor, info["header"], mapping)
    imp = Import(account_id=actor.account_id, created_by=_actor_id(actor), source=source,
                 filename=os.path.basename(path)[:255], file_path=os.path.abspath(path), status="pending",
                 mapping=clean, total_rows=info["estimated_rows"],
                 options={"encoding": info["encoding"], "delimiter": info["delimiter"], "header": info["header"],
                          "update_existing": update_existing, "tags": tags, "configured": True, "keep_file": True})
    db.session.add(imp)
    db.session.commit()
    return run_import(imp.id, progress=progress)


def import_contacts(actor, contacts, *, update_existing=False, tags=None, permission_confirmed=False, ip=None):
    """The API's JSON batch (at most MAX_API_ROWS), answered at once.

    Returns the Import (source "api", completed) and the errors [{row, field, value, message}] (row: the
    contact's 1-based position in the list)."""
    permissions.require(actor, "contacts:write")
    problems = []
    if not isinstance(contacts, list):
        problems.append({"field": "contacts", "issue": "Must be an array of contact objects."})
    elif len(contacts) > MAX_API_ROWS:
        problems.append({"field": "contacts", "issue": f"At most {MAX_API_ROWS:,} contacts per request; "
                                                       "upload a CSV file for more."})
    if update_existing is not None and not isinstance(update_existing, bool):
        problems.append({"field": "update_existing", "issue": "Must be true or false."})
    try:
        update_existing, tags = parse_options(bool(update_existing), tags)
    except ValidationError as exc:
        problems += exc.details
    try:
        permission = permission_record(actor, permission_confirmed)
    except ValidationError as exc:
        problems += exc.details
    if problems:
        raise ValidationError(problems[0]["issue"], problems)
    imp = Import(account_id=actor.account_id, created_by=_actor_id(actor), source="api", status="running",
                 mapping={}, options={"update_existing": update_existing, "tags": tags,
                                      **({"permission": permission} if permission else {})},
                 total_rows=len(contacts), started_at=utcnow())
    db.session.add(imp)
    db.session.flush()
    _audit_import(actor, imp, ip)
    db.session.commit()
    writer = ChunkWriter(imp, update_existing)
    validator = RowValidator(custom_fields_service.definitions(actor.account_id), tags)
    for start_index in range(0, len(contacts), CHUNK_ROWS):
        records, errors = [], []
        chunk = contacts[start_index:start_index + CHUNK_ROWS]
        for offset, item in enumerate(chunk):
            record = validator.api_row(start_index + offset + 1, item, errors)
            if record is not None:
                records.append(record)
        writer.write_records(records, errors, len(chunk))
    imp = db.session.get(Import, imp.id)
    table_stats.refresh_after_bulk_change(writer.table_changes(), imp.account_id)
    imp.status, imp.finished_at = "completed", utcnow()
    db.session.commit()
    writer.close()
    all_errors = [error_json(e) for e in db.session.scalars(errors_query(actor.account_id, imp.id))]
    return imp, all_errors


# --- Progress --------------------------------------------------------------------------------------

def progress_info(imp):
    """{percent, rate (rows/min), eta_seconds, done} for the progress bar."""
    done = imp.status in ("completed", "failed")
    total = imp.total_rows or 0
    processed = imp.processed_rows or 0
    percent = 100 if done else (min(99, int(processed * 100 / total)) if total else 0)
    rate = eta = None
    if imp.started_at and processed:
        elapsed = ((imp.finished_at or utcnow()) - imp.started_at).total_seconds()
        if elapsed > 0:
            rate = processed / elapsed * 60
            if not done and total > processed:
                eta = (total - processed) / (processed / elapsed)
    return {"percent": percent, "rate": rate, "eta_seconds": eta, "done": done}


def elapsed_seconds(imp):
    if not imp.started_at:
        return None
    return ((imp.finished_at or utcnow()) - imp.started_at).total_seconds()
