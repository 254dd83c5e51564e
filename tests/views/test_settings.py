"""Settings pages: account settings, API clients and the audit log."""
import datetime as dt
import re
import zoneinfo

import pytest
import sqlalchemy as sa

from nudge.errors import AuthenticationFailed
from nudge.extensions import db
from nudge.models import Account, ApiClient, AuditLog
from nudge.services import api_clients, audit

HTMX = {"HX-Request": "true"}
GOOD = {"name": "Acme Shop", "postal_address": "1 Main St\nSpringfield", "default_from_name": "Acme",
        "default_from_email": "news@acme.example", "timezone": "Europe/Berlin"}


def saved_account(account_id):
    db.session.expire_all()
    return db.session.get(Account, account_id)


# --- Account settings ----------------------------------------------------------------------------

def test_account_page_shows_settings_and_plan(client, make_account, login):
    account, owner = make_account(name="Acme")
    login(client, owner)
    html = client.get("/settings/account").get_data(as_text=True)
    assert 'name="postal_address"' in html and "CAN-SPAM" in html
    assert "10,000" in html and "Starter" in html  # plan and its monthly limit, read-only
    assert 'name="plan' not in html
    # The time zone is searchable: a text field suggesting every zone (a datalist), holding the current one.
    field = re.search(r'<input type="text" id="timezone" name="timezone" value="([^"]*)" list="([^"]+)"', html)
    assert field and field.group(1) == "UTC"
    datalist = re.search(rf'<datalist id="{field.group(2)}">(.*?)</datalist>', html, re.S).group(1)
    assert re.findall(r'<option value="([^"]+)">', datalist) == sorted(zoneinfo.available_timezones())
    assert "Save settings" in html


def test_owner_saves_settings(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    response = client.post("/settings/account", data=GOOD)
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Settings saved" in page
    saved = saved_account(account.id)
    assert (saved.name, saved.timezone, saved.default_from_email) == ("Acme Shop", "Europe/Berlin", "news@acme.example")
    assert saved.postal_address == "1 Main St\nSpringfield"
    assert db.session.scalars(audit.list_entries(account.id, action="account.updated")).first() is not None


def test_htmx_save_returns_the_form_with_a_toast(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    response = client.post("/settings/account", data=GOOD, headers=HTMX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" not in html and 'id="account-settings"' in html
    assert "Settings saved" in response.headers["HX-Trigger"]
    assert saved_account(account.id).timezone == "Europe/Berlin"


@pytest.mark.parametrize("field,value,message", [
    ("timezone", "Mars/Olympus", "IANA time zone"),
    ("default_from_email", "not an email", "valid email"),
    ("name", "", "Account name is required"),
])
def test_invalid_settings_show_field_errors_and_change_nothing(client, make_account, login, field, value, message):
    account, owner = make_account(name="Before")
    login(client, owner)
    for headers in ({}, HTMX):
        response = client.post("/settings/account", data={**GOOD, field: value}, headers=headers)
        html = response.get_data(as_text=True)
        assert response.status_code == 422
        assert message in html and "has-error" in html
        assert f'id="{field}-error"' in html
    saved = saved_account(account.id)
    assert saved.name == "Before" and saved.timezone == "UTC" and saved.postal_address is None


@pytest.mark.parametrize("role", ["admin", "marketer", "viewer"])
def test_non_owner_sees_settings_read_only_and_cannot_save(client, make_account, make_user, login, role):
    account, owner = make_account(name="Before")
    member = make_user(account, role=role)
    login(client, member)
    response = client.get("/settings/account")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "Before" in html
    assert "Save settings" not in html and 'name="timezone"' not in html
    assert "Only an owner can change these settings." in html
    assert client.post("/settings/account", data=GOOD).status_code == 403
    assert saved_account(account.id).name == "Before"


# --- API clients ---------------------------------------------------------------------------------

def test_create_api_client_shows_secret_once(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    page = client.get("/settings/api-clients").get_data(as_text=True)
    for scope in ("campaigns:read", "contacts:write", "automations:execute", "account:admin"):
        assert f'value="{scope}"' in page
    assert "Trigger workflows" in page and "No API clients yet" in page

    response = client.post("/settings/api-clients", data={"name": "Shop sync",
                                                          "scopes": ["contacts:read", "contacts:write"]})
    html = response.get_data(as_text=True)
    assert response.status_code == 201 and 'class="secret-once"' in html
    client_id = re.search(r'id="new-client-id">([^<]+)<', html).group(1)
    secret = re.search(r'id="new-client-secret">([^<]+)<', html).group(1)
    assert "/api/v1/oauth/token" in html and "grant_type=client_credentials" in html
    assert f"client_secret={secret}" in html

    stored = db.session.scalar(sa.select(ApiClient).where(ApiClient.client_id == client_id))
    assert stored.secret_hash != secret and secret not in stored.secret_hash
    assert api_clients.authenticate_client(client_id, secret).id == stored.id
    listing = client.get("/settings/api-clients").get_data(as_text=True)
    assert client_id in listing and "Shop sync" in listing and "Active" in listing
    assert secret not in listing


def test_htmx_create_swaps_in_secret_panel_and_table(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    response = client.post("/settings/api-clients", data={"name": "CRM", "scopes": ["analytics:read"]},
                           headers=HTMX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" not in html
    assert 'id="api-client-create"' in html and 'class="secret-once"' in html
    assert 'id="api-clients" hx-swap-oob="true"' in html and "CRM" in html
    assert "created" in response.headers["HX-Trigger"]


def test_create_api_client_validation(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    response = client.post("/settings/api-clients", data={"name": "No scopes"})
    assert response.status_code == 422 and "Choose at least one scope." in response.get_data(as_text=True)
    response = client.post("/settings/api-clients", data={"name": "", "scopes": ["contacts:read"]}, headers=HTMX)
    html = response.get_data(as_text=True)
    assert response.status_code == 422 and "Name is required." in html and "<html" not in html
    assert api_clients.list_api_clients(account.id) == []


def test_revoke_api_client(client, make_account, login):
    account, owner = make_account()
    created, secret = api_clients.create_api_client(owner, name="Old", scopes=["contacts:read"])
    login(client, owner)
    response = client.post(f"/settings/api-clients/{created.id}/revoke", follow_redirects=True)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "revoked" in html and "Revoked" in html
    with pytest.raises(AuthenticationFailed):
        api_clients.authenticate_client(created.client_id, secret)


def test_htmx_revoke_swaps_the_row(client, make_account, login):
    account, owner = make_account()
    created, secret = api_clients.create_api_client(owner, name="Row", scopes=["contacts:read"])
    login(client, owner)
    response = client.post(f"/settings/api-clients/{created.id}/revoke", headers=HTMX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and html.strip().startswith("<tr") and "Revoked" in html
    assert "revoked" in response.headers["HX-Trigger"]
    with pytest.raises(AuthenticationFailed):
        api_clients.authenticate_client(created.client_id, secret)


def test_admin_manages_api_clients(client, make_account, make_user, login):
    account, _ = make_account()
    admin = make_user(account, role="admin")
    login(client, admin)
    assert client.get("/settings/api-clients").status_code == 200
    response = client.post("/settings/api-clients", data={"name": "Admin's", "scopes": ["campaigns:read"]})
    assert response.status_code == 201


def test_an_admin_is_offered_and_given_only_the_scopes_an_admin_has(client, make_account, make_user, login):
    account, owner = make_account()
    admin = make_user(account, role="admin")
    login(client, admin)
    page = client.get("/settings/api-clients").get_data(as_text=True)
    assert 'value="contacts:write"' in page and 'value="account:admin"' not in page
    assert "only an owner can give" in page
    response = client.post("/settings/api-clients", data={"name": "Sneaky", "scopes": ["account:admin"]},
                           headers=HTMX)
    assert response.status_code == 422
    assert "cannot give account:admin: only an owner can." in response.get_data(as_text=True)
    assert api_clients.list_api_clients(account.id) == []


def test_the_list_crosses_out_scopes_beyond_the_creators_current_role(client, make_account, make_user, login):
    from nudge.services import team
    account, owner = make_account()
    other = make_user(account, role="owner")
    api_clients.create_api_client(other, name="Full", scopes=["account:admin", "contacts:read"])
    team.change_role(owner, other.id, "admin")
    login(client, owner)
    page = client.get("/settings/api-clients").get_data(as_text=True)
    assert "<s>account:admin</s>" in page and "<s>contacts:read</s>" not in page


@pytest.mark.parametrize("role", ["marketer", "viewer"])
def test_marketer_and_viewer_get_403_on_restricted_settings(client, make_account, make_user, login, role):
    account, owner = make_account()
    created, secret = api_clients.create_api_client(owner, name="Keep", scopes=["contacts:read"])
    member = make_user(account, role=role)
    login(client, member)
    nav = client.get("/settings/account").get_data(as_text=True)
    for path in ("/settings/team", "/settings/api-clients", "/settings/audit-log"):
        assert f'href="{path}"' not in nav
        assert client.get(path).status_code == 403
    assert client.post("/settings/api-clients", data={"name": "X", "scopes": ["contacts:read"]}).status_code == 403
    assert client.post(f"/settings/api-clients/{created.id}/revoke").status_code == 403
    assert [c.name for c in api_clients.list_api_clients(account.id)] == ["Keep"]
    assert api_clients.authenticate_client(created.client_id, secret).is_active


def test_other_account_cannot_see_or_revoke_clients(client, make_account, login):
    account_a, owner_a = make_account()
    created, secret = api_clients.create_api_client(owner_a, name="A only", scopes=["contacts:read"])
    account_b, owner_b = make_account()
    login(client, owner_b)
    assert "A only" not in client.get("/settings/api-clients").get_data(as_text=True)
    assert client.post(f"/settings/api-clients/{created.id}/revoke").status_code == 404
    assert client.post(f"/settings/api-clients/{created.id}/revoke", headers=HTMX).status_code == 404
    assert api_clients.authenticate_client(created.client_id, secret).is_active


# --- Audit log -----------------------------------------------------------------------------------

def add_entry(account, action, actor_label, when=None, **meta):
    entry = audit.record(action, account_id=account.id, actor_label=actor_label, ip="203.0.113.5",
                         resources=["user:1"], meta=meta)
    if when is not None:
        entry.created_at = when
    db.session.commit()
    return entry


def rows(html):
    return re.findall(r'<code class="mono">([a-z_]+\.[a-z_]+|logout)</code>', html)


def test_audit_log_lists_entries_in_account_time(client, make_account, login):
    account, owner = make_account()
    account.timezone = "America/New_York"
    db.session.commit()
    add_entry(account, "team.role_changed", "boss@example.com", when=dt.datetime(2024, 1, 15, 17, 30),
              **{"from": "viewer", "to": "admin"})
    login(client, owner)
    html = client.get("/settings/audit-log").get_data(as_text=True)
    assert "team.role_changed" in html and "login.succeeded" in html  # our own sign-in is there too
    assert "2024-01-15 12:30:00" in html  # 17:30 UTC in New York
    assert "from: viewer; to: admin" in html and "203.0.113.5" in html and "user:1" in html
    assert '<optgroup label="Team">' in html and 'value="team.*"' in html
    assert re.search(r"1–\d+ of \d+", html)


def test_audit_log_filters_by_action_actor_and_date(client, make_account, login):
    account, owner = make_account()
    add_entry(account, "api_client.created", "alice@example.com", when=dt.datetime(2024, 3, 1, 12))
    add_entry(account, "api_client.revoked", "bob@example.com", when=dt.datetime(2024, 3, 5, 12))
    add_entry(account, "team.invited", "alice@example.com", when=dt.datetime(2024, 3, 9, 12))
    login(client, owner)

    assert rows(client.get("/settings/audit-log?action=api_client.revoked").get_data(as_text=True)) == \
        ["api_client.revoked"]
    assert rows(client.get("/settings/audit-log?action=api_client.*").get_data(as_text=True)) == \
        ["api_client.revoked", "api_client.created"]
    assert rows(client.get("/settings/audit-log?actor=ALICE").get_data(as_text=True)) == \
        ["team.invited", "api_client.created"]
    by_date = client.get("/settings/audit-log?date_from=2024-03-02&date_to=2024-03-09").get_data(as_text=True)
    assert rows(by_date) == ["team.invited", "api_client.revoked"]

    fragment = client.get("/settings/audit-log?actor=bob", headers=HTMX)
    html = fragment.get_data(as_text=True)
    assert "<html" not in html and html.strip().startswith("<div id=\"audit-results\"")
    assert rows(html) == ["api_client.revoked"]
    none = client.get("/settings/audit-log?actor=nobody-at-all").get_data(as_text=True)
    assert "No entries match these filters" in none


def test_audit_log_paginates_50_per_page(client, make_account, login):
    account, owner = make_account()
    start = dt.datetime(2024, 1, 1)
    for i in range(58):
        audit.record("team.invited", account_id=account.id, actor_label=f"user{i}@example.com")
    db.session.flush()
    for i, entry in enumerate(db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "team.invited"))):
        entry.created_at = start + dt.timedelta(minutes=i)
    db.session.commit()
    login(client, owner)  # + account.created + login.succeeded = 60 entries

    first = client.get("/settings/audit-log").get_data(as_text=True)
    assert "1–50 of 60" in first and len(rows(first)) == 50 and 'rel="next"' in first
    second = client.get("/settings/audit-log?page=2").get_data(as_text=True)
    assert "51–60 of 60" in second and len(rows(second)) == 10 and 'rel="prev"' in second
    filtered = client.get("/settings/audit-log?action=team.invited&page=2").get_data(as_text=True)
    assert "51–58 of 58" in filtered and "action=team.invited" in filtered
    assert "51–60 of 60" in client.get("/settings/audit-log?page=99").get_data(as_text=True)


def test_audit_log_never_shows_another_account(client, make_account, login):
    account_a, owner_a = make_account()
    account_b, owner_b = make_account()
    add_entry(account_a, "api_client.created", "secret-a@example.com")
    login(client, owner_b)
    html = client.get("/settings/audit-log").get_data(as_text=True)
    assert "secret-a@example.com" not in html and owner_a.email not in html
    assert "No entries match" in client.get("/settings/audit-log?actor=secret-a").get_data(as_text=True)


def test_audit_log_empty_state_and_admin_access(client, make_account, make_user, login):
    account, owner = make_account()
    admin = make_user(account, role="admin")
    db.session.execute(sa.delete(AuditLog).where(AuditLog.account_id == account.id))
    db.session.commit()
    login(client, admin)
    response = client.get("/settings/audit-log?action=team.removed")
    assert response.status_code == 200 and "No entries match these filters" in response.get_data(as_text=True)


def test_credentials_from_the_page_get_a_token_until_revoked(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    html = client.post("/settings/api-clients", data={"name": "Script", "scopes": ["contacts:read"]}) \
        .get_data(as_text=True)
    client_id = re.search(r'id="new-client-id">([^<]+)<', html).group(1)
    secret = re.search(r'id="new-client-secret">([^<]+)<', html).group(1)
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    token = client.post("/api/v1/oauth/token", data=form)
    assert token.status_code == 200 and token.get_json()["token_type"] == "Bearer"

    stored = db.session.scalar(sa.select(ApiClient).where(ApiClient.client_id == client_id))
    client.post(f"/settings/api-clients/{stored.id}/revoke")
    assert client.post("/api/v1/oauth/token", data=form).status_code == 401


def test_back_button_history_restore_gets_the_whole_page(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    response = client.get("/settings/audit-log?action=login.succeeded",
                          headers={**HTMX, "HX-History-Restore-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" in html and 'id="audit-results"' in html
