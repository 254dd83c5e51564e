"""The import engine on both dialects: encodings, mapping, validation, de-duplication, set-based merge."""
import csv
import random

import pytest
import sqlalchemy as sa

from nudge.errors import Forbidden, ValidationError
from nudge.extensions import db
from nudge.models import Contact, CustomField, EmailEvent, ImportError_
from nudge.services import custom_fields, imports, suppressions
from nudge.services.validation import normalize_email


@pytest.fixture
def owner(make_account):
    return make_account()[1]


def write_csv(tmp_path, text, name="contacts.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


def contacts_of(account_id):
    return {c.email: c for c in db.session.scalars(sa.select(Contact).where(Contact.account_id == account_id))}


def errors_of(imp):
    return [(e.row_number, e.field, e.reason) for e in db.session.scalars(
        sa.select(ImportError_).where(ImportError_.import_id == imp.id).order_by(ImportError_.row_number))]


def counts(imp):
    return (imp.created_count, imp.updated_count, imp.skipped_count, imp.error_count)


def test_basic_import_creates_contacts_with_auto_mapping(owner, tmp_path):
    custom_fields.create_field(owner, name="company", label="Company")
    path = write_csv(tmp_path, "E-mail,First Name,Surname,Tags,Company,Favourite colour\n"
                               "ann@Example.COM,Ann,Lee,\"vip,news\",Acme,blue\n"
                               "bob@example.com,Bob,,news;beta,,\n")
    imp = imports.import_file(owner, path)
    assert imp.status == "completed"
    assert counts(imp) == (2, 0, 0, 0)
    assert imp.processed_rows == 2
    found = contacts_of(owner.account_id)
    ann = found["ann@example.com"]
    assert (ann.first_name, ann.last_name, ann.status, ann.source) == ("Ann", "Lee", "active", "import")
    assert ann.tags == ["vip", "news"]
    assert ann.custom_fields == {"company": "Acme"}  # "Favourite colour" is not mapped: ignored
    assert found["bob@example.com"].tags == ["news", "beta"]
    assert found["bob@example.com"].custom_fields == {}
    events = db.session.scalars(sa.select(EmailEvent).where(EmailEvent.account_id == owner.account_id,
                                                            EmailEvent.event_type == "contact.subscribed")).all()
    assert {e.contact_id for e in events} == {ann.id, found["bob@example.com"].id}


def test_guess_mapping_recognises_common_headers(owner):
    custom_fields.create_field(owner, name="plan", label="Plan level")
    fields = custom_fields.definitions(owner.account_id)
    header = ["Email Address", "fname", "Last Name", "Tags", "Plan level", "custom.plan", "notes"]
    mapping = imports.guess_mapping(header, fields)
    assert mapping == {"Email Address": "email", "fname": "first_name", "Last Name": "last_name", "Tags": "tags",
                       "Plan level": "custom.plan", "custom.plan": None, "notes": None}


def test_bad_rows_are_reported_and_good_rows_land(owner, tmp_path):
    custom_fields.create_field(owner, name="age", type="number")
    custom_fields.create_field(owner, name="joined", type="date")
    long_name = "x" * 101
    path = write_csv(tmp_path, "email,first_name,age,joined\n"
                               "good@example.com,Good,42,2024-01-31\n"
                               "not-an-email,Bad,1,\n"
                               f"long@example.com,{long_name},3,\n"
                               "typed@example.com,T,forty,2024-13-01\n"
                               ",NoEmail,,\n"
                               "fine@example.com,,7.5,\n")
    imp = imports.import_file(owner, path)
    assert counts(imp) == (2, 0, 0, 4)
    found = contacts_of(owner.account_id)
    assert set(found) == {"good@example.com", "fine@example.com"}
    assert found["good@example.com"].custom_fields == {"age": 42, "joined": "2024-01-31"}
    assert found["fine@example.com"].custom_fields == {"age": 7.5}
    errors = errors_of(imp)
    rows = {(row, column) for row, column, _ in errors}
    assert rows == {(3, "email"), (4, "first_name"), (5, "age"), (5, "joined"), (6, "email")}
    reasons = dict(((row, column), reason) for row, column, reason in errors)
    assert "valid email" in reasons[(3, "email")]
    assert "100" in reasons[(4, "first_name")]
    assert "number" in reasons[(5, "age")]


def test_duplicates_inside_the_file_first_occurrence_wins(owner, tmp_path):
    path = write_csv(tmp_path, "email,first_name\nsam@example.com,First\n sam@EXAMPLE.com ,Second\n"
                               "other@example.com,Other\nsam@example.com,Third\n")
    imp = imports.import_file(owner, path)
    assert counts(imp) == (2, 0, 0, 2)
    assert contacts_of(owner.account_id)["sam@example.com"].first_name == "First"
    assert [(r, c) for r, c, _ in errors_of(imp)] == [(3, "email"), (5, "email")]
    assert "Duplicate of row 2" in errors_of(imp)[0][2]


@pytest.mark.parametrize("encoding,delimiter", [
    ("utf-8", ","), ("utf-8-sig", ";"), ("utf-16", "\t"), ("cp1252", ";"), ("utf-8", "|"), ("latin-1", ","),
])
def test_encodings_and_delimiters(owner, tmp_path, encoding, delimiter):
    name = "Zoë Ångström" if encoding != "cp1252" else "Renée Dvořák"[:5] + "é"
    text = delimiter.join(["email", "first_name", "last_name"]) + "\r\n" + \
        delimiter.join(["zoe@example.com", name, "O'Brien"]) + "\r\n"
    path = write_csv(tmp_path, text.encode(encoding))
    info = imports.inspect_file(path)
    assert info["delimiter"] == delimiter
    assert info["header"] == ["email", "first_name", "last_name"]
    imp = imports.import_file(owner, path)
    assert counts(imp) == (1, 0, 0, 0)
    assert contacts_of(owner.account_id)["zoe@example.com"].first_name == name


def test_cp1252_is_detected_when_not_utf8(tmp_path):
    path = write_csv(tmp_path, "email;name\nx@example.com;Café – “quoted”\n".encode("cp1252"))
    assert imports.detect_encoding(path) == "cp1252"
    assert imports.detect_encoding(write_csv(tmp_path, "\ufeffemail\n", name="b.csv")) == "utf-8-sig"
    assert imports.detect_encoding(write_csv(tmp_path, "email\n".encode("utf-16"), name="c.csv")) == "utf-16"


def test_rerunning_the_same_file_changes_nothing(owner, tmp_path):
    custom_fields.create_field(owner, name="company")
    path = write_csv(tmp_path, "email,first_name,tags,company\na@example.com,A,x,Acme\nb@example.com,B,,\n")
    first = imports.import_file(owner, path, update_existing=True)
    assert counts(first) == (2, 0, 0, 0)
    before = {e: (c.updated_at, c.tags, c.custom_fields) for e, c in contacts_of(owner.account_id).items()}
    second = imports.import_file(owner, path, update_existing=True)
    assert counts(second) == (0, 0, 2, 0)
    db.session.expire_all()
    after = {e: (c.updated_at, c.tags, c.custom_fields) for e, c in contacts_of(owner.account_id).items()}
    assert after == before
    third = imports.import_file(owner, path, update_existing=False)
    assert counts(third) == (0, 0, 2, 0)


def test_update_existing_merges_and_skip_leaves_alone(owner, tmp_path):
    custom_fields.create_field(owner, name="company")
    custom_fields.create_field(owner, name="city")
    imports.import_file(owner, write_csv(tmp_path, "email,first_name,last_name,tags,company,city\n"
                                                   "a@example.com,Ann,Old,old,Acme,Paris\n"))
    change = write_csv(tmp_path, "email,first_name,last_name,tags,company,city\n"
                                 "a@example.com,Anna,,new,Beta,\n", name="change.csv")
    skipped = imports.import_file(owner, change, update_existing=False)
    assert counts(skipped) == (0, 0, 1, 0)
    db.session.expire_all()
    assert contacts_of(owner.account_id)["a@example.com"].first_name == "Ann"
    updated = imports.import_file(owner, change, update_existing=True, tags=["imported"])
    assert counts(updated) == (0, 1, 0, 0)
    db.session.expire_all()
    ann = contacts_of(owner.account_id)["a@example.com"]
    assert (ann.first_name, ann.last_name) == ("Anna", "Old")  # empty cells keep the stored value
    assert ann.tags == ["old", "new", "imported"]
    assert ann.custom_fields == {"company": "Beta", "city": "Paris"}


def test_tags_option_is_added_to_every_contact(owner, tmp_path):
    path = write_csv(tmp_path, "email,tags\na@example.com,x\nb@example.com,\n")
    imports.import_file(owner, path, tags="spring fair, 2024")
    found = contacts_of(owner.account_id)
    assert found["a@example.com"].tags == ["x", "spring fair", "2024"]
    assert found["b@example.com"].tags == ["spring fair", "2024"]


def test_suppressed_and_unsubscribed_are_never_reactivated(owner, tmp_path):
    account_id = owner.account_id
    db.session.add(Contact(account_id=account_id, email="unsub@example.com", status="unsubscribed"))
    db.session.add(Contact(account_id=account_id, email="bounced@example.com", status="bounced"))
    suppressions.suppress(account_id, ["unsub@example.com", "blocked@example.com"], "unsubscribed")
    db.session.commit()
    path = write_csv(tmp_path, "email,first_name\nunsub@example.com,U\nbounced@example.com,B\n"
                               "blocked@example.com,X\nnew@example.com,N\n")
    imp = imports.import_file(owner, path, update_existing=True)
    assert counts(imp) == (1, 2, 0, 1)
    db.session.expire_all()
    found = contacts_of(account_id)
    assert found["unsub@example.com"].status == "unsubscribed"
    assert found["unsub@example.com"].first_name == "U"
    assert found["bounced@example.com"].status == "bounced"
    assert "blocked@example.com" not in found  # new + suppressed: not created
    assert found["new@example.com"].status == "active"
    assert errors_of(imp) == [(4, None, "On the suppression list: not imported.")]


def test_soft_deleted_contacts_revive_only_when_updating(owner, tmp_path):
    from nudge.models.types import utcnow
    account_id = owner.account_id
    db.session.add(Contact(account_id=account_id, email="gone@example.com", status="deleted",
                           status_before_delete="active", deleted_at=utcnow()))
    db.session.add(Contact(account_id=account_id, email="gone-unsub@example.com", status="deleted",
                           status_before_delete="unsubscribed", deleted_at=utcnow()))
    db.session.commit()
    path = write_csv(tmp_path, "email\ngone@example.com\ngone-unsub@example.com\n")
    skip = imports.import_file(owner, path)
    assert counts(skip) == (0, 0, 2, 0)
    db.session.expire_all()
    assert contacts_of(account_id)["gone@example.com"].status == "deleted"
    revive = imports.import_file(owner, path, update_existing=True)
    assert counts(revive) == (0, 2, 0, 0)
    db.session.expire_all()
    found = contacts_of(account_id)
    assert (found["gone@example.com"].status, found["gone@example.com"].deleted_at) == ("active", None)
    assert found["gone-unsub@example.com"].status == "unsubscribed"


def test_mapping_creates_custom_fields_and_validates(owner, tmp_path):
    path = write_csv(tmp_path, "Email,Score,Notes\na@example.com,12,hello\nb@example.com,lots,hi\n")
    imp = imports.import_file(owner, path, mapping={"Email": "email", "Score": {"field": "custom.score", "type": "number"},
                                                    "Notes": "custom.notes"})
    fields = custom_fields.definitions(owner.account_id)
    assert (fields["score"].type, fields["notes"].type) == ("number", "text")
    assert counts(imp) == (1, 0, 0, 1)
    assert contacts_of(owner.account_id)["a@example.com"].custom_fields == {"score": 12, "notes": "hello"}
    with pytest.raises(ValidationError) as exc:
        imports.import_file(owner, path, mapping={"Score": "first_name"})
    assert "email" in exc.value.message
    with pytest.raises(ValidationError):
        imports.import_file(owner, path, mapping={"Email": "email", "Notes": "status"})
    with pytest.raises(ValidationError):
        imports.import_file(owner, path, mapping={"Email": "email", "Missing": "first_name"})


def test_viewers_cannot_import(make_account, make_user, tmp_path):
    account, _ = make_account()
    viewer = make_user(account, role="viewer")
    with pytest.raises(Forbidden):
        imports.import_file(viewer, write_csv(tmp_path, "email\na@example.com\n"))
    with pytest.raises(Forbidden):
        imports.import_contacts(viewer, [{"email": "a@example.com"}])


def test_imports_are_tenant_scoped(make_account, tmp_path):
    (a, owner_a), (b, _) = make_account(), make_account()
    db.session.add(Contact(account_id=b.id, email="shared@example.com", first_name="B's"))
    db.session.commit()
    imp = imports.import_file(owner_a, write_csv(tmp_path, "email,first_name\nshared@example.com,A's\n"),
                              update_existing=True)
    assert counts(imp) == (1, 0, 0, 0)
    db.session.expire_all()
    assert contacts_of(b.id)["shared@example.com"].first_name == "B's"
    assert contacts_of(a.id)["shared@example.com"].first_name == "A's"
    from nudge.errors import NotFound
    with pytest.raises(NotFound):
        imports.get_import(b.id, imp.id)
    with pytest.raises(NotFound):
        list(imports.errors_csv(b.id, imp.id))


def test_json_batch_import(owner):
    custom_fields.create_field(owner, name="age", type="number")
    imp, errors = imports.import_contacts(owner, [
        {"email": "a@example.com", "first_name": "A", "tags": ["x"], "custom_fields": {"age": 3}},
        {"email": "bad"},
        {"email": "a@example.com"},
        {"email": "c@example.com", "status": "active"},
        {"email": "d@example.com", "custom_fields": {"nope": 1}},
        "not an object",
    ], tags=["api"])
    assert counts(imp) == (1, 0, 0, 5)
    assert [(e["row"], e["field"]) for e in errors] == [(2, "email"), (3, "email"), (4, "status"),
                                                       (5, "custom_fields.nope"), (6, None)]
    a = contacts_of(owner.account_id)["a@example.com"]
    assert (a.tags, a.custom_fields) == (["x", "api"], {"age": 3})
    with pytest.raises(ValidationError):
        imports.import_contacts(owner, [{"email": "x@example.com"}] * (imports.MAX_API_ROWS + 1))


def test_errors_are_capped_but_counted(owner, tmp_path, monkeypatch):
    monkeypatch.setattr(imports, "MAX_STORED_ERRORS", 3)
    path = write_csv(tmp_path, "email\n" + "".join(f"bad{i}\n" for i in range(10)) + "ok@example.com\n")
    imp = imports.import_file(owner, path)
    assert counts(imp) == (1, 0, 0, 10)
    assert len(errors_of(imp)) == 3
    text = "".join(imports.errors_csv(owner.account_id, imp.id))
    assert text.splitlines()[0] == "row,column,value,reason"
    assert len(text.splitlines()) == 4


def test_chunks_commit_progress(owner, tmp_path):
    path = write_csv(tmp_path, "email\n" + "".join(f"u{i}@example.com\n" for i in range(25)))
    seen = []
    imp = imports.import_file(owner, path, progress=seen.append)
    assert imp.status == "completed" and imp.created_count == 25
    # One progress report per chunk (default chunk: 10,000 rows; here all in one).
    assert seen == [25]
    imp2 = imports.import_file(owner, path, update_existing=True)
    assert counts(imp2) == (0, 0, 25, 0)


def test_small_chunks(owner, tmp_path):
    path = write_csv(tmp_path, "email,first_name\n" + "".join(f"u{i}@example.com,N{i}\n" for i in range(25))
                     + "u3@example.com,dup\n")
    imp = imports.Import(account_id=owner.account_id, source="cli", filename="x.csv", file_path=path, status="pending",
                         mapping={"email": "email", "first_name": "first_name"},
                         options={"encoding": "utf-8", "delimiter": ",", "keep_file": True, "configured": True})
    db.session.add(imp)
    db.session.commit()
    seen = []
    done = imports.run_import(imp.id, progress=seen.append, chunk_rows=10)
    # One report per chunk as it is counted (on PostgreSQL two writers may finish chunks out of order).
    assert len(seen) == 3 and seen == sorted(seen) and seen[-1] == 26
    assert counts(done) == (25, 0, 0, 1)


def test_fast_email_path_agrees_with_email_validator():
    rng = random.Random(7)
    samples = ["a@example.com", "A.B+tag@Sub.Example.COM", "x@y.io", "first.last@exa-mple.co.uk",
               "o'brien@example.ie", "weird!#$%&*+/=?^_`{|}~-@example.org", "a..b@example.com", ".a@example.com",
               "a.@example.com", "a@-example.com", "a@example-.com", "a@example", "a@example.c", "a@example.123",
               "a@localhost", "a@x.test", "a@x.local", "a@xn--bcher-kva.example", "a@ab--cd.example",
               "a" * 64 + "@example.com", "a" * 65 + "@example.com", "a@" + "b" * 63 + ".com",
               "a@" + "b" * 64 + ".com", "a@" + ".".join(["b" * 60] * 5) + ".com", "tést@example.com",
               "a@exämple.com", '"quoted"@example.com', "a b@example.com", "a@b@example.com", "@example.com",
               "a@", "a@[127.0.0.1]", "a@example.com.", "a@EXAMPLE.Invalid", "a@x.onion", "a@x.arpa"]
    alphabet = "abcXYZ09.-_+@!'\"é "
    for _ in range(3000):
        samples.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) + rng.choice(
            ["@example.com", "@Ex.Org", "", "@a.b", "@x-y.co"]))
    for value in samples:
        fast = imports.fast_normalize_email(value)
        try:
            slow = normalize_email(value)
        except ValidationError:
            slow = None
        if fast is not None:
            assert fast == slow, value


def test_big_generated_file_streams(owner, tmp_path):
    """60,000 rows generated on the fly (six chunks of imports.CHUNK_ROWS, written by parallel writers on
    PostgreSQL); the counts must be exact (no timing asserted; bench/import_contacts.py measures 1,000,000)."""
    custom_fields.create_field(owner, name="score", type="number")
    path = tmp_path / "big.csv"
    n = 6 * imports.CHUNK_ROWS
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first_name", "last_name", "tags", "score"])
        for i in range(n):
            email = f"user{i}@example.com" if i % 1000 != 999 else f"broken{i}"
            writer.writerow([email, f"First{i}", f"Last{i}", "a,b" if i % 2 else "c", i % 100])
    imp = imports.import_file(owner, str(path))
    bad = n // 1000
    assert counts(imp) == (n - bad, 0, 0, bad)
    assert imp.processed_rows == n
    total = db.session.scalar(sa.select(sa.func.count()).select_from(Contact).where(Contact.account_id == owner.account_id))
    assert total == n - bad
    events = db.session.scalar(sa.select(sa.func.count()).select_from(EmailEvent).where(
        EmailEvent.account_id == owner.account_id, EmailEvent.event_type == "contact.subscribed"))
    assert events == n - bad
    again = imports.import_file(owner, str(path), update_existing=True)
    assert counts(again) == (0, 0, n - bad, bad)


def test_custom_field_definitions_stay_within_the_account(make_account, tmp_path):
    (_, owner_a), (b, _) = make_account(), make_account()
    imports.import_file(owner_a, write_csv(tmp_path, "email,Region\nx@example.com,EU\n"),
                        mapping={"email": "email", "Region": "custom.region"})
    assert db.session.scalar(sa.select(sa.func.count()).select_from(CustomField).where(CustomField.account_id == b.id)) == 0


def test_a_failure_part_way_keeps_the_chunks_already_written(owner, tmp_path):
    huge = "x" * (csv.field_size_limit() + 10)
    path = write_csv(tmp_path, "email,first_name\n" + "".join(f"u{i}@example.com,N\n" for i in range(20))
                     + f"late@example.com,\"{huge}\"\n")
    imp = imports.Import(account_id=owner.account_id, source="cli", filename="x.csv", file_path=path, status="pending",
                         mapping={"email": "email", "first_name": "first_name"},
                         options={"encoding": "utf-8", "delimiter": ",", "keep_file": True, "configured": True})
    db.session.add(imp)
    db.session.commit()
    done = imports.run_import(imp.id, chunk_rows=10)
    assert done.status == "failed"
    assert "not valid CSV" in done.message
    assert counts(done) == (20, 0, 0, 0) and done.processed_rows == 20
    assert len(contacts_of(owner.account_id)) == 20


def test_seen_addresses_table_grows_and_remembers_first_rows():
    seen = imports.SeenAddresses(capacity=8)
    keys = [hash(f"user{i}@example.com") for i in range(5000)] + [0, 8, 16, -8]
    for row, key in enumerate(keys, 1):
        assert seen.get(key) is None
        seen.add(key, row)
    for row, key in enumerate(keys, 1):
        assert seen.get(key) == row
    assert seen.count == len(keys)
    assert seen.get(hash("someone-else@example.com")) is None


def test_new_contact_ids_are_time_ordered_uuid7():
    import uuid
    ids = imports.time_ordered_ids(1000)
    assert len(set(ids)) == 1000
    parsed = [uuid.UUID(value) for value in ids]
    assert {u.version for u in parsed} == {7} and {u.variant for u in parsed} == {uuid.RFC_4122}
    assert len({value[:12] for value in ids}) <= 2  # one millisecond prefix per chunk (or two at a tick)


def test_an_import_waits_for_another_writer_instead_of_failing(owner, monkeypatch):
    """SQLite has one writer at a time. An import chunk that meets another writer (a campaign recording what
    it sent, say) waits for it, then lands: it takes the write lock before it reads, so it never holds a read
    lock that the other writer's commit waits for (a deadlock SQLite breaks with "database is locked")."""
    import sqlite3
    import threading
    import time

    if db.engine.dialect.name != "sqlite":
        pytest.skip("the lock order of SQLite; PostgreSQL locks rows")
    other = sqlite3.connect(db.engine.url.database, isolation_level=None, timeout=30, check_same_thread=False)
    start, holding, done = threading.Event(), threading.Event(), threading.Event()

    def another_writer():
        start.wait(10)
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE accounts SET name = name")
        holding.set()
        time.sleep(0.5)
        other.execute("COMMIT")
        done.set()

    write_chunk = imports._write_sqlite

    def write_chunk_while_another_writes(*args):
        start.set()  # the other writer takes the lock just as the chunk starts
        holding.wait(10)
        return write_chunk(*args)

    monkeypatch.setattr(imports, "_write_sqlite", write_chunk_while_another_writes)
    thread = threading.Thread(target=another_writer)
    thread.start()
    try:
        imp, errors = imports.import_contacts(owner, [{"email": f"wait{n}@example.com"} for n in range(50)])
    finally:
        start.set()
        thread.join()
        other.close()
    assert done.is_set() and errors == []
    assert (imp.status, imp.created_count) == ("completed", 50)


def test_uploads_left_in_the_public_folder_move_to_the_private_one(owner, app):
    """Before issue 14 uploaded CSVs waited in <instance>/uploads/imports (inside the public uploads folder):
    housekeeping moves the ones still waiting, leaves a queued or running import's file to its worker, and
    deletes the rest."""
    import io
    import os

    from nudge.models import Import
    from nudge.services import housekeeping
    legacy = imports.legacy_upload_dir()
    os.makedirs(legacy, exist_ok=True)
    waiting = imports.create_upload(owner, io.BytesIO(b"email\nann@example.com\n"), "a.csv")
    running = imports.create_upload(owner, io.BytesIO(b"email\nbob@example.com\n"), "b.csv")
    for imp in (waiting, running):
        old = os.path.join(legacy, os.path.basename(imp.file_path))
        os.replace(imp.file_path, old)
        imp.file_path = old
    running.status = "running"
    orphan = os.path.join(legacy, "left-behind.csv")
    with open(orphan, "w") as handle:
        handle.write("email\ncarol@example.com\n")
    db.session.commit()
    assert housekeeping.run_housekeeping()["legacy_import_uploads"] == 1
    db.session.expire_all()
    moved = db.session.get(Import, waiting.id)
    assert moved.file_path == os.path.join(app.config["IMPORT_DIR"], f"{waiting.id}.csv")
    assert open(moved.file_path).read() == "email\nann@example.com\n"
    assert os.path.exists(db.session.get(Import, running.id).file_path) and not os.path.exists(orphan)
    db.session.get(Import, running.id).status = "completed"
    os.remove(db.session.get(Import, running.id).file_path)
    db.session.commit()
    housekeeping.run_housekeeping()
    assert not os.path.exists(legacy)


def stored_errors(imp):
    return [(e.row_number, e.field, e.value, e.reason) for e in db.session.scalars(
        sa.select(ImportError_).where(ImportError_.import_id == imp.id).order_by(ImportError_.row_number))]


def test_error_rows_are_numbered_as_a_spreadsheet_shows_them(owner, tmp_path):
    """Header = row 1; a blank line keeps its row; a quoted cell spanning two lines is one row."""
    path = write_csv(tmp_path, "email,first_name\n"  # row 1
                               "ok@example.com,Ok\n"  # row 2
                               "nope,Bad\n"  # row 3
                               "\n"  # row 4 (blank)
                               "two@example.com,\"Two\nlines\"\n"  # row 5
                               "also-bad,X\n")  # row 6
    imp = imports.import_file(owner, path)
    assert counts(imp) == (2, 0, 0, 2) and imp.processed_rows == 4
    assert [(row, value) for row, _, value, _ in stored_errors(imp)] == [(3, "nope"), (6, "also-bad")]


def test_errors_keep_the_rejected_value_and_read_as_one_sentence(owner, tmp_path):
    custom_fields.create_field(owner, name="plan", type="choice", options=["free", "pro", "etc."])
    custom_fields.create_field(owner, name="age", type="number")
    suppressions.add_suppressions(owner, ["gone@example.com"])
    long_name = "N" * 101
    path = write_csv(tmp_path, "email,first_name,plan,age\n"
                               "a@b,,,\n"
                               f"c@example.com,{long_name},,\n"
                               "d@example.com,,gold,\n"
                               "e@example.com,,,forty\n"
                               ",,,\n"
                               "gone@example.com,,,\n"
                               "d@example.com,,,\n")
    imp = imports.import_file(owner, path)
    errors = stored_errors(imp)
    assert [(row, field, value) for row, field, value, _ in errors] == [
        (2, "email", "a@b"), (3, "first_name", long_name), (4, "plan", "gold"), (5, "age", "forty"),
        (6, "email", ""), (7, None, "gone@example.com")]
    reasons = [reason for *_, reason in errors]
    assert reasons[0] == ("Must be a valid email address: the part after the @-sign is not valid; "
                          "it should have a period.")
    assert reasons[2] == "Must be one of: free, pro, etc."
    for reason in reasons:
        assert reason.endswith(".") and not reason.endswith("..") and ".)" not in reason and ". " not in reason, reason


def test_a_long_rejected_value_is_cut_and_non_text_values_read_as_json(owner):
    imp, errors = imports.import_contacts(owner, [{"email": "x" * 300}, {"email": "ok@example.com", "tags": 5},
                                                  {"email": ["a"]}, "nope"])
    by_row = {e["row"]: e for e in errors}
    assert len(by_row[1]["value"]) == imports.MAX_SHOWN_VALUE and by_row[1]["value"].endswith("…")
    assert by_row[2]["value"] == "5" and by_row[2]["field"] == "tags"
    assert by_row[3]["value"] == '["a"]'
    assert by_row[4]["value"] == "nope" and by_row[4]["message"] == "Must be an object with at least an email."


def test_an_error_stored_before_values_were_kept_has_no_value():
    error = ImportError_(row_number=1, field="email", message="Must be a valid email address (old text).")
    assert error.value is None and error.reason == "Must be a valid email address (old text)."
