"""The block editor's endpoints (blueprints/editor.py): editing operations applied to the posted document,
autosave into versions (two tabs included), the code view, restore, and who may do what."""
import html
import json
import re

import pytest

from nudge.extensions import db
from nudge.models import Template, TemplateVersion
from nudge.services import custom_fields, email_doc
from nudge.services import templates as templates_service

HTMX = {"HX-Request": "true"}


def heading(block_id="head01", text="Spring is here", **extra):
    return {"id": block_id, "type": "heading", "text": text, **extra}


def text(block_id="text01", markup="<p>Hello <b>friends</b></p>", **extra):
    return {"id": block_id, "type": "text", "html": markup, **extra}


def footer(block_id="foot01"):
    return {"id": block_id, "type": "footer", "html": email_doc.FOOTER_HTML}


def document(*blocks):
    return email_doc.validate_document({"schema": 1, "settings": {}, "blocks": list(blocks)})


def columns(block_id="cols01", left=(), right=()):
    return {"id": block_id, "type": "columns",
            "columns": [{"blocks": list(left), "width": "50%"}, {"blocks": list(right), "width": "50%"}]}


@pytest.fixture
def editing(app, make_account, login):
    """(client, account, owner, template): a signed-in owner and a block template at version 1."""
    account, owner = make_account()
    client = app.test_client()
    login(client, owner)
    template = templates_service.create_template(owner, account.id, name="Spring news",
                                                 content_json=document(heading(), text(), footer()))
    return client, account, owner, template


def posted_doc(response):
    """The document the page holds after an answer (the out-of-band #editor-doc input)."""
    match = re.search(r"id=\"editor-doc\" name=\"doc\" value='([^']*)'", response.get_data(as_text=True))
    assert match, response.get_data(as_text=True)[:800]
    return json.loads(html.unescape(match.group(1)))


def selected_after(response):
    match = re.search(r'id="editor-selected" name="selected" value="([^"]*)"', response.get_data(as_text=True))
    return match.group(1) if match else None


def op(client, template, doc, selected="", **fields):
    data = {"doc": json.dumps(doc), "base_version": "1", "selected": selected}
    data.update(fields)
    return client.post(f"/templates/{template.id}/edit/ops", data=data, headers=HTMX)


def save(client, template, doc, base_version):
    return client.post(f"/templates/{template.id}/edit/save", headers=HTMX,
                       data={"doc": json.dumps(doc), "base_version": str(base_version)})


def ids(blocks):
    return [block["id"] for block in blocks]


def versions_of(template):
    return db.session.query(TemplateVersion).filter_by(template_id=template.id).order_by(TemplateVersion.version).all()


# --------------------------------------------------------------------------------------------------
# The page

def test_editor_page_draws_the_document_palette_and_settings(editing):
    client, account, owner, template = editing
    response = client.get(f"/templates/{template.id}/edit")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'data-id="head01"' in page and "Spring is here" in page and "Hello <b>friends</b>" in page
    for item in email_doc.PALETTE:
        assert f'aria-label="Add {item["label"].lower()} block"' in page
    assert "Email settings" in page and "Saved · version 1" in page
    doc = posted_doc(response)
    assert ids(doc["blocks"]) == ["head01", "text01", "foot01"]
    # the user's own images may come from any host; scripts and styles stay 'self'
    csp = response.headers["Content-Security-Policy"]
    assert "img-src 'self' data: https: http:" in csp and "script-src 'self'" in csp
    assert " style=" not in page


def test_canvas_shows_text_markup_without_scripts(editing):
    client, account, owner, template = editing
    doc = document(text(markup='<p>Hi<script>alert(1)</script> <a href="javascript:alert(2)">x</a></p>'))
    response = op(client, template, doc, op="settings", **{"f.width": "640"})
    canvas = response.get_data(as_text=True).split('id="editor-doc"')[0]
    assert "<script>" not in canvas and "javascript:" not in canvas and "Hi" in canvas


# --------------------------------------------------------------------------------------------------
# Operations

def test_add_puts_the_block_where_it_was_dropped_and_selects_it(editing):
    client, account, owner, template = editing
    doc = document(heading(), text(), footer())
    response = op(client, template, doc, op="add", type="button", to_parent="", to_index="1")
    assert response.status_code == 200
    new = posted_doc(response)
    assert [b["type"] for b in new["blocks"]] == ["heading", "button", "text", "footer"]
    assert selected_after(response) == new["blocks"][1]["id"]
    assert json.loads(response.headers["HX-Trigger"]) == {"editor-changed": True}
    body = response.get_data(as_text=True)
    assert 'id="editor-panel" aria-labelledby="editor-panel-title" hx-swap-oob="true"' in body
    assert ">Button</h2>" in body and "Button text" in body


def test_add_without_a_position_goes_after_the_selection_or_above_the_footer(editing):
    client, account, owner, template = editing
    doc = document(heading(), text(), footer())
    after_heading = posted_doc(op(client, template, doc, selected="head01", op="add", type="divider"))
    assert [b["type"] for b in after_heading["blocks"]] == ["heading", "divider", "text", "footer"]
    nothing_selected = posted_doc(op(client, template, doc, op="add", type="image"))
    assert [b["type"] for b in nothing_selected["blocks"]] == ["heading", "text", "image", "footer"]
    three = posted_doc(op(client, template, doc, op="add", type="columns", count="3"))
    assert len(three["blocks"][2]["columns"]) == 3


def test_move_into_a_column_and_back_out(editing):
    client, account, owner, template = editing
    doc = document(heading(), columns(left=[text()]), footer())
    moved = posted_doc(op(client, template, doc, op="move", id="head01", to_parent="cols01:1", to_index="0"))
    assert ids(moved["blocks"]) == ["cols01", "foot01"]
    assert ids(moved["blocks"][0]["columns"][1]["blocks"]) == ["head01"]
    back = posted_doc(op(client, template, moved, op="move", id="text01", to_parent="", to_index="2"))
    assert ids(back["blocks"]) == ["cols01", "foot01", "text01"]
    assert back["blocks"][0]["columns"][0]["blocks"] == []


def test_move_up_and_down_are_the_keyboard_way_to_reorder(editing):
    client, account, owner, template = editing
    doc = document(heading(), text(), footer())
    down = posted_doc(op(client, template, doc, op="move_down", id="head01"))
    assert ids(down["blocks"]) == ["text01", "head01", "foot01"]
    up = posted_doc(op(client, template, down, op="move_up", id="foot01"))
    assert ids(up["blocks"]) == ["text01", "foot01", "head01"]


def test_update_changes_only_the_fields_sent(editing):
    client, account, owner, template = editing
    doc = document(heading(color="#123456"), text(), footer())
    response = op(client, template, doc, selected="head01", op="update", id="head01",
                  **{"f.text": "Summer sale", "f.font_size": "40", "n.color": ["0", "1"]})
    new = posted_doc(response)
    assert new["blocks"][0]["text"] == "Summer sale" and new["blocks"][0]["font_size"] == 40
    assert new["blocks"][0]["color"] == ""  # "Email's text colour" ticked
    assert new["blocks"][0]["level"] == 1 and new["blocks"][1] == doc["blocks"][1]
    assert "Summer sale" in response.get_data(as_text=True)
    # typing in the panel does not redraw it (the cursor stays where it is)
    assert 'id="editor-panel"' not in response.get_data(as_text=True)


def test_update_with_a_bad_value_says_which_and_keeps_the_document(editing):
    client, account, owner, template = editing
    doc = document(heading(), text(), footer())
    response = op(client, template, doc, selected="text01", op="update", id="text01",
                  **{"f.padding": "lots", "f.html": "<p>new words</p>"})
    assert response.status_code == 422
    assert posted_doc(response) == doc
    body = html.unescape(response.get_data(as_text=True))
    assert re.search(r'id="field-error-padding" hx-swap-oob="true">Use 1 to 4 pixel values', body)
    assert "it was not applied" in body and "HX-Trigger" not in response.headers


def test_social_links_are_added_and_removed_from_the_panel(editing):
    client, account, owner, template = editing
    doc = document({"id": "soc001", "type": "social", "links": [{"network": "x", "href": "https://x.com/fern"}]})
    added = op(client, template, doc, selected="soc001", op="update", id="soc001", links_action="add",
               **{"f.links.network": "x", "f.links.href": "https://x.com/fernfield"})
    links = posted_doc(added)["blocks"][0]["links"]
    assert links == [{"network": "x", "href": "https://x.com/fernfield"}, {"network": "facebook", "href": ""}]
    assert added.get_data(as_text=True).count('name="f.links.href"') == 2  # the panel shows the new row
    rows = {"f.links.network": ["x", "facebook"], "f.links.href": ["https://x.com/fernfield", ""]}
    removed = op(client, template, posted_doc(added), selected="soc001", op="update", id="soc001",
                 links_action="remove:0", **rows)
    assert posted_doc(removed)["blocks"][0]["links"] == [{"network": "facebook", "href": ""}]


def test_column_widths_update_without_touching_the_nested_blocks(editing):
    client, account, owner, template = editing
    doc = document(columns(left=[text()]))
    new = posted_doc(op(client, template, doc, selected="cols01", op="update", id="cols01",
                        **{"f.widths": ["30%", "70%"], "f.stack_on_mobile": ["0"]}))
    assert [c["width"] for c in new["blocks"][0]["columns"]] == ["30%", "70%"]
    assert new["blocks"][0]["stack_on_mobile"] is False
    assert ids(new["blocks"][0]["columns"][0]["blocks"]) == ["text01"]


def test_duplicate_lands_right_after_with_new_ids_and_is_selected(editing):
    client, account, owner, template = editing
    doc = document(heading(), columns(left=[text()]), footer())
    response = op(client, template, doc, op="duplicate", id="cols01")
    new = posted_doc(response)
    assert [b["type"] for b in new["blocks"]] == ["heading", "columns", "columns", "footer"]
    copy = new["blocks"][2]
    assert copy["id"] != "cols01" and copy["columns"][0]["blocks"][0]["id"] != "text01"
    assert copy["columns"][0]["blocks"][0]["html"] == doc["blocks"][1]["columns"][0]["blocks"][0]["html"]
    assert selected_after(response) == copy["id"]


def test_delete_removes_the_block_and_closes_its_settings(editing):
    client, account, owner, template = editing
    doc = document(heading(), text(), footer())
    response = op(client, template, doc, selected="text01", op="delete", id="text01")
    assert ids(posted_doc(response)["blocks"]) == ["head01", "foot01"]
    assert selected_after(response) == ""
    assert "Email settings" in response.get_data(as_text=True)


def test_settings_change_the_whole_email(editing):
    client, account, owner, template = editing
    doc = document(heading(), text(), footer())
    response = op(client, template, doc, op="settings",
                  **{"f.width": "640", "f.background": "#fafafa", "f.font_family": "Georgia, 'Times New Roman', serif"})
    settings = posted_doc(response)["settings"]
    assert settings["width"] == 640 and settings["background"] == "#fafafa"
    assert settings["font_family"].startswith("Georgia")
    assert '"max-width": "640px"' in html.unescape(response.get_data(as_text=True))


@pytest.mark.parametrize("fields", [
    {"op": "explode"},
    {"op": "delete", "id": "not-there"},
    {"op": "move", "id": "head01", "to_parent": "nosuch:0", "to_index": "0"},
    {"op": "add", "type": "marquee"},
    {"op": "settings", "f.width": "5000"},
])
def test_a_bad_operation_is_refused_and_changes_nothing(editing, fields):
    client, account, owner, template = editing
    doc = document(heading(), text(), footer())
    response = op(client, template, doc, **fields)
    assert response.status_code == 422
    assert posted_doc(response) == doc
    assert 'id="editor-message"' in response.get_data(as_text=True)


def test_columns_cannot_be_dropped_into_a_column(editing):
    client, account, owner, template = editing
    doc = document(columns(), columns(block_id="cols02"))
    response = op(client, template, doc, op="move", id="cols02", to_parent="cols01:0", to_index="0")
    assert response.status_code == 422
    assert "Columns cannot be placed inside columns" in response.get_data(as_text=True)


def test_a_damaged_document_is_refused_without_touching_the_page(editing):
    client, account, owner, template = editing
    response = client.post(f"/templates/{template.id}/edit/ops", headers=HTMX,
                           data={"doc": "{not json", "op": "delete", "id": "head01"})
    assert response.status_code == 422
    assert response.headers["HX-Reswap"] == "none"
    assert "damaged" in response.get_data(as_text=True)


def test_selecting_a_block_opens_its_settings(editing):
    client, account, owner, template = editing
    doc = document(heading(), {"id": "img001", "type": "image", "src": "https://cdn.example/a.png", "alt": ""})
    response = client.post(f"/templates/{template.id}/edit/select", headers=HTMX,
                           data={"doc": json.dumps(doc), "select_id": "img001"})
    body = response.get_data(as_text=True)
    assert ">Image</h2>" in body and "Alt text" in body and "Upload an image" in body
    assert 'data-upload-url="/templates/uploads"' in body
    assert selected_after(response) == "img001"
    nothing = client.post(f"/templates/{template.id}/edit/select", headers=HTMX,
                          data={"doc": json.dumps(doc), "select_id": ""})
    assert "Email settings" in nothing.get_data(as_text=True) and selected_after(nothing) == ""


# --------------------------------------------------------------------------------------------------
# Saving

def test_save_makes_a_new_version_and_says_so(editing):
    client, account, owner, template = editing
    doc = posted_doc(op(client, template, document(heading(), text(), footer()), op="delete", id="text01"))
    response = save(client, template, doc, 1)
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and "Saved · version 2" in body
    assert 'id="editor-base" name="base_version" value="2" hx-swap-oob="true"' in body
    assert f'data-preview-url="/templates/{template.id}/versions/2/preview"' in body
    assert ids(versions_of(template)[-1].content_json["blocks"]) == ["head01", "foot01"]
    again = save(client, template, doc, 2)  # nothing changed since: no new version
    assert "Saved · version 2" in again.get_data(as_text=True) and len(versions_of(template)) == 2


def test_two_tabs_saving_keep_both_versions_and_say_so(editing):
    client, account, owner, template = editing
    start = document(heading(), text(), footer())
    tab_a = posted_doc(op(client, template, start, op="update", id="head01", **{"f.text": "From tab A"}))
    tab_b = posted_doc(op(client, template, start, op="update", id="text01", **{"f.html": "<p>From tab B</p>"}))
    first = save(client, template, tab_a, 1)
    assert "Saved · version 2" in first.get_data(as_text=True) and "HX-Trigger" not in first.headers
    second = save(client, template, tab_b, 1)
    body = html.unescape(second.get_data(as_text=True))
    assert "Saved as version 3 — another tab had saved version 2; both are in History" in body
    assert "both are in History" in json.loads(second.headers["HX-Trigger"])["toast"]["message"]
    kept = versions_of(template)
    assert [v.version for v in kept] == [1, 2, 3]
    assert kept[1].content_json["blocks"][0]["text"] == "From tab A"
    assert kept[2].content_json["blocks"][1]["html"] == "<p>From tab B</p>"


def test_a_save_that_fails_says_why_and_keeps_nothing_half_done(editing):
    client, account, owner, template = editing
    bad = {"schema": 1, "settings": {}, "blocks": [{"id": "x", "type": "heading"}]}
    response = save(client, template, bad, 1)
    assert response.status_code == 422
    body = html.unescape(response.get_data(as_text=True))
    assert "Not saved:" in body and "Your changes are still here" in body and "Try again" in body
    assert len(versions_of(template)) == 1


def test_restore_from_the_editor_saves_the_page_first_then_reloads(editing):
    client, account, owner, template = editing
    edited = posted_doc(op(client, template, document(heading(), text(), footer()), op="delete", id="foot01"))
    response = client.post(f"/templates/{template.id}/edit/restore", headers=HTMX,
                           data={"doc": json.dumps(edited), "base_version": "1", "number": "1"})
    assert response.status_code == 204
    assert response.headers["HX-Redirect"] == f"/templates/{template.id}/edit"
    kept = versions_of(template)
    assert [v.version for v in kept] == [1, 2, 3]
    assert ids(kept[1].content_json["blocks"]) == ["head01", "text01"]  # the unsaved edit was kept
    assert ids(kept[2].content_json["blocks"]) == ["head01", "text01", "foot01"]
    history = client.get(f"/templates/{template.id}/edit/history", headers=HTMX).get_data(as_text=True)
    assert "Version 3" in history and 'data-restore="2"' in history and 'data-restore="3"' not in history


# --------------------------------------------------------------------------------------------------
# Code view

def test_code_view_shows_the_design_as_mjml_and_html(editing):
    client, account, owner, template = editing
    doc = document(heading(text="Code me"), footer())
    mjml = client.post(f"/templates/{template.id}/edit/source", headers=HTMX,
                       data={"doc": json.dumps(doc), "format": "mjml"}).get_data(as_text=True)
    assert "&lt;mjml&gt;" in mjml and "Code me" in mjml and "closes the block editor" in mjml
    as_html = client.post(f"/templates/{template.id}/edit/source", headers=HTMX,
                          data={"doc": json.dumps(doc), "format": "html"}).get_data(as_text=True)
    assert "&lt;!doctype html&gt;" in as_html.lower() and "Code me" in as_html


def test_switching_to_code_keeps_the_design_in_history(editing):
    client, account, owner, template = editing
    doc = posted_doc(op(client, template, document(heading(), text(), footer()), op="delete", id="text01"))
    source = email_doc.to_mjml(doc, base_url="http://localhost").replace("Spring is here", "Hand written")
    response = client.post(f"/templates/{template.id}/edit/code", headers=HTMX,
                           data={"doc": json.dumps(doc), "base_version": "1", "format": "mjml", "source": source})
    assert response.status_code == 204 and response.headers["HX-Redirect"].endswith("/edit")
    db.session.expire_all()
    assert db.session.get(Template, template.id).format == "mjml"
    kept = versions_of(template)
    assert ids(kept[1].content_json["blocks"]) == ["head01", "foot01"] and "Hand written" in kept[2].content_source
    page = client.get(f"/templates/{template.id}/edit").get_data(as_text=True)
    assert "written as MJML code" in page and "Hand written" in page

    broken = client.post(f"/templates/{template.id}/edit/code", headers=HTMX, data={
        "base_version": "3", "format": "mjml", "source": "<mjml><mj-body>{{ oops </mj-body></mjml>"})
    assert broken.status_code == 422
    assert "Not saved" in broken.get_data(as_text=True) and len(versions_of(template)) == 3
    fixed = client.post(f"/templates/{template.id}/edit/code", headers=HTMX,
                        data={"base_version": "3", "format": "mjml", "source": source.replace("Hand written", "Fixed")})
    assert "Saved · version 4" in fixed.get_data(as_text=True)


# --------------------------------------------------------------------------------------------------
# Preview

def test_preview_of_a_version_has_its_own_strict_csp(editing):
    client, account, owner, template = editing
    response = client.get(f"/templates/{template.id}/versions/1/preview")
    assert response.status_code == 200 and "Spring is here" in response.get_data(as_text=True)
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'self'" in csp
    assert "style-src 'unsafe-inline'" in csp and "img-src *" in csp
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    page = client.get(f"/templates/{template.id}/edit").get_data(as_text=True)
    iframe = re.search(r"<iframe[^>]*>", page).group(0)
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in iframe and "allow-scripts" not in iframe


# --------------------------------------------------------------------------------------------------
# Who may edit

def test_viewers_read_but_cannot_edit(editing, make_user, login, app):
    client, account, owner, template = editing
    viewer = make_user(account, role="viewer")
    viewer_client = app.test_client()
    login(viewer_client, viewer)
    page = viewer_client.get(f"/templates/{template.id}/edit")
    assert page.status_code == 302 and page.headers["Location"].endswith(f"/templates/{template.id}")
    doc = document(heading(), text(), footer())
    assert op(viewer_client, template, doc, op="delete", id="text01").status_code == 403
    assert save(viewer_client, template, doc, 1).status_code == 403
    assert len(versions_of(template)) == 1


def test_another_accounts_template_is_not_found(editing, make_account, login, app):
    client, account, owner, template = editing
    other_account, other_owner = make_account()
    other = app.test_client()
    login(other, other_owner)
    doc = document(heading())
    assert other.get(f"/templates/{template.id}/edit").status_code == 404
    assert op(other, template, doc, op="delete", id="head01").status_code == 404
    assert save(other, template, doc, 1).status_code == 404
    assert other.get(f"/templates/{template.id}/edit/history", headers=HTMX).status_code == 404
    assert len(versions_of(template)) == 1


def test_gallery_templates_are_read_only(editing):
    client, account, owner, template = editing
    gallery = Template(account_id=None, name="Gallery newsletter", is_global=True, format="blocks", current_version=1)
    db.session.add(gallery)
    db.session.flush()
    doc = document(heading())
    db.session.add(TemplateVersion(template_id=gallery.id, version=1, format="blocks", content_html="<p>x</p>",
                                   content_json=doc))
    db.session.commit()
    page = client.get(f"/templates/{gallery.id}/edit")
    assert page.status_code == 302 and page.headers["Location"].endswith(f"/templates/{gallery.id}")
    assert op(client, gallery, doc, op="delete", id="head01").status_code == 403
    assert save(client, gallery, doc, 1).status_code == 403
    assert len(versions_of(gallery)) == 1


def test_a_document_nested_past_the_stack_is_refused_readably(editing):
    client, account, owner, template = editing
    deep = "[" * 100_000 + "]" * 100_000
    response = client.post(f"/templates/{template.id}/edit/save", headers=HTMX, data={"doc": deep, "base_version": "1"})
    assert response.status_code == 422
    assert "Not saved:" in html.unescape(response.get_data(as_text=True))
    response = client.post(f"/templates/{template.id}/edit/ops", headers=HTMX,
                           data={"doc": deep, "base_version": "1", "op": "delete", "id": "text01"})
    assert response.status_code in (400, 422) and "damaged" in html.unescape(response.get_data(as_text=True))
    assert len(versions_of(template)) == 1


def test_code_that_runs_away_or_is_too_large_is_not_saved(editing):
    client, account, owner, template = editing
    loop = ('<mjml><mj-body><mj-text>{% for a in "x" * 200 %}{% for b in "x" * 200 %}{% endfor %}{% endfor %}'
            "</mj-text></mj-body></mjml>")
    response = client.post(f"/templates/{template.id}/edit/code", headers=HTMX,
                           data={"base_version": "1", "format": "mjml", "source": loop})
    body = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 422 and "Loops may run at most 10,000 times in one email" in body
    huge = "<p>" + "x" * (512 * 1024) + "</p>"
    response = client.post(f"/templates/{template.id}/edit/code", headers=HTMX,
                           data={"base_version": "1", "format": "html", "source": huge})
    assert response.status_code == 422 and "at most 512 KB" in html.unescape(response.get_data(as_text=True))
    assert len(versions_of(template)) == 1


def test_an_unknown_merge_tag_is_a_content_warning_in_the_editor(editing):
    client, account, owner, template = editing
    doc = document(heading(), text(markup="<p>Hi {{ contact.firstname }}</p>"), footer())
    body = save(client, template, doc, 1).get_data(as_text=True)
    warning = "{{ contact.firstname }} is not a merge tag and would be blank: did you mean contact.first_name?"
    assert 'id="editor-warnings"' in body and warning in html.unescape(body)
    page = client.get(f"/templates/{template.id}/edit").get_data(as_text=True)
    assert warning in html.unescape(page)
    # An account's custom field is a real merge tag.
    custom_fields.create_field(owner, name="plan", type="text")
    body = save(client, template, document(heading(), text(markup="<p>{{ contact.plan }}</p>"), footer()), 2)
    assert "not a merge tag" not in html.unescape(body.get_data(as_text=True))
