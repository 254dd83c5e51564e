"""`nudge import-contacts`: a CSV file into an account, with a progress bar and a summary line."""
import sqlalchemy as sa

from nudge.cli import cli
from nudge.extensions import db
from nudge.models import Contact, Import


def run(app, *args):
    return app.test_cli_runner().invoke(cli, list(args))


def test_import_contacts_command(app, make_account, tmp_path):
    account, owner = make_account()
    path = tmp_path / "list.csv"
    path.write_text("Email;First Name;Tags\nann@example.com;Ann;vip\nnope;X;\nbob@example.com;Bob;\n")
    result = run(app, "import-contacts", "--email", owner.email, str(path), "--tags", "cli,2025")
    assert result.exit_code == 0, result.output + result.stderr
    assert "completed: 3 rows" in result.output
    assert "created 2, updated 0, skipped 0, errors 1" in result.output
    assert "Email -> email" in result.stderr
    found = {c.email: c for c in db.session.scalars(sa.select(Contact).where(Contact.account_id == account.id))}
    assert found["ann@example.com"].tags == ["vip", "cli", "2025"]
    assert path.exists()  # the CLI never deletes the user's file
    imp = db.session.scalar(sa.select(Import).where(Import.account_id == account.id))
    assert imp.source == "cli" and imp.created_by == owner.id

    path.write_text("Email;First Name\nann@example.com;Anna\n")
    skipped = run(app, "import-contacts", "--email", owner.email, str(path))
    assert "created 0, updated 0, skipped 1" in skipped.output
    updated = run(app, "import-contacts", "--email", owner.email, str(path), "--update")
    assert "created 0, updated 1, skipped 0" in updated.output


def test_import_contacts_errors(app, make_account, make_user, tmp_path):
    account, owner = make_account()
    path = tmp_path / "list.csv"
    path.write_text("name\nAnn\n")
    unknown = run(app, "import-contacts", "--email", "nobody@example.com", str(path))
    assert unknown.exit_code == 1 and "no user" in unknown.stderr
    no_email = run(app, "import-contacts", "--email", owner.email, str(path))
    assert no_email.exit_code == 1 and "email" in no_email.stderr
    viewer = make_user(account, role="viewer")
    path.write_text("email\na@example.com\n")
    denied = run(app, "import-contacts", "--email", viewer.email, str(path))
    assert denied.exit_code == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 0
