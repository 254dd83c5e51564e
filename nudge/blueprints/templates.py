"""Templates in the dashboard: the account's templates, the starter gallery, creating (blank, from the
gallery, from code), version history with restore, and the image library behind the editor's uploads.
The block editor itself lives in blueprints/editor.py."""
from flask import Blueprint, abort, current_app, flash, jsonify, make_response, redirect, request, url_for
from flask_login import current_user, login_required

from nudge.blueprints.common import field_errors, paginate, render, require_permission, with_toast
from nudge.blueprints.settings import local_time
from nudge.errors import DomainError, NotFound, field_error
from nudge.extensions import db
from nudge.services import rendering, uploads
from nudge.services import templates as templates_service

bp = Blueprint("templates", __name__)

# The email preview is a document of its own: inline styles are its nature, scripts never run, and only
# our own pages may frame it.
PREVIEW_CSP = ("default-src 'none'; img-src * data:; style-src 'unsafe-inline'; font-src * data:; "
               "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox allow-popups "
               "allow-popups-to-escape-sandbox")


def preview_response(html):
    """An email's HTML served for an iframe: its own strict CSP, never cached."""
    response = make_response(html)
    response.headers["Content-Security-Policy"] = PREVIEW_CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


def editor_url(template):
    """Where a template is edited (the block editor, which also holds the code view)."""
    return url_for("editor.edit", template_id=template.id)


def _can_write():
    return current_user.can("campaigns:write")


@bp.route("/")
@login_required
@require_permission("campaigns:read")
def index():
    acct = current_user.account
    q, category = request.args.get("q", "").strip(), request.args.get("category") or None
    query = templates_service.templates_query(acct.id, q=q or None, category=category)
    results = paginate(query, request.args.get("page"), per_page=24)
    usage = templates_service.usage_counts(acct.id, [template.id for template in results.items])
    return render("templates/index.html", "templates/_results.html", results=results, usage=usage, q=q,
                  category=category, categories=templates_service.CATEGORIES, account=acct,
                  local_time=local_time, can_write=_can_write())


@bp.route("/gallery")
@login_required
@require_permission("campaigns:read")
def gallery():
    templates_service.sync_gallery()
    return render("templates/gallery.html", gallery=templates_service.list_gallery(), can_write=_can_write())


def _new_values():
    return {"name": request.form.get("name", ""), "category": request.form.get("category", ""),
            "start": request.form.get("start", "blocks"), "copy_of": request.form.get("copy_of", "")}


@bp.route("/new", methods=["GET", "POST"])
@login_required
@require_permission("campaigns:write")
def new():
    if request.method == "GET":
        values = {"start": "gallery" if request.args.get("copy_of") else "blocks",
                  "copy_of": request.args.get("copy_of", ""), "name": "", "category": ""}
        return _new_page(values)
    values = _new_values()
    try:
        template = _create_from(values)
    except DomainError as exc:
        db.session.rollback()
        return _new_page(values, errors=field_errors(exc), status=422)
    flash(f"Template “{template.name}” created.", "success")
    return redirect(editor_url(template))


def _create_from(values):
    """Create a template from the new-template form: blank blocks, a gallery copy, or code."""
    acct_id = current_user.account.id
    start = values["start"]
    if start == "gallery":
        if not values["copy_of"]:
            raise field_error("copy_of", "Choose a gallery template to start from.")
        return templates_service.create_template(current_user, acct_id, name=values["name"],
                                                 category=values["category"], copy_of=values["copy_of"])
    if start in ("mjml", "html"):
        return templates_service.create_template(current_user, acct_id, name=values["name"],
                                                 category=values["category"], format=start,
                                                 content_source=templates_service.starter_source(start))
    return templates_service.create_template(current_user, acct_id, name=values["name"], category=values["category"])


def _new_page(values, errors=None, status=200):
    templates_service.sync_gallery()
    return render("templates/new.html", values=values, errors=errors or {}, status=status,
                  gallery=templates_service.list_gallery(), categories=templates_service.CATEGORIES)


@bp.route("/<uuid:template_id>")
@login_required
@require_permission("campaigns:read")
def show(template_id):
    """A template's own page: the editor for one of ours, a preview for a gallery or read-only one."""
    template = _get(template_id)
    if not template.is_global and _can_write():
        return redirect(editor_url(template))
    version = templates_service.latest_version(template.id)
    return render("templates/show.html", template=template, version=version, can_write=_can_write())


def _get(template_id):
    try:
        return templates_service.get_template(current_user.account.id, template_id)
    except NotFound:
        abort(404)


@bp.route("/<uuid:template_id>/preview")
@bp.route("/<uuid:template_id>/versions/<int:number>/preview")
@login_required
@require_permission("campaigns:read")
def preview(template_id, number=None):
    """The template (or one version) as a sample recipient sees it, for iframes."""
    template = _get(template_id)
    version = (templates_service.get_version(current_user.account.id, template.id, number) if number
               else templates_service.latest_version(template.id))
    if version is None:
        abort(404)
    html, _ = rendering.render_version(version, rendering.sample_context(current_user.account))
    return preview_response(html)


@bp.route("/<uuid:template_id>/details", methods=["POST"])
@login_required
@require_permission("campaigns:write")
def details(template_id):
    """Rename or re-categorise (inline form on the template's pages)."""
    try:
        template = templates_service.update_details(current_user, current_user.account.id, template_id,
                                                    name=request.form.get("name"),
                                                    category=request.form.get("category"))
    except DomainError as exc:
        db.session.rollback()
        if isinstance(exc, NotFound):
            abort(404)
        return render("templates/_details.html", "templates/_details.html", template=_get(template_id),
                      errors=field_errors(exc), categories=templates_service.CATEGORIES, status=422)
    response = render("templates/_details.html", "templates/_details.html", template=template, errors={},
                      categories=templates_service.CATEGORIES)
    return with_toast(response, "Template details saved.")


@bp.route("/<uuid:template_id>/duplicate", methods=["POST"])
@login_required
@require_permission("campaigns:write")
def duplicate(template_id):
    source = _get(template_id)
    template = templates_service.create_template(current_user, current_user.account.id,
                                                 name=f"{source.name} (copy)"[:255], copy_of=source.id)
    flash(f"Copied to “{template.name}”.", "success")
    return redirect(editor_url(template))


@bp.route("/<uuid:template_id>/delete", methods=["POST"])
@login_required
@require_permission("campaigns:write")
def delete(template_id):
    template = _get(template_id)
    try:
        templates_service.delete_template(current_user, current_user.account.id, template.id)
    except DomainError as exc:
        flash(exc.message, "error")
        return redirect(url_for("templates.index"))
    flash(f"Template “{template.name}” deleted.", "success")
    return redirect(url_for("templates.index"))


@bp.route("/<uuid:template_id>/versions")
@login_required
@require_permission("campaigns:read")
def versions(template_id):
    template = _get(template_id)
    history = templates_service.list_versions(current_user.account.id, template.id)
    return render("templates/versions.html", template=template, history=history, account=current_user.account,
                  local_time=local_time, can_write=_can_write() and not template.is_global,
                  categories=templates_service.CATEGORIES)


@bp.route("/<uuid:template_id>/versions/<int:number>")
@login_required
@require_permission("campaigns:read")
def version(template_id, number):
    template = _get(template_id)
    try:
        shown = templates_service.get_version(current_user.account.id, template.id, number)
    except NotFound:
        abort(404)
    return render("templates/version.html", template=template, version=shown, account=current_user.account,
                  local_time=local_time, can_write=_can_write() and not template.is_global)


@bp.route("/<uuid:template_id>/versions/<int:number>/restore", methods=["POST"])
@login_required
@require_permission("campaigns:write")
def restore(template_id, number):
    try:
        restored = templates_service.restore_version(current_user, current_user.account.id, template_id, number)
    except NotFound:
        abort(404)
    except DomainError as exc:
        db.session.rollback()
        flash(exc.message, "error")
        return redirect(url_for("templates.versions", template_id=template_id))
    flash(f"Version {number} restored as version {restored.version}.", "success")
    return redirect(url_for("editor.edit", template_id=template_id))


# --------------------------------------------------------------------------------------------------
# Images

@bp.route("/uploads", methods=["GET"])
@login_required
@require_permission("campaigns:read")
def images():
    """The account's image library (a page, or the picker fragment for the editor)."""
    items = uploads.list_uploads(current_user.account.id)
    return render("templates/images.html", "templates/_images.html", items=items, url_for_upload=uploads.public_url,
                  can_write=_can_write(), max_mb=_max_mb())


def _max_mb():
    return current_app.config["UPLOAD_MAX_BYTES"] // (1024 * 1024)


@bp.route("/uploads", methods=["POST"])
@login_required
@require_permission("campaigns:write")
def upload():
    """Store an image; answers JSON for the editor ({url, id, ...}) or the library page for a form post."""
    file = request.files.get("file")
    wants_json = request.accept_mimetypes.best == "application/json" or not request.form.get("from_library")
    try:
        if file is None:
            raise field_error("file", "Choose an image file to upload.")
        saved = uploads.save_upload(current_user, current_user.account.id, file.stream, file.filename)
    except DomainError as exc:
        db.session.rollback()
        message = field_errors(exc).get("file") or exc.message
        if wants_json:
            return jsonify(error=message), 422
        flash(message, "error")
        return redirect(url_for("templates.images"))
    if wants_json:
        return jsonify(id=str(saved.id), url=uploads.public_url(saved), width=saved.width, height=saved.height,
                       filename=saved.filename), 201
    flash(f"Uploaded {saved.filename}.", "success")
    return redirect(url_for("templates.images"))


@bp.route("/uploads/<uuid:upload_id>/delete", methods=["POST"])
@login_required
@require_permission("campaigns:write")
def delete_image(upload_id):
    try:
        uploads.delete_upload(current_user, current_user.account.id, upload_id)
    except NotFound:
        abort(404)
    flash("Image deleted.", "success")
    return redirect(url_for("templates.images"))
