"""A CSV import through the dashboard in a real browser: upload, map a column to a new custom field,
import, read the report (fixtures in tests/browser/conftest.py)."""
import pytest

import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import Contact
from tests.browser.conftest import sign_in

pytestmark = pytest.mark.browser

CSV = ("Email,First Name,Tags,Company\n"
       "ann@shop.io,Ann,vip;customer,Acme\n"
       "not-an-email,Carl,,Beta\n"
       "bob@shop.io,Bob,customer,Beta\n")


def test_import_a_file_into_a_new_custom_field_and_read_the_report(chromium, server, make_account, tmp_path):
    from playwright.sync_api import expect

    app, base_url = server
    account, owner = make_account(mfa=False)
    path = tmp_path / "customers.csv"
    path.write_text(CSV, encoding="utf-8")

    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, base_url, owner)

    page.goto(f"{base_url}/imports/new")
    page.set_input_files("input[type=file]", str(path))
    page.locator("main button[type=submit]").click()
    expect(page.locator("h1")).to_contain_text("Map the columns of customers.csv")

    # Company matches no field: "Don't import" is guessed, and the new-field inputs stay out of the way
    # until "Create a custom field…" is chosen.
    company = page.locator("#map-3")
    expect(company).to_have_value("")
    expect(page.locator("#name-3")).to_be_hidden()
    expect(page.locator("#name-0")).to_be_hidden()
    company.select_option("new")
    expect(page.locator("#name-3")).to_be_visible()
    expect(page.locator("#name-3")).to_have_value("company")
    expect(page.locator("#name-0")).to_be_hidden()
    # Every custom field type is offered; a choice field's options appear only for a choice.
    expect(page.locator("#type-3 option")).to_have_text(["Text", "Number", "Date", "Yes / no", "Choice"])
    expect(page.locator("#options-3")).to_be_hidden()
    page.locator("#type-3").select_option("choice")
    expect(page.locator("#options-3")).to_be_visible()
    expect(page.locator("#options-3")).to_have_value("Acme, Beta")
    page.locator("#type-3").select_option("text")
    expect(page.locator("#options-3")).to_be_hidden()
    page.fill("input[name=tags]", "spring-fair")

    # The permission confirmation is required: without it the wizard comes back with the reason, choices kept.
    page.get_by_role("button", name="Start import").click()
    expect(page.locator("main")).to_contain_text("Confirm that these contacts gave permission to be emailed.")
    expect(page.locator("#map-3")).to_have_value("new")
    expect(page.locator("input[name=tags]")).to_have_value("spring-fair")
    page.get_by_label("These contacts gave permission to be emailed").check()
    page.get_by_role("button", name="Start import").click()

    expect(page.locator("h1")).to_contain_text("customers.csv")
    report = page.locator("main")
    expect(report).to_contain_text("Import finished")
    expect(report).to_contain_text(f"Confirmed by {owner.email}")
    # The rejected row as the spreadsheet numbers it (header = row 1), with the rejected value.
    row = page.locator("tr", has_text="not-an-email")
    expect(row.locator("td").first).to_have_text("3")
    expect(row).to_contain_text("Must be a valid email address: an email address must have an @-sign.")
    assert errors == []

    with app.app_context():
        rows = db.session.execute(sa.select(Contact.email, Contact.tags, Contact.custom_fields)
                                  .where(Contact.account_id == account.id).order_by(Contact.email)).all()
    assert [tuple(row) for row in rows] == [
        ("ann@shop.io", ["vip", "customer", "spring-fair"], {"company": "Acme"}),
        ("bob@shop.io", ["customer", "spring-fair"], {"company": "Beta"})]
