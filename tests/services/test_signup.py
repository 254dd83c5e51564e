"""Sign-up policy (NUDGE_SIGNUP first|invite|open), the first-account guard, open sign-up's email confirmation
and the refusal to send from an unconfirmed account."""
import time

import pytest
import sqlalchemy as sa
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy.exc import IntegrityError

from nudge.delivery.outbox import list_outbox, read_message
from nudge.errors import EmailNotConfirmed, NotFound, SignupClosed, ValidationError
from nudge.extensions import db
from nudge.models import Account, AuditLog, FirstSignup, User
from nudge.services import accounts, campaigns, sending_domains, signup
from tests.campaign_helpers import add_contacts, fake_pipeline, ready_campaign
from tests.conftest import PASSWORD


def sign_up(mode, email="ann@acme.example", **extra):
    values = {"account_name": "Acme", "email": email, "password": PASSWORD, "owner_name": "Ann"}
    values.update(extra)
    return signup.sign_up(mode, **values)


def outbox_texts(directory, account_id):
    return [read_message(directory, account_id, entry.name) for entry in list_outbox(str(directory), account_id)]


def test_first_mode_opens_only_while_the_install_has_no_account(app):
    assert signup.signup_open("first")
    result = sign_up("first")
    assert result.owner.role == "owner" and result.owner.account.email_confirmed_at is not None
    assert db.session.get(FirstSignup, 1).account_id == result.owner.account_id
    assert not signup.signup_open("first")
    with pytest.raises(SignupClosed) as exc:
        sign_up("first", email="bob@acme.example")
    assert "ask an owner" in exc.value.message and "nudge create-account" in exc.value.message
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Account)) == 1


def test_first_mode_closes_once_an_operator_created_an_account(make_account):
    make_account()  # `nudge create-account`
    assert not signup.signup_open("first")


def test_the_database_lets_only_one_first_sign_up_win(app):
    """Two first sign-ups that both saw no account: the second insert of the guard row fails."""
    accounts.create_account(name="A", email="a@a.example", password=PASSWORD, first=True)
    with pytest.raises(IntegrityError):
        accounts.create_account(name="B", email="b@b.example", password=PASSWORD, first=True)
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Account)) == 1


def test_invite_mode_is_always_closed(app):
    assert not signup.signup_open("invite")
    with pytest.raises(SignupClosed):
        sign_up("invite")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Account)) == 0


def test_open_mode_makes_unconfirmed_accounts_and_mails_the_link(make_app, tmp_path):
    make_app(SIGNUP="open", OUTBOX_DIR=str(tmp_path))
    sign_up("open", email="first@one.example")
    result = sign_up("open", email="ann@acme.example")
    account = result.owner.account
    assert account.email_confirmed_at is None and not signup.is_confirmed(account)
    assert signup.send_confirmation(account.id).status == "sent"
    [mail] = outbox_texts(tmp_path, account.id)
    link = signup.CONFIRM_PATH
    assert link in mail.text and "ann@acme.example" in mail.text
    token = mail.text.split(link, 1)[1].split()[0]
    assert dict(mail.headers)["To"] == "ann@acme.example"
    assert signup.confirm_email(token, ip="192.0.2.1").email_confirmed_at is not None
    assert signup.confirm_email(token).id == account.id  # a second click changes nothing
    assert db.session.scalars(sa.select(AuditLog.action).where(AuditLog.account_id == account.id)).all().count(
        "account.email_confirmed") == 1
    assert signup.send_confirmation(account.id) is None  # nothing left to confirm


def test_open_mode_answers_a_taken_email_like_a_new_one_and_mails_a_notice(make_app, make_account, tmp_path):
    make_app(SIGNUP="open", OUTBOX_DIR=str(tmp_path))
    existing_account, owner = make_account(email="taken@shop.example")
    result = sign_up("open", email="Taken@Shop.example")
    assert result.owner is None and result.email == "Taken@shop.example"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Account)) == 1
    assert db.session.get(User, owner.id).password_hash == owner.password_hash  # nothing changed
    signup.send_taken_notice(result.email)
    [mail] = outbox_texts(tmp_path, existing_account.id)
    assert "Someone tried to create a new NudgeCampaign account" in mail.text and "/login" in mail.text
    entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "signup.email_taken"))
    assert entry.account_id == existing_account.id


def test_field_errors_come_first_whatever_the_email(make_app, make_account):
    make_app(SIGNUP="open")
    make_account(email="taken@shop.example")
    answers = []
    for email in ("taken@shop.example", "new@shop.example"):
        with pytest.raises(ValidationError) as exc:
            sign_up("open", email=email, password="weak")
        answers.append(exc.value.details)
    assert answers[0] == answers[1] and answers[0][0]["field"] == "password"


class TwoHoursAgo(TimestampSigner):
    def get_timestamp(self):
        return int(time.time()) - 2 * 3600


def test_confirmation_links_expire_and_cannot_be_forged(make_app):
    app = make_app(SIGNUP="open", EMAIL_CONFIRMATION_HOURS=1)
    account = sign_up("open").owner.account
    forged = URLSafeTimedSerializer("not-the-secret", salt=signup.CONFIRMATION_SALT).dumps(
        {"account": str(account.id), "email": account.email})
    for bad in (forged, "garbage", signup.confirmation_token(account)[:-3] + "abc"):
        with pytest.raises(NotFound):
            signup.confirm_email(bad)
    old = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=signup.CONFIRMATION_SALT, signer=TwoHoursAgo)
    with pytest.raises(ValidationError) as exc:
        signup.confirm_email(old.dumps({"account": str(account.id), "email": account.email}))
    assert "expired" in exc.value.message
    assert db.session.get(Account, account.id).email_confirmed_at is None


def test_an_unconfirmed_account_may_not_send_schedule_or_test(make_app, monkeypatch):
    make_app(SIGNUP="open")
    owner = sign_up("open").owner
    account = owner.account
    pipeline = fake_pipeline(monkeypatch)
    add_contacts(account, "zoe@example.com")
    campaign = ready_campaign(owner, account)
    items = campaigns.readiness(campaign, account)
    assert items[0] == {"code": "email_unconfirmed", "blocking": True,
                        "message": signup.UNCONFIRMED.format(email=account.email)}
    for attempt in (lambda: campaigns.send_now(owner, campaign.id),
                    lambda: campaigns.schedule(owner, campaign.id, "2099-01-01T09:00"),
                    lambda: campaigns.send_test(owner, campaign.id, ["me@acme.example"])):
        with pytest.raises(EmailNotConfirmed) as exc:
            attempt()
        assert exc.value.status == 403 and exc.value.code == "EMAIL_NOT_CONFIRMED"
        assert exc.value.details == [{"field": "account.email", "issue": "Not confirmed yet."}]
        db.session.rollback()
    assert pipeline.calls == [] and db.session.get(type(campaign), campaign.id).status == "draft"

    signup.confirm_email(signup.confirmation_token(account))
    assert not any(item["code"] == "email_unconfirmed" for item in campaigns.readiness(campaign, account))
    # Open sign-up also requires a verified From (services/sending_domains.py): confirm this one address.
    sender = sending_domains.add_sender(owner, campaign.from_email)
    sending_domains.confirm_sender(sending_domains.confirm_link(sender).rpartition("/")[2])
    campaigns.send_test(owner, campaign.id, ["me@acme.example"])
    campaigns.send_now(owner, campaign.id)
    assert pipeline.names() == ["send_test", "start_send"]
