"""The Team page: invitations (link shown once, acceptance), roles, removal, MFA reset, permissions."""
import datetime as dt
import re
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from nudge.delivery.outbox import list_outbox, read_message
from nudge.delivery.selection import outbox_dir
from nudge.extensions import db
from nudge.models import Invitation, User
from nudge.models.types import utcnow
from nudge.services import audit, team
from tests.conftest import PASSWORD

HTMX = {"HX-Request": "true"}
TAKEN = "This email already has a NudgeCampaign sign-in."
INVALID = "This invitation link is invalid or has expired. Ask for a new one."


def invite_link(html):
    match = re.search(r'id="invite-link">([^<]+)<', html)
    assert match, "no invitation link in the page"
    return match.group(1)


def invite(client, email="new@example.com", role="marketer"):
    response = client.post("/settings/team/invitations", data={"email": email, "role": role})
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return invite_link(response.get_data(as_text=True))


def entries(account_id, action):
    return db.session.scalars(audit.list_entries(account_id, action=action)).all()


def test_invite_accept_sign_in_and_listed(app, make_account, login):
    account, owner = make_account(name="Acme")
    owner_client = app.test_client()
    login(owner_client, owner)

    response = owner_client.post("/settings/team/invitations", data={"email": "mia@example.com", "role": "admin"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Invitation emailed to mia@example.com" in html and 'class="secret-once"' in html
    link = invite_link(html)
    assert link.startswith(app.config["BASE_URL"] + "/settings/team/join/")
    token = link.rsplit("/", 1)[1]
    assert db.session.scalar(sa.select(Invitation.token_hash)) != token
    # Shown once: the team page lists the invitation but never the link again.
    page = owner_client.get("/settings/team").get_data(as_text=True)
    assert "mia@example.com" in page and token not in page

    guest = app.test_client()
    path = urlsplit(link).path
    landing = guest.get(path)
    assert landing.status_code == 200
    text = landing.get_data(as_text=True)
    assert "Acme" in text and "admin" in text and "mia@example.com" in text

    joined = guest.post(path, data={"name": "Mia", "password": PASSWORD})
    assert joined.status_code == 302
    assert "/security/mfa/enrol" in joined.headers["Location"]  # MFA is required: enrol first
    member = db.session.scalar(sa.select(User).where(User.email == "mia@example.com"))
    assert member.account_id == account.id and member.role == "admin" and member.name == "Mia"
    assert entries(account.id, "team.joined")[0].actor == "mia@example.com"

    # The new member can sign in with the chosen password.
    fresh = app.test_client()
    login(fresh, member)
    # The owner sees them as a member, and the invitation is gone.
    page = owner_client.get("/settings/team").get_data(as_text=True)
    assert "Mia" in page and "Pending invitations" in page and "No pending invitations" in page
    # The link is used up.
    again = app.test_client().get(path)
    assert again.status_code == 404 and INVALID in again.get_data(as_text=True)


def test_htmx_invite_swaps_in_the_link_and_the_list(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    response = client.post("/settings/team/invitations", data={"email": "h@example.com", "role": "viewer"},
                           headers=HTMX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" not in html
    assert 'id="team-invite"' in html and 'class="secret-once"' in html
    assert 'id="invitations" hx-swap-oob="true"' in html and "h@example.com" in html
    assert "Invitation emailed to" in response.headers["HX-Trigger"]


def test_invalid_invite_shows_errors(client, make_account, make_user, login):
    account, owner = make_account()
    other_account, other_owner = make_account()
    login(client, owner)
    response = client.post("/settings/team/invitations", data={"email": other_owner.email, "role": "viewer"})
    assert response.status_code == 422 and TAKEN in response.get_data(as_text=True)
    response = client.post("/settings/team/invitations", data={"email": "nope", "role": "viewer"}, headers=HTMX)
    assert response.status_code == 422 and "valid email" in response.get_data(as_text=True)
    assert team.list_invitations(account.id) == []


def test_expired_or_unknown_links_show_a_clear_page(app, client, make_account, login):
    account, owner = make_account()
    invitation, token = team.invite_member(owner, "late@example.com", "viewer")
    invitation.expires_at = utcnow() - dt.timedelta(minutes=1)
    db.session.commit()
    for path in (f"/settings/team/join/{token}", "/settings/team/join/made-up-token"):
        response = client.get(path)
        assert response.status_code == 404 and INVALID in response.get_data(as_text=True)
        response = client.post(path, data={"name": "Late", "password": PASSWORD})
        assert response.status_code == 404
    assert db.session.scalar(sa.select(User).where(User.email == "late@example.com")) is None


def test_accept_validates_name_and_password(client, make_account):
    account, owner = make_account()
    _, token = team.invite_member(owner, "weak@example.com", "viewer")
    response = client.post(f"/settings/team/join/{token}", data={"name": "", "password": "password"})
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Your name is required." in html and "Password needs" in html
    assert team.find_invitation(token) is not None


def test_accept_after_email_got_a_sign_in_elsewhere(client, make_account, make_user):
    account, owner = make_account()
    other, _ = make_account()
    _, token = team.invite_member(owner, "twice@example.com", "viewer")
    make_user(other, email="twice@example.com")
    response = client.get(f"/settings/team/join/{token}")
    assert response.status_code == 409 and TAKEN in response.get_data(as_text=True)
    response = client.post(f"/settings/team/join/{token}", data={"name": "Twice", "password": PASSWORD})
    assert response.status_code == 409 and TAKEN in response.get_data(as_text=True)


def test_revoke_invitation(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    link = invite(client, "revoke@example.com")
    invitation = team.list_invitations(account.id)[0]
    response = client.post(f"/settings/team/invitations/{invitation.id}/revoke", follow_redirects=True)
    assert response.status_code == 200 and "revoked" in response.get_data(as_text=True)
    assert client.get(urlsplit(link).path).status_code == 404
    assert entries(account.id, "team.invitation_revoked")


def invitation_mails(app, account_id, to):
    """The invitation emails to one address in the account's outbox, newest first."""
    directory = outbox_dir(app.config)
    mails = [read_message(directory, account_id, entry.name) for entry in list_outbox(directory, account_id)]
    return [mail for mail in mails if dict(mail.headers)["To"] == to]


def mailed_link(mail):
    return re.search(r"(https?://\S+/settings/team/join/\S+)", mail.text).group(1)


def test_an_invitation_is_emailed_with_who_which_account_the_role_the_link_and_its_expiry(
        app, client, make_account, login):
    account, owner = make_account(name="Acme")
    login(client, owner)
    shown = invite(client, "mia@example.com", "admin")
    [mail] = invitation_mails(app, account.id, "mia@example.com")
    invitation = team.list_invitations(account.id)[0]
    subject = dict(mail.headers)["Subject"]
    assert owner.email in subject and "Acme" in subject
    assert owner.email in mail.text and "Acme account" in mail.text and "as an admin" in mail.text
    assert invitation.expires_at.strftime("%Y-%m-%d %H:%M UTC") in mail.text
    assert mailed_link(mail) == shown  # the page's copyable link is the same, as a fallback
    joined = app.test_client().post(urlsplit(mailed_link(mail)).path, data={"name": "Mia", "password": PASSWORD})
    assert joined.status_code == 302
    assert db.session.scalar(sa.select(User).where(User.email == "mia@example.com")).role == "admin"


def test_resend_emails_a_new_link_the_old_one_stops_and_resends_are_limited(app, client, make_account, login):
    account, owner = make_account(name="Acme")
    login(client, owner)
    first = invite(client, "rex@example.com")
    invitation = team.list_invitations(account.id)[0]
    response = client.post(f"/settings/team/invitations/{invitation.id}/resend")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "A new invitation was emailed to rex@example.com" in html
    newest, older = invitation_mails(app, account.id, "rex@example.com")
    assert mailed_link(older) == first and mailed_link(newest) == invite_link(html) != first
    assert app.test_client().get(urlsplit(first).path).status_code == 404
    assert app.test_client().get(urlsplit(mailed_link(newest)).path).status_code == 200
    assert entries(account.id, "team.invitation_resent")
    # One resend a minute per invitation: the next is refused and sends nothing.
    again = client.post(f"/settings/team/invitations/{invitation.id}/resend")
    assert again.status_code == 429 and int(again.headers["Retry-After"]) > 0
    assert len(invitation_mails(app, account.id, "rex@example.com")) == 2


def test_resend_over_htmx_swaps_the_invite_card_with_the_new_link(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    first = invite(client, "hx@example.com")
    invitation = team.list_invitations(account.id)[0]
    response = client.post(f"/settings/team/invitations/{invitation.id}/resend", headers=HTMX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" not in html and 'id="team-invite"' in html
    assert invite_link(html) != first and 'id="invitations" hx-swap-oob="true"' in html
    assert "New invitation emailed to hx@example.com" in response.headers["HX-Trigger"]


def test_invitation_mail_is_capped_per_account(make_app, make_account, login):
    app = make_app(AUTH_RATE_LIMITS={"invite_mail_account": "2 per hour"})
    account, owner = make_account()
    client = app.test_client()
    login(client, owner)
    invite(client, "a@example.com")
    invite(client, "b@example.com")
    response = client.post("/settings/team/invitations", data={"email": "c@example.com", "role": "viewer"})
    assert response.status_code == 429 and "Retry-After" in response.headers
    assert [i.email for i in team.list_invitations(account.id)] == ["b@example.com", "a@example.com"]
    assert invitation_mails(app, account.id, "c@example.com") == []


def test_resend_and_revoke_need_team_write_and_stay_in_the_account(client, make_account, make_user, login):
    account, owner = make_account()
    other_account, other_owner = make_account()
    viewer = make_user(account, role="viewer", email="v@example.com")
    invitation, _ = team.invite_member(other_owner, "x@example.com", "viewer")
    login(client, owner)
    assert client.post(f"/settings/team/invitations/{invitation.id}/resend").status_code == 404
    viewer_client = client.application.test_client()
    login(viewer_client, viewer)
    mine, _ = team.invite_member(owner, "y@example.com", "viewer")
    assert viewer_client.post(f"/settings/team/invitations/{mine.id}/resend").status_code == 403


def test_owner_changes_role_and_removes_member_audited(client, make_account, make_user, login):
    account, owner = make_account()
    member = make_user(account, role="viewer", email="m@example.com")
    login(client, owner)

    response = client.post(f"/settings/team/{member.id}/role", data={"role": "marketer"}, follow_redirects=True)
    assert response.status_code == 200 and "is now a marketer" in response.get_data(as_text=True)
    assert db.session.get(User, member.id).role == "marketer"
    changed = entries(account.id, "team.role_changed")[0]
    assert changed.meta["from"] == "viewer" and changed.meta["to"] == "marketer"

    response = client.post(f"/settings/team/{member.id}/remove", follow_redirects=True)
    assert response.status_code == 200 and "was removed" in response.get_data(as_text=True)
    assert db.session.get(User, member.id) is None
    assert entries(account.id, "team.removed")[0].meta["email"] == "m@example.com"


def test_admin_cannot_make_anyone_owner(client, make_account, make_user, login):
    account, owner = make_account()
    admin = make_user(account, role="admin")
    member = make_user(account, role="viewer")
    login(client, admin)
    page = client.get("/settings/team").get_data(as_text=True)
    assert 'value="owner"' not in page  # neither the invite nor the role selects offer it
    assert client.post(f"/settings/team/{member.id}/role", data={"role": "owner"}).status_code == 403
    assert client.post(f"/settings/team/{owner.id}/role", data={"role": "viewer"}).status_code == 403
    assert client.post(f"/settings/team/{owner.id}/remove").status_code == 403
    response = client.post("/settings/team/invitations", data={"email": "x@example.com", "role": "owner"})
    assert response.status_code == 403
    db.session.expire_all()
    assert db.session.get(User, member.id).role == "viewer" and db.session.get(User, owner.id).role == "owner"
    # An admin may still manage the rest of the team.
    response = client.post(f"/settings/team/{member.id}/role", data={"role": "admin"})
    assert response.status_code == 303 and db.session.get(User, member.id).role == "admin"


def test_last_owner_cannot_be_demoted_or_removed(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    response = client.post(f"/settings/team/{owner.id}/role", data={"role": "admin"}, follow_redirects=True)
    assert "at least one owner" in response.get_data(as_text=True)
    assert client.post(f"/settings/team/{owner.id}/remove").status_code == 403
    db.session.expire_all()
    assert db.session.get(User, owner.id).role == "owner"
    assert entries(account.id, "team.role_changed") == []


def test_owner_resets_member_mfa(client, make_account, make_user, login):
    account, owner = make_account()
    member = make_user(account, role="marketer")
    login(client, owner)
    page = client.get("/settings/team").get_data(as_text=True)
    assert f"/settings/team/{member.id}/reset-mfa" in page
    assert f"/settings/team/{owner.id}/reset-mfa" not in page  # not for themselves
    response = client.post(f"/settings/team/{member.id}/reset-mfa", follow_redirects=True)
    assert response.status_code == 200 and "Two-factor authentication reset" in response.get_data(as_text=True)
    db.session.expire_all()
    assert not db.session.get(User, member.id).mfa_enabled
    assert entries(account.id, "mfa.reset")


def test_admin_cannot_reset_mfa(client, make_account, make_user, login):
    account, _ = make_account()
    admin = make_user(account, role="admin")
    member = make_user(account, role="marketer")
    login(client, admin)
    assert "reset-mfa" not in client.get("/settings/team").get_data(as_text=True)
    assert client.post(f"/settings/team/{member.id}/reset-mfa").status_code == 403
    assert db.session.get(User, member.id).mfa_enabled


@pytest.mark.parametrize("role", ["marketer", "viewer"])
def test_marketer_and_viewer_get_403(client, make_account, make_user, login, role):
    account, owner = make_account()
    actor = make_user(account, role=role)
    other = make_user(account, role="viewer")
    invitation, _ = team.invite_member(owner, "pending@example.com", "viewer")
    login(client, actor)
    nav = client.get("/settings/account").get_data(as_text=True)
    assert "/settings/team" not in nav
    assert client.get("/settings/team").status_code == 403
    response = client.post("/settings/team/invitations", data={"email": "x@example.com", "role": "viewer"})
    assert response.status_code == 403
    assert client.post(f"/settings/team/invitations/{invitation.id}/revoke").status_code == 403
    assert client.post(f"/settings/team/{other.id}/role", data={"role": "admin"}).status_code == 403
    assert client.post(f"/settings/team/{other.id}/remove").status_code == 403
    assert client.post(f"/settings/team/{other.id}/reset-mfa").status_code == 403
    assert db.session.get(User, other.id).role == "viewer"
    assert len(team.list_invitations(account.id)) == 1


def test_other_accounts_team_is_out_of_reach(client, make_account, make_user, login):
    account_a, owner_a = make_account()
    member_a = make_user(account_a, role="viewer")
    invitation_a, token_a = team.invite_member(owner_a, "a@example.com", "viewer")
    account_b, owner_b = make_account()
    login(client, owner_b)

    page = client.get("/settings/team").get_data(as_text=True)
    assert member_a.email not in page and "a@example.com" not in page
    assert client.post(f"/settings/team/{member_a.id}/role", data={"role": "admin"}).status_code == 404
    assert client.post(f"/settings/team/{member_a.id}/remove").status_code == 404
    assert client.post(f"/settings/team/{member_a.id}/reset-mfa").status_code == 404
    assert client.post(f"/settings/team/invitations/{invitation_a.id}/revoke").status_code == 404
    assert client.post("/settings/team/not-a-uuid/remove").status_code == 404
    db.session.expire_all()
    assert db.session.get(User, member_a.id).role == "viewer" and db.session.get(User, member_a.id).mfa_enabled
    assert team.find_invitation(token_a) is not None


def test_invite_and_accept_need_csrf_token(make_app, make_account, login):
    app = make_app(WTF_CSRF_ENABLED=True)
    account, owner = make_account()
    _, token = team.invite_member(owner, "csrf@example.com", "viewer")
    guest = app.test_client()
    response = guest.post(f"/settings/team/join/{token}", data={"name": "C", "password": PASSWORD})
    assert response.status_code == 400
    assert db.session.scalar(sa.select(User).where(User.email == "csrf@example.com")) is None


# --- Removing or demoting a member who created API clients and invitations -------------------------

def _admin_who_created_things(make_account, make_user):
    from nudge.services import api_clients
    account, owner = make_account()
    admin = make_user(account, role="admin", email="ada@example.com")
    sync, _ = api_clients.create_api_client(admin, name="Shop sync", scopes=["contacts:write"])
    reports, _ = api_clients.create_api_client(admin, name="BI reports", scopes=["analytics:read"])
    invitation, _ = team.invite_member(admin, "friend@example.org", "admin")
    return account, owner, admin, sync, reports, invitation


def test_removing_a_member_first_lists_what_they_created_then_revokes_the_checked(client, make_account, make_user,
                                                                                  login):
    from nudge.services import api_clients
    account, owner, admin, sync, reports, invitation = _admin_who_created_things(make_account, make_user)
    login(client, owner)

    step = client.post(f"/settings/team/{admin.id}/remove", headers=HTMX)
    html = step.get_data(as_text=True)
    assert step.status_code == 200 and 'id="team-confirm"' in html and "<html" not in html
    assert "Shop sync" in html and "BI reports" in html and "friend@example.org" in html
    assert f'name="revoke_clients" value="{sync.id}" checked' in html
    assert f'name="revoke_invitations" value="{invitation.id}" checked' in html
    assert db.session.get(User, admin.id) is not None          # nothing happened yet

    done = client.post(f"/settings/team/{admin.id}/remove", headers=HTMX, data={
        "confirmed": "1", "revoke_clients": [str(sync.id)], "revoke_invitations": [str(invitation.id)]})
    assert done.status_code == 204 and done.headers["HX-Redirect"] == "/settings/team"
    assert db.session.get(User, admin.id) is None
    assert api_clients.active_client(sync.client_id) is None
    assert api_clients.active_client(reports.client_id).created_by == owner.id
    assert db.session.get(Invitation, invitation.id) is None
    assert [e.meta["name"] for e in entries(account.id, "api_client.revoked")] == ["Shop sync"]
    assert entries(account.id, "team.invitation_revoked")[0].meta["inviter"] == "ada@example.com"
    assert "was removed" in client.get("/settings/team").get_data(as_text=True)


def test_the_confirm_step_works_without_javascript(client, make_account, make_user, login):
    from nudge.services import api_clients
    account, owner, admin, sync, reports, invitation = _admin_who_created_things(make_account, make_user)
    login(client, owner)
    page = client.post(f"/settings/team/{admin.id}/role", data={"role": "viewer"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "<html" in html and "Make" in html and "a viewer?" in html
    assert db.session.get(User, admin.id).role == "admin"
    response = client.post(f"/settings/team/{admin.id}/role", data={"role": "viewer", "confirmed": "1",
                                                                    "revoke_clients": [str(reports.id)]})
    assert response.status_code == 303
    assert db.session.get(User, admin.id).role == "viewer"
    assert api_clients.active_client(reports.client_id) is None
    assert api_clients.active_client(sync.client_id) is not None       # kept, but a viewer cannot write
    assert api_clients.effective_scopes(api_clients.active_client(sync.client_id)) == []
    assert db.session.get(Invitation, invitation.id) is not None


def test_a_promotion_or_a_member_who_created_nothing_needs_no_confirm_step(client, make_account, make_user, login):
    account, owner, admin, _, _, _ = _admin_who_created_things(make_account, make_user)
    plain = make_user(account, role="marketer")
    login(client, owner)
    assert client.post(f"/settings/team/{admin.id}/role", data={"role": "owner"}).status_code == 303
    assert db.session.get(User, admin.id).role == "owner"
    assert client.post(f"/settings/team/{plain.id}/role", data={"role": "viewer"}).status_code == 303
    assert client.post(f"/settings/team/{plain.id}/remove").status_code == 303
    assert db.session.get(User, plain.id) is None


def test_an_admin_gets_no_confirm_step_for_an_owner(client, make_account, make_user, login):
    from nudge.services import api_clients
    account, owner = make_account()
    other_owner = make_user(account, role="owner")
    api_clients.create_api_client(other_owner, name="Secret integration", scopes=["account:admin"])
    admin = make_user(account, role="admin")
    login(client, admin)
    for path, data in ((f"/settings/team/{other_owner.id}/remove", {}),
                       (f"/settings/team/{other_owner.id}/role", {"role": "viewer"})):
        response = client.post(path, data=data)
        assert response.status_code == 403 and "Secret integration" not in response.get_data(as_text=True)
