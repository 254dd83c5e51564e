"""The starter gallery shipped with the product: global templates as content_json documents.

index.json lists the templates in display order; <slug>.json holds each document (docs/editor.md).
Images in the documents are app paths (/static/img/gallery/assets/...); load_gallery makes them absolute
for an instance's base URL, because an email's images must load from the recipient's mail client.
Thumbnails are /static/img/gallery/<slug>.png, made by scripts/gallery_thumbnails.py.
"""
import copy
import functools
import json
from pathlib import Path

GALLERY_DIR = Path(__file__).resolve().parent
THUMBNAIL_PATH = "/static/img/gallery/{slug}.png"


def gallery_index():
    """[{slug, name, category, description}] in display order."""
    return copy.deepcopy(_index())


@functools.cache
def _index():
    """index.json as shipped, read once per process."""
    return json.loads((GALLERY_DIR / "index.json").read_text(encoding="utf-8"))


@functools.cache
def _document(slug):
    """A gallery document exactly as shipped (never handed out: callers get a copy)."""
    return json.loads((GALLERY_DIR / f"{slug}.json").read_text(encoding="utf-8"))


def absolute_image_urls(doc, base_url):
    """A copy of the document whose image src values under /static/ start with base_url instead."""
    base_url = base_url.rstrip("/")
    doc = copy.deepcopy(doc)
    for block in _walk(doc["blocks"]):
        if block.get("type") == "image" and str(block.get("src", "")).startswith("/static/"):
            block["src"] = base_url + block["src"]
    return doc


def _walk(blocks):
    """Every block, those inside columns included."""
    for block in blocks:
        yield block
        for column in block.get("columns") or ():
            yield from _walk(column.get("blocks") or ())


def load_gallery(base_url):
    """Every gallery template in order: its index entry, content_json with absolute image URLs, thumbnail."""
    return [{**entry,
             "content_json": absolute_image_urls(_document(entry["slug"]), base_url),
             "thumbnail": THUMBNAIL_PATH.format(slug=entry["slug"])}
            for entry in gallery_index()]
