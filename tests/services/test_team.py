"""Team service: invitations, acceptance, roles, removal, permissions and tenant isolation."""
import datetime as dt
import uuid

import pytest
import sqlalchemy as sa

from nudge.delivery.outbox import count_outbox
from nudge.delivery.selection import outbox_dir
from nudge.errors import Conflict, Forbidden, NotFound, ValidationError
from nudge.extensions import db
from nudge.models import AuditLog, Invitation, User
from nudge.models.types import utcnow
from nudge.services import audit, team
from nudge.services.security import hash_token, verify_password
from tests.conftest import PASSWORD


def actions(account_id):
    return [e.action for e in db.session.scalars(audit.list_entries(account_id))]


def test_invite_stores_only_a_hash_and_expires_in_a_week(make_account):
    account, owner = make_account()
    invitation, token = team.invite_member(owner, "New.Person@Example.COM", "marketer", ip="203.0.113.9")

    stored = db.session.get(Invitation, invitation.id)
    assert stored.token_hash == hash_token(token)
    assert token not in (stored.token_hash, stored.email)
    assert stored.email == "New.Person@example.com"
    assert stored.role == "marketer" and stored.invited_by == owner.id
    assert dt.timedelta(days=6, hours=23) < stored.expires_at - utcnow() <= dt.timedelta(days=7)
    entry = db.session.scalars(audit.list_entries(account.id, action="team.invited")).one()
    assert entry.meta == {"email": "New.Person@example.com", "role": "marketer"}
    assert entry.ip_address == "203.0.113.9"
    assert team.pending_invitation_count(account.id) == 1
    assert [i.id for i in team.list_invitations(account.id)] == [invitation.id]


def test_accept_creates_member_with_the_role_and_uses_up_the_link(make_account):
    account, owner = make_account()
    invitation, token = team.invite_member(owner, "ann@example.com", "admin")
    assert team.find_invitation(token).id == invitation.id

    user = team.accept_invitation(token, name="Ann", password=PASSWORD, ip="198.51.100.2")

    assert user.account_id == account.id and user.role == "admin" and user.email == "ann@example.com"
    assert verify_password(user.password_hash, PASSWORD)
    assert not user.mfa_enabled
    assert team.member_count(account.id) == 2
    assert {m.email for m in team.list_members(account.id)} == {owner.email, "ann@example.com"}
    assert team.pending_invitation_count(account.id) == 0
    assert team.list_invitations(account.id) == []
    assert team.find_invitation(token) is None
    assert "team.joined" in actions(account.id)
    with pytest.raises(NotFound):
        team.accept_invitation(token, name="Again", password=PASSWORD)


def test_expired_and_unknown_tokens_are_rejected(make_account):
    account, owner = make_account()
    invitation, token = team.invite_member(owner, "late@example.com", "viewer")
    invitation.expires_at = utcnow() - dt.timedelta(seconds=1)
    db.session.commit()

    assert team.find_invitation(token) is None
    assert team.find_invitation("not-a-token") is None
    assert team.pending_invitation_count(account.id) == 0
    with pytest.raises(NotFound):
        team.accept_invitation(token, name="Late", password=PASSWORD)
    assert db.session.scalar(sa.select(User).where(User.email == "late@example.com")) is None


def test_accept_checks_name_and_password_rule(make_account):
    _, owner = make_account()
    _, token = team.invite_member(owner, "weak@example.com", "viewer")
    with pytest.raises(ValidationError) as exc:
        team.accept_invitation(token, name=" ", password="short")
    assert {d["field"] for d in exc.value.details} == {"name", "password"}
    assert team.find_invitation(token) is not None  # still usable


def test_existing_sign_in_cannot_be_invited_or_accept(make_account, make_user):
    account, owner = make_account()
    other_account, other_owner = make_account()
    with pytest.raises(Conflict, match="already has a NudgeCampaign sign-in"):
        team.invite_member(owner, other_owner.email.upper(), "viewer")

    _, token = team.invite_member(owner, "race@example.com", "viewer")
    make_user(other_account, email="race@example.com")  # got a sign-in elsewhere meanwhile
    with pytest.raises(Conflict, match="already has a NudgeCampaign sign-in"):
        team.accept_invitation(token, name="Race", password=PASSWORD)


def test_reinviting_replaces_the_pending_invitation(make_account):
    account, owner = make_account()
    _, first = team.invite_member(owner, "twice@example.com", "viewer")
    second_inv, second = team.invite_member(owner, "TWICE@example.com", "marketer")
    assert team.find_invitation(first) is None
    assert team.find_invitation(second).role == "marketer"
    assert [i.id for i in team.list_invitations(account.id)] == [second_inv.id]


def test_invite_validates_email_and_role(make_account):
    _, owner = make_account()
    with pytest.raises(ValidationError) as exc:
        team.invite_member(owner, "not-an-email", "superuser")
    assert {d["field"] for d in exc.value.details} == {"email", "role"}


def test_revoke_invitation(make_account):
    account, owner = make_account()
    invitation, token = team.invite_member(owner, "gone@example.com", "viewer")
    team.revoke_invitation(owner, invitation.id)
    assert team.find_invitation(token) is None
    assert team.list_invitations(account.id) == []
    assert "team.invitation_revoked" in actions(account.id)
    with pytest.raises(NotFound):
        team.revoke_invitation(owner, invitation.id)


def test_admin_cannot_grant_or_touch_owner(make_account, make_user):
    account, owner = make_account()
    admin = make_user(account, role="admin")
    member = make_user(account, role="viewer")
    with pytest.raises(Forbidden):
        team.invite_member(admin, "boss@example.com", "owner")
    with pytest.raises(Forbidden):
        team.change_role(admin, member.id, "owner")
    with pytest.raises(Forbidden):
        team.change_role(admin, owner.id, "viewer")
    with pytest.raises(Forbidden):
        team.remove_member(admin, owner.id)
    assert db.session.get(User, owner.id).role == "owner"
    # Everything below owner is the admin's to manage.
    team.change_role(admin, member.id, "marketer")
    assert db.session.get(User, member.id).role == "marketer"
    invitation, _ = team.invite_member(admin, "helper@example.com", "admin")
    assert invitation.role == "admin"


def test_last_owner_cannot_be_demoted_or_removed(make_account, make_user):
    account, owner = make_account()
    with pytest.raises(Conflict, match="at least one owner"):
        team.change_role(owner, owner.id, "admin")
    with pytest.raises(Forbidden):
        team.remove_member(owner, owner.id)  # nobody removes themselves
    assert db.session.get(User, owner.id).role == "owner"

    second = make_user(account, role="owner")
    team.change_role(owner, second.id, "admin")  # two owners: one may step down
    assert db.session.get(User, second.id).role == "admin"
    promoted = team.change_role(owner, second.id, "owner")
    team.change_role(promoted, owner.id, "viewer")
    assert db.session.get(User, owner.id).role == "viewer"
    with pytest.raises(Conflict):
        team.change_role(promoted, promoted.id, "admin")


def test_role_change_and_removal_are_audited(make_account, make_user):
    account, owner = make_account()
    member = make_user(account, role="viewer")
    team.change_role(owner, member.id, "admin", ip="192.0.2.1")
    entry = db.session.scalars(audit.list_entries(account.id, action="team.role_changed")).one()
    assert entry.meta["from"] == "viewer" and entry.meta["to"] == "admin"
    assert entry.resources == [f"user:{member.id}"] and entry.actor == owner.email

    # The member's own entries keep their label after removal.
    audit.record("login.succeeded", account_id=account.id, actor=member)
    db.session.commit()
    email = member.email
    team.remove_member(owner, member.id)
    assert db.session.get(User, member.id) is None
    removed = db.session.scalars(audit.list_entries(account.id, action="team.removed")).one()
    assert removed.meta == {"email": email, "role": "admin"}
    login = db.session.scalars(audit.list_entries(account.id, action="login.succeeded")).one()
    assert login.actor == email and login.user_id is None
    assert team.member_count(account.id) == 1


def test_removing_a_member_keeps_their_invitations_and_clients(make_account, make_user):
    from nudge.services import api_clients
    account, owner = make_account()
    admin = make_user(account, role="admin")
    invitation, _ = team.invite_member(admin, "kept@example.com", "viewer")
    client, _ = api_clients.create_api_client(admin, name="Shop", scopes=["contacts:read"])
    team.remove_member(owner, admin.id)
    db.session.expire_all()
    assert db.session.get(Invitation, invitation.id).invited_by is None
    assert api_clients.get_api_client(account.id, client.id).created_by == owner.id     # handed over


@pytest.mark.parametrize("role", ["marketer", "viewer"])
def test_marketer_and_viewer_change_nothing(make_account, make_user, role):
    account, owner = make_account()
    actor = make_user(account, role=role)
    other = make_user(account, role="viewer")
    invitation, _ = team.invite_member(owner, "pending@example.com", "viewer")
    with pytest.raises(Forbidden):
        team.invite_member(actor, "x@example.com", "viewer")
    with pytest.raises(Forbidden):
        team.revoke_invitation(actor, invitation.id)
    with pytest.raises(Forbidden):
        team.change_role(actor, other.id, "admin")
    with pytest.raises(Forbidden):
        team.remove_member(actor, other.id)
    assert db.session.get(User, other.id).role == "viewer"


def test_other_accounts_ids_are_not_found(make_account, make_user):
    account_a, owner_a = make_account()
    member_a = make_user(account_a, role="viewer")
    invitation_a, token_a = team.invite_member(owner_a, "a-invite@example.com", "viewer")
    account_b, owner_b = make_account()

    with pytest.raises(NotFound):
        team.change_role(owner_b, member_a.id, "admin")
    with pytest.raises(NotFound):
        team.remove_member(owner_b, member_a.id)
    with pytest.raises(NotFound):
        team.revoke_invitation(owner_b, invitation_a.id)
    with pytest.raises(NotFound):
        team.change_role(owner_b, uuid.uuid4(), "admin")
    assert db.session.get(User, member_a.id).role == "viewer"
    assert team.find_invitation(token_a) is not None
    assert [m.id for m in team.list_members(account_b.id)] == [owner_b.id]
    assert team.list_invitations(account_b.id) == []
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog).where(
        AuditLog.account_id == account_b.id, AuditLog.action.like("team.%"))) == 0


def test_members_are_listed_owners_first(make_account, make_user):
    account, owner = make_account()
    viewer = make_user(account, role="viewer", name="Aaron")
    admin = make_user(account, role="admin", name="Zed")
    assert [m.id for m in team.list_members(account.id)] == [owner.id, admin.id, viewer.id]


# --- What a removed or demoted member created ------------------------------------------------------

def _admin_with_grants(make_account, make_user):
    """An account whose admin created two API clients and two pending invitations (and the owner one of each)."""
    from nudge.services import api_clients
    account, owner = make_account()
    admin = make_user(account, role="admin")
    sync, sync_secret = api_clients.create_api_client(admin, name="Sync", scopes=["contacts:write"])
    report, report_secret = api_clients.create_api_client(admin, name="Reports", scopes=["analytics:read"])
    api_clients.create_api_client(owner, name="Owner's", scopes=["account:admin"])
    first, _ = team.invite_member(admin, "friend@example.org", "admin")
    second, _ = team.invite_member(admin, "other@example.org", "viewer")
    team.invite_member(owner, "owners-pick@example.org", "viewer")
    return account, owner, admin, (sync, sync_secret), (report, report_secret), (first, second)


def test_the_clients_and_invitations_a_member_created_are_listed(make_account, make_user):
    account, owner, admin, (sync, _), (report, _), (first, second) = _admin_with_grants(make_account, make_user)
    created = team.created_by_member(owner, admin.id)
    assert created.member.id == admin.id
    assert {c.id for c in created.api_clients} == {sync.id, report.id}
    assert {i.id for i in created.invitations} == {first.id, second.id}
    assert not team.created_by_member(owner, make_user(account, role="viewer").id)
    other_account, other_owner = make_account()
    with pytest.raises(NotFound):
        team.created_by_member(other_owner, admin.id)
    with pytest.raises(Forbidden):
        team.created_by_member(make_user(account, role="marketer"), admin.id)


def test_removing_a_member_revokes_what_was_chosen_and_hands_over_the_rest(make_account, make_user):
    from nudge.errors import AuthenticationFailed
    from nudge.models import ApiClient
    from nudge.services import api_clients
    account, owner, admin, (sync, sync_secret), (report, report_secret), (first, second) = \
        _admin_with_grants(make_account, make_user)

    team.remove_member(owner, admin.id, revoke_clients=[str(sync.id)], revoke_invitations=[first.id], ip="192.0.2.4")

    with pytest.raises(AuthenticationFailed):
        api_clients.authenticate_client(sync.client_id, sync_secret)
    kept = api_clients.authenticate_client(report.client_id, report_secret)
    assert kept.created_by == owner.id and kept.scopes == ["analytics:read"]
    assert db.session.get(Invitation, first.id) is None and db.session.get(Invitation, second.id) is not None
    revoked = db.session.scalars(audit.list_entries(account.id, action="api_client.revoked")).one()
    assert revoked.meta["because"] == "creator removed" and revoked.ip_address == "192.0.2.4"
    withdrawn = db.session.scalars(audit.list_entries(account.id, action="team.invitation_revoked")).one()
    assert withdrawn.meta["email"] == "friend@example.org" and withdrawn.meta["because"] == "inviter removed"
    handed = db.session.scalars(audit.list_entries(account.id, action="api_client.handed_over")).one()
    assert handed.meta == {"name": "Reports", "from": admin.email, "scopes": ["analytics:read"]}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiClient)
                             .where(ApiClient.revoked_at.is_(None))) == 2      # Reports and the owner's


def test_a_handed_over_client_keeps_only_what_it_held(make_account, make_user):
    """A client made before scopes were bounded (an admin's account:admin) does not gain it by going to an owner."""
    from nudge.models import ApiClient
    from nudge.services import api_clients
    account, owner = make_account()
    admin = make_user(account, role="admin")
    old, _ = api_clients.create_api_client(owner, name="Old", scopes=["account:admin", "contacts:read"])
    db.session.execute(sa.update(ApiClient).where(ApiClient.id == old.id).values(created_by=admin.id))
    db.session.commit()
    team.remove_member(owner, admin.id)
    kept = db.session.get(ApiClient, old.id)
    assert kept.created_by == owner.id and kept.scopes == ["contacts:read"]
    assert api_clients.effective_scopes(kept) == ["contacts:read"]


def test_demoting_a_member_revokes_what_was_chosen(make_account, make_user):
    from nudge.services import api_clients
    account, owner, admin, (sync, _), (report, _), (first, second) = _admin_with_grants(make_account, make_user)
    team.change_role(owner, admin.id, "viewer", revoke_clients=[sync.id, uuid.uuid4()], revoke_invitations=[second.id])
    assert {c.id for c in api_clients.created_by(account.id, admin.id)} == {report.id}
    assert db.session.get(Invitation, second.id) is None and db.session.get(Invitation, first.id) is not None
    assert db.session.scalars(audit.list_entries(account.id, action="api_client.revoked")).one().meta["because"] \
        == "creator demoted"
    assert api_clients.effective_scopes(report) == ["analytics:read"]


def test_ids_of_someone_elses_clients_and_invitations_are_ignored(make_account, make_user):
    from nudge.services import api_clients
    account, owner, admin, _, _, _ = _admin_with_grants(make_account, make_user)
    owners_client = [c for c in api_clients.list_api_clients(account.id) if c.name == "Owner's"][0]
    owners_invitation = db.session.scalar(sa.select(Invitation).where(Invitation.email == "owners-pick@example.org"))
    team.remove_member(owner, admin.id, revoke_clients=[owners_client.id], revoke_invitations=[owners_invitation.id])
    assert api_clients.active_client(owners_client.client_id) is not None
    assert db.session.get(Invitation, owners_invitation.id) is not None


def _outbox_count(app, account_id):
    return count_outbox(outbox_dir(app.config), account_id)


def test_a_queued_invitation_mail_sends_nothing_once_the_link_no_longer_works(app, make_account):
    account, owner = make_account(name="Acme")
    invitation, token = team.invite_member(owner, "kim@example.com", "viewer")
    sealed = team.seal_token(token)
    assert token not in sealed  # the task's arguments never hold a usable link
    assert team.send_invitation(invitation.id, sealed).status == "sent"
    assert _outbox_count(app, account.id) == 1

    resent, new_token = team.resend_invitation(owner, invitation.id)
    assert resent.id == invitation.id and team.find_invitation(token) is None
    assert team.find_invitation(new_token).id == invitation.id
    assert team.send_invitation(invitation.id, sealed) is None  # the older link's mail is not sent late
    assert "team.invitation_resent" in actions(account.id)

    team.revoke_invitation(owner, invitation.id)
    assert team.send_invitation(invitation.id, team.seal_token(new_token)) is None
    assert _outbox_count(app, account.id) == 1


def test_resend_gives_a_full_lifetime_and_is_scoped_and_role_checked(make_account, make_user):
    account, owner = make_account()
    other_account, other_owner = make_account()
    admin = make_user(account, role="admin", email="adm@example.com")
    invitation, _ = team.invite_member(owner, "boss@example.com", "owner")
    db.session.get(Invitation, invitation.id).expires_at = utcnow() - dt.timedelta(days=1)
    db.session.commit()
    with pytest.raises(NotFound):
        team.resend_invitation(other_owner, invitation.id)
    with pytest.raises(Forbidden):
        team.resend_invitation(admin, invitation.id)  # only an owner hands out the owner role
    resent, token = team.resend_invitation(owner, invitation.id)
    assert resent.expires_at > utcnow() + team.INVITATION_LIFETIME - dt.timedelta(minutes=1)
    assert team.find_invitation(token) is not None
