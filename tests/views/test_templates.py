"""Templates in the dashboard: the list, the starter gallery, creating, history with restore, image uploads
served publicly, read-only viewers, other accounts' templates unreachable."""
import io

import pytest
from PIL import Image

from nudge.services import templates

HTMX = {"HX-Request": "true"}


@pytest.fixture
def owner_client(app, make_account, login):
    account, owner = make_account()
    client = app.test_client()
    login(client, owner)
    return client, account, owner


def png_file(name="hero.png"):
    out = io.BytesIO()
    Image.new("RGB", (120, 60), (20, 120, 200)).save(out, "PNG")
    out.seek(0)
    return out, name


def test_empty_state_points_to_the_gallery(owner_client):
    client, _, _ = owner_client
    html = client.get("/templates/").get_data(as_text=True)
    assert "No templates yet" in html and "Browse the starter gallery" in html


def test_the_gallery_shows_six_designs_with_thumbnails_that_load(owner_client):
    client, _, _ = owner_client
    html = client.get("/templates/gallery").get_data(as_text=True)
    for name in ("Newsletter", "Welcome", "Promotion", "Announcement"):
        assert name in html
    thumbnails = [part.split('"')[0] for part in html.split('<img src="')[1:]]
    assert len(thumbnails) >= 6
    for url in thumbnails:
        assert client.get(url).status_code == 200


def test_using_a_gallery_design_makes_an_own_copy_and_opens_the_editor(owner_client):
    client, account, _ = owner_client
    templates.sync_gallery()
    newsletter = next(t for t in templates.list_gallery() if t.slug == "newsletter")
    response = client.post("/templates/new", data={"name": "April news", "start": "gallery",
                                                   "copy_of": str(newsletter.id)})
    assert response.status_code == 302 and "/edit" in response.headers["Location"]
    html = client.get("/templates/").get_data(as_text=True)
    assert "April news" in html and "Newsletter" in html


def test_the_new_template_form_says_what_is_wrong(owner_client):
    client, _, _ = owner_client
    response = client.post("/templates/new", data={"name": "", "start": "blocks"})
    assert response.status_code == 422 and "aria-invalid" in response.get_data(as_text=True)
    response = client.post("/templates/new", data={"name": "X", "start": "gallery", "copy_of": ""})
    assert response.status_code == 422 and "Choose a gallery template" in response.get_data(as_text=True)


def test_code_templates_start_from_a_valid_skeleton(owner_client):
    client, account, _ = owner_client
    for start in ("mjml", "html"):
        assert client.post("/templates/new", data={"name": f"Code {start}", "start": start}).status_code == 302
    listed = client.get("/templates/").get_data(as_text=True)
    assert "MJML" in listed and "HTML" in listed


def test_history_lists_versions_and_restore_adds_one(owner_client):
    client, account, owner = owner_client
    template = templates.create_template(owner, account.id, name="Promo", format="mjml",
                                         content_source=templates.starter_source("mjml"))
    templates.save_version(owner, account.id, template.id,
                           content_source=templates.starter_source("mjml").replace("Write your", "Our"))
    html = client.get(f"/templates/{template.id}/versions").get_data(as_text=True)
    assert "Current" in html and "Restore" in html and owner.name in html
    response = client.post(f"/templates/{template.id}/versions/1/restore")
    assert response.status_code == 302
    assert templates.latest_version(template.id).version == 3
    assert "Write your" in templates.latest_version(template.id).content_source


def test_previews_are_sandboxed_documents_with_a_sample_contact(owner_client):
    client, account, owner = owner_client
    template = templates.create_template(owner, account.id, name="Hello", format="mjml",
                                         content_source=templates.starter_source("mjml"))
    response = client.get(f"/templates/{template.id}/preview")
    assert response.status_code == 200
    assert "script-src" not in response.headers["Content-Security-Policy"]
    assert "sandbox" in response.headers["Content-Security-Policy"]
    assert "Hello Alex" in response.get_data(as_text=True)


def test_rename_inline(owner_client):
    client, account, owner = owner_client
    template = templates.create_template(owner, account.id, name="Old")
    response = client.post(f"/templates/{template.id}/details", data={"name": "New name", "category": "Promotion"},
                           headers=HTMX)
    assert response.status_code == 200 and "toast" in response.headers["HX-Trigger"]
    assert (template.name, template.category) == ("New name", "Promotion")
    bad = client.post(f"/templates/{template.id}/details", data={"name": "", "category": ""}, headers=HTMX)
    assert bad.status_code == 422 and template.name == "New name"


def test_uploaded_images_are_served_publicly_and_listed_per_account(owner_client, app, make_account, login):
    client, account, owner = owner_client
    data, name = png_file()
    response = client.post("/templates/uploads", data={"file": (data, name)}, content_type="multipart/form-data",
                           headers={"Accept": "application/json"})
    assert response.status_code == 201, response.get_data(as_text=True)
    url = response.get_json()["url"]
    path = url.replace(app.config["BASE_URL"], "")
    public = app.test_client().get(path)
    assert public.status_code == 200 and public.mimetype == "image/png"
    assert public.headers["X-Content-Type-Options"] == "nosniff"
    assert name in client.get("/templates/uploads").get_data(as_text=True)

    other, other_owner = make_account()
    other_client = app.test_client()
    login(other_client, other_owner)
    assert name not in other_client.get("/templates/uploads").get_data(as_text=True)
    bad = client.post("/templates/uploads", data={"file": (io.BytesIO(b"<svg/>"), "x.svg")},
                      content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert bad.status_code == 422 and "PNG, JPEG, GIF or WebP" in bad.get_json()["error"]
    assert app.test_client().get(path.rsplit("/", 1)[0] + "/nothing.png").status_code == 404


def test_viewers_read_but_cannot_change(app, make_account, make_user, login):
    account, owner = make_account()
    viewer = make_user(account, role="viewer")
    template = templates.create_template(owner, account.id, name="Shared")
    client = app.test_client()
    login(client, viewer)
    html = client.get("/templates/").get_data(as_text=True)
    assert "Shared" in html and "New template" not in html and "Delete" not in html
    assert client.get(f"/templates/{template.id}").status_code == 200
    assert client.post(f"/templates/{template.id}/delete").status_code == 403
    assert client.post("/templates/new", data={"name": "x"}).status_code == 403


def test_other_accounts_templates_are_not_found(owner_client, make_account):
    client, _, _ = owner_client
    other, other_owner = make_account()
    theirs = templates.create_template(other_owner, other.id, name="Theirs")
    for url in (f"/templates/{theirs.id}", f"/templates/{theirs.id}/versions", f"/templates/{theirs.id}/preview"):
        assert client.get(url).status_code == 404
    assert client.post(f"/templates/{theirs.id}/delete").status_code == 404
    assert templates.latest_version(theirs.id) is not None


def test_delete_removes_the_template(owner_client):
    client, account, owner = owner_client
    template = templates.create_template(owner, account.id, name="Gone soon")
    assert client.post(f"/templates/{template.id}/delete").status_code == 302
    html = client.get("/templates/").get_data(as_text=True)
    assert "Template “Gone soon” deleted." in html and "No templates yet" in html


def test_saving_details_on_the_history_page_keeps_the_category(owner_client):
    client, account, owner = owner_client
    template = templates.create_template(owner, account.id, name="News", category="Newsletter")
    html = client.get(f"/templates/{template.id}/versions").get_data(as_text=True)
    for name in templates.CATEGORIES:
        assert f"<option{' selected' if name == 'Newsletter' else ''}>{name}</option>" in html
