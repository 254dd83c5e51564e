"""The starter gallery: six or more global templates that validate, compile, personalise and carry the
footer every marketing email needs, with thumbnails and self-hosted images."""
import json
import struct
from pathlib import Path

import jinja2.sandbox
import mjml
import pytest

from nudge import gallery
from nudge.services import email_doc, rendering

STATIC = Path(gallery.__file__).resolve().parent.parent / "static"
BASE_URL = "https://mail.juniper.example.com"
REQUIRED_CATEGORIES = {"Newsletter", "Announcement", "Promotion", "Welcome", "Transactional", "Plain"}
GMAIL_CLIP_BYTES = 102 * 1024
SAMPLE = {
    "contact": {"first_name": "Alex", "last_name": "Morgan"},
    "account": {"postal_address": "12 Orchard Lane, Riverside RS1 2AB"},
    "unsubscribe_url": "https://mail.juniper.example.com/u/tok123",
    "preferences_url": "https://mail.juniper.example.com/p/tok123",
    "view_in_browser_url": "https://mail.juniper.example.com/v/tok123",
}

SLUGS = [entry["slug"] for entry in gallery.gallery_index()]


def shipped(slug):
    """The gallery document as the file on disk holds it."""
    return json.loads((gallery.GALLERY_DIR / f"{slug}.json").read_text(encoding="utf-8"))


def blocks_of(doc):
    """Every block of a document, those inside columns included."""
    return list(gallery._walk(doc["blocks"]))


def png_size(path):
    """(width, height) from a PNG's IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", header[16:24])


def personalised(slug):
    """The template compiled as the product compiles it, then rendered for one sample recipient."""
    html = email_doc.to_html(email_doc.validate_document(shipped(slug)), base_url=BASE_URL)
    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(html).render(SAMPLE)


def test_index_lists_every_kind_of_starter_with_its_files():
    index = gallery.gallery_index()
    assert len(index) >= 6
    assert len(SLUGS) == len(set(SLUGS))
    assert REQUIRED_CATEGORIES <= {entry["category"] for entry in index}
    for entry in index:
        assert set(entry) == {"slug", "name", "category", "description"}
        assert entry["name"].strip() and entry["description"].strip()
        assert (gallery.GALLERY_DIR / f"{entry['slug']}.json").is_file()
        thumbnail = STATIC / "img" / "gallery" / f"{entry['slug']}.png"
        assert thumbnail.is_file(), f"missing thumbnail for {entry['slug']}"
        assert png_size(thumbnail) == (300, 390)
        assert thumbnail.stat().st_size < 80_000


@pytest.mark.parametrize("slug", SLUGS)
def test_template_validates_and_compiles_to_html(slug):
    doc = email_doc.validate_document(shipped(slug))
    html = mjml.mjml2html(email_doc.to_mjml(doc, base_url=BASE_URL))
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert len(email_doc.to_html(doc, base_url=BASE_URL).encode()) < GMAIL_CLIP_BYTES


@pytest.mark.parametrize("slug", SLUGS)
def test_template_compiles_in_the_product_without_content_warnings(slug):
    entry = gallery.load_gallery(BASE_URL)[SLUGS.index(slug)]
    compiled = rendering.compile_template(content_json=entry["content_json"], base_url=BASE_URL)
    assert compiled.warnings == []
    assert "{{ unsubscribe_url }}" in compiled.text
    assert "{{ account.postal_address }}" in compiled.text


@pytest.mark.parametrize("slug", SLUGS)
def test_template_footer_holds_postal_address_and_unsubscribe_link(slug):
    footers = [block for block in blocks_of(shipped(slug)) if block["type"] == "footer"]
    assert footers, f"{slug} has no footer block"
    footer_html = " ".join(block["html"] for block in footers)
    assert "{{ account.postal_address }}" in footer_html
    assert 'href="{{ unsubscribe_url }}"' in footer_html


@pytest.mark.parametrize("slug", SLUGS)
def test_template_personalises_for_a_recipient(slug):
    html = personalised(slug)
    assert "12 Orchard Lane, Riverside RS1 2AB" in html
    assert 'href="https://mail.juniper.example.com/u/tok123"' in html
    assert "{{" not in html and "}}" not in html
    assert "Hi Alex" in html
    assert "Hi there" not in html


def test_greeting_falls_back_when_the_contact_has_no_first_name():
    html = email_doc.to_html(email_doc.validate_document(shipped("newsletter")), base_url=BASE_URL)
    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(autoescape=True)
    rendered = environment.from_string(html).render({**SAMPLE, "contact": {}})
    assert "Hi there," in rendered


@pytest.mark.parametrize("slug", SLUGS)
def test_template_images_are_self_hosted_with_alt_text(slug):
    for block in blocks_of(shipped(slug)):
        if block["type"] != "image":
            continue
        assert block["src"].startswith("/static/img/gallery/assets/"), block["src"]
        asset = STATIC / block["src"].removeprefix("/static/")
        assert asset.is_file(), f"{slug} uses a missing image {block['src']}"
        assert asset.stat().st_size < 60_000
        assert block["alt"].strip(), f"{slug}: image {block['id']} has no alt text"


def test_every_shipped_asset_is_used_by_a_template():
    used = {block["src"].rsplit("/", 1)[-1] for slug in SLUGS for block in blocks_of(shipped(slug))
            if block["type"] == "image"}
    assets = {path.name for path in (STATIC / "img" / "gallery" / "assets").iterdir()}
    assert assets == used


def test_newsletter_is_the_full_benchmark_layout():
    blocks = shipped("newsletter")["blocks"]
    column_counts = sorted(len(block["columns"]) for block in blocks if block["type"] == "columns")
    assert 2 in column_counts and 3 in column_counts
    types = {block["type"] for block in blocks_of(shipped("newsletter"))}
    assert {"heading", "text", "image", "button", "divider", "social", "footer"} <= types
    html = email_doc.to_html(email_doc.validate_document(shipped("newsletter")), base_url=BASE_URL)
    assert len(html.encode()) >= 15_000


def test_load_gallery_makes_image_urls_absolute_without_touching_the_shipped_files():
    loaded = {entry["slug"]: entry for entry in gallery.load_gallery(BASE_URL + "/")}
    assert list(loaded) == SLUGS
    newsletter = loaded["newsletter"]
    assert newsletter["thumbnail"] == "/static/img/gallery/newsletter.png"
    assert newsletter["category"] == "Newsletter"
    sources = [block["src"] for block in blocks_of(newsletter["content_json"]) if block["type"] == "image"]
    assert sources and all(src.startswith(BASE_URL + "/static/img/gallery/assets/") for src in sources)
    nested = [block for block in blocks_of(newsletter["content_json"]) if block["id"] == "nl-p1-img"]
    assert nested[0]["src"] == BASE_URL + "/static/img/gallery/assets/product-vase.jpg"

    newsletter["content_json"]["blocks"].clear()
    again = gallery.load_gallery("https://other.example.org")[SLUGS.index("newsletter")]
    assert again["content_json"]["blocks"], "a caller's change leaked into the next load"
    assert all(block["src"].startswith("https://other.example.org/static/")
               for block in blocks_of(again["content_json"]) if block["type"] == "image")


def test_loaded_documents_still_validate_with_absolute_image_urls():
    for entry in gallery.load_gallery(BASE_URL):
        doc = email_doc.validate_document(entry["content_json"])
        sources = {block["src"] for block in blocks_of(doc) if block["type"] == "image"}
        assert all(src.startswith(BASE_URL + "/static/img/gallery/assets/") for src in sources)
