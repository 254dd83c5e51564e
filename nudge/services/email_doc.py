"""The block editor's document (content_json, docs/editor.md): defaults, validation, editing operations
and compilation to MJML.

Everything here is a pure function of plain data: the input document is never mutated, every function
returns a new one. Nothing in a document is trusted: validate_document normalises it (unknown keys
dropped, missing keys defaulted, values checked) and to_mjml escapes every value, except the markup of
text and footer blocks (sanitised with nh3 to a small inline allow-list) and of html blocks (raw by
design, only made well-formed so MJML can parse it).

Merge tags ({{ ... }}, {% ... %}, {# ... #}) are swapped for inert stand-in tokens before escaping and
sanitising and put back afterwards, so they reach Jinja exactly as written.
"""
import copy
import functools
import html
import html.entities
import json
import re
import secrets
from html.parser import HTMLParser

import mjml
import nh3

from nudge.errors import ValidationError

SCHEMA = 1
MAX_BLOCKS = 200
NETWORKS = ("facebook", "x", "instagram", "linkedin", "youtube", "tiktok", "website")
NETWORK_LABELS = {"facebook": "Facebook", "x": "X", "instagram": "Instagram", "linkedin": "LinkedIn",
                  "youtube": "YouTube", "tiktok": "TikTok", "website": "Website"}
ALIGNS = ("left", "center", "right")
FONT_FAMILIES = (
    ("Helvetica, Arial, sans-serif", "Helvetica"),
    ("Arial, Helvetica, sans-serif", "Arial"),
    ("Verdana, Geneva, sans-serif", "Verdana"),
    ("Tahoma, Verdana, sans-serif", "Tahoma"),
    ("'Trebuchet MS', Helvetica, sans-serif", "Trebuchet MS"),
    ("Georgia, 'Times New Roman', serif", "Georgia"),
    ("'Times New Roman', Times, serif", "Times New Roman"),
    ("'Courier New', Courier, monospace", "Courier New"),
)
TEXT_TAGS = {"b", "strong", "i", "em", "u", "a", "br", "p", "ul", "ol", "li"}
MAX_SOCIAL_LINKS = 12
MAX_LENGTHS = {"text": 1000, "alt": 500, "url": 2000, "html": 50_000, "raw_html": 200_000, "preheader": 500}

DEFAULT_SETTINGS = {
    "width": 600,
    "background": "#f3f4f6",
    "content_background": "#ffffff",
    "font_family": "Helvetica, Arial, sans-serif",
    "text_color": "#1f2937",
    "link_color": "#2563eb",
    "preheader": "",
}

FOOTER_HTML = ('<p>{{ account.postal_address }}</p>'
               '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · '
               '<a href="{{ preferences_url }}">Manage preferences</a></p>')

# type -> label, icon name, one-line description and the defaults a new block starts from. A colour of ""
# for a text colour means "the document's text colour" (settings.text_color).
BLOCK_TYPES = {
    "heading": {"label": "Heading", "icon": "heading", "description": "A title or section heading.",
                "defaults": {"text": "Your heading", "level": 1, "color": "", "font_size": 28,
                             "padding": "16px 24px 8px 24px", "background": "", "align": "left"}},
    "text": {"label": "Text", "icon": "text", "description": "Paragraphs with bold, italic, lists and links.",
             "defaults": {"html": "<p>Write your message here.</p>", "color": "", "font_size": 16,
                          "line_height": 1.5, "padding": "8px 24px", "background": "", "align": "left"}},
    "image": {"label": "Image", "icon": "image", "description": "A picture, optionally linked.",
              "defaults": {"src": "", "alt": "", "href": "", "width": None,
                           "padding": "8px 24px", "background": "", "align": "center"}},
    "button": {"label": "Button", "icon": "button", "description": "A call-to-action button.",
               "defaults": {"text": "Read more", "href": "", "button_color": "#2563eb", "text_color": "#ffffff",
                            "border_radius": 6, "full_width": False,
                            "padding": "12px 24px", "background": "", "align": "center"}},
    "divider": {"label": "Divider", "icon": "divider", "description": "A horizontal line.",
                "defaults": {"color": "#e5e7eb", "thickness": 1,
                             "padding": "12px 24px", "background": "", "align": "center"}},
    "spacer": {"label": "Spacer", "icon": "spacer", "description": "Empty vertical space.",
               "defaults": {"height": 24, "padding": "0px", "background": "", "align": "center"}},
    "columns": {"label": "Columns", "icon": "columns", "description": "Two or three columns side by side.",
                "defaults": {"columns": [{"blocks": [], "width": "50%"}, {"blocks": [], "width": "50%"}],
                             "stack_on_mobile": True, "padding": "8px 12px", "background": "",
                             "align": "center"}},
    "social": {"label": "Social links", "icon": "social", "description": "Icons linking to your profiles.",
               "defaults": {"links": [{"network": "facebook", "href": "https://www.facebook.com/"},
                                      {"network": "x", "href": "https://x.com/"},
                                      {"network": "instagram", "href": "https://www.instagram.com/"}],
                            "icon_size": 32, "padding": "12px 24px", "background": "", "align": "center"}},
    "html": {"label": "HTML", "icon": "code", "description": "Your own HTML, kept as written.",
             "defaults": {"html": '<p style="margin:0;">Your HTML here.</p>',
                          "padding": "8px 24px", "background": "", "align": "left"}},
    "footer": {"label": "Footer", "icon": "footer",
               "description": "Postal address and unsubscribe link (required for sending).",
               "defaults": {"html": FOOTER_HTML, "color": "#6b7280", "font_size": 12,
                            "padding": "24px 24px", "background": "", "align": "center"}},
}

# What the editor's palette offers: the columns block twice, as two- and three-column rows.
PALETTE = [
    {"type": t, "count": None, "label": spec["label"], "icon": spec["icon"], "description": spec["description"]}
    for t, spec in BLOCK_TYPES.items() if t != "columns"
]
PALETTE[5:5] = [
    {"type": "columns", "count": 2, "label": "Two columns", "icon": "columns-2",
     "description": "Two columns side by side (stacked on phones)."},
    {"type": "columns", "count": 3, "label": "Three columns", "icon": "columns-3",
     "description": "Three columns side by side (stacked on phones)."},
]

BLOCK_ID = re.compile(r"^[A-Za-z0-9_-]{6,32}$")
COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
PADDING_PART = re.compile(r"^(\d{1,3})(?:px)?$")
COLUMN_WIDTH = re.compile(r"^(\d{1,2}(?:\.\d{1,2})?)%$")
URL_OK = re.compile(r"^(?:https?://[^\s<>\"]+|mailto:[^\s<>\"]+)$", re.I)
SRC_OK = re.compile(r"^(?:https?://[^\s<>\"]+|/[^/\s<>\"][^\s<>\"]*)$", re.I)
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # invisible, and MJML's parser stops at them
URL_ISSUE = "Use an http(s) or mailto link."
# A template's source (HTML, MJML, or a block document as JSON) is at most this many bytes: every compile
# path refuses more with a 400 (docs/security.md). Compiling, checking and rendering stay well under a
# second at this size.
MAX_SOURCE_BYTES = 512 * 1024


# --------------------------------------------------------------------------------------------------
# Merge tags: {{ expression }}, {% statement %}, {# comment #}, found in linear time

MERGE_TAG_CLOSERS = {"{": "}}", "%": "%}", "#": "#}"}


def merge_tag_spans(text, kinds="{%#"):
    """(start, end) of every merge tag in text, leftmost first (see scan_merge_tags)."""
    return scan_merge_tags(text, kinds)[0]


def scan_merge_tags(text, kinds="{%#"):
    """([(start, end) of every merge tag], where the first opener that is never closed is, or None).

    The tags are those the regex `\\{\\{.*?\\}\\}|\\{%.*?%\\}|\\{#.*?#\\}` (DOTALL) finds, found in
    linear time instead: that regex
    rescans to the end of the text from every unclosed opener (16 KB of "{{" took a second). Once a
    closer is missing after some opener, it is missing after every later opener of its kind too."""
    spans, position, unclosed = [], 0, None
    while kinds:
        found = _opener(kinds).search(text, position)
        if found is None:
            break
        start = found.start()
        kind = text[start + 1]
        end = text.find(MERGE_TAG_CLOSERS[kind], start + 2)
        if end < 0:
            kinds = kinds.replace(kind, "")
            unclosed = start if unclosed is None else unclosed
            position = start + 1
            continue
        spans.append((start, end + 2))
        position = end + 2
    return spans, unclosed


def sub_comments(text, replace):
    """text with every <!-- ... --> replaced by replace(comment), as re.sub(r"<!--.*?-->", ..., re.S) does but
    in linear time (the regex rescans to the end from every unclosed "<!--")."""
    out, position = [], 0
    while True:
        start = text.find("<!--", position)
        end = text.find("-->", start + 4) if start >= 0 else -1
        if end < 0:  # no comment left, or none closes: no later one can close either
            break
        out.append(text[position:start])
        out.append(replace(text[start:end + 3]))
        position = end + 3
    if not out:
        return text
    out.append(text[position:])
    return "".join(out)


@functools.lru_cache(maxsize=16)
def _opener(kinds):
    return re.compile(r"\{[" + re.escape(kinds) + "]")


def sub_merge_tags(text, replace, kinds="{%#"):
    """text with every merge tag replaced by replace(tag)."""
    out, last = [], 0
    for start, end in merge_tag_spans(text, kinds):
        out.append(text[last:start])
        out.append(replace(text[start:end]))
        last = end
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# New documents and blocks

def new_block_id():
    """A fresh block id (letters, digits, _ and -)."""
    return "b" + secrets.token_hex(5)


def new_block(type_, count=None):
    """A block of a type with its defaults and a fresh id; count (2 or 3) sets a columns block's columns."""
    if type_ not in BLOCK_TYPES:
        raise ValidationError("Unknown block type.", [{"field": "type", "issue": "Choose one of the palette's blocks."}])
    block = {"id": new_block_id(), "type": type_, **copy.deepcopy(BLOCK_TYPES[type_]["defaults"])}
    if type_ == "columns" and count is not None:
        if count not in (2, 3, "2", "3"):
            raise ValidationError("Columns hold 2 or 3 columns.", [{"field": "count", "issue": "Choose 2 or 3 columns."}])
        count = int(count)
        width = "50%" if count == 2 else "33.33%"
        block["columns"] = [{"blocks": [], "width": width} for _ in range(count)]
    return block


def new_document():
    """An empty-ish starting document: a heading, a text and a footer."""
    return {"schema": SCHEMA, "settings": dict(DEFAULT_SETTINGS),
            "blocks": [new_block("heading"), new_block("text"), new_block("footer")]}


# --------------------------------------------------------------------------------------------------
# Value checks: each returns the normalised value or raises _Issue

class _Issue(Exception):
    """One problem with one value; the caller knows the field path."""


def _int(value, low, high, label):
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*(px)?\s*", value):
        value = int(value.strip().removesuffix("px"))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Issue(f"{label} must be a whole number from {low} to {high}.")
    return value


def _float(value, low, high, label):
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        raise _Issue(f"{label} must be a number from {low} to {high}.")
    return round(number, 2)


def _bool(value):
    if isinstance(value, bool):
        return value
    if value in ("true", "on", "1", 1, "yes"):
        return True
    if value in ("false", "off", "0", 0, "", "no", None):
        return False
    raise _Issue("Must be true or false.")


def _color(value, allow_empty=False):
    value = (value or "").strip() if isinstance(value, (str, type(None))) else value
    if value == "" and allow_empty:
        return ""
    if not isinstance(value, str) or not COLOR.match(value):
        raise _Issue("Use a colour like #1f2937." if not allow_empty else "Use a colour like #1f2937, or leave it empty.")
    return value.lower()


def _text(value, max_length, label="Text"):
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise _Issue(f"{label} must be text.")
    if len(value) > max_length:
        raise _Issue(f"{label} must be at most {max_length} characters.")
    return CONTROL_CHARACTERS.sub("", value)


def _choice(value, choices):
    if value not in choices:
        raise _Issue("Choose one of " + ", ".join(str(c) for c in choices) + ".")
    return value


def _padding(value):
    parts = str(value if value is not None else "").split()
    if not 1 <= len(parts) <= 4:
        raise _Issue("Use 1 to 4 pixel values, like 16px 24px.")
    numbers = []
    for part in parts:
        match = PADDING_PART.match(part)
        if not match or int(match.group(1)) > 200:
            raise _Issue("Use 1 to 4 pixel values from 0 to 200, like 16px 24px.")
        numbers.append(f"{int(match.group(1))}px")
    return " ".join(numbers)


def _is_merge_tag(value):
    return merge_tag_spans(value) == [(0, len(value))]


def _url(value, allow_empty=True):
    """An http(s) or mailto link, or exactly one merge tag (like {{ unsubscribe_url }})."""
    value = _text(value, MAX_LENGTHS["url"], "The link").strip()
    if value == "" and allow_empty:
        return ""
    if _is_merge_tag(value) or URL_OK.match(value):
        return value
    raise _Issue(URL_ISSUE)


def _src(value):
    """An image address: http(s), one of this app's paths (/uploads/...), a merge tag, or empty."""
    value = _text(value, MAX_LENGTHS["url"], "The image address").strip()
    if value == "" or _is_merge_tag(value) or SRC_OK.match(value):
        return value
    raise _Issue("Use an http(s) image address or upload an image.")


def _image_width(value):
    if value in (None, "", "auto", "full"):
        return None
    return _int(value, 20, 800, "Image width")


def _font_family(value):
    return _choice(value, [family for family, _ in FONT_FAMILIES])


# key -> check(value) for every block type's own keys (besides id/type); shared keys first.
SHARED_KEYS = {
    "padding": _padding,
    "background": lambda v: _color(v, allow_empty=True),
    "align": lambda v: _choice(v, ALIGNS),
}
TYPE_KEYS = {
    "heading": {"text": lambda v: _text(v, MAX_LENGTHS["text"]), "level": lambda v: _int(v, 1, 3, "Level"),
                "color": lambda v: _color(v, allow_empty=True), "font_size": lambda v: _int(v, 12, 64, "Font size")},
    "text": {"html": lambda v: _text(v, MAX_LENGTHS["html"]), "color": lambda v: _color(v, allow_empty=True),
             "font_size": lambda v: _int(v, 10, 32, "Font size"),
             "line_height": lambda v: _float(v, 1.0, 2.5, "Line height")},
    "image": {"src": _src, "alt": lambda v: _text(v, MAX_LENGTHS["alt"], "Alt text").strip(), "href": _url,
              "width": _image_width},
    "button": {"text": lambda v: _text(v, MAX_LENGTHS["text"]), "href": _url,
               "button_color": _color, "text_color": _color,
               "border_radius": lambda v: _int(v, 0, 40, "Corner radius"), "full_width": _bool},
    "divider": {"color": _color, "thickness": lambda v: _int(v, 1, 10, "Thickness")},
    "spacer": {"height": lambda v: _int(v, 4, 200, "Height")},
    "columns": {"stack_on_mobile": _bool},
    "social": {"icon_size": lambda v: _int(v, 16, 48, "Icon size")},
    "html": {"html": lambda v: _text(v, MAX_LENGTHS["raw_html"], "HTML")},
    "footer": {"html": lambda v: _text(v, MAX_LENGTHS["html"]), "color": lambda v: _color(v, allow_empty=True),
               "font_size": lambda v: _int(v, 10, 32, "Font size")},
}
SETTINGS_KEYS = {
    "width": lambda v: _int(v, 480, 800, "Width"),
    "background": _color,
    "content_background": _color,
    "font_family": _font_family,
    "text_color": _color,
    "link_color": _color,
    "preheader": lambda v: _text(v, MAX_LENGTHS["preheader"], "Preheader").strip(),
}


def block_keys(type_):
    """The keys an update may set on a block of this type (a columns block's content moves, never updates)."""
    keys = list(SHARED_KEYS) + list(TYPE_KEYS[type_])
    if type_ == "columns":
        keys += ["widths"]
    if type_ == "social":
        keys += ["links"]
    return keys


# --------------------------------------------------------------------------------------------------
# Validation

class _Checker:
    """Walks a document collecting every issue with its field path, building the normalised copy."""

    def __init__(self):
        self.errors = []
        self.ids = set()
        self.count = 0

    def issue(self, field, issue):
        self.errors.append({"field": field, "issue": issue})

    def value(self, field, check, value):
        try:
            return check(value)
        except _Issue as exc:
            self.issue(field, str(exc))
            return None

    def settings(self, settings, prefix="settings."):
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            self.issue("settings", "Settings must be an object.")
            settings = {}
        out = {}
        for key, check in SETTINGS_KEYS.items():
            out[key] = self.value(prefix + key, check, settings.get(key, DEFAULT_SETTINGS[key]))
        return out

    def blocks(self, blocks, path, nested=False):
        if not isinstance(blocks, list):
            self.issue(path, "Blocks must be a list.")
            return []
        return [self.block(block, f"{path}[{i}]", nested) for i, block in enumerate(blocks)]

    def block(self, block, path, nested=False):
        prefix = path + "." if path else ""
        if not isinstance(block, dict):
            self.issue(path or "block", "A block must be an object.")
            return {}
        self.count += 1
        type_ = block.get("type")
        if type_ not in BLOCK_TYPES:
            self.issue(prefix + "type", "Unknown block type.")
            return dict(block)
        if type_ == "columns" and nested:
            self.issue(prefix + "type", "Columns cannot be placed inside columns.")
        out = {"id": self.block_id(block.get("id"), prefix + "id"), "type": type_}
        defaults = BLOCK_TYPES[type_]["defaults"]
        for key, check in {**SHARED_KEYS, **TYPE_KEYS[type_]}.items():
            out[key] = self.value(prefix + key, check, block.get(key, defaults[key]))
        if type_ == "columns":
            out["columns"] = self.columns(block.get("columns", defaults["columns"]), prefix + "columns")
        if type_ == "social":
            out["links"] = self.links(block.get("links", defaults["links"]), prefix + "links")
        return out

    def block_id(self, value, field):
        if value is None:
            value = new_block_id()
        if not isinstance(value, str) or not BLOCK_ID.match(value):
            self.issue(field, "A block id is 6 to 32 letters, digits, _ or -.")
        elif value in self.ids:
            self.issue(field, "Two blocks have this id; ids must be unique.")
        self.ids.add(value)
        return value

    def columns(self, columns, field):
        if not isinstance(columns, list) or len(columns) not in (2, 3):
            self.issue(field, "A columns block has 2 or 3 columns.")
            return columns if isinstance(columns, list) else []
        out, total = [], 0.0
        for i, column in enumerate(columns):
            path = f"{field}[{i}]"
            if not isinstance(column, dict):
                self.issue(path, "A column must be an object.")
                continue
            width = self.value(path + ".width", _column_width, column.get("width", f"{100 / len(columns):.2f}%"))
            total += float(width[:-1]) if width else 0
            out.append({"blocks": self.blocks(column.get("blocks", []), path + ".blocks", nested=True),
                        "width": width})
        if len(out) == len(columns) and abs(total - 100) > 1:
            self.issue(field, "Column widths must add up to 100%.")
        return out

    def links(self, links, field):
        if not isinstance(links, list):
            self.issue(field, "Links must be a list.")
            return []
        if len(links) > MAX_SOCIAL_LINKS:
            self.issue(field, f"Use at most {MAX_SOCIAL_LINKS} links.")
        out = []
        for i, link in enumerate(links[:MAX_SOCIAL_LINKS]):
            path = f"{field}[{i}]"
            if not isinstance(link, dict):
                self.issue(path, "A link must be an object with network and href.")
                continue
            out.append({"network": self.value(path + ".network", lambda v: _choice(v, NETWORKS), link.get("network")),
                        "href": self.value(path + ".href", _url, link.get("href", ""))})
        return out

    def raise_if_any(self):
        if self.errors:
            raise ValidationError("The template is not valid.", self.errors)


def _column_width(value):
    value = str(value).strip()
    match = COLUMN_WIDTH.match(value)
    if not match or not 10 <= float(match.group(1)) <= 90:
        raise _Issue("Use a percentage from 10% to 90%, like 50%.")
    return value


def check_source_size(size, field):
    """Refuse a template source (HTML, MJML, or a block document as JSON) over MAX_SOURCE_BYTES."""
    if size > MAX_SOURCE_BYTES:
        issue = (f"The template is {size / 1024:,.0f} KB; a template may be at most {MAX_SOURCE_BYTES // 1024} KB "
                 "(move large images to files and link them).")
        raise ValidationError(issue, [{"field": field, "issue": issue}])


def validate_document(doc):
    """The normalised copy of a document; raises ValidationError listing every problem with its path."""
    if not isinstance(doc, dict):
        raise ValidationError("The template is not valid.",
                              [{"field": "content_json", "issue": "The document must be a JSON object."}])
    try:
        size = len(json.dumps(doc, ensure_ascii=False).encode())
    except (TypeError, ValueError, RecursionError):
        raise ValidationError("The template is not valid.",
                              [{"field": "content_json", "issue": "The document must be plain JSON."}]) from None
    check_source_size(size, "content_json")
    checker = _Checker()
    if doc.get("schema", SCHEMA) != SCHEMA:
        checker.issue("schema", f"Unknown schema version; this version of the editor reads schema {SCHEMA}.")
    out = {"schema": SCHEMA, "settings": checker.settings(doc.get("settings")),
           "blocks": checker.blocks(doc.get("blocks", []), "blocks")}
    if checker.count > MAX_BLOCKS:
        checker.issue("blocks", f"A template holds at most {MAX_BLOCKS} blocks.")
    checker.raise_if_any()
    return out


def count_blocks(doc):
    """How many blocks a (valid) document holds, nested ones included."""
    return sum(1 + sum(count_blocks({"blocks": c["blocks"]}) for c in b.get("columns", []))
               if b.get("type") == "columns" else 1 for b in doc.get("blocks", []))


# --------------------------------------------------------------------------------------------------
# Finding blocks

def _walk(blocks, parent=None):
    """(list, index, block, parent) for every block, depth first; parent is "<id>:<column>" or None."""
    for index, block in enumerate(blocks):
        yield blocks, index, block, parent
        if block.get("type") == "columns":
            for column_index, column in enumerate(block.get("columns", [])):
                yield from _walk(column.get("blocks", []), f"{block['id']}:{column_index}")


def find_block(doc, block_id):
    """The block with this id (nested ones included), or None."""
    for _, _, block, _ in _walk(doc.get("blocks", [])):
        if block.get("id") == block_id:
            return block
    return None


def locate_block(doc, block_id):
    """(parent, index) of a block: parent is None for the top level or "<columns id>:<column index>"."""
    for _, index, block, parent in _walk(doc.get("blocks", [])):
        if block.get("id") == block_id:
            return parent, index
    return None


def _find_or_fail(doc, block_id):
    for blocks, index, block, parent in _walk(doc["blocks"]):
        if block["id"] == block_id:
            return blocks, index, block, parent
    raise ValidationError("That block is no longer in the template; reload the editor.",
                          [{"field": "id", "issue": "There is no block with this id."}])


def _target_list(doc, parent, field="to.parent"):
    """The block list a "to.parent" names: the top level, or one column of a columns block."""
    if parent in (None, ""):
        return doc["blocks"]
    block_id, _, column = str(parent).rpartition(":")
    block = find_block(doc, block_id)
    if block is None or block["type"] != "columns" or not column.isdigit() or int(column) >= len(block["columns"]):
        raise ValidationError("That column is no longer in the template; reload the editor.",
                              [{"field": field, "issue": "There is no such column."}])
    return block["columns"][int(column)]["blocks"]


def _insert_index(to, length):
    index = to.get("index", length)
    try:
        index = length if index is None else int(index)
    except (TypeError, ValueError):
        index = -1
    if index < 0:
        raise ValidationError("The position is not valid.", [{"field": "to.index", "issue": "Use a position of 0 or more."}])
    return min(index, length)


def _check_placeable(block, parent):
    if block["type"] == "columns" and parent not in (None, ""):
        raise ValidationError("Columns cannot be placed inside columns.",
                              [{"field": "to.parent", "issue": "Columns cannot be placed inside columns."}])


# --------------------------------------------------------------------------------------------------
# Editing operations

def apply_op(doc, op):
    """The document after one editing operation (docs/editor.md); the given document is not changed.

    Raises ValidationError (nothing applied) for an unknown operation, a block or column that is not
    there, invalid values, or a result over the limits."""
    return _apply(doc, op)[0]


def apply_op_with_id(doc, op):
    """(new document, id of the block the operation created or acted on): lets the editor select it."""
    return _apply(doc, op)


def _apply(doc, op):
    if not isinstance(op, dict) or op.get("op") not in OPERATIONS:
        raise ValidationError("Unknown editing operation.",
                              [{"field": "op", "issue": "Use one of " + ", ".join(OPERATIONS) + "."}])
    new = validate_document(doc)
    touched = OPERATIONS[op["op"]](new, op)
    return _validate_result(new), touched or op.get("id")


def _validate_result(doc):
    if count_blocks(doc) > MAX_BLOCKS:
        raise ValidationError(f"A template holds at most {MAX_BLOCKS} blocks.",
                              [{"field": "blocks", "issue": f"A template holds at most {MAX_BLOCKS} blocks."}])
    return validate_document(doc)


def _to(op):
    to = op.get("to") or {}
    if not isinstance(to, dict):
        raise ValidationError("The position is not valid.",
                              [{"field": "to", "issue": "Give the position as {parent, index}."}])
    return to


def _op_add(doc, op):
    to = _to(op)
    block = new_block(op.get("type"), op.get("count"))
    _check_placeable(block, to.get("parent"))
    target = _target_list(doc, to.get("parent"))
    target.insert(_insert_index(to, len(target)), block)
    return block["id"]


def _op_move(doc, op):
    to = _to(op)
    blocks, index, block, _ = _find_or_fail(doc, op.get("id"))
    _check_placeable(block, to.get("parent"))
    target = _target_list(doc, to.get("parent"))
    blocks.pop(index)
    # the index is the block's position in the target list once it has left its old place (as SortableJS
    # reports it), so a move within one list and a move between lists read the same way
    target.insert(_insert_index(to, len(target)), block)


def _op_step(delta):
    def step(doc, op):
        blocks, index, block, _ = _find_or_fail(doc, op.get("id"))
        new_index = index + delta
        if 0 <= new_index < len(blocks):
            blocks[index], blocks[new_index] = blocks[new_index], block
    return step


def _op_update(doc, op):
    _, _, block, _ = _find_or_fail(doc, op.get("id"))
    fields = op.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise ValidationError("Nothing to update.", [{"field": "fields", "issue": "Give the settings to change."}])
    allowed = block_keys(block["type"])
    errors = [{"field": key, "issue": f"Not a setting of a {BLOCK_TYPES[block['type']]['label'].lower()} block."}
              for key in fields if key not in allowed]
    if errors:
        raise ValidationError("The block cannot be updated.", errors)
    checker = _Checker()
    checker.ids = {b["id"] for _, _, b, _ in _walk(doc["blocks"])} - {block["id"]} - _nested_ids(block)
    candidate = {**block, **{k: v for k, v in fields.items() if k != "widths"}}
    if "widths" in fields:
        candidate["columns"] = _with_widths(block["columns"], fields["widths"])
    updated = checker.block(candidate, "")
    for error in checker.errors:
        if error["field"].startswith("columns"):
            error["field"] = "widths"  # the only way an update reaches the columns
    checker.raise_if_any()
    block.clear()
    block.update(updated)


def _nested_ids(block):
    return {b["id"] for column in block.get("columns", []) for _, _, b, _ in _walk(column["blocks"])}


def _with_widths(columns, widths):
    if not isinstance(widths, list) or len(widths) != len(columns):
        raise ValidationError("Give one width per column.", [{"field": "widths", "issue": "Give one width per column."}])
    return [{**column, "width": width} for column, width in zip(columns, widths)]


def _op_duplicate(doc, op):
    blocks, index, block, _ = _find_or_fail(doc, op.get("id"))
    copy_ = _fresh_ids(copy.deepcopy(block))
    blocks.insert(index + 1, copy_)
    return copy_["id"]


def _fresh_ids(block):
    block["id"] = new_block_id()
    for column in block.get("columns", []) if block.get("type") == "columns" else []:
        for nested in column["blocks"]:
            _fresh_ids(nested)
    return block


def _op_delete(doc, op):
    blocks, index, _, _ = _find_or_fail(doc, op.get("id"))
    blocks.pop(index)


def _op_settings(doc, op):
    fields = op.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise ValidationError("Nothing to update.", [{"field": "fields", "issue": "Give the settings to change."}])
    unknown = [{"field": key, "issue": "Not a template setting."} for key in fields if key not in SETTINGS_KEYS]
    if unknown:
        raise ValidationError("The settings cannot be updated.", unknown)
    checker = _Checker()
    settings = checker.settings({**doc["settings"], **fields}, prefix="")
    checker.raise_if_any()
    doc["settings"] = settings


OPERATIONS = {
    "add": _op_add,
    "move": _op_move,
    "move_up": _op_step(-1),
    "move_down": _op_step(1),
    "update": _op_update,
    "duplicate": _op_duplicate,
    "delete": _op_delete,
    "settings": _op_settings,
}


# --------------------------------------------------------------------------------------------------
# Merge tags: inert stand-in tokens while escaping, sanitising and compiling

class _MergeTags:
    """Swaps merge tags for alphanumeric stand-in tokens and back.

    Placeholders in attribute values are marked so that, when put back, a tag's double quotes become
    single quotes (the same string literal to Jinja) and cannot end the attribute early."""

    def __init__(self):
        self.nonce = secrets.token_hex(4)
        self.tags = []
        self.pattern = re.compile(rf"nudgemt([ta])(\d+)z{self.nonce}")

    def protect(self, text):
        def swap(tag):
            self.tags.append(tag)
            return f"nudgemtt{len(self.tags) - 1}z{self.nonce}"
        return sub_merge_tags(text, swap)

    def as_attribute(self, text):
        return re.sub(rf"nudgemtt(\d+)z{self.nonce}", rf"nudgemta\1z{self.nonce}", text)

    def is_stand_in(self, text):
        return bool(self.pattern.fullmatch(text))

    def restore(self, text):
        def swap(match):
            tag = self.tags[int(match.group(2))]
            if match.group(1) == "a" and '"' in tag and "'" not in tag:
                tag = tag.replace('"', "'")
            return tag
        return self.pattern.sub(swap, text)


# --------------------------------------------------------------------------------------------------
# Markup: sanitised text/footer HTML and well-formed raw HTML

def _attr(value):
    """An attribute value escaped for a double-quoted MJML attribute."""
    return html.escape(str(value), quote=False).replace('"', "&quot;")


def _sanitise(markup, tags, link_style):
    """Text/footer markup cut down to the inline allow-list; links only http(s), mailto or a merge tag."""
    def keep_href(tag, attribute, value):
        if attribute != "href":
            return value
        value = value.strip()
        if tags.is_stand_in(value):
            return tags.as_attribute(value)
        return tags.as_attribute(value) if URL_OK.match(tags.restore(value)) else None

    cleaned = nh3.clean(tags.protect(markup), tags=TEXT_TAGS, attributes={"a": {"href"}},
                        clean_content_tags={"script", "style"}, attribute_filter=keep_href, link_rel=None,
                        set_tag_attribute_values={"a": {"style": link_style, "target": "_blank"},
                                                  "p": {"style": "margin:0 0 1em 0;"},
                                                  "ul": {"style": "margin:0 0 1em 0;padding-left:1.5em;"},
                                                  "ol": {"style": "margin:0 0 1em 0;padding-left:1.5em;"}})
    return _trim_last_margin(cleaned)


def _trim_last_margin(markup):
    """The last paragraph or list loses its bottom margin so a block's padding alone spaces it."""
    for tag in ("p", "ul", "ol"):
        closing = f"</{tag}>"
        if markup.rstrip().endswith(closing):
            opening = f'<{tag} style="margin:0 0 1em 0;'
            at = markup.rfind(opening)
            if at != -1:
                return markup[:at] + f'<{tag} style="margin:0;' + markup[at + len(opening):]
    return markup


DOCUMENT_TAGS = {"html", "head", "body"}
TAG_NAME = re.compile(r"^[a-z][a-z0-9-]*(?::[a-z0-9-]+)?$")
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_:][-A-Za-z0-9_:.]*$")
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _WellFormed(HTMLParser):
    """Re-serialises HTML as written but well-formed (closed tags, quoted attributes, escaped text), which
    MJML's parser requires; comments (Outlook conditionals included) are kept verbatim via stand-in tokens."""

    def __init__(self, tags, keep):
        super().__init__(convert_charrefs=False)
        self.tags, self.keep, self.out, self.open = tags, keep, [], []
        self.in_script = False

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.in_script = True  # no email client runs scripts, and MJML's parser cannot read them
            return
        if tag in DOCUMENT_TAGS:
            return  # a whole pasted page: its content goes in the cell, its wrappers cannot
        if not TAG_NAME.match(tag):
            self.handle_data(self.get_starttag_text())  # "<3 <{{ x }}" is text, as a browser reads it
            return
        rendered = "".join(f' {name}="{self.attr(value)}"' for name, value in attrs if ATTRIBUTE_NAME.match(name))
        if tag in VOID_TAGS:
            self.out.append(f"<{tag}{rendered} />")
        else:
            self.out.append(f"<{tag}{rendered}>")
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID_TAGS:
            self.handle_endtag(tag)

    def attr(self, value):
        if value is None:
            return ""
        return self.tags.as_attribute(_attr(value))

    def handle_endtag(self, tag):
        if tag == "script":
            self.in_script = False
            return
        if tag in DOCUMENT_TAGS or tag not in self.open:
            return  # a stray end tag: dropping it is how browsers read it too
        while self.open:
            current = self.open.pop()
            self.out.append(f"</{current}>")
            if current == tag:
                break

    def handle_data(self, data):
        if self.in_script:
            return
        if self.open and self.open[-1] == "style":
            self.out.append(data.replace("<", "\\3c "))
        else:
            self.out.append(data.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))

    def handle_entityref(self, name):
        self.out.append(f"&{name};" if f"{name};" in html.entities.html5 else f"&amp;{name};")

    def handle_charref(self, name):
        self.out.append(f"&#{name};")

    def handle_comment(self, data):
        self.out.append(self.keep(f"<!--{data}-->"))

    def handle_decl(self, decl):
        pass

    def unknown_decl(self, data):
        pass

    def handle_pi(self, data):
        pass

    def result(self):
        self.close()
        return "".join(self.out) + "".join(f"</{tag}>" for tag in reversed(self.open))


# --------------------------------------------------------------------------------------------------
# Compilation to MJML

class _Compiler:
    """Builds the MJML for one document; merge tags and kept comments stay as stand-in tokens until the end."""

    def __init__(self, doc, base_url):
        self.doc = validate_document(doc)
        self.settings = self.doc["settings"]
        self.base_url = (base_url or "").rstrip("/")
        self.tags = _MergeTags()
        self.kept = []

    def keep(self, fragment):
        """A fragment MJML must not parse (an HTML comment): a stand-in token now, the fragment after."""
        self.kept.append(fragment)
        return f"<!--nudgekeep{len(self.kept) - 1}z{self.tags.nonce}-->"

    def restore(self, text):
        text = re.sub(rf"<!--nudgekeep(\d+)z{self.tags.nonce}-->", lambda m: self.kept[int(m.group(1))], text)
        return self.tags.restore(text)

    def text(self, value):
        return html.escape(self.tags.protect(value), quote=False)

    def attr(self, value):
        return self.tags.as_attribute(_attr(self.tags.protect(str(value))))

    def url(self, value):
        if value.startswith("/"):
            value = self.base_url + value
        return self.attr(value)

    def element(self, name, attrs, content=None):
        rendered = "".join(f' {key}="{value}"' for key, value in attrs.items() if value not in (None, ""))
        return f"<{name}{rendered} />" if content is None else f"<{name}{rendered}>{content}</{name}>"

    def mjml(self):
        s = self.settings
        head = [self.element("mj-attributes", {}, self.element("mj-all", {"font-family": _attr(s["font_family"])})
                             + self.element("mj-text", {"color": s["text_color"], "font-size": "16px",
                                                        "line-height": "1.5", "padding": "0px"})
                             + self.element("mj-section", {"padding": "0px"})
                             + self.element("mj-column", {"padding": "0px"})),
                self.element("mj-style", {}, f"a {{ color: {s['link_color']}; }} "
                                             "h1, h2, h3 { margin: 0; }")]
        if s["preheader"]:
            head.insert(0, self.element("mj-preview", {}, self.text(s["preheader"])))
        body = "".join(self.section(block) for block in self.doc["blocks"])
        return (f"<mjml><mj-head>{''.join(head)}</mj-head>"
                f'<mj-body width="{s["width"]}px" background-color="{s["background"]}">{body}</mj-body></mjml>')

    def section(self, block):
        """A top-level block: its own section, so its background spans the content width."""
        background = block["background"] or self.settings["content_background"]
        if block["type"] == "columns":
            columns = "".join(self.element("mj-column", {"width": column["width"], "vertical-align": "top"},
                                           "".join(self.content(b, nested=True) for b in column["blocks"]))
                              for column in block["columns"])
            if not block["stack_on_mobile"]:
                columns = self.element("mj-group", {}, columns)
            return self.element("mj-section", {"background-color": background, "padding": block["padding"]}, columns)
        return self.element("mj-section", {"background-color": background},
                            self.element("mj-column", {}, self.content(block, nested=False)))

    def content(self, block, nested):
        """The MJML element(s) of one non-columns block; inside a column its background is the cell's."""
        extra = {"container-background-color": block["background"]} if nested and block["background"] else {}
        return getattr(self, "block_" + block["type"])(block, extra)

    def block_heading(self, b, extra):
        level = b["level"]
        color = b["color"] or self.settings["text_color"]
        inner = (f'<h{level} style="margin:0;font-size:{b["font_size"]}px;line-height:1.25;font-weight:bold;'
                 f'color:{color};">{self.text(b["text"])}</h{level}>')
        return self.element("mj-text", {"align": b["align"], "padding": b["padding"], "color": color,
                                        "font-size": f'{b["font_size"]}px', "line-height": "1.25", **extra}, inner)

    def markup(self, b, link_color, underline=True):
        style = f"color:{link_color};text-decoration:{'underline' if underline else 'none'};"
        return _sanitise(b["html"], self.tags, style)

    def block_text(self, b, extra):
        color = b["color"] or self.settings["text_color"]
        return self.element("mj-text", {"align": b["align"], "padding": b["padding"], "color": color,
                                        "font-size": f'{b["font_size"]}px', "line-height": str(b["line_height"]),
                                        **extra}, self.markup(b, self.settings["link_color"]))

    def block_footer(self, b, extra):
        color = b["color"] or self.settings["text_color"]
        return self.element("mj-text", {"align": b["align"], "padding": b["padding"], "color": color,
                                        "font-size": f'{b["font_size"]}px', "line-height": "1.5", **extra},
                            self.markup(b, color))

    def block_image(self, b, extra):
        if not b["src"]:
            return ""  # an image not chosen yet shows in the editor only
        return self.element("mj-image", {"src": self.url(b["src"]), "alt": self.attr(b["alt"]),
                                         "href": self.url(b["href"]) if b["href"] else None,
                                         "width": f'{b["width"]}px' if b["width"] else None,
                                         "align": b["align"], "padding": b["padding"], **extra})

    def block_button(self, b, extra):
        return self.element("mj-button", {"href": self.url(b["href"]) if b["href"] else None,
                                          "background-color": b["button_color"], "color": b["text_color"],
                                          "border-radius": f'{b["border_radius"]}px',
                                          "width": "100%" if b["full_width"] else None,
                                          "font-size": "16px", "font-weight": "bold", "line-height": "1.25",
                                          "inner-padding": "12px 24px", "align": b["align"],
                                          "padding": b["padding"], **extra}, self.text(b["text"]))

    def block_divider(self, b, extra):
        return self.element("mj-divider", {"border-color": b["color"], "border-width": f'{b["thickness"]}px',
                                           "align": b["align"], "padding": b["padding"], **extra})

    def block_spacer(self, b, extra):
        return self.element("mj-spacer", {"height": f'{b["height"]}px', "padding": b["padding"], **extra})

    def block_social(self, b, extra):
        links = [link for link in b["links"] if link["href"]]
        if not links:
            return ""
        elements = "".join(self.element("mj-social-element", {
            "src": self.attr(f"{self.base_url}/static/img/social/{link['network']}.png"),
            "href": self.url(link["href"]), "alt": NETWORK_LABELS[link["network"]],
            "title": NETWORK_LABELS[link["network"]], "background-color": "transparent", "padding": "4px"}, "")
            for link in links)
        return self.element("mj-social", {"mode": "horizontal", "icon-size": f'{b["icon_size"]}px',
                                          "icon-padding": "0px", "inner-padding": "4px", "align": b["align"],
                                          "padding": b["padding"], **extra}, elements)

    def block_html(self, b, extra):
        parser = _WellFormed(self.tags, self.keep)
        parser.feed(self.tags.protect(b["html"]))
        background = extra.get("container-background-color")
        s = self.settings
        # the cell sets the text defaults itself: MJML zeroes the font size around columns
        style = (f'padding:{b["padding"]};font-family:{_attr(s["font_family"])};font-size:16px;line-height:1.5;'
                 f'color:{s["text_color"]};' + (f"background-color:{background};" if background else ""))
        # mj-raw inside a column lands in the column's table body, so the markup gets its own row and cell
        return self.element("mj-raw", {}, f'<tr><td align="{b["align"]}" style="{style}">'
                                          f"{parser.result()}</td></tr>")


def to_mjml(doc, *, base_url):
    """The MJML for a document, merge tags as written; base_url makes app paths (icons, uploads) absolute."""
    compiler = _Compiler(doc, base_url)
    return compiler.restore(compiler.mjml())


def to_html(doc, *, base_url):
    """The email HTML for a document (MJML compiled with mjml-python), merge tags as written.

    Prefer this to mjml2html(to_mjml(doc)): merge tags stay stand-in tokens while MJML parses, so a tag
    holding < or quotes ({% if n < 3 %}, default("there") in a link) cannot upset MJML's parser."""
    compiler = _Compiler(doc, base_url)
    return compiler.restore(mjml.mjml2html(compiler.mjml()))


def mjml_to_html(source):
    """HTML from MJML source (the code view), merge tags and comments kept out of MJML's way the same way."""
    tags, kept = _MergeTags(), []

    def keep(comment):
        kept.append(comment)
        return f"<!--nudgekeep{len(kept) - 1}z{tags.nonce}-->"
    compiled = mjml.mjml2html(sub_comments(tags.protect(source), keep))
    compiled = re.sub(rf"<!--nudgekeep(\d+)z{tags.nonce}-->", lambda m: kept[int(m.group(1))], compiled)
    return tags.restore(compiled)
