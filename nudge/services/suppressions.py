"""The suppression list: addresses an account must never mail again, kept even when the contact is deleted."""
import csv
import io
import re

import sqlalchemy as sa

from nudge.errors import NotFound, ValidationError, field_error
from nudge.extensions import db
from nudge.models import SUPPRESSION_REASONS, Contact, Suppression
from nudge.services import permissions, table_stats
from nudge.services.addresses import MAX_IN_LIST, any_address, identity, same_address, same_column, unique_addresses
from nudge.models.types import new_id, utcnow
from nudge.services.dialect import insert


def is_suppressed(account_id, email):
    """The address, in any case, is on the account's suppression list."""
    return db.session.scalar(sa.select(sa.func.count()).select_from(Suppression).where(
        Suppression.account_id == account_id, same_address(Suppression.email, email))) > 0


def suppressed(account_id, email_column):
    """A SQL condition: email_column is on the account's suppression list (in any case)."""
    return sa.exists(sa.select(1).where(Suppression.account_id == account_id,
                                        same_column(Suppression.email, email_column)))


def suppress(account_id, emails, reason, note=None):
    """Add (already normalised) addresses; ones already listed in any case keep their first spelling and reason.
    Returns how many were new."""
    if reason not in SUPPRESSION_REASONS:
        raise ValueError(f"unknown suppression reason {reason!r}")
    rows = [{"id": new_id(), "account_id": account_id, "email": email, "reason": reason, "note": note, "created_at": utcnow()}
            for email in unique_addresses(emails)]
    if not rows:
        return 0
    # The conflict target is the unique index on (account_id, lower(email)) (migration 0016).
    statement = insert(Suppression).on_conflict_do_nothing(
        index_elements=[Suppression.account_id, identity(Suppression.email)])
    result = db.session.connection().execute(statement, rows)
    return max(result.rowcount or 0, 0)


def suppress_address(account_id, email, reason, note=None):
    """Suppress one address known without its contact (the contact was purged), stored lower-cased: the
    address's identity, so it stops mail to the address in any case once imported again. True when new."""
    return suppress(account_id, [email.lower()], reason, note) == 1


# --- Managing the list (dashboard and API) -------------------------------------------------------

MAX_BULK = 100000


def list_suppressions(account_id, q=None, reason=None):
    """A select of the account's suppressions, newest first; q searches the address."""
    query = sa.select(Suppression).where(Suppression.account_id == account_id)
    if q and q.strip():
        escaped = q.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Suppression.email.ilike(f"%{escaped}%", escape="\\"))
    if reason:
        query = query.where(Suppression.reason == reason)
    return query.order_by(Suppression.created_at.desc(), Suppression.email)


def get_suppression(account_id, email):
    row = db.session.scalar(sa.select(Suppression).where(Suppression.account_id == account_id,
                                                         same_address(Suppression.email, (email or "").strip())))
    if row is None:
        raise NotFound(f"{email} is not on the suppression list.")
    return row


def emails_from_text(text):
    """Addresses from pasted text: one per line, or separated by commas, semicolons or spaces."""
    return [part for part in re.split(r"[\s,;]+", text or "") if part]


def emails_from_csv(text):
    """The first column of each CSV row (a header row whose first cell is not an address is skipped)."""
    text = (text or "").lstrip("\ufeff")
    sample = text[:4096]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    emails = []
    for index, row in enumerate(csv.reader(io.StringIO(text), dialect)):
        if not row or not row[0].strip():
            continue
        cell = row[0].strip()
        if index == 0 and "@" not in cell:
            continue  # a header such as "email"
        emails.append(cell)
    return emails


def add_suppressions(actor, emails, reason="manual", note=None):
    """Validate and add addresses; returns {"added", "already", "invalid": [{"email", "issue"}]}.

    Contacts with these addresses stop being active (status unsubscribed): suppressed means never mailed."""
    from nudge.services import events
    from nudge.services.validation import normalize_email
    permissions.require(actor, "contacts:write")
    if reason not in SUPPRESSION_REASONS:
        raise field_error("reason", "Must be one of " + ", ".join(SUPPRESSION_REASONS) + ".")
    if not isinstance(emails, (list, tuple)) or not all(isinstance(e, str) for e in emails):
        raise field_error("emails", "Must be a list of email addresses.")
    if len(emails) > MAX_BULK:
        raise field_error("emails", f"At most {MAX_BULK:,} addresses at once.")
    note = (note or "").strip()[:1000] or None
    valid, invalid = [], []
    for raw in emails:
        try:
            valid.append(normalize_email(raw))
        except ValidationError as exc:
            invalid.append({"email": raw[:255], "issue": exc.details[0]["issue"] if exc.details else exc.message})
    valid = unique_addresses(valid)
    added = 0
    for start in range(0, len(valid), MAX_IN_LIST):
        added += suppress(actor.account_id, valid[start:start + MAX_IN_LIST], reason, note)
    unsubscribed = 0
    if valid:
        now = utcnow()
        for start in range(0, len(valid), MAX_IN_LIST):
            chunk = valid[start:start + MAX_IN_LIST]
            active = sa.and_(Contact.account_id == actor.account_id, Contact.status == "active",
                             any_address(Contact.email, chunk))
            events.emit_for_contacts(actor.account_id, "contact.unsubscribed", sa.select(Contact.id).where(active),
                                     {"reason": reason})
            unsubscribed += db.session.execute(
                sa.update(Contact).where(active).values(status="unsubscribed", unsubscribed_at=now, updated_at=now)
                .execution_options(synchronize_session=False)).rowcount
    table_stats.refresh_after_bulk_change({"suppressions": added, "contacts": unsubscribed,
                                           "email_events": unsubscribed}, actor.account_id)
    db.session.commit()
    return {"added": added, "already": len(valid) - added, "invalid": invalid}


def remove_suppressions(actor, emails):
    """Take addresses off the list; returns how many were removed. Contacts keep their status
    (re-activating one is a separate, deliberate step)."""
    permissions.require(actor, "contacts:write")
    if not isinstance(emails, (list, tuple)) or not all(isinstance(e, str) for e in emails):
        raise field_error("emails", "Must be a list of email addresses.")
    wanted = unique_addresses(e.strip() for e in emails if e.strip())
    removed = 0
    for start in range(0, len(wanted), MAX_IN_LIST):
        result = db.session.execute(sa.delete(Suppression).where(
            Suppression.account_id == actor.account_id,
            any_address(Suppression.email, wanted[start:start + MAX_IN_LIST]))
            .execution_options(synchronize_session=False))
        removed += result.rowcount
    db.session.commit()
    return removed
