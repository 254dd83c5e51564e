"""The sign-up page under NUDGE_SIGNUP (first, invite, open), open sign-up's confirmation link and its resend
action, and what an unconfirmed account sees when it tries to send."""
import html
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from nudge.delivery.outbox import list_outbox, read_message
from nudge.extensions import db
from nudge.models import Account, Campaign, User
from nudge.services import api_clients
from nudge.services import signup as signup_service
from tests.api.conftest import bearer
from tests.campaign_helpers import add_contacts, ready_campaign
from tests.conftest import PASSWORD

CLOSED = "Sign-up is closed on this server."


def text(response):
    return html.unescape(response.get_data(as_text=True))


def signup(client, **overrides):
    data = {"account_name": "Acme Bakery", "name": "Ann Baker", "email": "ann@acme.example", "password": PASSWORD}
    data.update(overrides)
    return client.post("/signup", data=data)


def account_count():
    return db.session.scalar(sa.select(sa.func.count()).select_from(Account))


def mails(directory, account_id):
    return [read_message(str(directory), account_id, entry.name) for entry in list_outbox(str(directory), account_id)]


def link_in(mail):
    match = re.search(r"http://[^\s]+/signup/confirm/[^\s]+", mail.text)
    assert match, mail.text
    return match.group(0).split("://", 1)[1].split("/", 1)[1]


# --- first (the default) -----------------------------------------------------------------------------

def test_a_fresh_install_signs_its_first_user_straight_up_then_closes(app):
    client = app.test_client()
    login_page = text(client.get("/login"))
    assert "Create an account" in login_page  # nobody yet: the login page offers it
    assert client.get("/signup").status_code == 200
    response = signup(client)
    assert response.status_code == 302  # signed in at once (then MFA enrolment)
    assert db.session.scalar(sa.select(Account.email_confirmed_at)) is not None  # nothing to confirm

    stranger = app.test_client()
    page = stranger.get("/signup")
    assert page.status_code == 403
    assert CLOSED in text(page) and "invitation" in text(page) and "nudge create-account" in text(page)
    response = signup(stranger, email="bob@evil.example")
    assert response.status_code == 403 and CLOSED in text(response)
    assert account_count() == 1
    assert "Create an account" not in text(stranger.get("/login"))


def test_simultaneous_first_sign_ups_create_one_account(make_app):
    app = make_app()
    start = threading.Barrier(4)

    def attempt(n):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = f"192.0.2.{n + 10}"
        start.wait(timeout=30)
        return signup(client, email=f"user{n}@race.example").status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(attempt, range(4)))
    assert statuses == [302, 403, 403, 403]
    assert account_count() == 1 and db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 1


def test_invite_mode_is_closed_even_on_a_fresh_install(make_app):
    client = make_app(SIGNUP="invite").test_client()
    assert client.get("/signup").status_code == 403
    assert signup(client).status_code == 403
    assert account_count() == 0
    assert "Create an account" not in text(client.get("/login"))


# --- open --------------------------------------------------------------------------------------------

def test_open_sign_up_answers_the_same_for_a_new_and_a_taken_email(make_app, make_account, tmp_path):
    app = make_app(SIGNUP="open", OUTBOX_DIR=str(tmp_path))
    existing, _ = make_account(email="taken@shop.example")
    clients = app.test_client(), app.test_client()
    new = signup(clients[0], email="fresh@shop.example")
    taken = signup(clients[1], email="taken@shop.example")
    assert new.status_code == taken.status_code == 200
    csrf = re.compile(r'name="csrf-token" content="[^"]+"')
    assert csrf.sub("", text(new)).replace("fresh@", "X@") == csrf.sub("", text(taken)).replace("taken@", "X@")
    assert "Check your email" in text(new)
    for client in clients:  # nobody is signed in
        with client.session_transaction() as session:
            assert "_user_id" not in session
    assert account_count() == 2

    fresh = db.session.scalar(sa.select(Account).where(Account.email == "fresh@shop.example"))
    assert fresh.email_confirmed_at is None
    [confirmation] = mails(tmp_path, fresh.id)
    assert confirmation.headers and "Confirm your email address" in dict(confirmation.headers)["Subject"]
    [notice] = mails(tmp_path, existing.id)
    assert "already signs in here" in notice.text and "/signup/confirm/" not in notice.text


def test_the_confirmation_link_unlocks_sending(make_app, login, tmp_path):
    app = make_app(SIGNUP="open", OUTBOX_DIR=str(tmp_path), REQUIRE_MFA=False)
    client = app.test_client()
    signup(client)
    account = db.session.scalar(sa.select(Account))
    owner = db.session.scalar(sa.select(User))
    login(client, owner)
    dashboard = text(client.get("/"))
    assert "Confirm your email address to start sending" in dashboard

    [mail] = mails(tmp_path, account.id)
    response = client.get("/" + link_in(mail))
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert "ann@acme.example is confirmed" in text(client.get("/"))
    assert db.session.get(Account, account.id).email_confirmed_at is not None
    assert "Confirm your email address to start sending" not in text(client.get("/"))


def test_a_bad_confirmation_link_shows_a_readable_page(make_app):
    client = make_app(SIGNUP="open").test_client()
    response = client.get("/signup/confirm/not-a-token")
    assert response.status_code == 404 and "This confirmation link is invalid" in text(response)


def test_resend_confirmation_mails_a_new_link_and_is_limited(make_app, login, tmp_path):
    app = make_app(SIGNUP="open", OUTBOX_DIR=str(tmp_path), REQUIRE_MFA=False)
    client = app.test_client()
    signup(client)
    account = db.session.scalar(sa.select(Account))
    login(client, db.session.scalar(sa.select(User)))
    for _ in range(3):
        response = client.post("/signup/confirm/resend", data={"next": "/campaigns/"})
        assert response.status_code == 302 and response.headers["Location"] == "/campaigns/"
    assert len(mails(tmp_path, account.id)) == 4  # the sign-up's and three more
    assert "We sent a new confirmation link" in text(client.get("/"))
    blocked = client.post("/signup/confirm/resend")
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    assert "Too many attempts" in text(blocked)
    assert len(mails(tmp_path, account.id)) == 4


def test_the_review_page_and_the_send_buttons_refuse_an_unconfirmed_account(make_app, login, tmp_path):
    app = make_app(SIGNUP="open", OUTBOX_DIR=str(tmp_path), REQUIRE_MFA=False)
    client = app.test_client()
    signup(client)
    owner = db.session.scalar(sa.select(User))
    account = owner.account
    login(client, owner)
    add_contacts(account, "zoe@example.com")
    campaign = ready_campaign(owner, account)

    review = text(client.get(f"/campaigns/{campaign.id}/review"))
    assert "Confirm your email address before sending" in review and "Send a new confirmation link" in review
    for path, data in (("send", {}), ("schedule", {"scheduled_at": "2099-01-01T09:00"})):
        response = client.post(f"/campaigns/{campaign.id}/{path}", data=data)
        assert response.status_code == 422 and "Confirm your email address before sending" in text(response)
    test = client.post(f"/campaigns/{campaign.id}/test", data={"emails": "me@acme.example"},
                       headers={"HX-Request": "true"})
    assert test.status_code == 422 and "Confirm your email address before sending" in text(test)
    assert db.session.get(Campaign, campaign.id).status == "draft"
    assert len(mails(tmp_path, account.id)) == 1  # only the confirmation: no test went out


def test_the_api_answers_an_unconfirmed_account_with_the_error_envelope(make_app):
    app = make_app(SIGNUP="open")
    client = app.test_client()
    signup(client)
    owner = db.session.scalar(sa.select(User))
    account = owner.account
    add_contacts(account, "zoe@example.com")
    campaign = ready_campaign(owner, account)
    api_client, secret = api_clients.create_api_client(owner, name="Zapier", scopes="campaigns:write")
    token = client.post("/api/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": api_client.client_id, "client_secret": secret,
    }).get_json()["access_token"]
    for path, body in (("send", None), ("send", {"scheduled_at": "2099-01-01T09:00"}),
                       ("test", {"emails": ["me@acme.example"]})):
        response = client.post(f"/api/v1/campaigns/{campaign.id}/{path}", json=body, headers=bearer(token))
        assert response.status_code == 403, path
        assert response.get_json() == {"error": {
            "code": "EMAIL_NOT_CONFIRMED", "message": signup_service.UNCONFIRMED.format(email=account.email),
            "details": [{"field": "account.email", "issue": "Not confirmed yet."}]}}
