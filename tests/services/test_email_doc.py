"""The editor's document: validation, editing operations and compilation to MJML and HTML."""
import copy
import json
import pathlib
import re

import mjml
import pytest

from nudge.errors import ValidationError
from nudge.services import email_doc

BASE = "https://mail.example.com"


def doc_with(*blocks, **settings):
    doc = {"schema": 1, "settings": dict(email_doc.DEFAULT_SETTINGS, **settings), "blocks": list(blocks)}
    return email_doc.validate_document(doc)


def block(type_, **fields):
    return {**email_doc.new_block(type_), **fields}


def compiled(doc):
    """The email HTML through both routes: to_html, and mjml-python on to_mjml's output."""
    return email_doc.to_html(doc, base_url=BASE), mjml.mjml2html(email_doc.to_mjml(doc, base_url=BASE))


def issues(exc_info):
    return {d["field"]: d["issue"] for d in exc_info.value.details}


# --------------------------------------------------------------------------------------------------
# Round trip for every block type

ROUND_TRIPS = {
    "heading": (dict(text="Spring sale starts today", level=2, color="#123456", font_size=30),
                ["Spring sale starts today", "<h2", "#123456", "30px"]),
    "text": (dict(html="<p>Our <b>best</b> <em>offers</em></p><ul><li>One</li></ul>", color="#334455",
                  font_size=18, line_height=1.8),
             ["Our <b>best</b> <em>offers</em>", "<li>One</li>", "#334455", "18px"]),
    "image": (dict(src="https://cdn.example.com/hero.png", alt="Our new shop", href="https://example.com/shop",
                   width=320),
              ['src="https://cdn.example.com/hero.png"', 'alt="Our new shop"', 'href="https://example.com/shop"',
               'width="320"']),
    "button": (dict(text="Shop now", href="https://example.com/buy", button_color="#ff5500",
                    text_color="#000000", border_radius=20),
               ["Shop now", 'href="https://example.com/buy"', "#ff5500", "#000000", "border-radius:20px"]),
    "divider": (dict(color="#abcdef", thickness=3), ["#abcdef", "3px"]),
    "spacer": (dict(height=77), ["height:77px"]),
    "social": (dict(links=[{"network": "linkedin", "href": "https://linkedin.com/company/acme"},
                           {"network": "website", "href": "https://acme.example"}], icon_size=40),
               ['href="https://linkedin.com/company/acme"', BASE + "/static/img/social/linkedin.png",
                BASE + "/static/img/social/website.png", 'alt="LinkedIn"', "40px"]),
    "html": (dict(html='<table role="presentation"><tr><td class="promo">Custom <i>cell</i></td></tr></table>'),
             ['<td class="promo">Custom <i>cell</i></td>']),
    "footer": (dict(html='<p>Acme Ltd, 1 Road</p><p><a href="{{ unsubscribe_url }}">Leave</a></p>',
                    color="#999999", font_size=11),
               ["Acme Ltd, 1 Road", 'href="{{ unsubscribe_url }}"', "#999999", "11px"]),
}


@pytest.mark.parametrize("type_", sorted(ROUND_TRIPS))
def test_every_block_type_reaches_the_html_with_its_content(type_):
    fields, expected = ROUND_TRIPS[type_]
    doc = doc_with(block(type_, background="#fafafa", **fields))
    for html in compiled(doc):
        for fragment in expected:
            assert fragment in html, fragment
        assert "#fafafa" in html


def test_columns_put_their_blocks_side_by_side_with_their_widths():
    columns = block("columns", columns=[
        {"width": "40%", "blocks": [block("heading", text="Left side")]},
        {"width": "60%", "blocks": [block("button", text="Right button", href="https://example.com"),
                                    block("image", src="https://cdn.example.com/r.png", alt="Right image")]},
    ])
    for html in compiled(doc_with(columns)):
        assert "Left side" in html and "Right button" in html and 'alt="Right image"' in html
        assert "mj-column-per-40" in html and "mj-column-per-60" in html
        assert html.index("Left side") < html.index("Right button")


def test_three_columns_and_no_stacking_on_phones():
    columns = email_doc.new_block("columns", count=3)
    columns["stack_on_mobile"] = False
    for index, column in enumerate(columns["columns"]):
        column["blocks"] = [block("text", html=f"<p>Column {index}</p>")]
    html = email_doc.to_html(doc_with(columns), base_url=BASE)
    assert all(f"Column {i}" in html for i in range(3))
    assert "mj-column-per-33-33" in html
    stacked = copy.deepcopy(columns)
    stacked["stack_on_mobile"] = True
    # a group keeps columns side by side on phones; stacking columns are not grouped
    assert html.count("mj-outlook-group-fix") != email_doc.to_html(doc_with(stacked), base_url=BASE).count(
        "mj-outlook-group-fix")


def test_document_settings_reach_the_html():
    doc = doc_with(block("text"), width=640, background="#eeeeee", content_background="#fefefe",
                   font_family="Georgia, 'Times New Roman', serif", link_color="#aa0000",
                   preheader="Our spring news")
    html = email_doc.to_html(doc, base_url=BASE)
    assert "max-width:640px" in html
    assert "#eeeeee" in html and "#fefefe" in html
    assert "Georgia, 'Times New Roman', serif" in html
    assert "#aa0000" in html
    assert "Our spring news" in html


def test_a_new_document_compiles_with_a_footer_holding_the_required_merge_tags():
    doc = email_doc.validate_document(email_doc.new_document())
    html = email_doc.to_html(doc, base_url=BASE)
    assert "{{ account.postal_address }}" in html
    assert 'href="{{ unsubscribe_url }}"' in html


def test_an_uploaded_image_path_becomes_an_absolute_url():
    doc = doc_with(block("image", src="/uploads/7/abcdefghijklmnop.png", alt="Logo"))
    assert 'src="https://mail.example.com/uploads/7/abcdefghijklmnop.png"' in email_doc.to_html(doc, base_url=BASE)


def test_an_image_without_a_source_is_left_out_of_the_email():
    html = email_doc.to_html(doc_with(block("image", src="", alt="Missing")), base_url=BASE)
    assert "Missing" not in html and "<img" not in html


# --------------------------------------------------------------------------------------------------
# Escaping, sanitising, merge tags

def test_plain_values_are_escaped():
    doc = doc_with(block("heading", text="<script>alert(1)</script> & friends"),
                   block("button", text="<b>Go</b>", href="https://example.com/?a=1&b=2"),
                   block("image", src="https://cdn.example.com/a.png", alt='Say "hi" <img src=x onerror=alert(1)>'))
    for html in compiled(doc):
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; friends" in html
        assert "<script>alert(1)" not in html
        assert "&lt;b&gt;Go&lt;/b&gt;" in html
        assert 'href="https://example.com/?a=1&amp;b=2"' in html
        assert "<img src=x" not in html


def test_text_markup_is_sanitised_to_the_allow_list():
    dirty = ('<p onclick="steal()">Hi <img src=x onerror="alert(1)"><a href="javascript:alert(1)">bad</a> '
             '<a href="data:text/html,x">data</a> <a href="https://ok.example">good</a>'
             '<script>alert(2)</script><span style="position:fixed">kept text</span></p>')
    for type_ in ("text", "footer"):
        html = email_doc.to_html(doc_with(block(type_, html=dirty)), base_url=BASE)
        assert "onerror" not in html and "onclick" not in html and "javascript:" not in html
        assert "data:text" not in html and "alert(2)" not in html and "position:fixed" not in html
        assert 'href="https://ok.example"' in html and "kept text" in html and "bad" in html


def test_merge_tags_survive_escaping_sanitising_and_mjml_unchanged():
    tag = '{{ contact.first_name | default("there") }}'
    doc = doc_with(
        block("heading", text=f"Hello {tag}!"),
        block("text", html=f'<p>Hi {tag}, {{% if contact.orders < 3 %}}welcome{{% endif %}} '
                           '<a href="{{ view_in_browser_url }}">view</a></p>'),
        block("button", text=f"For {tag}", href="{{ preferences_url }}"),
        block("html", html=f"<div>Raw {tag} &amp; more</div>"),
        preheader=f"Just for {tag}")
    html = email_doc.to_html(doc, base_url=BASE)
    assert html.count(tag) == 5
    assert "{% if contact.orders < 3 %}welcome{% endif %}" in html
    assert 'href="{{ view_in_browser_url }}"' in html and 'href="{{ preferences_url }}"' in html
    # the code view's route: the MJML shows the tags as written and compiles to the same HTML
    source = email_doc.to_mjml(doc, base_url=BASE)
    assert tag in source and "{% if contact.orders < 3 %}" in source
    assert email_doc.mjml_to_html(source).count(tag) == 5


def test_a_merge_tag_with_quotes_inside_a_link_keeps_the_attribute_intact():
    doc = doc_with(block("text", html='<p><a href="{{ offer_url | default("https://x.example") }}">Offer</a></p>'))
    html = email_doc.to_html(doc, base_url=BASE)
    # Jinja reads 'x' and "x" alike; single quotes cannot end the double-quoted attribute
    assert "href=\"{{ offer_url | default('https://x.example') }}\"" in html


def test_raw_html_is_kept_and_made_well_formed_for_mjml():
    raw = ('<table><tr><td>Cell <b>bold<br>line</td></table><!--[if mso]><table><tr><td><![endif]-->'
           '<p>5 < 6 &copy; Acme<script>alert(1)</script>')
    doc = doc_with(block("html", html=raw))
    # plain mjml2html would choke on the comment's unbalanced tags: both of our routes keep it away from MJML
    for html in (email_doc.to_html(doc, base_url=BASE), email_doc.mjml_to_html(email_doc.to_mjml(doc, base_url=BASE))):
        assert "Cell <b>bold<br />line</b>" in html
        assert "<!--[if mso]><table><tr><td><![endif]-->" in html
        assert "5 &lt; 6 &copy; Acme" in html
        assert "alert(1)" not in html


@pytest.mark.parametrize("raw", [
    "<p>unclosed <b>tags", "stray </div> end tags</td></tr>", "5 < 6 && 7 > 3", "<a href=x<script>y<z</script>",
    "<{% if a < b %}</a><br>", "<!DOCTYPE html><html><head><title>T</title></head><body><p>Page</p></body></html>",
    "nul \x00 character", '<div a"b="1" c=\'2\' d>attributes</div>', "&bogus; &amp &#169;",
])
def test_malformed_raw_html_never_breaks_the_email(raw):
    doc = doc_with(block("html", html=raw), block("heading", text="After the raw block"))
    assert "After the raw block" in email_doc.to_html(doc, base_url=BASE)
    assert "After the raw block" in email_doc.mjml_to_html(email_doc.to_mjml(doc, base_url=BASE))


def test_mjml_source_with_merge_tags_compiles_with_them_intact():
    source = ('<mjml><mj-body><mj-section><mj-column><mj-text>{% if n < 2 %}one{% endif %}</mj-text>'
              '<mj-button href="{{ url | default("https://a.example") }}">Go</mj-button>'
              '</mj-column></mj-section></mj-body></mjml>')
    html = email_doc.mjml_to_html(source)
    assert "{% if n < 2 %}one{% endif %}" in html
    assert '{{ url | default("https://a.example") }}' in html


# --------------------------------------------------------------------------------------------------
# Validation

def test_validation_fills_defaults_and_drops_unknown_keys():
    doc = email_doc.validate_document({"blocks": [{"id": "abc123", "type": "heading", "onload": "x"}]})
    heading = doc["blocks"][0]
    assert heading["text"] == email_doc.BLOCK_TYPES["heading"]["defaults"]["text"]
    assert "onload" not in heading
    assert doc["settings"] == email_doc.DEFAULT_SETTINGS
    assert doc["schema"] == 1


def test_validation_reports_every_problem_with_its_path():
    doc = {"settings": {"width": 2000, "background": "red"}, "blocks": [
        block("button", href="javascript:alert(1)"),
        block("image", src="data:image/png;base64,AAAA"),
        block("columns", columns=[{"width": "50%", "blocks": [block("button", href="ftp://x")]},
                                  {"width": "50%", "blocks": [block("social", links=[
                                      {"network": "myspace", "href": "https://x.example"}])]}]),
        block("heading", color="blue", level=7, padding="lots"),
    ]}
    with pytest.raises(ValidationError) as exc_info:
        email_doc.validate_document(doc)
    found = issues(exc_info)
    assert exc_info.value.message == "The template is not valid."
    assert found["blocks[0].href"] == "Use an http(s) or mailto link."
    assert "blocks[1].src" in found
    assert found["blocks[2].columns[0].blocks[0].href"] == "Use an http(s) or mailto link."
    assert "blocks[2].columns[1].blocks[0].links[0].network" in found
    assert {"blocks[3].color", "blocks[3].level", "blocks[3].padding", "settings.width",
            "settings.background"} <= set(found)


@pytest.mark.parametrize("href", ["mailto:hello@example.com", "https://example.com/p?q=1", "{{ unsubscribe_url }}",
                                  "http://example.com"])
def test_accepted_links(href):
    assert email_doc.validate_document({"blocks": [block("button", href=href)]})["blocks"][0]["href"] == href


@pytest.mark.parametrize("href", ["javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,hi", "#top",
                                  "/relative", "example.com", "{{ a }}{{ b }}"])
def test_rejected_links(href):
    with pytest.raises(ValidationError) as exc_info:
        email_doc.validate_document({"blocks": [block("button", href=href)]})
    assert issues(exc_info) == {"blocks[0].href": "Use an http(s) or mailto link."}


def test_duplicate_and_malformed_ids_are_rejected():
    with pytest.raises(ValidationError) as exc_info:
        email_doc.validate_document({"blocks": [block("text", id="same-id"), block("text", id="same-id"),
                                                block("text", id="x!")]})
    assert set(issues(exc_info)) == {"blocks[1].id", "blocks[2].id"}


def test_columns_inside_columns_are_rejected():
    inner = block("columns")
    with pytest.raises(ValidationError) as exc_info:
        email_doc.validate_document({"blocks": [block("columns", columns=[{"width": "50%", "blocks": [inner]},
                                                                          {"width": "50%", "blocks": []}])]})
    assert issues(exc_info) == {"blocks[0].columns[0].blocks[0].type": "Columns cannot be placed inside columns."}


def test_column_widths_must_add_up():
    with pytest.raises(ValidationError) as exc_info:
        email_doc.validate_document({"blocks": [block("columns", columns=[{"width": "50%", "blocks": []},
                                                                          {"width": "20%", "blocks": []}])]})
    assert "blocks[0].columns" in issues(exc_info)


def test_a_document_holds_at_most_200_blocks_nested_ones_included():
    columns = block("columns", columns=[{"width": "50%", "blocks": [block("spacer") for _ in range(50)]},
                                        {"width": "50%", "blocks": [block("spacer") for _ in range(50)]}])
    at_limit = {"blocks": [columns] + [block("divider") for _ in range(99)]}
    assert email_doc.count_blocks(email_doc.validate_document(at_limit)) == 200
    with pytest.raises(ValidationError) as exc_info:
        email_doc.validate_document({"blocks": at_limit["blocks"] + [block("divider")]})
    assert issues(exc_info) == {"blocks": "A template holds at most 200 blocks."}


def test_form_strings_are_coerced():
    doc = email_doc.validate_document({"blocks": [block("button", border_radius="12", full_width="on"),
                                                  block("image", width="")]})
    assert doc["blocks"][0]["border_radius"] == 12 and doc["blocks"][0]["full_width"] is True
    assert doc["blocks"][1]["width"] is None


def test_validation_does_not_change_its_input():
    doc = {"blocks": [{"id": "abc123", "type": "heading", "extra": 1}]}
    before = copy.deepcopy(doc)
    email_doc.validate_document(doc)
    assert doc == before


def test_every_gallery_document_is_valid_and_compiles():
    folder = pathlib.Path(email_doc.__file__).parent.parent / "gallery"
    documents = [path for path in sorted(folder.glob("*.json")) if path.name != "index.json"]
    assert documents
    for path in documents:
        html = email_doc.to_html(email_doc.validate_document(json.loads(path.read_text())), base_url=BASE)
        assert "{{ unsubscribe_url }}" in html, path.name


# --------------------------------------------------------------------------------------------------
# Editing operations

@pytest.fixture
def doc():
    columns = block("columns", id="cols01")
    columns["columns"][0]["blocks"] = [block("text", id="inner01", html="<p>In column</p>")]
    return doc_with(block("heading", id="head01", text="Title"), block("text", id="text01"), columns,
                    block("footer", id="foot01"))


def ids(blocks):
    return [b["id"] for b in blocks]


def unchanged(doc, op):
    """Applies an op that must fail and checks the input document was left exactly as it was."""
    before = copy.deepcopy(doc)
    with pytest.raises(ValidationError) as exc_info:
        email_doc.apply_op(doc, op)
    assert doc == before
    return issues(exc_info)


def test_add_at_the_top_level_and_into_a_column(doc):
    new = email_doc.apply_op(doc, {"op": "add", "type": "button", "to": {"parent": None, "index": 1}})
    assert new["blocks"][1]["type"] == "button" and len(new["blocks"]) == 5
    new = email_doc.apply_op(new, {"op": "add", "type": "image", "to": {"parent": "cols01:1", "index": 0}})
    assert email_doc.find_block(new, "cols01")["columns"][1]["blocks"][0]["type"] == "image"
    assert len(doc["blocks"]) == 4


def test_add_reports_the_new_block_and_three_columns(doc):
    new, new_id = email_doc.apply_op_with_id(doc, {"op": "add", "type": "columns", "count": 3, "to": {"index": 0}})
    assert new["blocks"][0]["id"] == new_id and len(new["blocks"][0]["columns"]) == 3


def test_add_without_a_position_appends(doc):
    new = email_doc.apply_op(doc, {"op": "add", "type": "spacer"})
    assert new["blocks"][-1]["type"] == "spacer"


def test_add_errors(doc):
    assert "type" in unchanged(doc, {"op": "add", "type": "marquee", "to": {"parent": None, "index": 0}})
    assert unchanged(doc, {"op": "add", "type": "text", "to": {"parent": "nope01:0", "index": 0}}) == {
        "to.parent": "There is no such column."}
    assert "to.parent" in unchanged(doc, {"op": "add", "type": "text", "to": {"parent": "cols01:5", "index": 0}})
    assert unchanged(doc, {"op": "add", "type": "columns", "to": {"parent": "cols01:0", "index": 0}}) == {
        "to.parent": "Columns cannot be placed inside columns."}
    assert "to.index" in unchanged(doc, {"op": "add", "type": "text", "to": {"parent": None, "index": -1}})


def test_move_within_the_top_level(doc):
    new = email_doc.apply_op(doc, {"op": "move", "id": "head01", "to": {"parent": None, "index": 2}})
    assert ids(new["blocks"]) == ["text01", "cols01", "head01", "foot01"]


def test_move_into_and_out_of_a_column(doc):
    new = email_doc.apply_op(doc, {"op": "move", "id": "text01", "to": {"parent": "cols01:1", "index": 0}})
    assert ids(new["blocks"]) == ["head01", "cols01", "foot01"]
    assert ids(email_doc.find_block(new, "cols01")["columns"][1]["blocks"]) == ["text01"]
    new = email_doc.apply_op(new, {"op": "move", "id": "inner01", "to": {"parent": None, "index": 0}})
    assert ids(new["blocks"]) == ["inner01", "head01", "cols01", "foot01"]
    assert email_doc.find_block(new, "cols01")["columns"][0]["blocks"] == []
    assert email_doc.locate_block(new, "text01") == ("cols01:1", 0)


def test_move_errors(doc):
    assert unchanged(doc, {"op": "move", "id": "ghost1", "to": {"parent": None, "index": 0}}) == {
        "id": "There is no block with this id."}
    assert unchanged(doc, {"op": "move", "id": "cols01", "to": {"parent": "cols01:0", "index": 0}}) == {
        "to.parent": "Columns cannot be placed inside columns."}


def test_move_up_and_down_stay_inside_their_list(doc):
    new = email_doc.apply_op(doc, {"op": "move_down", "id": "head01"})
    assert ids(new["blocks"]) == ["text01", "head01", "cols01", "foot01"]
    new = email_doc.apply_op(new, {"op": "move_up", "id": "head01"})
    assert ids(new["blocks"]) == ids(doc["blocks"])
    assert email_doc.apply_op(doc, {"op": "move_up", "id": "head01"}) == doc
    assert email_doc.apply_op(doc, {"op": "move_down", "id": "inner01"}) == doc
    assert unchanged(doc, {"op": "move_up", "id": "ghost1"}) == {"id": "There is no block with this id."}


def test_update_changes_only_that_block(doc):
    new = email_doc.apply_op(doc, {"op": "update", "id": "inner01",
                                   "fields": {"html": "<p>Changed</p>", "font_size": "20", "align": "center"}})
    inner = email_doc.find_block(new, "inner01")
    assert inner["html"] == "<p>Changed</p>" and inner["font_size"] == 20 and inner["align"] == "center"
    assert email_doc.find_block(doc, "inner01")["html"] == "<p>In column</p>"
    assert new["blocks"][0] == doc["blocks"][0]


def test_update_column_widths_and_social_links(doc):
    new = email_doc.apply_op(doc, {"op": "update", "id": "cols01", "fields": {"widths": ["30%", "70%"]}})
    cols = email_doc.find_block(new, "cols01")["columns"]
    assert [c["width"] for c in cols] == ["30%", "70%"] and ids(cols[0]["blocks"]) == ["inner01"]
    new, social_id = email_doc.apply_op_with_id(new, {"op": "add", "type": "social"})
    new = email_doc.apply_op(new, {"op": "update", "id": social_id,
                                   "fields": {"links": [{"network": "tiktok", "href": "https://tiktok.com/@a"}]}})
    assert email_doc.find_block(new, social_id)["links"] == [{"network": "tiktok", "href": "https://tiktok.com/@a"}]


def test_update_errors_name_the_field(doc):
    assert unchanged(doc, {"op": "update", "id": "head01", "fields": {"href": "https://x.example"}}) == {
        "href": "Not a setting of a heading block."}
    assert unchanged(doc, {"op": "update", "id": "text01", "fields": {"font_size": 99}}) == {
        "font_size": "Font size must be a whole number from 10 to 32."}
    assert unchanged(doc, {"op": "update", "id": "ghost1", "fields": {"text": "x"}}) == {
        "id": "There is no block with this id."}
    assert "columns" in unchanged(doc, {"op": "update", "id": "cols01", "fields": {"columns": []}})
    assert unchanged(doc, {"op": "update", "id": "cols01", "fields": {"widths": ["50%"]}}) == {
        "widths": "Give one width per column."}
    assert unchanged(doc, {"op": "update", "id": "cols01", "fields": {"widths": ["50%", "20%"]}}) == {
        "widths": "Column widths must add up to 100%."}
    assert unchanged(doc, {"op": "update", "id": "head01", "fields": {"id": "other1"}}) == {
        "id": "Not a setting of a heading block."}


def test_duplicate_copies_with_fresh_ids_right_after(doc):
    new, copy_id = email_doc.apply_op_with_id(doc, {"op": "duplicate", "id": "cols01"})
    assert ids(new["blocks"])[2:4] == ["cols01", copy_id] and copy_id != "cols01"
    copied = new["blocks"][3]
    assert copied["columns"][0]["blocks"][0]["html"] == "<p>In column</p>"
    assert copied["columns"][0]["blocks"][0]["id"] != "inner01"
    all_ids = [b["id"] for b in new["blocks"]] + [b["id"] for c in new["blocks"] if c["type"] == "columns"
                                                  for col in c["columns"] for b in col["blocks"]]
    assert len(all_ids) == len(set(all_ids))
    assert unchanged(doc, {"op": "duplicate", "id": "ghost1"}) == {"id": "There is no block with this id."}


def test_duplicate_past_the_limit_is_refused():
    full = doc_with(*[block("spacer") for _ in range(200)])
    assert unchanged(full, {"op": "duplicate", "id": full["blocks"][0]["id"]}) == {
        "blocks": "A template holds at most 200 blocks."}
    assert "blocks" in unchanged(full, {"op": "add", "type": "text"})


def test_delete_removes_the_block_and_its_contents(doc):
    new = email_doc.apply_op(doc, {"op": "delete", "id": "cols01"})
    assert ids(new["blocks"]) == ["head01", "text01", "foot01"]
    assert email_doc.find_block(new, "inner01") is None
    new = email_doc.apply_op(doc, {"op": "delete", "id": "inner01"})
    assert email_doc.find_block(new, "cols01")["columns"][0]["blocks"] == []
    assert unchanged(doc, {"op": "delete", "id": "ghost1"}) == {"id": "There is no block with this id."}


def test_settings(doc):
    new = email_doc.apply_op(doc, {"op": "settings", "fields": {"width": "700", "preheader": " Hello "}})
    assert new["settings"]["width"] == 700 and new["settings"]["preheader"] == "Hello"
    assert new["blocks"] == doc["blocks"] and doc["settings"]["width"] == 600
    assert unchanged(doc, {"op": "settings", "fields": {"width": 100}}) == {
        "width": "Width must be a whole number from 480 to 800."}
    assert unchanged(doc, {"op": "settings", "fields": {"font_family": "Comic Sans"}}).keys() == {"font_family"}
    assert unchanged(doc, {"op": "settings", "fields": {"evil": 1}}) == {"evil": "Not a template setting."}


def test_unknown_operation_and_malformed_positions(doc):
    assert unchanged(doc, {"op": "explode"}).keys() == {"op"}
    assert unchanged(doc, "add").keys() == {"op"}
    assert unchanged(doc, {"op": "move", "id": "head01", "to": "top"}) == {"to": "Give the position as {parent, index}."}
    assert "to.index" in unchanged(doc, {"op": "add", "type": "text", "to": {"index": "first"}})


def test_the_keys_an_update_accepts():
    assert "widths" in email_doc.block_keys("columns") and "columns" not in email_doc.block_keys("columns")
    assert set(email_doc.block_keys("button")) == {"padding", "background", "align", "text", "href",
                                                   "button_color", "text_color", "border_radius", "full_width"}


def test_an_invalid_document_is_refused_before_any_operation():
    bad = {"blocks": [block("button", href="javascript:x")]}
    assert "blocks[0].href" in unchanged(bad, {"op": "add", "type": "text"})


def test_the_palette_offers_every_block_type():
    types = {entry["type"] for entry in email_doc.PALETTE}
    assert types == set(email_doc.BLOCK_TYPES)
    assert [e["count"] for e in email_doc.PALETTE if e["type"] == "columns"] == [2, 3]
    for type_ in email_doc.BLOCK_TYPES:
        new = email_doc.new_block(type_)
        assert re.fullmatch(r"[A-Za-z0-9_-]{6,32}", new["id"])
        email_doc.validate_document({"blocks": [new]})
