"""API clients: the secret is shown once and stored hashed; list, revoke, scopes, roles, tenants."""
import pytest
import sqlalchemy as sa

from nudge.errors import AuthenticationFailed, Forbidden, NotFound, ValidationError
from nudge.extensions import db
from nudge.models import ApiClient
from nudge.services import api_clients, audit
from nudge.services.security import hash_token


def test_create_returns_secret_once_and_stores_only_a_hash(make_account):
    account, owner = make_account()
    client, secret = api_clients.create_api_client(owner, name="Shop sync", scopes="contacts:write contacts:read")

    row = db.session.execute(sa.select(ApiClient.__table__).where(ApiClient.__table__.c.id == client.id)).one()
    assert secret not in [str(v) for v in row]
    assert row.secret_hash == hash_token(secret)
    assert client.scopes == ["contacts:read", "contacts:write"] and client.created_by == owner.id
    assert api_clients.authenticate_client(client.client_id, secret).id == client.id
    assert api_clients.get_api_client(account.id, client.id).last_used_at is not None
    entry = db.session.scalars(audit.list_entries(account.id, action="api_client.created")).one()
    assert secret not in str(entry.meta) and entry.resources == [f"api_client:{client.client_id}"]


def test_wrong_secret_fails(make_account):
    _, owner = make_account()
    client, secret = api_clients.create_api_client(owner, name="CRM", scopes=["analytics:read"])
    with pytest.raises(AuthenticationFailed):
        api_clients.authenticate_client(client.client_id, secret + "x")
    with pytest.raises(AuthenticationFailed):
        api_clients.authenticate_client("nc_unknown", secret)


def test_create_validates_name_and_scopes(make_account):
    _, owner = make_account()
    with pytest.raises(ValidationError):
        api_clients.create_api_client(owner, name="", scopes=["contacts:read"])
    with pytest.raises(ValidationError, match="Unknown scope"):
        api_clients.create_api_client(owner, name="X", scopes=["root"])
    with pytest.raises(ValidationError, match="at least one scope"):
        api_clients.create_api_client(owner, name="X", scopes=[])


def test_list_and_revoke(make_account, make_user):
    account, owner = make_account()
    admin = make_user(account, role="admin")
    first, first_secret = api_clients.create_api_client(owner, name="One", scopes=["contacts:read"])
    second, _ = api_clients.create_api_client(admin, name="Two", scopes=["campaigns:read"])
    assert {c.id for c in api_clients.list_api_clients(account.id)} == {first.id, second.id}

    api_clients.revoke_api_client(admin, first.id, ip="192.0.2.7")
    with pytest.raises(AuthenticationFailed):
        api_clients.authenticate_client(first.client_id, first_secret)
    assert api_clients.active_client(first.client_id) is None
    listed = api_clients.list_api_clients(account.id)
    assert [c.id for c in listed] == [second.id, first.id]  # active first
    assert not listed[1].is_active
    entry = db.session.scalars(audit.list_entries(account.id, action="api_client.revoked")).one()
    assert entry.actor == admin.email and entry.ip_address == "192.0.2.7"


@pytest.mark.parametrize("role", ["marketer", "viewer"])
def test_marketer_and_viewer_cannot_manage_clients(make_account, make_user, role):
    account, owner = make_account()
    actor = make_user(account, role=role)
    client, secret = api_clients.create_api_client(owner, name="Shop", scopes=["contacts:read"])
    with pytest.raises(Forbidden):
        api_clients.create_api_client(actor, name="Mine", scopes=["contacts:read"])
    with pytest.raises(Forbidden):
        api_clients.revoke_api_client(actor, client.id)
    assert api_clients.authenticate_client(client.client_id, secret).is_active


def test_other_account_cannot_see_or_revoke(make_account):
    account_a, owner_a = make_account()
    account_b, owner_b = make_account()
    client, secret = api_clients.create_api_client(owner_a, name="A's client", scopes=["contacts:read"])
    with pytest.raises(NotFound):
        api_clients.revoke_api_client(owner_b, client.id)
    with pytest.raises(NotFound):
        api_clients.get_api_client(account_b.id, client.id)
    assert api_clients.list_api_clients(account_b.id) == []
    assert api_clients.authenticate_client(client.client_id, secret).is_active


# --- Scopes bounded by the creator's role ----------------------------------------------------------

def test_each_role_may_give_only_the_scopes_it_has():
    from nudge.services.permissions import SCOPES, role_scopes
    assert role_scopes("owner") == SCOPES
    assert role_scopes("admin") == tuple(s for s in SCOPES if s != "account:admin")
    assert role_scopes("marketer") == tuple(s for s in SCOPES if s != "account:admin")
    assert role_scopes("viewer") == ("campaigns:read", "contacts:read", "analytics:read")


def test_account_admin_is_owner_only(make_account, make_user):
    account, owner = make_account()
    admin = make_user(account, role="admin")
    with pytest.raises(ValidationError) as exc:
        api_clients.create_api_client(admin, name="Full", scopes=["contacts:read", "account:admin"])
    assert exc.value.details == [{"field": "scopes",
                                  "issue": "Your role (admin) cannot give account:admin: only an owner can."}]
    assert api_clients.list_api_clients(account.id) == []
    every_other = [s for s in api_clients.permissions.SCOPES if s != "account:admin"]
    client, _ = api_clients.create_api_client(admin, name="Sync", scopes=every_other)
    assert client.scopes == sorted(every_other)
    client, _ = api_clients.create_api_client(owner, name="Full", scopes=["account:admin"])
    assert client.scopes == ["account:admin"]


def test_tokens_get_the_clients_scopes_the_creators_current_role_allows(make_account, make_user):
    from nudge.services import team
    account, owner = make_account()
    other_owner = make_user(account, role="owner")
    full, _ = api_clients.create_api_client(other_owner, name="Full", scopes=["account:admin", "contacts:write"])
    admin = make_user(account, role="admin")
    writer, _ = api_clients.create_api_client(admin, name="Writer", scopes=["contacts:read", "contacts:write"])
    assert api_clients.effective_scopes(full) == ["account:admin", "contacts:write"]

    team.change_role(owner, other_owner.id, "admin")
    team.change_role(owner, admin.id, "viewer")
    assert api_clients.effective_scopes(full) == ["contacts:write"]
    assert api_clients.effective_scopes(writer) == ["contacts:read"]
    assert full.scopes == ["account:admin", "contacts:write"]       # stored as given: promoting back restores it
    team.change_role(owner, other_owner.id, "owner")
    assert api_clients.effective_scopes(full) == ["account:admin", "contacts:write"]


def test_a_client_whose_creator_is_gone_holds_at_most_an_admins_scopes(make_account, make_user):
    account, owner = make_account()
    client, _ = api_clients.create_api_client(owner, name="Old", scopes=["account:admin", "analytics:read"])
    db.session.execute(sa.update(ApiClient).where(ApiClient.id == client.id).values(created_by=None))
    db.session.commit()
    assert api_clients.effective_scopes(db.session.get(ApiClient, client.id)) == ["analytics:read"]
