"""Account settings: validation, permissions and audit."""
import pytest

from nudge.errors import Conflict, Forbidden, ValidationError
from nudge.extensions import db
from nudge.models import Account
from nudge.services import accounts, audit
from tests.conftest import PASSWORD

GOOD = {"name": "Acme Shop", "postal_address": "1 Main St\nSpringfield, IL 62701\nUSA",
        "default_from_name": "Acme", "default_from_email": "news@Acme.EXAMPLE", "timezone": "Europe/Berlin"}


def test_owner_saves_settings_and_it_is_audited(make_account):
    account, owner = make_account()
    accounts.update_settings(owner, account, dict(GOOD), ip="192.0.2.4")
    db.session.expire_all()
    saved = db.session.get(Account, account.id)
    assert saved.name == "Acme Shop" and saved.timezone == "Europe/Berlin"
    assert saved.postal_address.startswith("1 Main St\n")
    assert saved.default_from_email == "news@acme.example"
    entry = db.session.scalars(audit.list_entries(account.id, action="account.updated")).one()
    assert set(entry.meta["fields"]) == set(GOOD) and entry.ip_address == "192.0.2.4"


def test_blank_optional_fields_clear_them(make_account):
    account, owner = make_account()
    accounts.update_settings(owner, account, dict(GOOD))
    accounts.update_settings(owner, account, {**GOOD, "postal_address": "  ", "default_from_email": ""})
    assert account.postal_address is None and account.default_from_email is None


@pytest.mark.parametrize("field,value", [("timezone", "Mars/Olympus"), ("default_from_email", "not-an-email"),
                                         ("name", "   ")])
def test_invalid_values_change_nothing(make_account, field, value):
    account, owner = make_account(name="Before")
    with pytest.raises(ValidationError) as exc:
        accounts.update_settings(owner, account, {**GOOD, field: value})
    assert [d["field"] for d in exc.value.details] == [field]
    db.session.expire_all()
    saved = db.session.get(Account, account.id)
    assert saved.name == "Before" and saved.timezone == "UTC" and saved.postal_address is None


def test_read_only_fields_are_refused(make_account):
    account, owner = make_account()
    with pytest.raises(ValidationError):
        accounts.update_settings(owner, account, {"plan_type": "enterprise"})
    assert db.session.get(Account, account.id).plan_type == "starter"


@pytest.mark.parametrize("role", ["admin", "marketer", "viewer"])
def test_only_owner_may_change_settings(make_account, make_user, role):
    account, _ = make_account(name="Before")
    member = make_user(account, role=role)
    with pytest.raises(Forbidden):
        accounts.update_settings(member, account, {"name": "Hijacked"})
    db.session.expire_all()
    assert db.session.get(Account, account.id).name == "Before"


def test_signup_email_must_be_unique(make_account):
    _, owner = make_account()
    with pytest.raises(Conflict):
        accounts.create_account(name="Copy", email=owner.email, password=PASSWORD)
