"""Templates and their versions: every save is a version, nothing is ever lost, tenants and roles hold."""
import io

import pytest
from PIL import Image

from nudge.errors import Forbidden, NotFound, ValidationError
from nudge.services import email_doc, templates, uploads

MJML = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Hi {{ contact.first_name | default("there") }}</mj-text>
<mj-text>{{ account.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
</mj-column></mj-section></mj-body></mjml>"""


def doc_with_heading(text):
    doc = email_doc.new_document()
    doc = email_doc.apply_op(doc, {"op": "add", "type": "heading", "to": {"parent": None, "index": 0}})
    block_id = doc["blocks"][0]["id"]
    return email_doc.apply_op(doc, {"op": "update", "id": block_id, "fields": {"text": text}})


def test_a_new_template_starts_at_version_one_with_compiled_html(make_account):
    account, owner = make_account()
    template = templates.create_template(owner, account.id, name="Newsletter", category="Newsletter",
                                         content_json=doc_with_heading("Spring news"))
    version = templates.latest_version(template.id)
    assert (template.current_version, version.version, version.format) == (1, 1, "blocks")
    assert "Spring news" in version.content_html and "Spring news" in version.content_text
    assert version.created_by == owner.id


def test_each_changed_save_is_a_new_version_and_an_identical_save_is_not(make_account):
    account, owner = make_account()
    template = templates.create_template(owner, account.id, name="T", content_json=doc_with_heading("One"))
    second = templates.save_version(owner, account.id, template.id, content_json=doc_with_heading("Two"), base_version=1)
    assert (second.version.version, second.unchanged, second.conflict) == (2, False, False)
    same = templates.save_version(owner, account.id, template.id, content_json=second.version.content_json,
                                  base_version=2)
    assert same.unchanged and same.version.version == 2
    assert [v.version for v, _ in templates.list_versions(account.id, template.id)] == [2, 1]


def test_a_save_from_a_stale_tab_keeps_both_edits(make_account):
    account, owner = make_account()
    template = templates.create_template(owner, account.id, name="T", content_json=doc_with_heading("Start"))
    tab_a = templates.save_version(owner, account.id, template.id, content_json=doc_with_heading("From tab A"),
                                   base_version=1)
    tab_b = templates.save_version(owner, account.id, template.id, content_json=doc_with_heading("From tab B"),
                                   base_version=1)
    assert tab_b.conflict and tab_b.latest_before == 2 and tab_b.version.version == 3
    texts = [v.content_json["blocks"][0]["text"] for v, _ in templates.list_versions(account.id, template.id)]
    assert texts == ["From tab B", "From tab A", "Start"]
    assert not tab_a.conflict


def test_restoring_a_version_saves_its_content_as_a_new_version(make_account):
    account, owner = make_account()
    template = templates.create_template(owner, account.id, name="T", content_json=doc_with_heading("Original"))
    templates.save_version(owner, account.id, template.id, content_json=doc_with_heading("Changed"))
    restored = templates.restore_version(owner, account.id, template.id, 1)
    assert restored.version == 3 and restored.content_json["blocks"][0]["text"] == "Original"
    assert templates.get_version(account.id, template.id, 2).content_json["blocks"][0]["text"] == "Changed"


def test_switching_to_code_and_restoring_a_block_version_brings_the_editor_back(make_account):
    account, owner = make_account()
    template = templates.create_template(owner, account.id, name="T", content_json=doc_with_heading("Blocks"))
    code = templates.switch_to_code(owner, account.id, template.id, "mjml", MJML)
    assert (template.format, code.format, code.content_json) == ("mjml", "mjml", None)
    assert "Hi {{" in code.content_html or "Hi {{ contact" in code.content_html
    templates.restore_version(owner, account.id, template.id, 1)
    assert template.format == "blocks"


def test_a_template_error_is_reported_with_its_line_and_nothing_is_saved(make_account):
    account, owner = make_account()
    template = templates.create_template(owner, account.id, name="Code", format="mjml", content_source=MJML)
    broken = MJML.replace("{{ account.postal_address }}", "{{ account.postal_address ")
    with pytest.raises(ValidationError) as caught:
        templates.save_version(owner, account.id, template.id, content_source=broken)
    assert "line" in str(caught.value.details).lower()
    assert template.current_version == 1 and len(templates.list_versions(account.id, template.id)) == 1


def test_html_templates_get_their_css_inlined_with_merge_tags_intact(make_account):
    account, owner = make_account()
    template = templates.create_template(owner, account.id, name="HTML", format="html",
                                         content_source=templates.starter_source("html"))
    html = templates.latest_version(template.id).content_html
    assert 'style="' in html and "{{ unsubscribe_url }}" in html


def test_gallery_templates_are_global_read_only_and_copied_on_use(make_account):
    account, owner = make_account()
    templates.sync_gallery()
    gallery = templates.list_gallery()
    assert len(gallery) >= 6 and all(t.is_global and t.account_id is None for t in gallery)
    newsletter = next(t for t in gallery if t.slug == "newsletter")
    with pytest.raises(Forbidden):
        templates.save_version(owner, account.id, newsletter.id, content_json=doc_with_heading("Mine"))
    copy = templates.create_template(owner, account.id, name="My newsletter", copy_of=newsletter.id)
    assert copy.account_id == account.id and not copy.is_global and copy.category == newsletter.category
    assert (templates.latest_version(copy.id).content_json
            == templates.latest_version(newsletter.id).content_json)
    templates.sync_gallery()  # running again changes nothing
    assert templates.latest_version(newsletter.id).version == 1


def test_another_accounts_template_is_invisible(make_account):
    account, owner = make_account()
    other, other_owner = make_account()
    template = templates.create_template(owner, account.id, name="Private")
    for call in (lambda: templates.get_template(other.id, template.id),
                 lambda: templates.save_version(other_owner, other.id, template.id, content_json=doc_with_heading("x")),
                 lambda: templates.delete_template(other_owner, other.id, template.id),
                 lambda: templates.create_template(other_owner, other.id, name="Copy", copy_of=template.id)):
        with pytest.raises(NotFound):
            call()


def test_viewers_cannot_change_templates(make_account, make_user):
    account, owner = make_account()
    viewer = make_user(account, role="viewer")
    template = templates.create_template(owner, account.id, name="T")
    with pytest.raises(Forbidden):
        templates.create_template(viewer, account.id, name="Mine")
    with pytest.raises(Forbidden):
        templates.save_version(viewer, account.id, template.id, content_json=doc_with_heading("x"))
    with pytest.raises(Forbidden):
        templates.delete_template(viewer, account.id, template.id)


def png_bytes(width=40, height=20):
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


def test_uploads_keep_real_images_and_refuse_anything_else(make_account, app):
    account, owner = make_account()
    saved = uploads.save_upload(owner, account.id, io.BytesIO(png_bytes()), "../../hero.png")
    assert (saved.filename, saved.width, saved.height, saved.content_type) == ("hero.png", 40, 20, "image/png")
    assert uploads.public_url(saved).startswith(app.config["BASE_URL"] + f"/uploads/{account.id}/")
    for data, name in ((b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>", "x.svg"),
                       (b"GIF89a not really", "x.gif"), (b"", "empty.png")):
        with pytest.raises(ValidationError):
            uploads.save_upload(owner, account.id, io.BytesIO(data), name)
    app.config["UPLOAD_MAX_BYTES"] = 100
    with pytest.raises(ValidationError) as caught:
        uploads.save_upload(owner, account.id, io.BytesIO(png_bytes(400, 400)), "big.png")
    assert "larger than" in str(caught.value.details)


def test_uploads_are_listed_and_deleted_only_by_their_account(make_account):
    account, owner = make_account()
    other, other_owner = make_account()
    saved = uploads.save_upload(owner, account.id, io.BytesIO(png_bytes()), "logo.png")
    assert uploads.list_uploads(other.id) == []
    with pytest.raises(NotFound):
        uploads.delete_upload(other_owner, other.id, saved.id)
    uploads.delete_upload(owner, account.id, saved.id)
    assert uploads.list_uploads(account.id) == []


def test_the_api_listing_shows_own_and_gallery_templates_only(make_account):
    from nudge.extensions import db
    account, owner = make_account()
    other, other_owner = make_account()
    mine = templates.create_template(owner, account.id, name="Mine")
    templates.create_template(other_owner, other.id, name="Theirs")
    templates.sync_gallery()
    listed = db.session.scalars(templates.api_templates_query(account.id)).all()
    assert mine in listed and all(t.account_id in (account.id, None) for t in listed)
    own = db.session.scalars(templates.api_templates_query(account.id, is_global=False)).all()
    assert own == [mine]
