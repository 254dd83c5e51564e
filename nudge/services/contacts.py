"""Contacts: the list query every path shares (dashboard, API, export, bulk actions), create/update with
validation of every field, soft delete with 30-day restore, unsubscribes, bulk tag changes and history.

Tenant scoping happens here: every query filters on the caller's account."""
import datetime as dt
import json
import uuid

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from nudge.errors import Conflict, NotFound, ValidationError, field_error
from nudge.extensions import db
from nudge.models import Campaign, Contact, EmailEvent, SegmentMember
from nudge.models.types import iso, utcnow
from nudge.services import custom_fields as custom_fields_service
from nudge.services import events, permissions, suppressions, table_stats
from nudge.services.addresses import same_address
from nudge.services.dialect import is_postgres, tags_contain_all, tags_contain_any, tags_with, tags_without
from nudge.services.tags import normalize_tags
from nudge.services.validation import normalize_email, optional_text

RESTORE_WINDOW = dt.timedelta(days=30)
# Statuses a contact can be given directly ("deleted" only through delete_contact).
SETTABLE_STATUSES = ("active", "unsubscribed", "bounced", "complained")
LIST_STATUSES = ("active", "unsubscribed", "bounced", "complained", "deleted")
# Statuses that put the address on the suppression list, and with which reason.
SUPPRESSING_STATUSES = {"unsubscribed": "unsubscribed", "bounced": "hard_bounce", "complained": "complaint"}
SORTS = {
    "created_at": Contact.created_at, "updated_at": Contact.updated_at, "email": Contact.email,
    "first_name": Contact.first_name, "last_name": Contact.last_name, "status": Contact.status,
    "subscription_date": Contact.subscription_date,
}
DEFAULT_SORT = "-created_at"
WRITABLE_FIELDS = ("email", "first_name", "last_name", "status", "tags", "custom_fields", "subscription_date")
MAX_BULK_IDS = 10000


# --- Reading -------------------------------------------------------------------------------------

def serialize_contact(contact):
    """The API (and export) representation, with the spec's column names."""
    return {
        "id": str(contact.id),
        "email": contact.email,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "status": contact.status,
        "tags": list(contact.tags or []),
        "custom_fields": dict(contact.custom_fields or {}),
        "subscription_date": iso(contact.subscription_date),
        "created_at": iso(contact.created_at),
        "updated_at": iso(contact.updated_at),
        "source": contact.source,
        "unsubscribed_at": iso(contact.unsubscribed_at),
        "deleted_at": iso(contact.deleted_at),
    }


def _like_pattern(text):
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _custom_field_condition(name, value):
    """custom_fields[name] equals value (already coerced to its stored JSON form); None: not set."""
    column = Contact.custom_fields
    if is_postgres():
        from sqlalchemy.dialects import postgresql
        if value is None:
            return column.op("->>")(sa.literal(name)).is_(None)
        return column.op("@>")(sa.cast(sa.literal(json.dumps({name: value})), postgresql.JSONB))
    extracted = sa.func.json_extract(column, f'$."{name}"')
    if value is None:
        return extracted.is_(None)
    if isinstance(value, bool):
        # json_extract gives 1/0 for JSON true/false; make sure a number 1 does not match a boolean.
        return sa.and_(sa.func.json_type(column, f'$."{name}"') == ("true" if value else "false"))
    if isinstance(value, (int, float)):
        return sa.and_(sa.func.json_type(column, f'$."{name}"').in_(("integer", "real")), extracted == value)
    return sa.and_(sa.func.json_type(column, f'$."{name}"') == "text", extracted == value)


def contacts_query(account_id, filters=None):
    """A select of the account's contacts matching filters (see parse_filters), ordered for paging.

    Deleted contacts only appear when status "deleted" is asked for."""
    filters = filters or {}
    query = sa.select(Contact).where(Contact.account_id == account_id)
    status = filters.get("status")
    if status:
        statuses = [status] if isinstance(status, str) else list(status)
        query = query.where(Contact.status.in_(statuses))
    else:
        query = query.where(Contact.status != "deleted")
    if filters.get("email"):
        query = query.where(same_address(Contact.email, filters["email"].strip()))
    if filters.get("q"):
        pattern = _like_pattern(filters["q"].strip())
        full_name = sa.func.coalesce(Contact.first_name, "") + " " + sa.func.coalesce(Contact.last_name, "")
        query = query.where(sa.or_(Contact.email.ilike(pattern, escape="\\"),
                                   Contact.first_name.ilike(pattern, escape="\\"),
                                   Contact.last_name.ilike(pattern, escape="\\"),
                                   full_name.ilike(pattern, escape="\\")))
    if filters.get("tags"):
        query = query.where(tags_contain_all(Contact.tags, filters["tags"]))
    if filters.get("segment_id"):
        from nudge.services import segments
        query = query.where(segments.condition_for_segment(account_id, filters["segment_id"]))
    if filters.get("created_after"):
        query = query.where(Contact.created_at >= filters["created_after"])
    if filters.get("created_before"):
        query = query.where(Contact.created_at < filters["created_before"])
    for name, value in (filters.get("fields") or {}).items():
        query = query.where(_custom_field_condition(name, value))
    if filters.get("ids") is not None:
        query = query.where(Contact.id.in_(list(filters["ids"])))
    return query.order_by(*sort_clause(filters.get("sort")))


def sort_clause(sort):
    sort = sort or DEFAULT_SORT
    key = sort.lstrip("-")
    column = SORTS.get(key, Contact.created_at)
    descending = sort.startswith("-")
    order = column.desc() if descending else column.asc()
    if key in ("first_name", "last_name"):
        # Contacts without a name go last either way.
        return [column.is_(None), order, Contact.id]
    return [order, Contact.id.desc() if descending else Contact.id]


def _parse_datetime(text, field):
    """An ISO date or date-time; zone-aware values are converted to naive UTC."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            value = dt.datetime.combine(dt.date.fromisoformat(text), dt.time())
        else:
            value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise field_error(field, "Must be a date (2024-05-31) or an ISO 8601 date-time (2024-05-31T09:30:00Z).")
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _values(args, key):
    """All values of key from a MultiDict (repeated parameters) or a plain dict (a value or a list)."""
    if hasattr(args, "getlist"):
        return [v for v in args.getlist(key)]
    value = args.get(key)
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def parse_filters(args, account_id=None):
    """Query-string arguments (or a JSON filter object) to the contacts_query filters dict.

    email, status (repeatable or comma-separated), tag (repeatable; also "tags"), segment_id, q,
    created_after, created_before, field.<name>=value (or "fields": {...}), sort. Custom field values are
    checked against the account's definitions when account_id is given. Raises ValidationError."""
    args = args if args is not None else {}
    if not hasattr(args, "get"):
        raise field_error("filter", "Must be an object of filters.")
    filters, errors = {}, []

    def attempt(check):
        try:
            return check()
        except ValidationError as exc:
            errors.extend(exc.details or [{"field": None, "issue": exc.message}])
            return None

    def text(key):
        values = [v for v in _values(args, key) if v not in (None, "")]
        if not values:
            return None
        if not isinstance(values[0], str):
            errors.append({"field": key, "issue": "Must be a string."})
            return None
        return values[0].strip() or None

    if text("email"):
        filters["email"] = text("email")
    if text("q"):
        filters["q"] = text("q")[:255]
    statuses = []
    for value in _values(args, "status"):
        if not isinstance(value, str):
            errors.append({"field": "status", "issue": "Must be a string."})
            continue
        statuses += [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in statuses if s not in LIST_STATUSES]
    if bad:
        errors.append({"field": "status", "issue": "Must be one of " + ", ".join(LIST_STATUSES) + "."})
    elif statuses:
        filters["status"] = list(dict.fromkeys(statuses))
    tags = []
    for key in ("tag", "tags"):
        for value in _values(args, key):
            tags += attempt(lambda: normalize_tags(value, key)) or []
    if tags:
        filters["tags"] = list(dict.fromkeys(tags))
    segment = text("segment_id")
    if segment:
        try:
            filters["segment_id"] = uuid.UUID(segment)
        except ValueError:
            errors.append({"field": "segment_id", "issue": "Must be a segment id (a UUID)."})
    for key in ("created_after", "created_before"):
        value = text(key)
        if value:
            parsed = attempt(lambda: _parse_datetime(value, key))
            if parsed is not None:
                filters[key] = parsed
    sort = text("sort")
    if sort:
        if sort.lstrip("-") not in SORTS or sort.count("-") > 1:
            errors.append({"field": "sort", "issue": "Sort by one of " + ", ".join(SORTS)
                           + " (prefix with - for descending)."})
        else:
            filters["sort"] = sort
    raw_fields = {}
    given = args.get("fields") if not hasattr(args, "getlist") else None
    if given is not None:
        if isinstance(given, dict):
            raw_fields.update(given)
        else:
            errors.append({"field": "fields", "issue": "Must be an object of custom field values."})
    for key in (args.keys() if hasattr(args, "keys") else []):
        if isinstance(key, str) and key.startswith("field."):
            values = _values(args, key)
            raw_fields[key[len("field."):]] = values[0] if values else None
    if raw_fields:
        definitions = custom_fields_service.definitions(account_id) if account_id is not None else None
        fields = {}
        for name, value in raw_fields.items():
            path = f"field.{name}"
            if definitions is None:
                fields[name] = value
                continue
            if name not in definitions:
                errors.append({"field": path, "issue": f"Unknown custom field {name!r}."})
                continue
            before = len(errors)
            coerced = attempt(lambda: custom_fields_service.coerce_value(definitions[name], value, path))
            if len(errors) == before:
                fields[name] = coerced
        filters["fields"] = fields
    if errors:
        raise ValidationError(errors[0]["issue"], errors)
    return filters


def get_contact(account_id, contact_id, include_deleted=False):
    """One contact of the account; NotFound for another account's, a deleted one (unless asked) or junk ids."""
    try:
        contact_id = contact_id if isinstance(contact_id, uuid.UUID) else uuid.UUID(str(contact_id))
    except ValueError:
        raise NotFound("Contact not found.")
    contact = db.session.scalar(sa.select(Contact).where(Contact.account_id == account_id, Contact.id == contact_id))
    if contact is None or (contact.status == "deleted" and not include_deleted):
        raise NotFound("Contact not found.")
    return contact


def count_contacts(account_id, filters=None):
    from nudge.services.pagination import count_rows
    return count_rows(contacts_query(account_id, filters))


def status_counts(account_id):
    """{status: count} of the account's contacts (every status, deleted included)."""
    rows = db.session.execute(sa.select(Contact.status, sa.func.count()).where(Contact.account_id == account_id)
                              .group_by(Contact.status)).all()
    return {status: count for status, count in rows}


def has_contacts(account_id):
    """Whether the account holds any contact that is not deleted (one index probe, whatever the list's size)."""
    return db.session.scalar(sa.select(sa.exists().where(Contact.account_id == account_id,
                                                          Contact.status != "deleted"))) is True


def all_tags(account_id, limit=500):
    """The distinct tags in use in the account (for filter pickers), sorted."""
    if is_postgres():
        tag = sa.func.unnest(Contact.tags).label("tag")
        inner = sa.select(tag).where(Contact.account_id == account_id, Contact.status != "deleted").subquery()
        query = sa.select(inner.c.tag).distinct().order_by(inner.c.tag).limit(limit)
    else:
        each = sa.func.json_each(Contact.tags).table_valued("value")
        query = (sa.select(each.c.value).select_from(Contact).join(each, sa.true())
                 .where(Contact.account_id == account_id, Contact.status != "deleted", Contact.tags.is_not(None))
                 .distinct().order_by(each.c.value).limit(limit))
    return [row for row in db.session.scalars(query).all()]


def contact_history(account_id, contact_id):
    """A select of the contact's events, newest first (paginate it); each event's campaign (id and name) is
    loaded with it so the activity names the campaign rather than a message id."""
    contact = get_contact(account_id, contact_id, include_deleted=True)
    return (sa.select(EmailEvent).where(EmailEvent.account_id == account_id, EmailEvent.contact_id == contact.id)
            .options(sa.orm.joinedload(EmailEvent.campaign).load_only(Campaign.id, Campaign.name))
            .order_by(EmailEvent.created_at.desc(), EmailEvent.id.desc()))


# --- Writing -------------------------------------------------------------------------------------

def _clean(data, fields, *, partial):
    """Validated values of the writable fields present in data (all problems at once)."""
    if not isinstance(data, dict):
        raise field_error("body", "Must be an object.")
    clean, errors = {}, []

    def check(key, func):
        if key not in data:
            return
        try:
            clean[key] = func(data[key])
        except ValidationError as exc:
            errors.extend(exc.details or [{"field": key, "issue": exc.message}])

    def name(key, label):
        def run(value):
            if value is not None and not isinstance(value, str):
                raise field_error(key, f"{label} must be a string.")
            return optional_text(value, key, label, 100)
        return run

    def email(value):
        if not isinstance(value, str):
            raise field_error("email", "Email address is required." if value is None else "Must be a string.")
        return normalize_email(value)

    def status(value):
        if value not in SETTABLE_STATUSES:
            raise field_error("status", "Must be one of " + ", ".join(SETTABLE_STATUSES)
                              + " (delete a contact to give it status deleted).")
        return value

    def subscription_date(value):
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise field_error("subscription_date", "Must be an ISO 8601 date-time.")
        return _parse_datetime(value, "subscription_date")

    def custom(value):
        return custom_fields_service.validate_values(value, fields)

    if not partial and "email" not in data:
        errors.append({"field": "email", "issue": "Email address is required."})
    check("email", email)
    check("first_name", name("first_name", "First name"))
    check("last_name", name("last_name", "Last name"))
    check("status", status)
    check("tags", lambda value: normalize_tags(value))
    check("subscription_date", subscription_date)
    check("custom_fields", custom)
    if errors:
        raise ValidationError(errors[0]["issue"], errors)
    return clean


def _merge_custom(current, to_set, to_clear):
    merged = dict(current or {})
    merged.update(to_set)
    for name in to_clear:
        merged.pop(name, None)
    return merged


def _apply_tags(contact, tags):
    """Set the contact's tags; emit tag events for what changed."""
    before = list(contact.tags or [])
    contact.tags = tags or None
    added = [t for t in tags if t not in before]
    removed = [t for t in before if t not in tags]
    return added, removed


def _emit_tag_changes(contact, added, removed):
    if added:
        events.emit(contact.account_id, "contact.tag_added", contact_id=contact.id, data={"tags": added})
    if removed:
        events.emit(contact.account_id, "contact.tag_removed", contact_id=contact.id, data={"tags": removed})


def _commit_unique():
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict("A contact with this email address already exists.",
                       [{"field": "email", "issue": "A contact with this address already exists."}])


def create_contact(actor, data, *, source="api"):
    """Create a contact (or revive a deleted one with the same address in any case). Returns the Contact."""
    permissions.require(actor, "contacts:write")
    account_id = actor.account_id
    fields = custom_fields_service.definitions(account_id)
    clean = _clean(data, fields, partial=False)
    email = clean["email"]
    existing = db.session.scalar(sa.select(Contact).where(Contact.account_id == account_id,
                                                          same_address(Contact.email, email)))
    if existing is not None and existing.status != "deleted":
        raise Conflict(f"A contact with the email address {existing.email} already exists.",
                       [{"field": "email", "issue": "A contact with this address already exists."}])
    status = clean.get("status", "active")
    if status == "active" and suppressions.is_suppressed(account_id, email):
        status = "unsubscribed"  # a suppressed address is never active again
    now = utcnow()
    to_set, to_clear = clean.get("custom_fields", ({}, []))
    if existing is not None:
        contact = existing
        contact.deleted_at = None
        contact.status_before_delete = None
        contact.custom_fields = _merge_custom(contact.custom_fields, to_set, to_clear)
        for key in ("first_name", "last_name"):
            if key in clean:
                setattr(contact, key, clean[key])
        if "tags" in clean:
            contact.tags = clean["tags"] or None
        contact.source = source
        contact.subscription_date = clean.get("subscription_date") or now
        events.emit(account_id, "contact.restored", contact_id=contact.id, data={"source": source})
    else:
        contact = Contact(account_id=account_id, email=email, first_name=clean.get("first_name"),
                          last_name=clean.get("last_name"), tags=clean.get("tags") or None,
                          custom_fields=_merge_custom({}, to_set, []), source=source,
                          subscription_date=clean.get("subscription_date") or now)
        db.session.add(contact)
    contact.status = status
    contact.unsubscribed_at = now if status == "unsubscribed" else None
    db.session.flush()
    if status in SUPPRESSING_STATUSES:
        suppressions.suppress(account_id, [email], SUPPRESSING_STATUSES[status])
    if status == "active":
        events.emit(account_id, "contact.subscribed", contact_id=contact.id, data={"source": source})
    _commit_unique()
    return contact


def update_contact(actor, contact_id, data):
    """Change the fields present in data; custom_fields merge (given keys set or cleared, others kept)."""
    permissions.require(actor, "contacts:write")
    account_id = actor.account_id
    contact = get_contact(account_id, contact_id)
    clean = _clean(data, custom_fields_service.definitions(account_id), partial=True)
    new_email = clean.get("email", contact.email)
    new_status = clean.get("status", contact.status)
    # Another spelling of the same address is the same contact: changing only the case is allowed.
    new_address = new_email.lower() != contact.email.lower()
    if new_address:
        taken = db.session.scalar(sa.select(Contact.id).where(Contact.account_id == account_id,
                                                              same_address(Contact.email, new_email),
                                                              Contact.id != contact.id))
        if taken is not None:
            raise Conflict(f"Another contact already has the email address {new_email}.",
                           [{"field": "email", "issue": "Already used by another contact in this account."}])
    if new_status == "active" and suppressions.is_suppressed(account_id, new_email) and (
            contact.status != "active" or new_address):
        field = "status" if "status" in clean and contact.status != "active" else "email"
        raise ValidationError(f"{new_email} is on the suppression list, so the contact cannot be active. "
                              "Remove the address from the suppression list first if they asked to subscribe again.",
                              [{"field": field, "issue": "This address is on the suppression list."}])
    contact.email = new_email
    for key in ("first_name", "last_name", "subscription_date"):
        if key in clean:
            setattr(contact, key, clean[key])
    if "custom_fields" in clean:
        contact.custom_fields = _merge_custom(contact.custom_fields, *clean["custom_fields"])
    if "tags" in clean:
        _emit_tag_changes(contact, *_apply_tags(contact, clean["tags"]))
    _change_status(contact, new_status)
    contact.updated_at = utcnow()
    _commit_unique()
    return contact


def _change_status(contact, status, reason=None, campaign_id=None, source=None):
    if status == contact.status:
        return
    previous = contact.status
    contact.status = status
    if status in SUPPRESSING_STATUSES:
        suppressions.suppress(contact.account_id, [contact.email], reason or SUPPRESSING_STATUSES[status])
    if status == "unsubscribed":
        contact.unsubscribed_at = utcnow()
        data = {"previous_status": previous}
        if source:
            data["source"] = source
        events.emit(contact.account_id, "contact.unsubscribed", contact_id=contact.id, campaign_id=campaign_id,
                    data=data)
    elif status == "active":
        contact.unsubscribed_at = None
        events.emit(contact.account_id, "contact.subscribed", contact_id=contact.id,
                    data={"previous_status": previous})


def change_status_for_unsubscribe(contact, *, campaign_id, source):
    """A recipient unsubscribed from an email (the unsubscribe page or one-click); the caller commits."""
    _change_status(contact, "unsubscribed", campaign_id=campaign_id, source=source)


def keep_unsubscribed_when_restored(contact, *, campaign_id, source):
    """A deleted (still restorable) contact unsubscribed from an email sent before: it stays deleted, and a
    restore brings it back unsubscribed (a bounced or complained status stays as it was). The caller
    suppresses the address and commits."""
    if (contact.status_before_delete or "active") != "active":
        return
    contact.status_before_delete = "unsubscribed"
    contact.unsubscribed_at = utcnow()
    events.emit(contact.account_id, "contact.unsubscribed", contact_id=contact.id, campaign_id=campaign_id,
                data={"previous_status": "deleted", "source": source})


def change_status_for_resubscribe(contact, *, campaign_id):
    """A recipient subscribed again from an email's preferences page; the caller commits."""
    previous = contact.status
    contact.status = "active"
    contact.unsubscribed_at = None
    events.emit(contact.account_id, "contact.subscribed", contact_id=contact.id, campaign_id=campaign_id,
                data={"previous_status": previous, "source": "preferences_page"})


def unsubscribe_contact(actor, contact_id):
    """Mark the contact unsubscribed and put the address on the suppression list."""
    permissions.require(actor, "contacts:write")
    contact = get_contact(actor.account_id, contact_id)
    _change_status(contact, "unsubscribed")
    db.session.commit()
    return contact


def delete_contact(actor, contact_id):
    """Soft delete: hidden everywhere, restorable for 30 days, then purged by housekeeping."""
    permissions.require(actor, "contacts:write")
    contact = get_contact(actor.account_id, contact_id)
    contact.status_before_delete = contact.status
    contact.status = "deleted"
    contact.deleted_at = utcnow()
    events.emit(contact.account_id, "contact.deleted", contact_id=contact.id)
    db.session.commit()
    return contact


def _bulk_target(account_id, contact_ids, filters):
    """A select of the ids of non-deleted contacts chosen by ids or by a filters dict."""
    if contact_ids is None and filters is None:
        raise field_error("contact_ids", "Give contact_ids or a filter.")
    if contact_ids is not None:
        ids = []
        if not isinstance(contact_ids, (list, tuple)):
            raise field_error("contact_ids", "Must be a list of contact ids.")
        if len(contact_ids) > MAX_BULK_IDS:
            raise field_error("contact_ids", f"At most {MAX_BULK_IDS} ids at once; use a filter for more.")
        for index, value in enumerate(contact_ids):
            try:
                ids.append(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
            except ValueError:
                raise field_error(f"contact_ids[{index}]", "Must be a contact id (a UUID).")
        return (sa.select(Contact.id).where(Contact.account_id == account_id, Contact.status != "deleted",
                                            Contact.id.in_(ids)))
    query = contacts_query(account_id, {**filters, "sort": None})
    if "deleted" in (filters.get("status") or []):
        query = query.where(Contact.status != "deleted")
    return query.order_by(None).with_only_columns(Contact.id)


def delete_contacts(actor, *, contact_ids=None, filters=None):
    """Soft-delete many contacts at once; returns (count, deleted_at) — deleted_at identifies the batch for undo."""
    permissions.require(actor, "contacts:write")
    account_id = actor.account_id
    target = _bulk_target(account_id, contact_ids, filters)
    now = utcnow()
    ids = target.subquery()
    events.emit_for_contacts(account_id, "contact.deleted", sa.select(ids.c.id))
    result = db.session.execute(
        sa.update(Contact).where(Contact.account_id == account_id, Contact.id.in_(sa.select(ids.c.id)))
        .values(status_before_delete=Contact.status, status="deleted", deleted_at=now, updated_at=now)
        .execution_options(synchronize_session=False))
    table_stats.refresh_after_bulk_change(table_stats.contact_changes(result.rowcount), account_id)
    db.session.commit()
    return result.rowcount, now


def _restorable(account_id, now):
    return sa.and_(Contact.account_id == account_id, Contact.status == "deleted",
                   Contact.deleted_at >= now - RESTORE_WINDOW)


def _status_after_restore():
    """The status a restored contact gets: its old one, but never active when the address is suppressed."""
    previous = sa.func.coalesce(Contact.status_before_delete, "active")
    return sa.case((sa.and_(previous == "active", suppressions.suppressed(Contact.account_id, Contact.email)),
                    "unsubscribed"), else_=previous)


def restore_contact(actor, contact_id):
    """Undo a delete within 30 days."""
    permissions.require(actor, "contacts:write")
    contact = get_contact(actor.account_id, contact_id, include_deleted=True)
    if contact.status != "deleted":
        return contact
    now = utcnow()
    if contact.deleted_at is None or contact.deleted_at < now - RESTORE_WINDOW:
        raise NotFound("This contact was deleted more than 30 days ago and can no longer be restored.")
    status = contact.status_before_delete or "active"
    if status == "active" and suppressions.is_suppressed(contact.account_id, contact.email):
        status = "unsubscribed"
    contact.status = status
    contact.deleted_at = None
    contact.status_before_delete = None
    events.emit(contact.account_id, "contact.restored", contact_id=contact.id)
    db.session.commit()
    return contact


def restore_contacts(actor, *, contact_ids=None, deleted_at=None):
    """Restore many deleted contacts: by ids, or the batch of one bulk delete (its deleted_at). Returns how many."""
    permissions.require(actor, "contacts:write")
    account_id = actor.account_id
    now = utcnow()
    condition = _restorable(account_id, now)
    if contact_ids is not None:
        condition = sa.and_(condition, Contact.id.in_(list(contact_ids)))
    elif deleted_at is not None:
        condition = sa.and_(condition, Contact.deleted_at == deleted_at)
    else:
        raise field_error("contact_ids", "Give contact ids or a deletion batch.")
    ids = sa.select(Contact.id).where(condition)
    events.emit_for_contacts(account_id, "contact.restored", ids)
    result = db.session.execute(
        sa.update(Contact).where(condition)
        .values(status=_status_after_restore(), deleted_at=None, status_before_delete=None, updated_at=now)
        .execution_options(synchronize_session=False))
    table_stats.refresh_after_bulk_change(table_stats.contact_changes(result.rowcount), account_id)
    db.session.commit()
    return result.rowcount


def _bulk_tags(actor, tags, contact_ids, filters, *, add):
    permissions.require(actor, "contacts:write")
    account_id = actor.account_id
    tags = normalize_tags(tags, "add" if add else "remove")
    if not tags:
        return 0
    target = _bulk_target(account_id, contact_ids, filters).subquery()
    changes = tags_contain_all(Contact.tags, tags) if add else tags_contain_any(Contact.tags, tags)
    condition = sa.and_(Contact.account_id == account_id, Contact.id.in_(sa.select(target.c.id)),
                        sa.not_(sa.type_coerce(changes, sa.Boolean).self_group()) if add else changes)
    events.emit_for_contacts(account_id, "contact.tag_added" if add else "contact.tag_removed",
                             sa.select(Contact.id).where(condition), {"tags": tags})
    value = tags_with(Contact.tags, tags) if add else tags_without(Contact.tags, tags)
    result = db.session.execute(sa.update(Contact).where(condition).values(tags=value, updated_at=utcnow())
                                .execution_options(synchronize_session=False))
    return result.rowcount


def _commit_tag_changes(actor, count):
    table_stats.refresh_after_bulk_change(table_stats.contact_changes(count, values=False), actor.account_id)
    db.session.commit()


def add_tags(actor, tags, *, contact_ids=None, filters=None):
    """Add tags to the chosen contacts (ids or a filters dict) in one UPDATE; returns how many changed."""
    count = _bulk_tags(actor, tags, contact_ids, filters, add=True)
    _commit_tag_changes(actor, count)
    return count


def remove_tags(actor, tags, *, contact_ids=None, filters=None):
    """Remove tags from the chosen contacts in one UPDATE; returns how many changed."""
    count = _bulk_tags(actor, tags, contact_ids, filters, add=False)
    _commit_tag_changes(actor, count)
    return count


def change_tags(actor, *, add=(), remove=(), contact_ids=None, filters=None):
    """Both at once, in one transaction: {"added": n, "removed": m} (contacts changed by each)."""
    added = _bulk_tags(actor, add, contact_ids, filters, add=True) if add else 0
    removed = _bulk_tags(actor, remove, contact_ids, filters, add=False) if remove else 0
    _commit_tag_changes(actor, added + removed)
    return {"added": added, "removed": removed}


# --- Retention -----------------------------------------------------------------------------------

def purge_deleted_contacts(now):
    """Hard-delete contacts soft-deleted more than 30 days ago (with their events and memberships)."""
    expired = sa.select(Contact.id).where(Contact.status == "deleted", Contact.deleted_at < now - RESTORE_WINDOW)
    events_gone = db.session.execute(sa.delete(EmailEvent).where(EmailEvent.contact_id.in_(expired))
                                     .execution_options(synchronize_session=False))
    members_gone = db.session.execute(sa.delete(SegmentMember).where(SegmentMember.contact_id.in_(expired))
                                      .execution_options(synchronize_session=False))
    result = db.session.execute(sa.delete(Contact).where(Contact.status == "deleted",
                                                         Contact.deleted_at < now - RESTORE_WINDOW)
                                .execution_options(synchronize_session=False))
    # Deleted contacts have no side-table rows (a soft delete removed them).
    table_stats.refresh_after_bulk_change({"contacts": result.rowcount, "email_events": events_gone.rowcount,
                                           "segment_members": members_gone.rowcount})
    return result.rowcount
