"""Rendering: the merge-tag sandbox, personalisation, the plain-text part, CSS inlining, content
warnings, error lines and the per-version cache."""
import uuid

import pytest

from nudge.errors import ValidationError
from nudge.extensions import db
from nudge.models import Contact, TemplateVersion
from nudge.services import rendering

URLS = {"unsubscribe_url": "https://mail.example.com/u/tok?a=1&b=2", "preferences_url": "https://mail.example.com/p/tok",
        "view_in_browser_url": "https://mail.example.com/v/tok"}
ACCOUNT = {"name": "Juniper & Co", "postal_address": "1 Kiln Lane\nPotterton PT1 2AB",
           "default_from_name": "Juniper", "default_from_email": "news@juniper.example"}
FOOTER = '<p>{{ account.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'


def mjml_doc(inner, footer=True):
    """An MJML document with one column holding `inner` (and the legal footer)."""
    legal = f"<mj-text>{FOOTER}</mj-text>" if footer else ""
    return (f"<mjml><mj-body><mj-section><mj-column>{inner}{legal}</mj-column></mj-section></mj-body></mjml>")


def version_of(html, text=None):
    """A template version as the templates service stores it (not saved: rendering only reads it)."""
    return TemplateVersion(id=uuid.uuid4(), version=1, content_html=html,
                           content_text=text if text is not None else rendering.html_to_text(html))


def render(html, contact=None, account=ACCOUNT):
    """(html, text) of raw HTML compiled and rendered for one contact."""
    compiled = rendering.compile_template(html=html)
    context = rendering.build_context(account, contact, **URLS)
    return rendering.render_version(version_of(compiled.html, compiled.text), context)


def codes(warnings):
    return {warning["code"] for warning in warnings}


# --------------------------------------------------------------------------------------------------
# The sandbox

ESCAPES = [
    "{{ ''.__class__ }}",
    "{{ contact.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    "{{ self._TemplateReference__context }}",
    "{{ contact['__cla' ~ 'ss__'] }}",
    "{{ '{0.__class__.__mro__}'.format(contact) }}",
    "{{ contact | attr('__class__') }}",
    "{{ contact.email.center(1000000000) }}",
    "{{ 'x' * 100000000 }}",
    "{{ 9 ** 99999999 }}",
    "{{ '%099999999d' % 1 }}",
    "{{ contact.tags.append('owned') }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
    "{% macro boom(n) %}{{ boom(n) }}{{ boom(n) }}{% endmacro %}{{ boom(1) }}",
    "{% autoescape false %}{{ contact.first_name }}{% endautoescape %}",
    "{{ contact.first_name | safe }}",
]


@pytest.mark.parametrize("payload", ESCAPES)
def test_sandbox_escapes_are_refused_when_saving(payload):
    with pytest.raises(ValidationError) as exc:
        rendering.compile_template(html=f"<p>Hi</p>\n<p>{payload}</p>\n{FOOTER}")
    assert exc.value.details[0]["field"] == "content"
    assert exc.value.details[0]["issue"].startswith("Line 2: ")


@pytest.mark.parametrize("payload", ["{{ contact['__cla' ~ 'ss__'] }}", "{{ ''['__cla' ~ 'ss__'].__mro__ }}",
                                     "{% for c in contact[('_' * 2) ~ 'class' ~ ('_' * 2)] %}{{ c }}{% endfor %}"])
def test_an_escape_that_reaches_a_send_fails_closed(payload):
    """A version stored before the save-time checks (or by another path) still cannot reach Python
    internals: the render refuses instead of printing anything."""
    version = version_of(f"<p>{payload}</p>", text=payload)
    with pytest.raises(ValidationError) as exc:
        rendering.render_version(version, rendering.build_context(ACCOUNT, None, **URLS))
    assert "unsafe" in exc.value.details[0]["issue"]


def test_a_contacts_markup_is_escaped_in_html_and_kept_in_text():
    html, text = render('<p>Hi {{ contact.first_name }}</p><a href="https://x.example/?n={{ contact.last_name }}">x</a>'
                        + FOOTER, {"email": "e@example.com", "first_name": "<script>alert(1)</script>",
                                   "last_name": '"><img src=x onerror=alert(1)>'})
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "onerror" in html and '"><img' not in html  # the quote cannot end the attribute
    assert "Hi <script>alert(1)</script>" in text


# --------------------------------------------------------------------------------------------------
# Personalisation

def test_merge_tags_default_custom_fields_and_dates():
    template = ('<p>Hi {{ contact.first_name | default("there") }} {{ contact.last_name | upper }}</p>'
                "<p>{{ contact.company }} / {{ contact.custom.company }} / {{ contact.custom.email }} "
                "/ {{ contact.email }}</p><p>Renews {{ contact.renewal | date }} ({{ contact.renewal | date('%d/%m/%Y') }})"
                "</p><p>{{ contact.tags | join(', ') }} {% if 'vip' in contact.tags %}VIP{% endif %}</p>"
                "<p>{{ account.name }}, {{ account.default_from_email }}</p>" + FOOTER)
    html, text = render(template, {"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace",
                                   "tags": ["vip", "beta"],
                                   "custom_fields": {"company": "Analytical Engines", "renewal": "2026-03-05",
                                                     "email": "not-the-address@example.com"}})
    assert "Hi Ada LOVELACE" in text
    # A custom field is reachable both ways, but never hides a built-in field of the same name.
    assert ("Analytical Engines / Analytical Engines / not-the-address@example.com / ada@example.com" in text)
    assert "Renews 5 March 2026 (05/03/2026)" in text
    assert "vip, beta VIP" in text
    assert "Juniper &amp; Co, news@juniper.example" in html
    assert "1 Kiln Lane, Potterton PT1 2AB" in text  # a multi-line postal address reads as one line
    assert "Unsubscribe (https://mail.example.com/u/tok?a=1&b=2)" in text
    assert 'href="https://mail.example.com/u/tok?a=1&amp;b=2"' in html


def test_missing_and_blank_fields_render_empty_and_never_break_a_send():
    template = ('<p>Hi {{ contact.first_name | default("there") }}!</p>'
                "<p>[{{ contact.last_name }}][{{ contact.nickname }}][{{ contact.custom.plan.tier }}]"
                "[{{ contact.score + 1 }}][{{ contact.nickname | upper }}][{{ contact.nickname.strip() }}]"
                "[{% if contact.score > 10 %}high{% else %}low{% endif %}]"
                "[{% for t in contact.custom.things %}{{ t }}{% endfor %}][{{ contact.renewal | date }}]</p>" + FOOTER)
    for contact in ({"email": "a@example.com", "first_name": "   "},
                    {"email": "b@example.com", "first_name": None, "last_name": None, "custom_fields": {"plan": None}}):
        html, text = render(template, contact)
        assert "Hi there!" in text
        assert "[][][][][][][low][][]" in text
        assert "None" not in html and "Undefined" not in html


def test_a_contact_model_and_its_custom_fields(app, make_account):
    account, _ = make_account(name="Kiln Co")
    account.postal_address = "2 Clay Street"
    contact = Contact(account_id=account.id, email="mo@example.com", first_name="Mo", tags=["clay"],
                      custom_fields={"plan": "pro", "items": 3})
    db.session.add(contact)
    db.session.commit()
    context = rendering.build_context(account, db.session.get(Contact, contact.id), **URLS)
    assert context["contact"]["email"] == "mo@example.com"
    assert context["account"]["name"] == "Kiln Co" and context["account"]["postal_address"] == "2 Clay Street"
    _, text = render("<p>{{ contact.first_name }} {{ contact.plan }} {{ contact.items }} {{ contact.tags[0] }} "
                     "{{ contact.custom.plan }}</p>" + FOOTER, db.session.get(Contact, contact.id), account)
    # "items" is data here, not the dict method of the same name.
    assert "Mo pro 3 clay pro" in text
    assert "2 Clay Street" in text


# --------------------------------------------------------------------------------------------------
# The plain-text part

def test_text_part_keeps_links_headings_lists_and_merge_tags():
    compiled = rendering.compile_template(mjml=mjml_doc(
        '<mj-text><h1>Spring news for {{ contact.first_name | default("you") }}</h1>'
        '<p>Read <a href="https://example.com/blog?a=1&amp;b=2">the <b>blog</b></a> or '
        '<a href="mailto:hi@example.com">write to us</a>.</p>'
        "<ul><li>Mugs</li><li>Vases {{ contact.custom.plan }}</li></ul><ol><li>First</li><li>Second</li></ol></mj-text>"
        '<mj-image src="https://example.com/a.png" alt="Our new mugs" href="https://example.com/mugs" />'
        '<mj-button href="{{ view_in_browser_url }}">View online</mj-button>'))
    text = compiled.text
    assert "# Spring news for {{ contact.first_name | default(\"you\") }}" in text
    assert "Read the blog (https://example.com/blog?a=1&b=2) or write to us (hi@example.com)." in text
    assert "- Mugs\n- Vases {{ contact.custom.plan }}" in text
    assert "1. First\n2. Second" in text
    assert "Our new mugs (https://example.com/mugs)" in text
    assert "View online ({{ view_in_browser_url }})" in text
    assert "{{ account.postal_address }} Unsubscribe ({{ unsubscribe_url }})" in text


def test_text_part_drops_the_preheader_css_scripts_and_head():
    compiled = rendering.compile_template(mjml=(
        "<mjml><mj-head><mj-title>Title words</mj-title><mj-preview>Secret preheader</mj-preview>"
        "<mj-style>.promo { color: red; }</mj-style></mj-head><mj-body><mj-section><mj-column>"
        f"<mj-text>Visible words</mj-text><mj-raw><script>var hidden = 1;</script></mj-raw>"
        f"<mj-text>{FOOTER}</mj-text></mj-column></mj-section></mj-body></mjml>"))
    assert "Visible words" in compiled.text
    for hidden in ("Secret preheader", "Title words", "color: red", "var hidden", "{", "mso"):
        assert hidden not in compiled.text.replace("{{", "").replace("}}", "")


def test_text_part_of_a_table_row_stays_on_one_line():
    text = rendering.html_to_text("<table><tr><th>Item</th><th>Price</th></tr>"
                                  "<tr><td>Vase</td><td></td><td>$38</td></tr></table><p>Thanks</p>")
    assert text == "Item | Price\nVase | $38\n\nThanks\n"


def test_text_part_puts_short_columns_side_by_side():
    line = ("<mj-section><mj-column><mj-text>{a}</mj-text></mj-column>"
            "<mj-column><mj-text>{b}</mj-text></mj-column></mj-section>")
    compiled = rendering.compile_template(mjml=(
        "<mjml><mj-body>" + line.format(a="Vase × 1", b="$38.00") + line.format(a="Total", b="$96.50")
        + line.format(a="<p>A longer story</p><p>in two paragraphs</p>", b="Beside it")
        + f"<mj-section><mj-column><mj-text>{FOOTER}</mj-text></mj-column></mj-section></mj-body></mjml>"))
    assert "Vase × 1 | $38.00\n\nTotal | $96.50\n\nA longer story\n\nin two paragraphs\n\nBeside it" in compiled.text


# --------------------------------------------------------------------------------------------------
# Raw HTML: CSS inlining

def test_css_of_raw_html_is_inlined_and_merge_tags_survive():
    compiled = rendering.compile_template(html=(
        "<html><head><style>p.lead { color: #123456 } @media (max-width: 480px) { p { font-size: 18px } }</style>"
        '<link rel="stylesheet" href="http://127.0.0.1:9/never-fetched.css"></head><body>'
        '<p class="lead">Hi {{ contact.first_name | default("friend") }} &amp; {% if contact.score < 3 %}new{% endif %}</p>'
        "<table>{% for tag in contact.tags %}<tr><td>{{ tag }}</td></tr>{% endfor %}</table>"
        "<a href='{{ view_in_browser_url }}?email={{ contact.email | default(\"none\") | urlencode }}'>Open</a>"
        f"{FOOTER}</body></html>"))
    html = compiled.html
    assert '<p class="lead" style="color: #123456;">' in html
    assert "@media (max-width: 480px)" in html  # responsive rules stay in the <style> block
    assert 'Hi {{ contact.first_name | default("friend") }} &amp; {% if contact.score < 3 %}new{% endif %}' in html
    # The loop stays inside the table (an HTML parser moves stray text out of tables).
    assert "<table>{% for tag in contact.tags %}" in html and "{% endfor %}</tbody></table>" in html
    # In an attribute the tag's quotes turn single, so the stored HTML stays well-formed.
    assert "href=\"{{ view_in_browser_url }}?email={{ contact.email | default('none') | urlencode }}\"" in html
    rendered, _ = rendering.render_version(version_of(html, compiled.text), rendering.build_context(
        ACCOUNT, {"email": "a+b@example.com", "first_name": "Bea", "tags": ["x", "y"],
                  "custom_fields": {"score": 1}}, **URLS))
    assert "Hi Bea &amp; new" in rendered
    table = rendered[rendered.index("<table>"):rendered.index("</table>")]
    assert "<tr><td>x</td></tr>" in table and "<tr><td>y</td></tr>" in table
    assert 'href="https://mail.example.com/v/tok?email=a%2Bb%40example.com"' in rendered


# --------------------------------------------------------------------------------------------------
# Content warnings

GOOD = ('<p><img src="https://example.com/a.png" alt="A mug"><img src="https://example.com/p.gif" width="1" height="1">'
        '<a href="https://example.com">Site</a> <a href="mailto:hi@example.com">Mail</a> '
        '<a href="{{ view_in_browser_url }}">Online</a></p>' + FOOTER)


def test_a_clean_email_has_no_warnings():
    assert rendering.compile_template(html=GOOD).warnings == []


@pytest.mark.parametrize("change, code", [
    (lambda html: html.replace('alt="A mug"', 'alt=" "'), "image_alt"),
    (lambda html: html.replace('alt="A mug"', ""), "image_alt"),
    (lambda html: html.replace("https://example.com\"", "javascript:alert(1)\""), "link_scheme"),
    (lambda html: html.replace("https://example.com\"", "example.com/shop\""), "link_scheme"),
    (lambda html: html.replace("https://example.com\"", "#top\""), "link_scheme"),
    (lambda html: html.replace('<a href="{{ unsubscribe_url }}">Unsubscribe</a>', ""), "unsubscribe_missing"),
    (lambda html: html.replace('href="{{ unsubscribe_url }}"', 'href="{{ preferences_url }}"'), "unsubscribe_missing"),
    (lambda html: html.replace("{{ account.postal_address }}", "Somewhere"), "postal_address_missing"),
    (lambda html: html + "<p>" + "x" * (103 * 1024) + "</p>", "size"),
])
def test_each_warning(change, code):
    warnings = rendering.compile_template(html=change(GOOD)).warnings
    assert codes(warnings) == {code}
    assert all(warning["message"] for warning in warnings)


def test_the_text_part_needs_the_unsubscribe_link_and_address_too():
    compiled = rendering.compile_template(html=GOOD)
    assert rendering.check_content(compiled.html, compiled.text) == []
    assert codes(rendering.check_content(compiled.html, "Hello")) == {"unsubscribe_missing", "postal_address_missing"}


def test_an_email_just_under_gmails_limit_is_not_flagged():
    html = GOOD + "<p>" + "x" * (100 * 1024) + "</p>"
    assert "size" not in codes(rendering.check_content(html))


# --------------------------------------------------------------------------------------------------
# Errors with their lines

def test_a_jinja_error_is_reported_with_the_line_the_user_wrote():
    source = "\n".join(["<html><body>"] + [f"<p>Line {n}</p>" for n in range(2, 12)]
                       + ["<p>{{ contact.first_name | default('there' }}</p>", FOOTER, "</body></html>"])
    with pytest.raises(ValidationError) as exc:
        rendering.compile_template(html=source)
    assert exc.value.details[0]["field"] == "content"
    assert exc.value.details[0]["issue"].startswith("Line 12: ")
    with pytest.raises(ValidationError) as exc:
        rendering.compile_template(html="<p>\n{% if contact.vip %}\nVIP\n</p>")
    assert exc.value.details[0]["issue"] == "Line 2: a {% if %} is never closed: add {% endif %}."  # the unclosed if
    with pytest.raises(ValidationError) as exc:
        rendering.compile_template(html="<p>\n\n{{ contact.first_name | shout }}</p>")
    assert exc.value.details[0]["issue"].startswith("Line 3: No filter named 'shout'.")
    assert "default" in exc.value.details[0]["issue"]  # and the filters that exist


@pytest.mark.parametrize("inner, line, words", [
    ("<mj-text>\nfish < chips\n</mj-text>", 4, "does not start a tag"),
    ("<mj-text>\n<p>unclosed\n</mj-text>", 4, "<p> is not closed"),
    ("<mj-text>ok</mj-text>\n<mj-image src=x.png />", 4, "attribute values need quotes"),
    ("<mj-text>ok</mj-text>\n\n<mj-include path=\"/etc/passwd\" />", 5, "mj-include"),
    ("<mj-text>\n{{ contact.first_name | upper }\n</mj-text>", 4, "a merge tag is not closed properly: end {{"),
])
def test_an_mjml_error_is_reported_with_its_line(inner, line, words):
    source = "<mjml>\n<mj-body><mj-section><mj-column>\n" + inner + "\n</mj-column></mj-section></mj-body></mjml>"
    with pytest.raises(ValidationError) as exc:
        rendering.compile_template(mjml=source)
    issue = exc.value.details[0]["issue"]
    assert issue.startswith(f"Line {line}: ") and words in issue


def test_mjml_merge_tags_with_comparisons_compile():
    compiled = rendering.compile_template(mjml=mjml_doc(
        "<mj-text>{% if contact.score < 3 %}new here{% else %}welcome back{% endif %}</mj-text>"))
    context = rendering.build_context(ACCOUNT, {"email": "a@example.com", "custom_fields": {"score": 7}}, **URLS)
    _, text = rendering.render_version(version_of(compiled.html, compiled.text), context)
    assert "welcome back" in text and "new here" not in text


# --------------------------------------------------------------------------------------------------
# The cache and the preview

def test_compiled_versions_are_cached_per_version():
    first = version_of(f"<p>Hello {{{{ contact.first_name }}}}</p>{FOOTER}")
    again = TemplateVersion(id=first.id, content_html=first.content_html, content_text=first.content_text)
    second = version_of(f"<p>Goodbye {{{{ contact.first_name }}}}</p>{FOOTER}")
    compiled = rendering.compiled_version(first)
    assert rendering.compiled_version(again) is compiled
    assert rendering.compiled_version(second) is not compiled
    context = rendering.build_context(ACCOUNT, {"email": "a@example.com", "first_name": "Ann"}, **URLS)
    assert "Hello Ann" in rendering.render_version(first, context)[0]
    assert "Goodbye Ann" in rendering.render_version(second, context)[0]


def test_preview_uses_alex_sample_and_real_looking_links():
    result = rendering.preview(ACCOUNT, mjml=mjml_doc(
        '<mj-text>Hi {{ contact.first_name }} {{ contact.last_name }}</mj-text>'
        '<mj-button href="{{ view_in_browser_url }}">Online</mj-button>'), base_url="https://nudge.example.com/")
    assert "Hi Alex Sample" in result["text"]
    assert "https://nudge.example.com/u/preview" in result["html"]
    assert "Online (https://nudge.example.com/v/preview)" in result["text"]
    assert result["warnings"] == []
    given = rendering.preview(None, html="<p>{{ contact.first_name }} {{ contact.custom.plan }}</p>",
                              contact={"email": "z@example.com", "first_name": "Zoe", "custom_fields": {"plan": "pro"}},
                              base_url="https://nudge.example.com")
    assert "Zoe pro" in given["text"]
    assert codes(given["warnings"]) == {"unsubscribe_missing", "postal_address_missing"}


def test_exactly_one_source_is_compiled():
    for kwargs in ({}, {"html": "<p>x</p>", "mjml": mjml_doc("")}):
        with pytest.raises(ValidationError):
            rendering.compile_template(**kwargs)


# --------------------------------------------------------------------------------------------------
# Merge tag names: a misspelled one would go out blank

def test_a_misspelled_merge_tag_is_named_with_the_closest_real_one():
    problems = rendering.unknown_merge_tags("Hi\n{{ contact.firstname }}, {{ account.nme }} {{ unsubscribe_ur }}")
    assert [(p["line"], p["tag"], p["suggestion"]) for p in problems] == [
        (2, "contact.firstname", "contact.first_name"), (2, "account.nme", "account.name"),
        (2, "unsubscribe_ur", "unsubscribe_url")]
    assert problems[0]["message"] == ("{{ contact.firstname }} is not a merge tag and would be blank: "
                                      "did you mean contact.first_name?")
    # Without "contact.": the field is still found; an unknown root with nothing close says where to look.
    assert rendering.unknown_merge_tags("{{ first_name }}")[0]["suggestion"] == "contact.first_name"
    assert "merge tag list" in rendering.unknown_merge_tags("{{ zzz.qqq }}")[0]["message"]
    # Subscript syntax and filters are read the same way as dots.
    assert [p["tag"] for p in rendering.unknown_merge_tags(
        "{{ contact['last_nam'] | default('x') }}{% if contact.emial %}x{% endif %}")] == [
        "contact.last_nam", "contact.emial"]


def test_every_real_merge_tag_and_local_name_is_accepted():
    source = ("{{ contact.first_name }} {{ contact.last_name | upper }} {{ contact.email }} {{ contact.tags | length }}"
              "{{ contact.subscription_date | date }} {{ contact.plan }} {{ contact.custom.plan }}"
              "{{ contact['first_name'] }} {{ contact.first_name.upper() }}"
              "{{ account.name }} {{ account.postal_address }} {{ account.default_from_name }}"
              "{{ account.default_from_email }} {{ unsubscribe_url }} {{ preferences_url }} {{ view_in_browser_url }}"
              "{% for tag in contact.tags %}{{ tag }}{{ loop.index }}{% endfor %}"
              "{% set n = contact.first_name %}{{ n }}")
    assert rendering.unknown_merge_tags(source, ["plan"]) == []
    # Without the custom field on the account, it is unknown, with the account's field suggested.
    assert [p["tag"] for p in rendering.unknown_merge_tags("{{ contact.plan }} {{ contact.custom.plann }}", ["plan"])] \
        == ["contact.custom.plann"]
    assert [p["tag"] for p in rendering.unknown_merge_tags("{{ contact.plan }}")] == ["contact.plan"]


def test_a_template_with_an_unknown_merge_tag_is_saved_with_a_warning():
    compiled = rendering.compile_template(html=f"<p>Hi {{{{ contact.firstname }}}}</p>{FOOTER}")
    assert rendering.merge_tag_warnings(compiled.html) == [{
        "code": "merge_tag_unknown",
        "message": "{{ contact.firstname }} is not a merge tag and would be blank: did you mean contact.first_name?"}]


@pytest.mark.parametrize("source, issue", [
    ("<p>\n\nHi {{ contact.first_name", "Line 3: a merge tag is not closed: add }}."),
    ("<p>\n\nHi {{ contact.first_name </p>", "Line 3: a merge tag is not closed: end {{ … with }} and {% … with %}."),
    ("{{ contact.first_name <p>{{ x }}",
     "Line 1: a merge tag is not closed or holds an unexpected '}': end {{ … with }} and {% … with %}."),
    ("{{ contact.first_name %}", "Line 1: a merge tag is not closed properly: end {{ … with }} and {% … with %}."),
    ("\n{% for t in contact.tags %}x", "Line 2: a {% for %} is never closed: add {% endfor %}."),
    ("{% if x %}a{% endfor %}", "Line 1: {% endfor %} does not match the open {% if %}: close it with {% endif %} "
                                "first."),
    ("{% include 'x' %", "Line 1: a merge tag is not closed: end {{ … with }} and {% … with %}."),
    ("{% foo %}", "Line 1: {% foo %} is not something a template can do (use if, for or set)."),
    ("{{ contact first_name }}", "Line 1: unexpected 'first_name' inside a merge tag: a merge tag holds one name "
                                 "such as contact.first_name, its parts joined by dots."),
    ("{{ }}", "Line 1: a merge tag is empty: write a name inside it, such as {{ contact.first_name }}."),
    ("{{ contact.first_name | }}", "Line 1: a | in a merge tag needs a filter name after it, such as "
                                   "| default(\"there\")."),
])
def test_template_syntax_errors_read_as_plain_words_with_the_line(source, issue):
    with pytest.raises(ValidationError) as exc:
        rendering.compile_template(html=FOOTER + source)
    assert exc.value.details[0]["issue"] == issue
    assert "print statement" not in exc.value.message and "end of template" not in exc.value.message
