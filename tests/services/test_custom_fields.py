"""Custom field definitions and value validation (the service every write path uses)."""
import pytest

from nudge.errors import Conflict, Forbidden, NotFound, ValidationError
from nudge.extensions import db
from nudge.models import Account
from nudge.services import contacts, custom_fields


@pytest.fixture
def owner(make_account):
    return make_account()[1]


def test_define_update_delete(owner):
    field = custom_fields.create_field(owner, name="plan", type="choice", options=[" free", "pro", "pro"])
    assert (field.label, field.options) == ("Plan", ["free", "pro"])
    custom_fields.update_field(owner, "plan", label="Tier", options=["free", "pro", "team"])
    assert custom_fields.get_field(owner.account_id, "plan").label == "Tier"
    contact = contacts.create_contact(owner, {"email": "a@example.com", "custom_fields": {"plan": "team"}})
    custom_fields.delete_field(owner, "plan")
    db.session.expire_all()
    assert contact.custom_fields == {}
    with pytest.raises(NotFound):
        custom_fields.get_field(owner.account_id, "plan")


def test_names_types_and_duplicates(owner):
    for kwargs, field in (({"name": "Has Space"}, "name"), ({"name": "status"}, "name"),
                          ({"name": "x", "type": "money"}, "type"), ({"name": "x", "type": "choice"}, "options")):
        with pytest.raises(ValidationError) as exc:
            custom_fields.create_field(owner, **kwargs)
        assert exc.value.details[0]["field"] == field
    custom_fields.create_field(owner, name="company")
    with pytest.raises(Conflict):
        custom_fields.create_field(owner, name="company")


def test_fifty_fields_per_account(owner, make_account):
    for i in range(custom_fields.MAX_FIELDS):
        custom_fields.create_field(owner, name=f"f{i}")
    with pytest.raises(ValidationError) as exc:
        custom_fields.create_field(owner, name="one_more")
    assert "50" in exc.value.message
    _, other = make_account()
    assert custom_fields.create_field(other, name="f0").account_id == other.account_id  # per account


@pytest.mark.parametrize("kind, good, stored, bad", [
    ("text", 42, "42", "x" * 1001),
    ("number", "1,234.5", 1234.5, "lots"),
    ("number", 7, 7, True),
    ("date", "2024-02-29", "2024-02-29", "29/02/2024"),
    ("boolean", "no", False, "perhaps"),
])
def test_values_are_coerced_or_rejected_with_their_path(owner, kind, good, stored, bad):
    custom_fields.create_field(owner, name="value", type=kind)
    contact = contacts.create_contact(owner, {"email": "a@example.com", "custom_fields": {"value": good}})
    assert contact.custom_fields == {"value": stored}
    with pytest.raises(ValidationError) as exc:
        contacts.update_contact(owner, contact.id, {"custom_fields": {"value": bad}})
    assert exc.value.details == [{"field": "custom_fields.value", "issue": exc.value.details[0]["issue"]}]


def test_unknown_field_is_a_validation_error(owner):
    with pytest.raises(ValidationError) as exc:
        contacts.create_contact(owner, {"email": "a@example.com", "custom_fields": {"nope": 1}})
    assert exc.value.details[0]["field"] == "custom_fields.nope"


def test_viewer_cannot_define(owner, make_user):
    viewer = make_user(db.session.get(Account, owner.account_id), role="viewer")
    with pytest.raises(Forbidden):
        custom_fields.create_field(viewer, name="x")


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-inf", "Infinity", "-Infinity", "1e999", float("nan"),
                                 float("inf"), float("-inf"), 10 ** 400])
def test_number_fields_refuse_values_that_are_not_finite(owner, bad):
    custom_fields.create_field(owner, name="score", type="number")
    with pytest.raises(ValidationError) as exc:
        contacts.create_contact(owner, {"email": "a@example.com", "custom_fields": {"score": bad}})
    assert exc.value.details == [{"field": "custom_fields.score",
                                  "issue": f"The number field 'score' must be finite, not {str(bad)[:40]!r}."}]
    contact = contacts.create_contact(owner, {"email": "a@example.com", "custom_fields": {"score": "-1.5e3"}})
    assert contact.custom_fields == {"score": -1500.0}
    with pytest.raises(ValidationError) as exc:
        contacts.update_contact(owner, contact.id, {"custom_fields": {"score": bad}})
    assert exc.value.details[0]["field"] == "custom_fields.score"
    db.session.refresh(contact)
    assert contact.custom_fields == {"score": -1500.0}


def test_imports_refuse_numbers_that_are_not_finite(owner, tmp_path):
    from nudge.services import imports
    custom_fields.create_field(owner, name="score", type="number")
    path = tmp_path / "people.csv"
    path.write_text("email,score\na@example.com,nan\nb@example.com,Infinity\nc@example.com,-inf\nd@example.com,7\n")
    imp = imports.import_file(owner, str(path))
    assert (imp.created_count, imp.error_count) == (1, 3)
    errors = imports.first_errors(owner.account_id, imp.id, 10)
    assert [(e.row_number, e.field) for e in errors] == [(2, "score"), (3, "score"), (4, "score")]
    assert all("The number field 'score' must be finite" in e.message for e in errors)
    _, errors = imports.import_contacts(owner, [{"email": "e@example.com", "custom_fields": {"score": "inf"}}])
    assert "must be finite" in errors[0]["message"]
