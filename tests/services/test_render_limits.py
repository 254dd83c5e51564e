"""Templates cannot be used to burn the server: source and merge-tag size caps, linear merge-tag scans,
and per-render limits on loops, string growth, output and time (docs/security.md)."""
import random
import re
import uuid

import pytest

from nudge.errors import ValidationError
from nudge.models import TemplateVersion
from nudge.services import email_doc, rendering

FOOTER = '<p>{{ account.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
# s grows to 960,000 characters: under MAX_STRING, so only the loop below can make it slow.
BIG = '{% set s = "x" * 10000 %}{% set s = ' + "s~" * 95 + "s %}"


def refused(html, match):
    with pytest.raises(ValidationError) as exc:
        rendering.preview(None, html=html + FOOTER, base_url="https://example.com")
    assert re.search(match, exc.value.message), exc.value.message
    assert exc.value.details[0]["field"] == "content"
    return exc.value


def test_a_loop_over_the_iteration_cap_is_refused_with_the_message():
    ok = '{% for a in "x" * 99 %}{% for b in "x" * 100 %}{% endfor %}{% endfor %}'  # 9,999 iterations
    assert rendering.preview(None, html=ok + FOOTER, base_url="https://example.com")["html"]
    refused('{% for a in "x" * 100 %}{% for b in "x" * 100 %}{% endfor %}{% endfor %}',
            f"Loops may run at most {rendering.MAX_LOOP_ITERATIONS:,} times in one email")
    refused('{% for a in "x" * 10000 %}{% for b in "x" * 10000 %}{{ a }}{% endfor %}{% endfor %}',
            "Loops may run at most 10,000 times")


@pytest.mark.parametrize("source, message", [
    ('{% set s = "x" * 10000 %}' + "{% set s = s ~ s %}" * 7 + "{{ s }}", "~ would build a string over 1,000,000"),
    ('{% set s = "x" * 10000 %}' + "{% set s = s + s %}" * 7 + "{{ s }}", r"\+ would build a value over 1,000,000"),
    ('{{ ("x" * 10000) | list | join("y" * 1000) }}', "join would build a string over 1,000,000"),
    ('{% set s = ["x" * 10000] * 101 %}{{ s }}', "Repeating a value to more than"),
    ("{% set a = 10 ** 1000 %}{{ a * a * a * a }}", "Numbers over 10,000 bits"),
    (BIG + "{{ [" + ",".join(["s"] * 6) + "] }}", "The email would be longer than 5,000,000 characters"),
    (BIG + '{% set b %}{% for a in "x" * 9 %}{{ s }}{% endfor %}{% endset %}', "longer than 5,000,000"),
    ('{% set b %}{% for a in "x" * 5001 %}' + "y" * 1000 + "{% endfor %}{% endset %}", "longer than 5,000,000"),
])
def test_string_growth_and_output_are_bounded(source, message):
    refused(source, message)


def test_a_runaway_trial_render_stops_with_a_clear_400_and_the_next_render_works():
    # 3,000 iterations of a 960,000-character replace: many seconds without the time limit.
    refused(BIG + '{% for a in "x" * 3000 %}{% if (s | replace("x", "y")) | length > 5 %}{% endif %}{% endfor %}',
            r"takes too long to render \(over 1 s\)")
    ok = rendering.preview(None, html="<p>Hi {{ contact.first_name }}</p>" + FOOTER, base_url="https://example.com")
    assert "Hi Alex" in ok["html"]


def test_a_recipients_render_has_the_same_limits():
    version = TemplateVersion(id=uuid.uuid4(), version=1, content_html="{% for t in contact.tags %}"
                              "{% for u in contact.tags %}{{ t }}{% endfor %}{% endfor %}" + FOOTER,
                              content_text="x")
    contact = {"email": "a@example.com", "tags": [str(n) for n in range(200)]}
    context = rendering.build_context(None, contact, unsubscribe_url="u", preferences_url="p", view_in_browser_url="v")
    with pytest.raises(ValidationError, match="Loops may run at most 10,000 times"):
        rendering.render_version(version, context)
    subject = rendering.TEXT_ENV.from_string('{% for a in "x" * 200 %}{% for b in "x" * 200 %}{% endfor %}{% endfor %}')
    with pytest.raises(Exception, match="Loops may run at most"):
        subject.render({})


def test_sources_over_the_cap_are_refused_on_every_compile_path():
    cap = rendering.MAX_SOURCE_BYTES
    assert cap == 512 * 1024
    html = "<p>" + "x" * cap + "</p>"
    for kwargs in ({"html": html}, {"mjml": "<mjml><mj-body><mj-text>" + "x" * cap + "</mj-text></mj-body></mjml>"}):
        with pytest.raises(ValidationError) as exc:
            rendering.compile_template(**kwargs)
        assert exc.value.details == [{"field": "content", "issue": exc.value.message}]
        assert "a template may be at most 512 KB" in exc.value.message
    blocks = [{"id": f"html{n:04d}", "type": "html", "html": "<p>" + "x" * 190_000 + "</p>"} for n in range(3)]
    with pytest.raises(ValidationError) as exc:
        rendering.compile_template(content_json={"schema": 1, "settings": {}, "blocks": blocks})
    assert exc.value.details[0]["field"] == "content_json" and "at most 512 KB" in exc.value.message
    # Just under the cap, with a few merge tags, compiles.
    filler = "<p>" + "x" * (cap - 2_000) + "</p>"
    assert rendering.compile_template(html=filler + FOOTER).html


def test_merge_tag_code_is_capped():
    tags = '<p>{{ contact.first_name | default("there") }}</p>' * 2_000  # 78 KB of code in the tags
    refused(tags, "merge tags may hold at most 64 KB")
    refused("<p>{{ " + "1 + " * 20_000 + "1", "merge tags may hold at most 64 KB")  # never closed


@pytest.mark.parametrize("text", ["{{" * 8_000, "{{ x " + "{" * 16_000, "{{" + "x" * 16_000, "{%" * 8_000,
                                  "<p>{{ a }}" + "{{" * 8_000 + "</p>", "{#" * 8_000])
def test_an_unclosed_opener_at_16_kb_is_refused_not_a_server_error(text):
    assert len(email_doc.merge_tag_spans(text)) <= 1
    refused(text, "The template has an error")
    protected, tags = rendering.protect(text)
    assert rendering.restore(protected, tags) == text
    assert rendering.has_postal_tag(text + "{{ account.postal_address }}")
    assert not rendering.has_postal_tag(text + "} account.postal_address }}")


def test_the_linear_scan_finds_what_the_regex_found():
    regex = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
    postal = re.compile(r"\{\{[^}]*\baccount\.postal_address\b|\{\{[^}]*\baccount\[\s*['\"]postal_address['\"]\s*\]")
    pieces = ["{", "}", "%", "#", "a", "\n", "{{", "}}", "{%", "%}", " account.postal_address ",
              "account['postal_address']"]
    rng = random.Random(14)
    for _ in range(5_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 25)))
        assert email_doc.merge_tag_spans(text) == [m.span() for m in regex.finditer(text)], text
        assert rendering.has_postal_tag(text) == bool(postal.search(text)), text


def test_html_scans_are_linear_and_find_what_the_regexes_found():
    markup = re.compile(r"<!--.*?-->|<(style|script|title|textarea)\b[^>]*>.*?</\1\s*>|<[^<>]*>", re.S | re.I)
    comment = re.compile(r"<!--.*?-->", re.S)
    pieces = ["<", ">", "<!--", "-->", "<style", "</style>", "</STYLE >", "<Script x>", "</script>", "a", " ",
              "<title>", "</title", "-", "!", "<styles>", "\n"]
    rng = random.Random(14)
    for _ in range(5_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 20)))
        assert rendering.markup_spans(text) == [
            (m.start(), m.end(), bool(m.group(1)) or m.group().startswith("<!--")) for m in markup.finditer(text)]
        assert email_doc.sub_comments(text, str.upper) == comment.sub(lambda m: m.group().upper(), text)


@pytest.mark.parametrize("body", ["<!--" * 4_000, "<style>" * 2_300, "<title " * 2_300])
def test_unclosed_comments_and_raw_text_elements_compile(body):
    compiled = rendering.compile_template(html=body + FOOTER)
    assert "Unsubscribe" in compiled.html
    mjml = "<mjml><mj-body><mj-text>" + body + FOOTER + "</mj-text></mj-body></mjml>"
    with pytest.raises(ValidationError, match="The MJML is not valid"):
        rendering.compile_template(mjml=mjml)
