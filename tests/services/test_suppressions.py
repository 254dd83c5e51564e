"""The suppression list service: bulk add with counts, CSV/text parsing, removal, effect on contacts."""
import pytest
import sqlalchemy as sa

from nudge.errors import ValidationError
from nudge.extensions import db
from nudge.models import Contact, EmailEvent
from nudge.services import contacts, suppressions


@pytest.fixture
def owner(make_account):
    return make_account()[1]


def test_add_counts_added_already_invalid(owner):
    result = suppressions.add_suppressions(owner, ["a@example.com", " a@EXAMPLE.com ", "nope", "b@example.com"])
    assert (result["added"], result["already"]) == (2, 0)
    assert result["invalid"][0]["email"] == "nope"
    result = suppressions.add_suppressions(owner, ["b@example.com", "c@example.com"], reason="complaint")
    assert (result["added"], result["already"]) == (1, 1)
    rows = db.session.scalars(suppressions.list_suppressions(owner.account_id)).all()
    assert {r.email: r.reason for r in rows} == {"a@example.com": "manual", "b@example.com": "manual",
                                                 "c@example.com": "complaint"}
    assert [r.email for r in db.session.scalars(suppressions.list_suppressions(owner.account_id, q="C@"))] == [
        "c@example.com"]
    with pytest.raises(ValidationError):
        suppressions.add_suppressions(owner, ["x@example.com"], reason="whim")


def test_parsing_text_and_csv():
    assert suppressions.emails_from_text("a@x.com, b@x.com\nc@x.com;d@x.com  e@x.com") == [
        "a@x.com", "b@x.com", "c@x.com", "d@x.com", "e@x.com"]
    assert suppressions.emails_from_csv("\ufeffEmail,Name\na@x.com,A\n\nb@x.com,B\n") == ["a@x.com", "b@x.com"]
    assert suppressions.emails_from_csv("email;name\na@x.com;A\n") == ["a@x.com"]
    assert suppressions.emails_from_csv("a@x.com\nb@x.com\n") == ["a@x.com", "b@x.com"]


def test_suppressing_unsubscribes_active_contacts_once(owner):
    active = contacts.create_contact(owner, {"email": "a@example.com"})
    bounced = contacts.create_contact(owner, {"email": "b@example.com", "status": "bounced"})
    suppressions.add_suppressions(owner, ["a@example.com", "b@example.com"])
    db.session.expire_all()
    assert active.status == "unsubscribed" and active.unsubscribed_at is not None
    assert bounced.status == "bounced"
    unsubscribed = db.session.scalars(sa.select(EmailEvent.contact_id).where(
        EmailEvent.event_type == "contact.unsubscribed")).all()
    assert unsubscribed == [active.id]


def test_remove_keeps_contact_status_and_other_accounts(owner, make_account):
    _, other = make_account()
    suppressions.add_suppressions(owner, ["a@example.com"])
    suppressions.add_suppressions(other, ["a@example.com"])
    assert suppressions.remove_suppressions(other, ["A@example.com"]) == 1
    assert suppressions.is_suppressed(owner.account_id, "a@example.com")
    assert not suppressions.is_suppressed(other.account_id, "a@example.com")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 0
