"""CSV written for download opens in a spreadsheet as text, never as a formula."""
import csv
import io

import pytest

from nudge.services import contacts, custom_fields, exports, imports
from nudge.services.csv_safe import safe_cell


@pytest.mark.parametrize("value, written", [
    ("=HYPERLINK(\"http://evil.example\")", "'=HYPERLINK(\"http://evil.example\")"),
    ("+1+1", "'+1+1"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("Ann", "Ann"), ("", ""), (None, ""), (42, "42"), (-5, "'-5"), ("a=b", "a=b"),
])
def test_cells_that_start_a_formula_get_a_leading_apostrophe(value, written):
    assert safe_cell(value) == written


def rows(chunks):
    return list(csv.reader(io.StringIO("".join(chunks))))


def test_the_contacts_export_escapes_every_cell(make_account):
    account, owner = make_account()
    custom_fields.create_field(owner, name="note")
    contacts.create_contact(owner, {"email": "ann@example.com", "first_name": "=cmd|' /C calc'!A0",
                                    "last_name": "@Lee", "tags": ["+vip"], "custom_fields": {"note": "-1+2"}})
    export = exports.export_contacts(owner, {}, "csv")
    header, row = rows(export.chunks())
    assert header[-1] == "note"
    assert row[:5] == ["ann@example.com", "'=cmd|' /C calc'!A0", "'@Lee", "active", "'+vip"]
    assert row[-1] == "'-1+2"


def test_the_import_errors_csv_escapes_every_cell(make_account, tmp_path):
    _, owner = make_account()
    path = tmp_path / "people.csv"
    path.write_text("email,=HYPERLINK(1)\nann@example.com,=1+2\n")
    imp = imports.import_file(owner, str(path), mapping={"email": "email",
                                                         "=HYPERLINK(1)": {"field": "custom.score", "type": "number"}})
    assert rows(imports.errors_csv(owner.account_id, imp.id))[1][:3] == ["2", "'=HYPERLINK(1)", "'=1+2"]
