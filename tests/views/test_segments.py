"""Segments in the dashboard: list, the builder (form fields <-> conditions), live count, static members,
viewers read-only, other accounts' segments unreachable."""
import re

import pytest
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import Contact, Segment
from nudge.services import custom_fields, segments

HTMX = {"HX-Request": "true"}


def add_contacts(account, *emails, **values):
    contacts = [Contact(account_id=account.id, email=email, custom_fields=values.get("custom_fields", {}),
                        tags=values.get("tags")) for email in emails]
    db.session.add_all(contacts)
    db.session.commit()
    return contacts


@pytest.fixture
def owner_client(app, make_account, login):
    account, owner = make_account()
    client = app.test_client()
    login(client, owner)
    return client, account, owner


def test_empty_state_and_list(owner_client):
    client, account, owner = owner_client
    html = client.get("/segments/").get_data(as_text=True)
    assert "No segments yet" in html and "Create your first segment" in html
    add_contacts(account, "a@gmail.com", "b@gmail.com")
    segments.create_segment(owner, "Gmail", "dynamic", {"match": "all", "conditions": [
        {"field": "email", "op": "ends_with", "value": "@gmail.com"}]})
    html = client.get("/segments/").get_data(as_text=True)
    assert "Gmail" in html and ">2<" in html and "Dynamic" in html


def test_create_with_the_builder_form(owner_client):
    client, account, owner = owner_client
    custom_fields.create_field(owner, name="score", type="number")
    add_contacts(account, "a@gmail.com", "b@gmail.com", tags=["vip"])
    add_contacts(account, "c@example.com", custom_fields={"score": 80})
    form = {
        "name": "VIPs or high scores", "type": "dynamic",
        "r-kind": "group", "r-match": "any",
        "r-0-kind": "rule", "r-0-field": "tags", "r-0-op": "contains_any", "r-0-value": "vip, beta",
        "r-1-kind": "group", "r-1-match": "all",
        "r-1-0-kind": "rule", "r-1-0-field": "custom.score", "r-1-0-op": "gte", "r-1-0-value": "50",
        "r-1-1-kind": "event", "r-1-1-op": "has_not", "r-1-1-event": "opened", "r-1-1-days": "30",
        "r-1-1-campaign": "",
    }
    live = client.post("/segments/count", data=form, headers=HTMX)
    assert live.status_code == 200
    assert re.search(r"<strong>3</strong>\s*contacts", live.get_data(as_text=True))

    response = client.post("/segments/new", data=form)
    assert response.status_code == 302
    segment = db.session.scalar(sa.select(Segment).where(Segment.account_id == account.id))
    assert segment.conditions == {"match": "any", "conditions": [
        {"field": "tags", "op": "contains_any", "value": ["vip", "beta"]},
        {"match": "all", "conditions": [
            {"field": "custom.score", "op": "gte", "value": 50},
            {"event": "opened", "op": "has_not", "within_days": 30}]}]}
    assert segment.contact_count == 3
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    # The saved conditions render back into the builder, and the preview lists matching contacts.
    assert 'name="r-1-0-value"' in page and 'value="50"' in page and 'value="vip, beta"' in page
    assert "c@example.com" in page
    assert "<script>" not in page and "style=" not in page


def test_invalid_rules_show_errors_next_to_the_rule(owner_client):
    client, account, _ = owner_client
    form = {"name": "", "type": "dynamic", "r-kind": "group", "r-match": "all",
            "r-0-kind": "rule", "r-0-field": "email", "r-0-op": "contains", "r-0-value": " ",
            "r-1-kind": "event", "r-1-op": "has", "r-1-event": "opened", "r-1-days": "-3"}
    response = client.post("/segments/new", data=form)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "Must not be empty." in html and "Must be between 1 and" in html
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Segment)) == 0
    live = client.post("/segments/count", data=form, headers=HTMX).get_data(as_text=True)
    assert "Finish the rules" in live


def test_builder_buttons_add_and_remove(owner_client):
    client, _, _ = owner_client
    form = {"r-kind": "group", "r-match": "all",
            "r-0-kind": "rule", "r-0-field": "email", "r-0-op": "contains", "r-0-value": "gmail"}
    html = client.post("/segments/builder", data={**form, "action": "add-group:r"}, headers=HTMX).get_data(as_text=True)
    assert 'name="r-1-kind" value="group"' in html and 'name="r-1-0-field"' in html
    assert 'id="segment-live" aria-live="polite" hx-swap-oob="true"' in html
    html = client.post("/segments/builder", data={**form, "action": "add-event:r"}, headers=HTMX).get_data(as_text=True)
    assert 'name="r-1-kind" value="event"' in html
    html = client.post("/segments/builder", data={**form, "action": "remove:r-0"}, headers=HTMX).get_data(as_text=True)
    assert 'name="r-0-kind"' not in html and "every contact matches" in html
    # Changing the field offers that field's operators (tags: contains_any...), keeping the row.
    changed = {**form, "r-0-field": "tags"}
    html = client.post("/segments/builder", data=changed, headers=HTMX).get_data(as_text=True)
    assert 'value="contains_any" selected' in html and 'value="starts_with"' not in html
    # Without htmx the same buttons re-render the whole page.
    page = client.post("/segments/new", data={**form, "name": "x", "action": "add-rule:r"})
    assert page.status_code == 200 and 'name="r-1-field"' in page.get_data(as_text=True)


def test_edit_and_delete(owner_client):
    client, account, owner = owner_client
    add_contacts(account, "a@gmail.com", "b@example.com")
    segment = segments.create_segment(owner, "Gmail", "dynamic", {"match": "all", "conditions": [
        {"field": "email", "op": "ends_with", "value": "@gmail.com"}]})
    page = client.get(f"/segments/{segment.id}").get_data(as_text=True)
    assert "Save segment" in page and "a@gmail.com" in page and "b@example.com" not in page
    form = {"name": "Example", "r-kind": "group", "r-match": "all",
            "r-0-kind": "rule", "r-0-field": "email", "r-0-op": "ends_with", "r-0-value": "@example.com"}
    assert client.post(f"/segments/{segment.id}", data=form).status_code == 302
    db.session.refresh(segment)
    assert segment.name == "Example" and segment.contact_count == 1
    assert client.post(f"/segments/{segment.id}/delete").status_code == 302
    assert db.session.get(Segment, segment.id) is None


def test_static_members_by_email(owner_client, make_account):
    client, account, owner = owner_client
    other, _ = make_account()
    add_contacts(other, "theirs@example.com")
    ann, bob = add_contacts(account, "ann@example.com", "bob@example.com")
    response = client.post("/segments/new", data={"name": "Picked", "type": "static", "r-kind": "group"})
    assert response.status_code == 302
    segment = db.session.scalar(sa.select(Segment).where(Segment.account_id == account.id))
    assert segment.type == "static" and segment.conditions == {"match": "all", "conditions": []}
    client.post(f"/segments/{segment.id}/members", data={"emails": "ANN@example.com, theirs@example.com\nbob@example.com"})
    page = client.get(f"/segments/{segment.id}").get_data(as_text=True)
    assert "ann@example.com" in page and "bob@example.com" in page and "theirs@example.com" not in page
    assert "Add contacts by email" in page
    client.post(f"/segments/{segment.id}/members/remove", data={"contact_id": str(ann.id)})
    db.session.refresh(segment)
    assert segment.contact_count == 1


def test_viewer_reads_but_cannot_write(app, owner_client, make_user, login):
    _, account, owner = owner_client
    add_contacts(account, "a@gmail.com")
    segment = segments.create_segment(owner, "Gmail", "dynamic", {"match": "all", "conditions": [
        {"field": "email", "op": "ends_with", "value": "@gmail.com"}]})
    viewer = make_user(account, role="viewer")
    client = app.test_client()
    login(client, viewer)
    index = client.get("/segments/").get_data(as_text=True)
    assert "Gmail" in index and "New segment" not in index
    page = client.get(f"/segments/{segment.id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Email ends with @gmail.com" in html and "Save segment" not in html and "a@gmail.com" in html
    assert client.get("/segments/new").status_code == 403
    assert client.post("/segments/new", data={"name": "x"}).status_code == 403
    assert client.post(f"/segments/{segment.id}", data={"name": "x"}).status_code == 403
    assert client.post(f"/segments/{segment.id}/delete").status_code == 403
    assert client.post("/segments/builder", data={}).status_code == 403
    assert db.session.get(Segment, segment.id).name == "Gmail"


def test_other_accounts_segments_are_not_found(app, owner_client, make_account, login):
    _, account, owner = owner_client
    segment = segments.create_segment(owner, "Mine", "static")
    other, other_owner = make_account()
    client = app.test_client()
    login(client, other_owner)
    assert client.get(f"/segments/{segment.id}").status_code == 404
    assert client.post(f"/segments/{segment.id}/delete").status_code == 404
    assert client.post(f"/segments/{segment.id}/members", data={"emails": "x@example.com"}).status_code == 404
    assert "Mine" not in client.get("/segments/").get_data(as_text=True)


def test_view_in_contacts_filters_the_contact_list(owner_client):
    client, account, owner = owner_client
    add_contacts(account, "a@gmail.com", "b@example.com")
    segment = segments.create_segment(owner, "Gmail", "dynamic", {"match": "all", "conditions": [
        {"field": "email", "op": "ends_with", "value": "@gmail.com"}]})
    page = client.get(f"/segments/{segment.id}").get_data(as_text=True)
    link = f"/contacts/?segment_id={segment.id}"
    assert f'href="{link}"' in page
    listing = client.get(link).get_data(as_text=True)
    assert "a@gmail.com" in listing and "b@example.com" not in listing


def _rules(count, prefix="r"):
    form = {"name": "Many", "type": "dynamic", "r-kind": "group", "r-match": "all"}
    for index in range(count):
        form.update({f"{prefix}-{index}-kind": "rule", f"{prefix}-{index}-field": "email",
                     f"{prefix}-{index}-op": "contains", f"{prefix}-{index}-value": "x"})
    return form


def test_builder_form_over_the_node_cap_is_refused_while_parsing(app, owner_client):
    from werkzeug.datastructures import MultiDict

    from nudge.blueprints.segments import conditions_from_form
    from nudge.errors import ValidationError
    client, account, _ = owner_client
    # The service's own cap (100) still speaks for a form at the limit.
    response = client.post("/segments/new", data=_rules(segments.MAX_CONDITIONS + 1))
    assert response.status_code == 422
    assert f"A segment may have at most {segments.MAX_CONDITIONS} conditions." in response.get_data(as_text=True)
    live = client.post("/segments/count", data=_rules(150), headers=HTMX).get_data(as_text=True)
    assert "at most 100 conditions" in live
    builder = client.post("/segments/builder", data=_rules(150), headers=HTMX)
    assert builder.status_code == 422 and "at most 100 conditions" in builder.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Segment)) == 0
    # 1,500 nodes, and 50,000: refused at the 101st node, whatever comes after.
    for count in (1_500, 50_000):
        form = MultiDict((f"r-{i}-kind", "rule") for i in range(count))
        with app.test_request_context():
            with pytest.raises(ValidationError, match="at most 100 conditions"):
                conditions_from_form(form, account.id)


def test_builder_form_nested_deeper_than_the_cap_is_refused(app, owner_client):
    from werkzeug.datastructures import MultiDict

    from nudge.blueprints.segments import conditions_from_form
    from nudge.errors import ValidationError
    client, account, owner = owner_client
    form = {"name": "Deep", "type": "dynamic", "r-kind": "group"}
    node = "r"
    for _ in range(segments.MAX_DEPTH + 1):
        node += "-0"
        form[f"{node}-kind"] = "group"
    response = client.post("/segments/new", data=form)
    assert response.status_code == 422
    assert f"nested at most {segments.MAX_DEPTH} levels deep" in response.get_data(as_text=True)
    # A 1,000-level chain of keys costs one scan and no recursion.
    deep = MultiDict([("r-kind", "group")] + [("r" + "-0" * n + "-kind", "group") for n in range(1, 1000)])
    with app.test_request_context():
        with pytest.raises(ValidationError, match="levels deep"):
            conditions_from_form(deep, account.id)
    # Editing a saved segment with such a form keeps the stored conditions on the page.
    segment = segments.create_segment(owner, "Gmail", "dynamic", {"match": "all", "conditions": [
        {"field": "email", "op": "ends_with", "value": "@gmail.com"}]})
    response = client.post(f"/segments/{segment.id}", data=form)
    assert response.status_code == 422 and 'value="@gmail.com"' in response.get_data(as_text=True)
    db.session.refresh(segment)
    assert segment.conditions["conditions"][0]["value"] == "@gmail.com"


def test_add_rule_stops_at_the_cap(owner_client):
    client, _, _ = owner_client
    form = _rules(segments.MAX_CONDITIONS)
    html = client.post("/segments/builder", data={**form, "action": "add-rule:r"}, headers=HTMX).get_data(as_text=True)
    assert f'name="r-{segments.MAX_CONDITIONS - 1}-kind"' in html
    assert f'name="r-{segments.MAX_CONDITIONS}-kind"' not in html
