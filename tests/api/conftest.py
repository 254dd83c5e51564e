"""API fixtures: API clients and their bearer tokens, and a test client with an address of its own."""
import itertools
import os

import pytest
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import User
from nudge.services import api_clients

# Rate-limit counters keyed by IP live in Redis across tests (and test runs); every test client
# gets an address of its own so one test's token requests never count against another's.
_addresses = itertools.count(1)
_run = os.getpid() % 200 + 20


def fresh_ip():
    n = next(_addresses)
    return f"10.{_run}.{n // 250 % 250}.{n % 250 + 1}"


def new_client(app):
    """A test client of app with an IP address of its own."""
    test_client = app.test_client()
    test_client.environ_base["REMOTE_ADDR"] = fresh_ip()
    return test_client


@pytest.fixture
def client(app):
    return new_client(app)


def owner_of(account):
    return db.session.scalar(sa.select(User).where(User.account_id == account.id, User.role == "owner"))


@pytest.fixture
def make_api_client(app):
    """make_api_client(account, scopes="account:admin", name=None) -> (ApiClient, secret), created by the owner."""
    counter = itertools.count(1)

    def factory(account, scopes="account:admin", name=None):
        return api_clients.create_api_client(owner_of(account), name=name or f"Integration {next(counter)}",
                                             scopes=scopes)
    return factory


def request_token(test_client, client_id, secret, scope=None):
    data = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    if scope is not None:
        data["scope"] = scope
    response = test_client.post("/api/v1/oauth/token", data=data)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["access_token"]


@pytest.fixture
def api_token(client, make_api_client):
    """api_token(account, scopes="account:admin") -> a bearer token of a new API client of that account."""
    def factory(account, scopes="account:admin"):
        api_client, secret = make_api_client(account, scopes)
        return request_token(client, api_client.client_id, secret)
    return factory


def bearer(token):
    return {"Authorization": f"Bearer {token}"}
