"""One contact and one suppression entry per address in any case (issue 14, section 5): the address is kept
as first typed; identity is lower(email) everywhere (database, create/update, import, suppression, sending)."""
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from nudge.errors import Conflict
from nudge.extensions import db
from nudge.models import Contact, Suppression
from nudge.models.types import new_id, utcnow
from nudge.services import campaigns, contacts, imports, segments, suppressions


@pytest.fixture
def owner(make_account):
    return make_account()[1]


def all_contacts(account_id):
    return db.session.scalars(sa.select(Contact).where(Contact.account_id == account_id)).all()


def test_the_database_refuses_a_second_contact_or_suppression_in_another_case(owner):
    contacts.create_contact(owner, {"email": "ann@example.com"})
    db.session.add(Contact(account_id=owner.account_id, email="ANN@example.com"))
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()
    suppressions.suppress(owner.account_id, ["bob@example.com"], "manual")
    db.session.commit()
    db.session.add(Suppression(id=new_id(), account_id=owner.account_id, email="Bob@example.com", reason="manual",
                               created_at=utcnow()))
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()


def test_another_account_may_have_the_same_address(owner, make_account):
    _, other = make_account()
    contacts.create_contact(owner, {"email": "ann@example.com"})
    contacts.create_contact(other, {"email": "ANN@example.com"})
    assert [c.email for c in all_contacts(other.account_id)] == ["ANN@example.com"]


def test_create_in_another_case_is_a_conflict_naming_the_stored_spelling(owner):
    contacts.create_contact(owner, {"email": "Ann@example.com"})
    with pytest.raises(Conflict) as caught:
        contacts.create_contact(owner, {"email": "ann@EXAMPLE.com"})
    assert "Ann@example.com" in caught.value.message
    assert caught.value.details[0]["field"] == "email"
    assert [c.email for c in all_contacts(owner.account_id)] == ["Ann@example.com"]


def test_create_in_another_case_revives_the_deleted_contact(owner):
    first = contacts.create_contact(owner, {"email": "Ann@example.com"})
    contacts.delete_contact(owner, first.id)
    revived = contacts.create_contact(owner, {"email": "ann@example.com", "first_name": "Ann"})
    assert revived.id == first.id and revived.status == "active" and revived.first_name == "Ann"
    assert len(all_contacts(owner.account_id)) == 1


def test_update_may_change_the_case_but_not_take_another_contacts_address(owner):
    ann = contacts.create_contact(owner, {"email": "ann@example.com"})
    contacts.create_contact(owner, {"email": "bob@example.com"})
    assert contacts.update_contact(owner, ann.id, {"email": "Ann@example.com"}).email == "Ann@example.com"
    with pytest.raises(Conflict):
        contacts.update_contact(owner, ann.id, {"email": "BOB@example.com"})


def test_lookups_by_address_ignore_case(owner):
    ann = contacts.create_contact(owner, {"email": "Ann@example.com"})
    found = db.session.scalars(contacts.contacts_query(owner.account_id, {"email": "aNN@example.com"})).all()
    assert [c.id for c in found] == [ann.id]
    segment = segments.create_segment(owner, "Picked", type="static")
    assert segments.add_members(owner, segment.id, emails=["ANN@example.com", "ann@example.com"]) == 1


def test_suppressing_any_spelling_is_one_entry_and_stops_the_contact(owner):
    ann = contacts.create_contact(owner, {"email": "Ann@example.com"})
    result = suppressions.add_suppressions(owner, ["ANN@example.com", "ann@example.com"])
    assert (result["added"], result["already"]) == (1, 0)
    assert suppressions.suppress(owner.account_id, ["aNn@example.com"], "hard_bounce") == 0
    rows = db.session.scalars(sa.select(Suppression).where(Suppression.account_id == owner.account_id)).all()
    assert [(r.email, r.reason) for r in rows] == [("ANN@example.com", "manual")]
    db.session.expire_all()
    assert db.session.get(Contact, ann.id).status == "unsubscribed"
    assert suppressions.is_suppressed(owner.account_id, "ann@EXAMPLE.com")
    assert suppressions.get_suppression(owner.account_id, "ann@example.com").email == "ANN@example.com"
    assert suppressions.remove_suppressions(owner, ["ann@example.com"]) == 1
    assert not suppressions.is_suppressed(owner.account_id, "ANN@example.com")


def test_a_suppression_in_another_case_keeps_an_active_contact_out_of_every_audience(owner):
    ann = contacts.create_contact(owner, {"email": "Ann@example.com"})
    bob = contacts.create_contact(owner, {"email": "bob@example.com"})
    suppressions.suppress(owner.account_id, ["ann@EXAMPLE.com"], "hard_bounce")  # the contact's status unchanged
    db.session.commit()
    recipients = db.session.execute(campaigns.audience_query(owner.account_id, {"all": True})).all()
    assert [r.id for r in recipients] == [bob.id]
    assert ann.status == "active"


def test_a_suppressed_spelling_is_created_unsubscribed_and_cannot_be_reactivated(owner):
    suppressions.suppress(owner.account_id, ["ANN@example.com"], "unsubscribed")
    db.session.commit()
    ann = contacts.create_contact(owner, {"email": "ann@example.com"})
    assert ann.status == "unsubscribed"
    with pytest.raises(Exception) as caught:
        contacts.update_contact(owner, ann.id, {"status": "active"})
    assert caught.value.details[0]["field"] == "status"


def test_unsubscribing_a_contact_suppresses_every_spelling(owner):
    ann = contacts.create_contact(owner, {"email": "Ann@example.com"})
    contacts.unsubscribe_contact(owner, ann.id)
    assert suppressions.is_suppressed(owner.account_id, "ANN@EXAMPLE.COM")


# --- Imports -------------------------------------------------------------------------------------

def write_csv(tmp_path, text):
    path = tmp_path / "contacts.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_import_updates_the_contact_of_another_spelling_and_keeps_its_address(owner, tmp_path):
    ann = contacts.create_contact(owner, {"email": "ann@example.com", "first_name": "Ann"})
    imp = imports.import_file(owner, write_csv(tmp_path, "email,first_name\nANN@example.com,Annie\n"),
                              update_existing=True)
    assert (imp.created_count, imp.updated_count, imp.error_count) == (0, 1, 0)
    db.session.expire_all()
    [contact] = all_contacts(owner.account_id)
    assert (contact.id, contact.email, contact.first_name) == (ann.id, "ann@example.com", "Annie")
    again = imports.import_file(owner, write_csv(tmp_path, "email,first_name\nAnn@example.com,Other\n"))
    assert (again.created_count, again.updated_count, again.skipped_count) == (0, 0, 1)
    assert len(all_contacts(owner.account_id)) == 1


def test_import_reports_a_spelling_repeated_in_the_file_as_a_duplicate(owner, tmp_path):
    imp = imports.import_file(owner, write_csv(tmp_path, "email\nAnn@example.com\nann@EXAMPLE.com\n"))
    assert (imp.created_count, imp.error_count) == (1, 1)
    assert [c.email for c in all_contacts(owner.account_id)] == ["Ann@example.com"]
    errors = db.session.scalars(imports.errors_query(owner.account_id, imp.id)).all()
    assert errors[0].row_number == 3 and "Duplicate of row 2" in errors[0].message


def test_import_never_creates_an_address_suppressed_in_another_case(owner, tmp_path):
    suppressions.suppress(owner.account_id, ["ANN@example.com"], "complaint")
    db.session.commit()
    imp = imports.import_file(owner, write_csv(tmp_path, "email\nann@example.com\nbob@example.com\n"))
    assert (imp.created_count, imp.error_count) == (1, 1)
    assert [c.email for c in all_contacts(owner.account_id)] == ["bob@example.com"]


def test_import_revives_a_deleted_contact_of_another_spelling_unsubscribed_when_suppressed(owner, tmp_path):
    ann = contacts.create_contact(owner, {"email": "ann@example.com"})
    contacts.delete_contact(owner, ann.id)
    suppressions.suppress(owner.account_id, ["ANN@EXAMPLE.COM"], "manual")
    db.session.commit()
    imp = imports.import_file(owner, write_csv(tmp_path, "email\nAnn@Example.com\n"), update_existing=True)
    assert (imp.created_count, imp.updated_count) == (0, 1)
    db.session.expire_all()
    [contact] = all_contacts(owner.account_id)
    assert (contact.id, contact.email, contact.status) == (ann.id, "ann@example.com", "unsubscribed")


def test_api_batch_import_updates_the_contact_of_another_spelling(owner):
    contacts.create_contact(owner, {"email": "ann@example.com"})
    imp, errors = imports.import_contacts(owner, [{"email": "ANN@example.com", "last_name": "Lee"},
                                                  {"email": "Bob@example.com"}, {"email": "bob@example.com"}],
                                          update_existing=True)
    assert (imp.created_count, imp.updated_count, imp.error_count) == (1, 1, 1)
    assert errors[0]["row"] == 3
    assert sorted((c.email, c.last_name) for c in all_contacts(owner.account_id)) == [
        ("Bob@example.com", None), ("ann@example.com", "Lee")]
