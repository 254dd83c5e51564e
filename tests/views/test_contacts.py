"""Dashboard contacts pages: list with filters and bulk actions, add, contact page with edit in place,
custom fields, suppressions; viewers read only; accounts never see each other's contacts."""
import re

import pytest
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import Contact
from nudge.services import contacts, custom_fields, suppressions

HTMX = {"HX-Request": "true"}


@pytest.fixture
def shop(make_account):
    account, owner = make_account()
    custom_fields.create_field(owner, name="seats", label="Seats", type="number")
    for i, email in enumerate(("ann@example.com", "bob@example.com", "carol@example.org")):
        contacts.create_contact(owner, {"email": email, "first_name": email.split("@")[0].title(),
                                        "tags": ["customer"] if i < 2 else None}, source="test")
    return account, owner


def contact(email):
    db.session.expire_all()
    return db.session.scalar(sa.select(Contact).where(Contact.email == email))


def test_list_search_filters_sort_and_pagination(client, login, shop):
    _, owner = shop
    login(client, owner)
    html = client.get("/contacts/").get_data(as_text=True)
    assert "ann@example.com" in html and "carol@example.org" in html
    assert "1–3 of 3" in html
    assert 'hx-push-url="true"' in html and "delay:300ms" in html
    fragment = client.get("/contacts/?q=CAROL", headers=HTMX).get_data(as_text=True)
    assert fragment.lstrip().startswith("<div id=\"contact-results\"") or 'id="contact-results"' in fragment[:400]
    assert "carol@example.org" in fragment and "ann@example.com" not in fragment and "<html" not in fragment
    html = client.get("/contacts/?tag=customer&sort=-email").get_data(as_text=True)
    assert html.index("bob@example.com") < html.index("ann@example.com") and "carol@example.org" not in html
    assert 'aria-sort="descending"' in html
    html = client.get("/contacts/?status=unsubscribed").get_data(as_text=True)
    assert "No contacts match" in html
    html = client.get("/contacts/?sort=nonsense").get_data(as_text=True)
    assert "sort:" in html  # the problem is shown, the page still works
    for i in range(60):
        contacts.create_contact(owner, {"email": f"p{i}@example.net"})
    html = client.get("/contacts/").get_data(as_text=True)
    assert "1–50 of 63" in html and 'rel="next"' in html
    assert "51–63 of 63" in client.get("/contacts/?page=2").get_data(as_text=True)


def test_empty_state(client, login, make_account):
    _, owner = make_account()
    login(client, owner)
    html = client.get("/contacts/").get_data(as_text=True)
    assert "No contacts yet" in html and "Add a contact" in html


def test_add_contact_with_custom_field_validation(client, login, shop):
    _, owner = shop
    login(client, owner)
    assert "Seats" in client.get("/contacts/new").get_data(as_text=True)
    response = client.post("/contacts/new", data={"email": "nope", "cf.seats": "lots"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "valid email" in html and "Must be a number" in html and 'aria-invalid="true"' in html
    response = client.post("/contacts/new", data={"email": "ann@example.com"})
    assert response.status_code == 422 and "already exists" in response.get_data(as_text=True)
    response = client.post("/contacts/new", data={"email": "dan@example.com", "first_name": "Dan",
                                                  "tags": "a, b", "cf.seats": "4"})
    assert response.status_code == 303
    dan = contact("dan@example.com")
    assert dan.tags == ["a", "b"] and dan.custom_fields == {"seats": 4} and dan.source == "dashboard"
    assert response.headers["Location"].endswith(f"/contacts/{dan.id}")


def test_contact_page_edit_in_place_tags_and_activity(client, login, shop):
    _, owner = shop
    login(client, owner)
    ann = contact("ann@example.com")
    html = client.get(f"/contacts/{ann.id}").get_data(as_text=True)
    assert "Subscription and consent" in html and "test" in html and "Unsubscribe" in html
    form = client.get(f"/contacts/{ann.id}/edit", headers=HTMX).get_data(as_text=True)
    assert 'id="contact-details"' in form and 'name="cf.seats"' in form and "<html" not in form
    bad = client.post(f"/contacts/{ann.id}/edit", headers=HTMX, data={"email": "ann@example.com", "cf.seats": "x"})
    assert bad.status_code == 422 and "Must be a number" in bad.get_data(as_text=True)
    good = client.post(f"/contacts/{ann.id}/edit", headers=HTMX,
                       data={"email": "ann@example.com", "first_name": "Annie", "last_name": "Lee", "cf.seats": "9"})
    assert good.status_code == 200 and "Annie" in good.get_data(as_text=True) and "toast" in good.headers["HX-Trigger"]
    assert contact("ann@example.com").custom_fields == {"seats": 9}
    tags = client.post(f"/contacts/{ann.id}/tags", headers=HTMX, data={"tag": "vip, new"})
    assert "vip" in tags.get_data(as_text=True)
    client.post(f"/contacts/{ann.id}/tags", headers=HTMX, data={"remove": "customer"})
    assert contact("ann@example.com").tags == ["new", "vip"]
    activity = client.get(f"/contacts/{ann.id}?tab=activity", headers=HTMX).get_data(as_text=True)
    assert "Tags added" in activity and "Subscribed" in activity and "Tags removed" in activity


def test_unsubscribe_delete_restore(client, login, shop):
    account, owner = shop
    login(client, owner)
    ann = contact("ann@example.com")
    assert client.post(f"/contacts/{ann.id}/unsubscribe").status_code == 303
    assert contact("ann@example.com").status == "unsubscribed"
    assert suppressions.is_suppressed(account.id, "ann@example.com")
    response = client.post(f"/contacts/{ann.id}/delete", follow_redirects=True)
    html = response.get_data(as_text=True)
    assert "was deleted" in html and "Restore" in html
    assert "ann@example.com" not in client.get("/contacts/").get_data(as_text=True)
    assert "ann@example.com" in client.get("/contacts/?status=deleted").get_data(as_text=True)
    client.post(f"/contacts/{ann.id}/restore")
    assert contact("ann@example.com").status == "unsubscribed"


def test_bulk_actions_on_selection_and_on_filter_with_undo(client, login, shop):
    _, owner = shop
    login(client, owner)
    ann, bob = contact("ann@example.com"), contact("bob@example.com")
    response = client.post("/contacts/bulk", headers=HTMX, data={"action": "add_tag", "bulk_tag": "vip",
                                                                 "ids": [str(ann.id), str(bob.id)]})
    assert response.status_code == 200 and "added to 2 contacts" in response.headers["HX-Trigger"]
    assert contact("bob@example.com").tags == ["customer", "vip"]
    response = client.post("/contacts/bulk", headers=HTMX, data={"action": "remove_tag", "bulk_tag": "customer",
                                                                 "scope": "all", "q": "example.com",
                                                                 "tag": "customer"})
    assert "removed from 2 contacts" in response.headers["HX-Trigger"]
    assert "No contacts match" in response.get_data(as_text=True)  # the list re-rendered with its filters
    response = client.post("/contacts/bulk", headers=HTMX, data={"action": "delete", "scope": "all", "tag": "vip"})
    assert "2 contacts deleted" in response.headers["HX-Trigger"]
    html = response.get_data(as_text=True)
    assert "Undo" in html
    deleted_at = re.search(r'name="deleted_at" value="([^"]+)"', html).group(1)
    assert contact("ann@example.com").status == "deleted"
    client.post("/contacts/undo-delete", headers=HTMX, data={"deleted_at": deleted_at})
    assert contact("ann@example.com").status == "active" and contact("bob@example.com").status == "active"
    response = client.post("/contacts/bulk", headers=HTMX, data={"action": "add_tag", "bulk_tag": ""})
    assert "error" in response.headers["HX-Trigger"]


def test_viewer_reads_but_cannot_write(client, login, shop, make_user):
    account, _ = shop
    viewer = make_user(account, role="viewer")
    login(client, viewer)
    ann = contact("ann@example.com")
    html = client.get("/contacts/").get_data(as_text=True)
    assert "ann@example.com" in html
    assert "Add contact" not in html and 'name="ids"' not in html and "data-bulk-bar" not in html
    page = client.get(f"/contacts/{ann.id}").get_data(as_text=True)
    assert "/unsubscribe" not in page and "/edit" not in page and "/delete" not in page and "/tags" not in page
    assert "Add field" not in client.get("/contacts/custom-fields").get_data(as_text=True)
    assert "Add to suppression list" not in client.get("/contacts/suppressions").get_data(as_text=True)
    for url, data in ((f"/contacts/{ann.id}/delete", {}), (f"/contacts/{ann.id}/unsubscribe", {}),
                      (f"/contacts/{ann.id}/edit", {"email": "x@example.com"}), ("/contacts/new", {"email": "x@e.com"}),
                      ("/contacts/bulk", {"action": "delete", "scope": "all"}), (f"/contacts/{ann.id}/tags", {"tag": "x"}),
                      ("/contacts/custom-fields", {"name": "x"}), ("/contacts/suppressions", {"emails": "a@b.com"}),
                      ("/contacts/suppressions/remove", {"email": "a@b.com"})):
        assert client.post(url, data=data).status_code == 403, url
    assert client.get("/contacts/new").status_code == 403
    assert contact("ann@example.com").status == "active"


def test_tenant_isolation(client, login, shop, make_account):
    _, _ = shop
    other, other_owner = make_account()
    contacts.create_contact(other_owner, {"email": "zed@example.com"})
    login(client, other_owner)
    html = client.get("/contacts/").get_data(as_text=True)
    assert "zed@example.com" in html and "ann@example.com" not in html and "1–1 of 1" in html
    assert "customer" not in html  # tag picker holds only this account's tags
    ann = contact("ann@example.com")
    assert client.get(f"/contacts/{ann.id}").status_code == 404
    assert client.post(f"/contacts/{ann.id}/delete").status_code == 404
    assert client.get(f"/contacts/{ann.id}/edit").status_code == 404
    client.post("/contacts/bulk", data={"action": "delete", "ids": [str(ann.id)]})
    assert contact("ann@example.com").status == "active"


def test_custom_fields_page(client, login, shop):
    _, owner = shop
    login(client, owner)
    html = client.get("/contacts/custom-fields").get_data(as_text=True)
    assert "seats" in html and "1 of 50 used" in html
    response = client.post("/contacts/custom-fields", data={"name": "Bad Name", "label": "X", "type": "text"})
    assert response.status_code == 422 and "lower-case" in response.get_data(as_text=True)
    response = client.post("/contacts/custom-fields", data={"name": "plan", "label": "Plan", "type": "choice",
                                                            "options": "free\npro\n"})
    assert response.status_code == 303
    assert custom_fields.get_field(owner.account_id, "plan").options == ["free", "pro"]
    form = client.get("/contacts/custom-fields/plan/edit", headers=HTMX).get_data(as_text=True)
    assert 'id="field-plan"' in form and "<html" not in form
    bad = client.post("/contacts/custom-fields/plan/edit", headers=HTMX, data={"label": "", "options": "a"})
    assert bad.status_code == 422
    ok = client.post("/contacts/custom-fields/plan/edit", headers=HTMX, data={"label": "Tier", "options": "a\nb"})
    assert ok.status_code == 200 and "Tier" in ok.get_data(as_text=True)
    assert client.post("/contacts/custom-fields/plan/delete").status_code == 303
    with pytest.raises(Exception):
        custom_fields.get_field(owner.account_id, "plan")


def test_custom_field_limit_shown(client, login, make_account):
    _, owner = make_account()
    for i in range(50):
        custom_fields.create_field(owner, name=f"f{i}")
    login(client, owner)
    html = client.get("/contacts/custom-fields").get_data(as_text=True)
    assert "reached the limit of 50" in html
    response = client.post("/contacts/custom-fields", data={"name": "extra", "type": "text"})
    assert response.status_code == 422 and "Limit of 50 custom fields reached" in response.get_data(as_text=True)


def test_suppressions_page(client, login, shop):
    account, owner = shop
    login(client, owner)
    assert "No suppressed addresses" in client.get("/contacts/suppressions").get_data(as_text=True)
    response = client.post("/contacts/suppressions", data={"emails": "ann@example.com, x@example.com\nbroken",
                                                           "reason": "manual"})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "2 addresses added" in html and "1 not valid" in html and "broken" in html
    assert contact("ann@example.com").status == "unsubscribed"
    import io
    response = client.post("/contacts/suppressions", data={
        "emails": "", "reason": "complaint", "file": (io.BytesIO(b"email\nbob@example.com\n"), "list.csv")},
        content_type="multipart/form-data")
    assert response.status_code == 303
    html = client.get("/contacts/suppressions?q=bob").get_data(as_text=True)
    assert "bob@example.com" in html and "ann@example.com" not in html and "Complaint" in html
    assert client.post("/contacts/suppressions", data={"emails": ""}).status_code == 422
    client.post("/contacts/suppressions/remove", data={"email": "ann@example.com"})
    assert not suppressions.is_suppressed(account.id, "ann@example.com")
    assert contact("ann@example.com").status == "unsubscribed"  # not re-activated


def test_segment_filter_in_the_list(client, login, shop):
    from nudge.services import segments
    _, owner = shop
    segment = segments.create_segment(owner, "Carols", conditions={
        "match": "all", "conditions": [{"field": "email", "op": "starts_with", "value": "carol"}]})
    login(client, owner)
    html = client.get("/contacts/").get_data(as_text=True)
    assert 'name="segment_id"' in html and "Carols" in html
    html = client.get(f"/contacts/?segment_id={segment.id}").get_data(as_text=True)
    assert "carol@example.org" in html and "ann@example.com" not in html


def test_deleted_view_restores_one_row(client, login, shop):
    _, owner = shop
    ann = contact("ann@example.com")
    contacts.delete_contact(owner, ann.id)
    login(client, owner)
    html = client.get("/contacts/?status=deleted").get_data(as_text=True)
    assert f'name="restore_id" value="{ann.id}"' in html and "Deleted" in html
    response = client.post("/contacts/bulk", headers=HTMX, data={"restore_id": str(ann.id), "status": "deleted"})
    assert "1 contact restored" in response.headers["HX-Trigger"]
    assert contact("ann@example.com").status == "active"
    assert "No deleted contacts" in response.get_data(as_text=True)


def test_the_list_offers_an_export_of_the_current_filter(client, make_account, login):
    account, owner = make_account()
    for n, tags in enumerate((["vip"], ["vip"], [])):
        contacts.create_contact(owner, {"email": f"p{n}@x.example", "tags": tags}, source="dashboard")
    login(client, owner)
    page = client.get("/contacts/?tag=vip").get_data(as_text=True)
    assert "Export these 2 contacts" in page
    link = re.search(r'href="(/imports/export\?[^"]*format=csv[^"]*)"', page).group(1).replace("&amp;", "&")
    exported = client.get(link)
    assert exported.status_code == 200
    lines = exported.get_data(as_text=True).strip().splitlines()
    assert len(lines) == 3 and "p2@x.example" not in exported.get_data(as_text=True)


def test_an_address_in_another_case_is_the_same_contact(client, login, shop):
    account, owner = shop
    login(client, owner)
    response = client.post("/contacts/new", data={"email": "ANN@Example.com"})
    assert response.status_code == 422 and "already exists" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contact).where(
        Contact.account_id == account.id)) == 3
    response = client.post("/contacts/suppressions", data={"emails": "BOB@EXAMPLE.COM", "reason": "manual"},
                           follow_redirects=True)
    assert "BOB@example.com" in response.get_data(as_text=True)  # the domain is normalised, not the mailbox
    assert contact("bob@example.com").status == "unsubscribed"
    client.post("/contacts/suppressions/remove", data={"email": "bob@example.com"})
    assert not suppressions.is_suppressed(account.id, "BOB@EXAMPLE.COM")


def test_number_fields_refuse_nan_and_infinity(client, login, shop):
    _, owner = shop
    login(client, owner)
    response = client.post("/contacts/new", data={"email": "dan@example.com", "cf.seats": "inf"})
    assert response.status_code == 422
    assert "The number field &#39;seats&#39; must be finite" in response.get_data(as_text=True)
    assert contact("dan@example.com") is None
    ann = contact("ann@example.com")
    bad = client.post(f"/contacts/{ann.id}/edit", headers=HTMX, data={"email": "ann@example.com", "cf.seats": "NaN"})
    assert bad.status_code == 422 and "must be finite" in bad.get_data(as_text=True)
    assert contact("ann@example.com").custom_fields == {}


def test_activity_names_the_campaign_and_shows_the_clicked_url(client, login, shop):
    """The activity links each email event to its campaign by name and shows a click's URL; the message id
    and provider (machinery) are not shown."""
    from nudge.services import tracking
    from tests.campaign_helpers import sent_message
    account, owner = shop
    login(client, owner)
    ann = contact("ann@example.com")
    campaign, message = sent_message(account, ann, link="https://shop.example/spring?utm=a&b=1")
    tracking.record_click(message.id, "https://shop.example/spring?utm=a&b=1")
    html = client.get(f"/contacts/{ann.id}?tab=activity", headers=HTMX).get_data(as_text=True)
    assert "Link clicked" in html
    assert f'<a href="/campaigns/{campaign.id}">Spring</a>' in html
    assert 'href="https://shop.example/spring?utm=a&amp;b=1"' in html
    assert str(message.id) not in html and "message id" not in html


def test_activity_never_links_a_script_url(client, login, shop):
    from nudge.services import events
    account, owner = shop
    login(client, owner)
    ann = contact("ann@example.com")
    events.emit(account.id, "email.clicked", contact_id=ann.id, data={"url": "javascript:alert(1)"})
    db.session.commit()
    html = client.get(f"/contacts/{ann.id}?tab=activity", headers=HTMX).get_data(as_text=True)
    assert "javascript:alert(1)" in html and 'href="javascript:' not in html
