"""contact_tags and contact_values (migration 0008) stay exactly what contacts say, after every write path.

The expected rows are computed here in Python from the contacts and the field definitions, independently of
the triggers' SQL: one row per tag and per custom value of the right type, for contacts that are not
deleted; text values lower-cased and non-empty, booleans as 1/0."""
import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import Contact, ContactTag, ContactValue, CustomField
from nudge.services import contacts, custom_fields, housekeeping, imports, segment_tables, segments, suppressions


def expected_rows(account_id):
    kinds = dict(db.session.execute(sa.select(CustomField.name, CustomField.type)
                                    .where(CustomField.account_id == account_id)).all())
    tags, values = set(), set()
    for contact in db.session.scalars(sa.select(Contact).where(Contact.account_id == account_id,
                                                               Contact.status != "deleted")):
        tags |= {(tag, contact.id) for tag in contact.tags or [] if isinstance(tag, str)}
        for name, value in (contact.custom_fields or {}).items():
            kind = kinds.get(name)
            if kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
                values.add((name, contact.id, Decimal(str(value)), None))
            elif kind == "boolean" and isinstance(value, bool):
                values.add((name, contact.id, Decimal(int(value)), None))
            elif kind == "text" and isinstance(value, str) and value:
                values.add((name, contact.id, None, value.lower()))
            elif kind in ("choice", "date") and isinstance(value, str):
                values.add((name, contact.id, None, value))
    return tags, values


def stored_rows(account_id):
    tags = set(db.session.execute(sa.select(ContactTag.tag, ContactTag.contact_id)
                                  .where(ContactTag.account_id == account_id)).all())
    values = {(name, contact_id, None if number is None else Decimal(str(number)), text)
              for name, contact_id, number, text in db.session.execute(
                  sa.select(ContactValue.field, ContactValue.contact_id, ContactValue.number, ContactValue.text)
                  .where(ContactValue.account_id == account_id)).all()}
    return tags, values


def assert_exact(account_id, step):
    db.session.expire_all()
    expected, stored = expected_rows(account_id), stored_rows(account_id)
    assert stored[0] == expected[0], f"contact_tags after {step}: extra {stored[0] - expected[0]}, " \
                                     f"missing {expected[0] - stored[0]}"
    assert stored[1] == expected[1], f"contact_values after {step}: extra {stored[1] - expected[1]}, " \
                                     f"missing {expected[1] - stored[1]}"
    return expected


@pytest.fixture
def shop(make_account):
    account, owner = make_account()
    custom_fields.create_field(owner, name="score", type="number")
    custom_fields.create_field(owner, name="plan", type="choice", options=["Free", "Pro"])
    custom_fields.create_field(owner, name="company", type="text")
    custom_fields.create_field(owner, name="renewal", type="date")
    custom_fields.create_field(owner, name="vip", type="boolean")
    return account, owner


def emails(account_id, *addresses):
    return [db.session.scalar(sa.select(Contact.id).where(Contact.account_id == account_id, Contact.email == a))
            for a in addresses]


def test_side_tables_follow_every_write_path(shop, make_account, tmp_path):
    account, owner = shop
    other, other_owner = make_account()
    aid = account.id
    # Another account's contacts must never leak into this account's rows (and keep their own).
    contacts.create_contact(other_owner, {"email": "ann@example.com", "tags": ["vip"]})

    ann = contacts.create_contact(owner, {"email": "ann@example.com", "first_name": "Ann", "tags": ["vip", "beta"],
                                          "custom_fields": {"score": 90, "plan": "Pro", "company": "Acme Corp",
                                                            "renewal": "2024-06-01", "vip": True}})
    bob = contacts.create_contact(owner, {"email": "bob@example.com", "tags": ["beta"],
                                          "custom_fields": {"score": 10.5, "company": "", "vip": False}})
    cat = contacts.create_contact(owner, {"email": "cat@example.com", "status": "unsubscribed",
                                          "custom_fields": {"plan": "Free"}})
    ann_id = ann.id
    assert_exact(aid, "create_contact")

    contacts.update_contact(owner, ann.id, {"tags": ["vip", "gold"], "custom_fields": {"score": 91, "company": None}})
    contacts.update_contact(owner, bob.id, {"first_name": "Bob", "custom_fields": {"company": "BOB LTD"}})
    contacts.update_contact(owner, bob.id, {"status": "bounced"})
    assert_exact(aid, "update_contact")

    contacts.add_tags(owner, ["news", "beta"], contact_ids=[ann.id, bob.id, cat.id])
    contacts.remove_tags(owner, ["vip"], filters={"tags": ["vip"]})
    contacts.change_tags(owner, add=["x"], remove=["beta"], contact_ids=[bob.id])
    assert_exact(aid, "bulk tags")

    contacts.unsubscribe_contact(owner, ann.id)
    contacts.change_status_for_resubscribe(db.session.get(Contact, ann.id), campaign_id=None)
    db.session.commit()
    contacts.change_status_for_unsubscribe(db.session.get(Contact, ann.id), campaign_id=None, source="link")
    db.session.commit()
    suppressions.add_suppressions(owner, ["cat@example.com", "bob@example.com"], "manual")
    assert_exact(aid, "status changes")

    contacts.delete_contact(owner, ann.id)
    rows = assert_exact(aid, "delete_contact")
    assert all(contact_id != ann.id for _, contact_id in rows[0])
    contacts.restore_contact(owner, ann.id)
    assert_exact(aid, "restore_contact")
    count, deleted_at = contacts.delete_contacts(owner, filters={"tags": ["news"]})
    assert count == 3
    assert stored_rows(aid) == (set(), set())
    contacts.restore_contacts(owner, deleted_at=deleted_at)
    assert_exact(aid, "bulk delete and restore")

    # Deleted and re-created with the same address: the contact is revived with new values.
    contacts.delete_contact(owner, cat.id)
    contacts.create_contact(owner, {"email": "cat@example.com", "tags": ["back"], "custom_fields": {"score": 1}})
    assert_exact(aid, "create over a deleted contact")

    # Imports: the JSON batch and a CSV file, new and existing contacts, and a deleted contact revived.
    contacts.delete_contact(owner, bob.id)
    imports.import_contacts(owner, [
        {"email": "dan@example.com", "tags": ["imported"], "custom_fields": {"score": 5, "vip": "yes"}},
        {"email": "ann@example.com", "tags": ["vip"], "custom_fields": {"company": "Acme"}},
    ], update_existing=False, tags=["batch"])
    assert_exact(aid, "import, skip existing")
    imports.import_contacts(owner, [
        {"email": "ann@example.com", "tags": ["vip"], "custom_fields": {"company": "Acme", "renewal": "2025-01-01"}},
        {"email": "bob@example.com", "custom_fields": {"plan": "Pro"}},
    ], update_existing=True, tags=["batch2"])
    assert_exact(aid, "import, update existing")
    path = tmp_path / "contacts.csv"
    path.write_text("email,tags,score,company\n"
                    "eve@example.com,a;b,7,Eve Inc\n"
                    "dan@example.com,c,8,DAN CO\n"
                    "ann@example.com,,,\n")
    imports.import_file(owner, str(path), update_existing=True)
    assert_exact(aid, "CSV import")

    # Custom field definitions: values written around the validation count once their field exists;
    # deleting a field removes its rows.
    db.session.execute(sa.update(Contact).where(Contact.id == ann.id).values(
        custom_fields={"score": "lots", "vip": 1, "tier": "Gold", "plan": "Pro"}))
    db.session.commit()
    assert_exact(aid, "raw UPDATE with values of the wrong type")
    custom_fields.create_field(owner, name="tier", type="text")
    tier = assert_exact(aid, "create_field over existing values")[1]
    assert ("tier", ann.id, None, "gold") in tier
    custom_fields.delete_field(owner, "plan")
    values = assert_exact(aid, "delete_field")[1]
    assert not any(name == "plan" for name, *_ in values)

    # Raw SQL and the retention purge.
    db.session.execute(sa.text("UPDATE contacts SET tags = NULL WHERE email = 'eve@example.com'"))
    db.session.execute(sa.delete(Contact).where(Contact.email == "dan@example.com", Contact.account_id == aid))
    db.session.commit()
    assert_exact(aid, "raw SQL")
    contacts.delete_contact(owner, ann.id)
    housekeeping.run_housekeeping(now=dt.datetime.utcnow() + dt.timedelta(days=31))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contact).where(Contact.id == ann_id)) == 0
    assert_exact(aid, "purge")
    assert_exact(other.id, "everything in the other account")
    assert stored_rows(other.id)[0] != set()


def test_rebuild_recomputes_an_account(shop):
    account, owner = shop
    contacts.create_contact(owner, {"email": "ann@example.com", "tags": ["vip"], "custom_fields": {"score": 3}})
    db.session.execute(sa.delete(ContactTag))
    db.session.execute(sa.insert(ContactValue).values(account_id=account.id, field="score",
                                                      contact_id=account.id, number=99))
    db.session.commit()
    segment_tables.rebuild(account.id)
    db.session.commit()
    assert_exact(account.id, "rebuild")


def test_counts_read_the_side_tables(shop):
    """A count of a tag rule answers from contact_tags alone: rows that contacts do not back still count
    (which is why the triggers must keep them exact)."""
    account, owner = shop
    ann = contacts.create_contact(owner, {"email": "ann@example.com", "tags": ["vip"]})
    rule = {"match": "all", "conditions": [{"field": "tags", "op": "contains_any", "value": ["vip"]}]}
    assert segments.count_matching(account.id, rule) == 1
    db.session.execute(sa.delete(ContactTag).where(ContactTag.contact_id == ann.id))
    db.session.commit()
    assert segments.count_matching(account.id, rule) == 0
