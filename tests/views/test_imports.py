"""The import wizard in the dashboard: upload, mapping, progress (286), report, errors CSV, export, roles."""
import csv
import io
import json
import re
import os

import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import AuditLog, Contact, CustomField, Import
from nudge.services import custom_fields, imports, suppressions

HTMX = {"HX-Request": "true"}
FILE = ("E-mail,First Name,Surname,Tags,Company,Shoe size\n"
        "ann@example.com,Ann,Lee,vip;news,Acme,38\n"
        "bad-address,Bad,Row,,,\n"
        "bob@example.com,Bob,,news,Beta,x\n")


def upload(client, text=FILE, name="people.csv"):
    return client.post("/imports/new", data={"file": (io.BytesIO(text.encode("utf-8")), name)},
                       content_type="multipart/form-data")


def test_full_wizard(client, make_account, login, app):
    account, owner = make_account()
    custom_fields.create_field(owner, name="company", label="Company")
    login(client, owner)
    assert "No imports yet" in client.get("/imports/").get_data(as_text=True)
    assert client.get("/imports/new").status_code == 200
    response = upload(client)
    assert response.status_code == 303
    mapping_url = response.headers["Location"]
    imp = db.session.scalar(sa.select(Import).where(Import.account_id == account.id))
    stored = os.path.join(app.config["INSTANCE_PATH"], "imports", f"{imp.id}.csv")
    assert imp.file_path == stored and os.path.exists(stored)
    # Subscribers' data never sits in the publicly served uploads folder.
    assert not os.path.abspath(stored).startswith(os.path.abspath(app.config["UPLOAD_DIR"]) + os.sep)
    assert os.stat(os.path.dirname(stored)).st_mode & 0o077 == 0

    page = client.get(mapping_url).get_data(as_text=True)
    assert "ann@example.com" in page and "bad-address" in page  # preview of the first rows
    assert '<option value="email" selected>' in page  # E-mail guessed
    assert '<option value="first_name" selected>' in page
    assert '<option value="last_name" selected>' in page
    assert '<option value="tags" selected>' in page
    assert '<option value="custom.company" selected>' in page
    assert "Create a custom field" in page

    form = {"map_0": "email", "map_1": "first_name", "map_2": "last_name", "map_3": "tags", "map_4": "custom.company",
            "map_5": "new", "name_5": "shoe_size", "type_5": "number", "existing": "skip", "tags": "fair, 2025",
            "permission_confirmed": "yes"}
    response = client.post(mapping_url, data=form)
    assert response.status_code == 303
    show_url = response.headers["Location"]
    assert show_url.endswith(f"/imports/{imp.id}")
    db.session.expire_all()
    imp = db.session.get(Import, imp.id)
    assert imp.status == "completed"
    assert (imp.created_count, imp.updated_count, imp.skipped_count, imp.error_count) == (1, 0, 0, 2)
    assert not os.path.exists(stored)  # the upload is removed when the import finishes
    ann = db.session.scalar(sa.select(Contact).where(Contact.email == "ann@example.com"))
    assert ann.tags == ["vip", "news", "fair", "2025"]
    assert ann.custom_fields == {"company": "Acme", "shoe_size": 38}

    report = client.get(show_url).get_data(as_text=True)
    assert "Import finished" in report and "Download errors as CSV" in report
    assert "<code>bad-address</code>" in report and "valid email" in report
    progress = client.get(f"/imports/{imp.id}/progress", headers=HTMX)
    assert progress.status_code == 286  # htmx stops polling
    assert "<html" not in progress.get_data(as_text=True)
    # the header's badge and the stepper outside the fragment follow along (out-of-band swaps)
    assert re.search(r'id="import-status" hx-swap-oob="true"[^>]*>completed<', progress.get_data(as_text=True))
    assert 'id="import-stepper" hx-swap-oob="true"' in progress.get_data(as_text=True)

    errors = client.get(f"/imports/{imp.id}/errors.csv")
    assert errors.headers["Content-Disposition"].startswith("attachment")
    rows = list(csv.reader(io.StringIO(errors.get_data(as_text=True))))
    assert rows[0] == ["row", "column", "value", "reason"]
    assert [r[:3] for r in rows[1:]] == [["3", "E-mail", "bad-address"], ["4", "Shoe size", "x"]]

    listing = client.get("/imports/").get_data(as_text=True)
    assert "people.csv" in listing and "completed" in listing and owner.email in listing


def test_running_import_polls(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    imp = Import(account_id=account.id, created_by=owner.id, source="csv", filename="big.csv", status="running",
                 mapping={"email": "email"}, options={"queued": True}, total_rows=1000, processed_rows=250)
    from nudge.models.types import utcnow
    imp.started_at = utcnow()
    db.session.add(imp)
    db.session.commit()
    page = client.get(f"/imports/{imp.id}").get_data(as_text=True)
    assert 'hx-trigger="every 1s"' in page and "Importing" in page and 'value="25"' in page
    response = client.get(f"/imports/{imp.id}/progress", headers=HTMX)
    assert response.status_code == 200 and "250" in response.get_data(as_text=True)


def test_mapping_errors_rerender_with_422(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    mapping_url = upload(client).headers["Location"]
    response = client.post(mapping_url, data={"map_0": "", "map_1": "first_name", "existing": "skip"})
    assert response.status_code == 422
    assert "Map one column to email" in response.get_data(as_text=True)
    response = client.post(mapping_url, data={"map_0": "email", "map_5": "new", "name_5": "Bad Name!",
                                              "existing": "skip"})
    assert response.status_code == 422
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 0


def test_upload_problems(client, make_account, login, make_app):
    account, owner = make_account()
    login(client, owner)
    assert client.post("/imports/new", data={}, content_type="multipart/form-data").status_code == 422
    response = upload(client, text="")
    assert response.status_code == 422 and "empty" in response.get_data(as_text=True)


def test_upload_size_limit(make_app, make_account, login):
    app = make_app(MAX_CONTENT_LENGTH=1024)
    client = app.test_client()
    account, owner = make_account()
    login(client, owner)
    response = upload(client, text="email\n" + "x@example.com\n" * 200)
    assert response.status_code in (413, 422)


def test_update_existing_option_and_suppression(client, make_account, login):
    account, owner = make_account()
    db.session.add(Contact(account_id=account.id, email="ann@example.com", first_name="Old", status="unsubscribed"))
    suppressions.suppress(account.id, ["bob@example.com"], "manual")
    db.session.commit()
    login(client, owner)
    mapping_url = upload(client).headers["Location"]
    client.post(mapping_url, data={"map_0": "email", "map_1": "first_name", "existing": "update",
                                   "permission_confirmed": "yes"})
    imp = db.session.scalar(sa.select(Import).where(Import.account_id == account.id))
    db.session.refresh(imp)
    assert (imp.created_count, imp.updated_count, imp.error_count) == (0, 1, 2)
    ann = db.session.scalar(sa.select(Contact).where(Contact.email == "ann@example.com"))
    db.session.refresh(ann)
    assert (ann.first_name, ann.status) == ("Ann", "unsubscribed")
    report = client.get(f"/imports/{imp.id}").get_data(as_text=True)
    assert "suppression list" in report


def test_viewer_sees_but_cannot_import(client, make_account, make_user, login):
    account, owner = make_account()
    imports.import_contacts(owner, [{"email": "bad"}])
    viewer = make_user(account, role="viewer")
    login(client, viewer)
    page = client.get("/imports/")
    assert page.status_code == 200 and "Import contacts" not in page.get_data(as_text=True)
    assert client.get("/imports/new").status_code == 403
    assert upload(client).status_code == 403
    imp = db.session.scalar(sa.select(Import).where(Import.account_id == account.id))
    assert client.get(f"/imports/{imp.id}").status_code == 200
    assert client.get(f"/imports/{imp.id}/errors.csv").status_code == 200


def test_other_accounts_imports_are_hidden(client, make_account, login):
    a, owner_a = make_account()
    b, owner_b = make_account()
    imp, _ = imports.import_contacts(owner_a, [{"email": "x@example.com"}])
    login(client, owner_b)
    assert client.get(f"/imports/{imp.id}").status_code == 404
    assert client.get(f"/imports/{imp.id}/progress").status_code == 404
    assert client.get(f"/imports/{imp.id}/errors.csv").status_code == 404
    assert client.get(f"/imports/{imp.id}/mapping").status_code == 404
    assert "No imports yet" in client.get("/imports/").get_data(as_text=True)


def test_dashboard_export_streams_the_filter(client, make_account, make_user, login):
    a, owner_a = make_account()
    b, owner_b = make_account()
    imports.import_contacts(owner_a, [{"email": "a1@example.com", "tags": ["vip"]}, {"email": "a2@example.com"}])
    imports.import_contacts(owner_b, [{"email": "b1@example.com", "tags": ["vip"]}])
    viewer = make_user(a, role="viewer")
    login(client, viewer)
    response = client.get("/imports/export?format=csv&tag=vip")
    assert response.status_code == 200 and response.is_streamed
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["email"] for r in rows] == ["a1@example.com"]
    everything = json.loads(client.get("/imports/export?format=json").get_data(as_text=True))
    assert sorted(c["email"] for c in everything) == ["a1@example.com", "a2@example.com"]
    entries = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "contact.exported")).all()
    assert sorted((e.account_id, e.actor, e.meta["count"], e.meta["format"]) for e in entries) == [
        (a.id, viewer.email, 1, "csv"), (a.id, viewer.email, 2, "json")]
    assert client.get("/imports/export?format=pdf").status_code == 400


def test_discard_pending_upload(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    mapping_url = upload(client).headers["Location"]
    imp = db.session.scalar(sa.select(Import).where(Import.account_id == account.id))
    path = imp.file_path
    response = client.post(mapping_url.replace("/mapping", "/discard"))
    assert response.status_code == 303
    assert not os.path.exists(path)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Import)) == 0


def test_the_import_needs_the_permission_confirmation_and_records_it(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    mapping_url = upload(client).headers["Location"]
    page = client.get(mapping_url).get_data(as_text=True)
    assert 'name="permission_confirmed" value="yes" required' in page
    form = {"map_0": "email", "map_5": "new", "name_5": "shoe_size", "type_5": "number", "existing": "skip"}
    refused = client.post(mapping_url, data=form)
    assert refused.status_code == 422
    assert "Confirm that these contacts gave permission to be emailed." in refused.get_data(as_text=True)
    imp = db.session.scalar(sa.select(Import).where(Import.account_id == account.id))
    assert imp.status == "pending" and not imp.options.get("queued")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(CustomField)) == 0  # nothing half-done
    assert not db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "contact.imported")).all()

    response = client.post(mapping_url, data={**form, "permission_confirmed": "yes"})
    assert response.status_code == 303
    db.session.expire_all()
    imp = db.session.get(Import, imp.id)
    assert imp.status == "completed"
    permission = imp.options["permission"]
    assert permission["confirmed_by"] == str(owner.id) and permission["confirmed_by_label"] == owner.email
    assert permission["confirmed_at"].endswith("Z")
    entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "contact.imported"))
    assert entry.account_id == account.id and entry.user_id == owner.id and entry.resources == [f"import:{imp.id}"]
    assert entry.meta["permission_confirmed"] is True and entry.meta["permission_confirmed_at"] == permission["confirmed_at"]
    report = client.get(f"/imports/{imp.id}").get_data(as_text=True)
    assert f"Confirmed by {owner.email}" in report


def test_the_mapping_creates_every_custom_field_type_choice_with_its_options(client, make_account, login):
    account, owner = make_account()
    login(client, owner)
    mapping_url = upload(client, text="email,plan,vip\nann@example.com,pro,yes\nbob@example.com,gold,no\n"
                                      "cy@example.com,free,no\n").headers["Location"]
    page = client.get(mapping_url).get_data(as_text=True)
    for kind, label in (("text", "Text"), ("number", "Number"), ("date", "Date"), ("boolean", "Yes / no"),
                        ("choice", "Choice")):
        assert f'<option value="{kind}">{label}</option>' in page or f'<option value="{kind}" selected>{label}' in page
    assert 'name="options_1" type="text" value="pro, gold, free"' in page  # started from the first rows
    base = {"map_0": "email", "map_1": "new", "name_1": "plan", "type_1": "choice", "map_2": "new",
            "name_2": "vip", "type_2": "boolean", "existing": "skip", "permission_confirmed": "yes"}
    empty = client.post(mapping_url, data={**base, "options_1": " , "})
    assert empty.status_code == 422 and "A choice field needs a list of at least one option." in empty.get_data(as_text=True)
    response = client.post(mapping_url, data={**base, "options_1": "free, pro"})
    assert response.status_code == 303
    fields = {f.name: f for f in db.session.scalars(sa.select(CustomField).where(CustomField.account_id == account.id))}
    assert (fields["plan"].type, fields["plan"].options) == ("choice", ["free", "pro"])
    assert fields["vip"].type == "boolean"
    imp = db.session.scalar(sa.select(Import).where(Import.account_id == account.id))
    assert (imp.created_count, imp.error_count) == (2, 1)
    report = client.get(f"/imports/{imp.id}").get_data(as_text=True)
    assert "<code>gold</code>" in report and "Must be one of: free, pro." in report
