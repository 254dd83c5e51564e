"""The `nudge` commands that outside tools rely on print exactly the JSON they promise."""
import json
import os
import subprocess
import sys
import uuid

from nudge.cli import cli
from nudge.extensions import db
from nudge.models import Account, ApiClient, User
from nudge.services.api_clients import authenticate_client
from tests.conftest import PASSWORD, TEST_DATABASE_URL


def run(app, *args):
    return app.test_cli_runner().invoke(cli, list(args))


def test_create_account_prints_ids(app):
    result = run(app, "create-account", "--name", "Acme", "--email", "Boss@Acme.EXAMPLE", "--password", PASSWORD,
                 "--plan", "professional")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert set(printed) == {"account_id", "user_id"}
    account = db.session.get(Account, uuid.UUID(printed["account_id"]))
    owner = db.session.get(User, uuid.UUID(printed["user_id"]))
    assert account.plan_type == "professional" and owner.role == "owner" and owner.email == "Boss@acme.example"


def test_create_account_explains_a_weak_password(app):
    result = run(app, "create-account", "--name", "Acme", "--email", "a@acme.example", "--password", "short")
    assert result.exit_code == 1
    assert "Password needs" in result.output
    assert db.session.query(Account).count() == 0


def test_create_api_client_prints_a_secret_that_works_once_shown(app, make_account):
    account, owner = make_account()
    result = run(app, "create-api-client", "--email", owner.email, "--name", "Shop sync",
                 "--scopes", "contacts:read contacts:write")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert set(printed) == {"client_id", "client_secret"}
    client = db.session.query(ApiClient).one()
    assert client.scopes == ["contacts:read", "contacts:write"] and client.account_id == account.id
    assert printed["client_secret"] not in client.secret_hash
    assert authenticate_client(printed["client_id"], printed["client_secret"]).id == client.id


def test_create_api_client_refuses_unknown_scopes_and_users(app, make_account):
    account, owner = make_account()
    bad_scope = run(app, "create-api-client", "--email", owner.email, "--name", "x", "--scopes", "everything")
    assert bad_scope.exit_code == 1 and "Unknown scope" in bad_scope.output
    nobody = run(app, "create-api-client", "--email", "nobody@x.example", "--name", "x", "--scopes", "contacts:read")
    assert nobody.exit_code == 1 and "no user" in nobody.output


def test_the_console_script_is_installed_and_uses_the_environment(app):
    env = dict(os.environ, NUDGE_DATABASE_URL=TEST_DATABASE_URL)
    nudge = os.path.join(os.path.dirname(sys.executable), "nudge")
    out = subprocess.run([nudge, "create-account", "--name", "Shell Shop", "--email", "shell@shop.example",
                          "--password", PASSWORD], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    account_id = json.loads(out.stdout.strip().splitlines()[-1])["account_id"]
    db.session.rollback()
    assert db.session.get(Account, uuid.UUID(account_id)).name == "Shell Shop"


def test_create_api_client_gives_only_scopes_the_members_role_has(app, make_account, make_user):
    account, owner = make_account()
    admin = make_user(account, role="admin")
    refused = run(app, "create-api-client", "--email", admin.email, "--name", "x", "--scopes", "account:admin")
    assert refused.exit_code == 1 and "only an owner can" in refused.output
    assert db.session.query(ApiClient).count() == 0
    done = run(app, "create-api-client", "--email", owner.email, "--name", "x", "--scopes", "account:admin")
    assert done.exit_code == 0, done.output
