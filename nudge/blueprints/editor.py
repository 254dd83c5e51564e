"""The block editor (docs/editor.md): palette, canvas and settings panel drawn on the server, driven by htmx.

The page holds the document being edited (JSON in a hidden input), the version it started from and the
selected block, in one form (#editor-state) that every request is sent from (static/js/editor.js queues
them, so each edit starts from the answer to the previous one). An edit posts that state plus one
operation; ops() applies it with email_doc.apply_op and answers with the re-rendered canvas and, out of
band, the new document (and the settings panel when the selection changes). Autosave posts the document
to save(), which stores a new version (templates.save_version) and answers the saved state. Nothing the
user did is discarded on an error: the page keeps its document and the next edit or save retries.

Templates written as MJML or HTML open in the code view; the preview iframe shows saved versions through
templates.preview (its own strict CSP)."""
import json
import re

import nh3
from flask import Blueprint, abort, current_app, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup, escape

from nudge import CSP
from nudge.blueprints.common import require_permission
from nudge.blueprints.settings import local_time
from nudge.errorhandlers import error_page
from nudge.errors import DomainError, NotFound, ValidationError, field_error
from nudge.extensions import db
from nudge.services import campaigns as campaigns_service
from nudge.services import email_doc, rendering
from nudge.services import templates as templates_service
from nudge.services.validation import loads_json

bp = Blueprint("editor", __name__)

# The editor draws the user's own images, which may live on any host (their CDN, an image URL they pasted);
# everything else stays 'self'.
EDITOR_CSP = re.sub(r"img-src [^;]*", "img-src 'self' data: https: http:", CSP)
BLOCK_OPS = ("move", "move_up", "move_down", "update", "duplicate", "delete")
CODE_FORMATS = {"mjml": "MJML", "html": "HTML"}
TAG_OR_TEXT = re.compile(r"(<[^>]*>)")
BETWEEN_TAGS = re.compile(r">\s+<")
MJ_ELEMENT = re.compile(r"<(/?)(mjml|mj-[a-z-]+)\b(?:[^>\"']|\"[^\"]*\"|'[^']*')*?(/?)>")


# --------------------------------------------------------------------------------------------------
# Loading

def _template(template_id):
    """One of the account's templates (read); another account's is a 404."""
    try:
        return templates_service.get_template(current_user.account.id, template_id)
    except NotFound:
        abort(404)


def _editable(template_id):
    """One of the account's own templates; a gallery template is read-only (403)."""
    try:
        return templates_service.get_editable_template(current_user.account.id, template_id)
    except NotFound:
        abort(404)


def _posted_doc():
    """The (validated) document the page is editing."""
    try:
        doc = loads_json(request.form.get("doc") or "")
    except ValueError:
        raise field_error("doc", "The editor's copy of this template is damaged. Reload the page: the last saved "
                                 "version is safe.")
    return email_doc.validate_document(doc)


def _posted_base():
    try:
        return int(request.form.get("base_version") or "")
    except ValueError:
        return None


def _base_url():
    return current_app.config["BASE_URL"]


# --------------------------------------------------------------------------------------------------
# Operations from the posted form

def _destination(doc, selected, type_):
    """Where an added or moved block goes: the posted position, or (keyboard "Add") right after the
    selected block, or at the end of the email but above its footer."""
    if (request.form.get("to_index") or "").strip():
        return {"parent": request.form.get("to_parent") or None, "index": request.form["to_index"].strip()}
    place = email_doc.locate_block(doc, selected) if selected else None
    if place is not None:
        parent, index = place
        if parent is not None and type_ == "columns":  # columns cannot nest: after the row holding the block
            place = email_doc.locate_block(doc, parent.rpartition(":")[0])
            parent, index = place
        return {"parent": parent, "index": index + 1}
    blocks = doc["blocks"]
    footer_last = bool(blocks) and blocks[-1]["type"] == "footer"
    return {"parent": None, "index": len(blocks) - 1 if footer_last else len(blocks)}


def _last(name):
    """A field's last posted value: a checkbox posts a hidden "0" before its own "1"."""
    values = request.form.getlist(name)
    return values[-1] if values else None


def _posted_fields(keys):
    """{key: value} of the posted panel fields f.<key> among keys; "n.<key>" = 1 means "none" ("")."""
    fields = {}
    for key in keys:
        if _last(f"n.{key}") == "1":
            fields[key] = ""
        elif f"f.{key}" in request.form:
            fields[key] = _last(f"f.{key}")
    return fields


def _links_fields(block):
    """The social links list from the panel's rows, with a row added or removed on request."""
    networks, hrefs = request.form.getlist("f.links.network"), request.form.getlist("f.links.href")
    links = [{"network": network, "href": href} for network, href in zip(networks, hrefs)]
    if "f.links.network" not in request.form:
        links = [dict(link) for link in block.get("links", [])]
    action = request.form.get("links_action", "")
    if action == "add" and len(links) < email_doc.MAX_SOCIAL_LINKS:
        used = {link["network"] for link in links}
        links.append({"network": next((n for n in email_doc.NETWORKS if n not in used), "website"), "href": ""})
    elif action.startswith("remove:") and action[7:].isdigit() and int(action[7:]) < len(links):
        links.pop(int(action[7:]))
    return links


def _block_fields(doc, block_id):
    block = email_doc.find_block(doc, block_id)
    if block is None:
        return {}
    fields = _posted_fields(email_doc.block_keys(block["type"]))
    if block["type"] == "social" and ("f.links.network" in request.form or request.form.get("links_action")):
        fields["links"] = _links_fields(block)
    if block["type"] == "columns":
        fields.pop("columns", None)
        if "f.widths" in request.form:
            fields["widths"] = request.form.getlist("f.widths")
    return fields


def _op_from_form(doc, selected):
    name = request.form.get("op", "")
    op = {"op": name}
    if name in BLOCK_OPS:
        op["id"] = request.form.get("id", "")
    if name == "add":
        op["type"] = request.form.get("type", "")
        if request.form.get("count"):
            op["count"] = request.form["count"]
    if name in ("add", "move"):
        moving = email_doc.find_block(doc, op.get("id")) if name == "move" else None
        op["to"] = _destination(doc, selected, op.get("type") or (moving or {}).get("type"))
    if name == "update":
        op["fields"] = _block_fields(doc, op["id"])
    if name == "settings":
        op["fields"] = _posted_fields(email_doc.SETTINGS_KEYS)
    return op


def _selection_after(op, new_doc, selected, touched):
    """(selected block id, whether the panel must be redrawn) once an operation is applied."""
    if op["op"] in ("add", "duplicate"):
        return touched, True
    if selected and email_doc.find_block(new_doc, selected) is None:
        return None, True
    if op["op"] == "update" and request.form.get("links_action"):
        return selected, True
    chosen = email_doc.find_block(new_doc, selected) if selected else None
    # a columns block's panel lists its nested blocks, which any structural change may move
    return selected, bool(chosen and chosen["type"] == "columns" and op["op"] not in ("update", "settings"))


# --------------------------------------------------------------------------------------------------
# Rendering helpers (used by the templates)

def _hex6(color):
    """#rgb -> #rrggbb (what <input type=color> accepts); anything else falls back to black."""
    color = (color or "").lower()
    if len(color) == 4 and color.startswith("#"):
        return "#" + "".join(c * 2 for c in color[1:])
    return color if len(color) == 7 and color.startswith("#") else "#000000"


def _px(value):
    return f"{value}px" if value not in (None, "") else None


def _styles(**props):
    """CSS properties for static/js/editor.js to set (markup may not carry style=""); empty ones skipped."""
    return {name.replace("_", "-"): value for name, value in props.items() if value not in (None, "")}


def block_styles(block, settings):
    """{part: {css property: value}} drawing a block as the email shows it: "box" is the block's cell,
    other parts are elements inside it (see editor/_canvas.html)."""
    b, kind = block, block["type"]
    parts = {"box": _styles(padding=b.get("padding"), background_color=b.get("background"),
                            text_align=b.get("align"))}
    if kind in ("heading", "text", "footer"):
        parts["box"].update(_styles(color=b.get("color"), font_size=_px(b.get("font_size")),
                                    line_height=str(b["line_height"]) if kind == "text" else None))
    if kind == "footer":
        parts["box"]["--link-color"] = b.get("color") or settings["text_color"]
    if kind == "image":
        parts["img"] = _styles(width=_px(b.get("width")) or "100%")
    if kind == "button":
        parts["button"] = _styles(background_color=b["button_color"], color=b["text_color"],
                                  border_radius=_px(b["border_radius"]), display="block" if b["full_width"] else None)
    if kind == "divider":
        parts["rule"] = _styles(border_top=f'{b["thickness"]}px solid {b["color"]}')
    if kind == "spacer":
        parts["space"] = _styles(height=_px(b["height"]))
    if kind == "social":
        parts["icon"] = _styles(width=_px(b["icon_size"]), height=_px(b["icon_size"]))
    if kind == "columns":
        parts["columns"] = [_styles(flex_basis=column["width"]) for column in b["columns"]]
    return parts


def email_styles(settings):
    """The canvas's page and body, as the email's settings make them."""
    return {"stage": _styles(background_color=settings["background"]),
            "frame": _styles(max_width=_px(settings["width"])),
            "body": _styles(background_color=settings["content_background"],
                            font_family=settings["font_family"], color=settings["text_color"],
                            **{"--link-color": settings["link_color"]})}


def merge_chips(markup):
    """Merge tags in (escaped) markup shown as chips: only in text, never inside a tag's attributes."""
    parts = TAG_OR_TEXT.split(str(markup))
    return Markup("".join(part if part.startswith("<") else email_doc.sub_merge_tags(part, _chip, kinds="{%")
                          for part in parts))


def _chip(tag):
    return f'<span class="merge-tag">{tag}</span>'


def display_markup(markup, raw=False, chips=True):
    """Text, footer or HTML block markup made safe to show inside the dashboard (the email itself is
    compiled by email_doc; this only draws the canvas and the rich-text field, which gets no chips)."""
    if raw:
        cleaned = nh3.clean(markup or "", link_rel=None)
    else:
        cleaned = nh3.clean(markup or "", tags=email_doc.TEXT_TAGS, attributes={"a": {"href"}}, link_rel=None)
    return merge_chips(cleaned) if chips else Markup(cleaned)


def display_text(text):
    """Plain text (a heading, a button) escaped, its merge tags as chips."""
    return merge_chips(escape(text or ""))


def display_src(src):
    """An image address the canvas can show (a merge tag or anything odd shows the empty-image frame)."""
    src = (src or "").strip()
    return src if src.startswith(("http://", "https://", "/")) and "{" not in src else ""


def _field_errors(exc):
    """{field: issue} from an operation's ValidationError, keyed like the panel's fields."""
    errors = {}
    for detail in exc.details or []:
        field = (detail.get("field") or "").split(".")[0].split("[")[0] or "_"
        errors.setdefault(field, detail.get("issue") or exc.message)
    return errors


def _row_of(doc, block_id):
    """The id of the columns block holding a nested block (None at the top level)."""
    place = email_doc.locate_block(doc, block_id) if block_id else None
    return place[0].rpartition(":")[0] if place and place[0] else None


def pretty_mjml(source):
    """MJML with one element per line, indented by depth, for the code view. An element's content
    (text, raw HTML, CSS) stays on its line exactly as written."""
    matches = list(MJ_ELEMENT.finditer(source))
    lines, depth, i = [], 0, 0
    while i < len(matches):
        match = matches[i]
        closing, self_closing = match.group(1), match.group(3)
        following = matches[i + 1] if i + 1 < len(matches) else None
        if (not closing and not self_closing and following is not None and following.group(1)
                and following.group(2) == match.group(2)):
            lines.append("  " * depth + source[match.start():following.end()])
            i += 2
            continue
        depth -= 1 if closing else 0
        lines.append("  " * max(depth, 0) + match.group(0))
        depth += 0 if closing or self_closing else 1
        i += 1
    joined = "".join(line.strip() for line in lines)
    if BETWEEN_TAGS.sub("><", joined) != BETWEEN_TAGS.sub("><", source.strip()):
        return source  # text between elements (not what to_mjml writes): show it untouched
    return "\n".join(lines) + "\n"


def _context(template, doc, selected, **extra):
    # htmlsafe_json_dumps escapes ' < > & as \u sequences: the JSON sits in a single-quoted attribute
    return {"template": template, "doc": doc, "doc_json": htmlsafe_json_dumps(doc, separators=(",", ":")),
            "selected": selected, "selected_block": email_doc.find_block(doc, selected) if selected else None,
            "selected_row": _row_of(doc, selected),
            "block_types": email_doc.BLOCK_TYPES, "palette": email_doc.PALETTE,
            "font_families": email_doc.FONT_FAMILIES, "networks": email_doc.NETWORKS,
            "network_labels": email_doc.NETWORK_LABELS, "max_links": email_doc.MAX_SOCIAL_LINKS,
            "hex6": _hex6, "block_styles": block_styles, "email_styles": email_styles,
            "display_markup": display_markup, "display_text": display_text, "display_src": display_src, **extra}


def _fragment(template_name, status=200, trigger=None, **context):
    response = make_response(render_template(template_name, **context), status)
    if trigger:
        response.headers["HX-Trigger"] = json.dumps(trigger)
    return response


def _message_response(message, status):
    """Only the editor's message (out of band): the page around it stays as it is."""
    response = _fragment("editor/_message.html", status, message=message, oob=True)
    response.headers["HX-Reswap"] = "none"
    return response


def _warnings_for(version):
    """The content warnings of the saved version being edited (from its compiled HTML: no recompiling)."""
    if version is None:
        return []
    return templates_service.content_warnings(current_user.account.id, version.content_html, version.content_text)


# --------------------------------------------------------------------------------------------------
# The page

@bp.get("/<uuid:template_id>/edit")
@login_required
@require_permission("campaigns:read")
def edit(template_id):
    """The editor; members who may not edit, and gallery templates, get the read-only preview page."""
    template = _template(template_id)
    if template.is_global or not current_user.can("campaigns:write"):
        return redirect(url_for("templates.show", template_id=template.id))
    version = templates_service.latest_version(template.id)
    code_mode = template.format != "blocks"
    doc = None if code_mode else email_doc.validate_document((version and version.content_json)
                                                             or email_doc.new_document())
    source = (templates_service.source_for_editing(template, version) if code_mode and version else "")
    context = _context(template, doc or email_doc.new_document(), None, code_mode=code_mode, version=version,
                       source=source, code_formats=CODE_FORMATS, warnings=_warnings_for(version),
                       status_kind="saved")
    context["owner_campaign"] = campaigns_service.campaign_for_template(current_user.account.id, template)
    response = make_response(render_template("editor/edit.html", **context))
    response.headers["Content-Security-Policy"] = EDITOR_CSP
    return response


# --------------------------------------------------------------------------------------------------
# Editing operations and selection

@bp.post("/<uuid:template_id>/edit/ops")
@login_required
@require_permission("campaigns:write")
def ops(template_id):
    """Apply one operation to the posted document: the new canvas, document (and panel) come back."""
    template = _editable(template_id)
    try:
        doc = _posted_doc()
    except ValidationError as exc:
        return _message_response(exc.message, 422)
    selected = request.form.get("selected") or None
    if selected and email_doc.find_block(doc, selected) is None:
        selected = None
    op = _op_from_form(doc, selected)
    try:
        new_doc, touched = email_doc.apply_op_with_id(doc, op)
    except ValidationError as exc:
        # the canvas is drawn again from the unchanged document, undoing what a drag moved on the page
        return _fragment("editor/_ops.html", 422, **_context(
            template, doc, selected, show_panel=False, message=_op_message(op, exc),
            field_errors=_field_errors(exc), sent_keys=list(op.get("fields") or {})))
    selected, show_panel = _selection_after(op, new_doc, selected, touched)
    trigger = {"editor-changed": True} if new_doc != doc else None
    return _fragment("editor/_ops.html", trigger=trigger, **_context(
        template, new_doc, selected, show_panel=show_panel, message=None, field_errors={},
        sent_keys=list(op.get("fields") or {})))


def _op_message(op, exc):
    if op["op"] in ("update", "settings") and exc.details:
        return "Check the highlighted setting: it was not applied."
    return f"That change could not be made: {exc.message}"


@bp.post("/<uuid:template_id>/edit/select")
@login_required
@require_permission("campaigns:write")
def select(template_id):
    """The settings panel of the block clicked (or the email's settings when none is)."""
    template = _editable(template_id)
    try:
        doc = _posted_doc()
    except ValidationError as exc:
        return _message_response(exc.message, 422)
    selected = request.form.get("select_id") or None
    if selected and email_doc.find_block(doc, selected) is None:
        selected = None
    return _fragment("editor/_panel.html", **_context(template, doc, selected, field_errors={}, oob_selected=True))


# --------------------------------------------------------------------------------------------------
# Saving

def _saved_status(result, code_mode=False):
    version = result.version
    conflict = result.conflict and not result.unchanged
    return {"status_kind": "conflict" if conflict else "saved", "status_version": version.version,
            "latest_before": result.latest_before, "warnings": result.warnings, "version": version,
            "code_mode": code_mode}


@bp.post("/<uuid:template_id>/edit/save")
@login_required
@require_permission("campaigns:write")
def save(template_id):
    """Autosave: the document becomes a new version (unless unchanged); answers the saved state."""
    template = _editable(template_id)
    if template.format != "blocks":
        return _fragment("editor/_status.html", 422, status_kind="error", template=template,
                         status_error="This template is now edited as code (changed in another tab). Your "
                                      "design is still on this page: copy what you need, then reload.")
    try:
        doc = loads_json(request.form.get("doc") or "")
        result = templates_service.save_version(current_user, current_user.account.id, template.id,
                                                content_json=doc, base_version=_posted_base())
    except (ValueError, ValidationError) as exc:
        db.session.rollback()
        return _fragment("editor/_status.html", 422, status_kind="error", template=template,
                         status_error=_save_problem(exc))
    trigger = None
    if result.conflict and not result.unchanged:
        trigger = {"toast": {"message": f"Another tab had saved version {result.latest_before}. Your edits were "
                                        f"saved as version {result.version.version}; both are in History.",
                             "level": "info"}}
    return _fragment("editor/_status.html", trigger=trigger, template=template, **_saved_status(result))


def _save_problem(exc):
    if isinstance(exc, ValidationError):
        issue = (exc.details or [{}])[0]
        where = f" ({issue['field']})" if issue.get("field") else ""
        return f"Not saved: {issue.get('issue') or exc.message}{where}. Your changes are still here."
    return "Not saved: the editor's copy is damaged. Reload the page; the last saved version is safe."


# --------------------------------------------------------------------------------------------------
# Code view

@bp.post("/<uuid:template_id>/edit/source")
@login_required
@require_permission("campaigns:write")
def source(template_id):
    """The MJML or HTML of the design being edited, for the code view of a block template."""
    template = _editable(template_id)
    format_ = request.form.get("format") if request.form.get("format") in CODE_FORMATS else "mjml"
    try:
        doc = _posted_doc()
    except ValidationError as exc:
        return _message_response(exc.message, 422)
    text = (pretty_mjml(email_doc.to_mjml(doc, base_url=_base_url())) if format_ == "mjml"
            else email_doc.to_html(doc, base_url=_base_url()))
    return _fragment("editor/_code.html", template=template, code_mode=False, source=text, code_format=format_,
                     code_formats=CODE_FORMATS, code_error=None)


@bp.post("/<uuid:template_id>/edit/code")
@login_required
@require_permission("campaigns:write")
def code(template_id):
    """Save hand-written source: a new version, or (from blocks, or between MJML and HTML) a switch of
    the template's format. A block design being left is saved first, so History keeps it."""
    template = _editable(template_id)
    format_ = request.form.get("format", "")
    text = request.form.get("source", "")
    code_mode = template.format != "blocks"
    try:
        if code_mode and format_ == template.format:
            result = templates_service.save_version(current_user, current_user.account.id, template.id,
                                                    content_source=text, base_version=_posted_base())
            return _fragment("editor/_status.html", template=template, **_saved_status(result, code_mode=True))
        if not code_mode and request.form.get("doc"):
            # check the code before saving the design, so a failed switch leaves the versions as they were
            rendering.compile_template(**{format_ if format_ in CODE_FORMATS else "html": text}, base_url=_base_url())
            templates_service.save_version(current_user, current_user.account.id, template.id,
                                           content_json=_posted_doc(), base_version=_posted_base())
        version = templates_service.switch_to_code(current_user, current_user.account.id, template.id,
                                                   format_, text)
    except ValidationError as exc:
        db.session.rollback()
        issues = [detail.get("issue") for detail in exc.details or [] if detail.get("issue")] or [exc.message]
        return _fragment("editor/_code_error.html", 422, issues=issues)
    flash(f"Saved as {CODE_FORMATS[format_]} code (version {version.version}). Earlier designs are in History.",
          "success")
    response = make_response("", 204)
    response.headers["HX-Redirect"] = url_for("editor.edit", template_id=template.id)
    return response


# --------------------------------------------------------------------------------------------------
# History

@bp.get("/<uuid:template_id>/edit/history")
@login_required
@require_permission("campaigns:write")
def history(template_id):
    template = _editable(template_id)
    versions = templates_service.list_versions(current_user.account.id, template.id)
    return _fragment("editor/_history.html", template=template, history=versions, account=current_user.account,
                     local_time=local_time)


@bp.post("/<uuid:template_id>/edit/restore")
@login_required
@require_permission("campaigns:write")
def restore(template_id):
    """Restore a version from the editor: the design on the page is saved first (nothing is lost), then
    the old version becomes the newest and the editor reloads with it."""
    template = _editable(template_id)
    try:
        number = int(request.form.get("number", ""))
    except ValueError:
        abort(404)
    try:
        if template.format == "blocks" and request.form.get("doc"):
            templates_service.save_version(current_user, current_user.account.id, template.id,
                                           content_json=_posted_doc(), base_version=_posted_base())
        restored = templates_service.restore_version(current_user, current_user.account.id, template.id, number)
    except ValidationError as exc:
        db.session.rollback()
        return _message_response(f"Not restored: {exc.message}", 422)
    except NotFound:
        abort(404)
    flash(f"Version {number} restored as version {restored.version}.", "success")
    response = make_response("", 204)
    response.headers["HX-Redirect"] = url_for("editor.edit", template_id=template.id)
    return response


@bp.errorhandler(DomainError)
def _domain_error(exc):
    """htmx requests get the problem as the editor's message; full pages use the app's error pages."""
    db.session.rollback()
    if request.headers.get("HX-Request"):
        return _message_response(exc.message, exc.status)
    return error_page(exc.status, exc.message)
