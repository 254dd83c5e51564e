"""Segments in the dashboard: the list, the visual condition builder with a live count and preview,
and static segments' members.

The builder is server-rendered: every node of the condition tree has an id like "r" (the root group),
"r-0", "r-2-1", and its inputs are named <id>-kind, <id>-match, <id>-field, <id>-op, <id>-value,
<id>-event, <id>-campaign, <id>-days. conditions_from_form() turns the posted fields back into the
JSON document; add/remove buttons post an `action` ("add-rule:r-2", "remove:r-2-1") to the builder
endpoint, which answers with the re-rendered builder. No JavaScript of our own."""
import re

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user, login_required

from nudge.blueprints.common import field_errors, paginate, render, require_permission
from nudge.blueprints.settings import local_time
from nudge.errors import DomainError, ValidationError
from nudge.extensions import db
from nudge.services import segments

bp = Blueprint("segments", __name__)

# A builder node's kind input: "r-2-1-kind" (indexes as the builder writes them, without leading zeros).
NODE_KEY = re.compile(r"r((?:-(?:0|[1-9]\d{0,2}))*)-kind")
ACTION = re.compile(r"^(add-rule|add-event|add-group|remove):(r(?:-\d{1,3}){0,6})$")
NEW_RULE = {"field": "email", "op": "contains", "value": ""}
NEW_EVENT = {"event": "opened", "op": "has", "within_days": 30}


# --------------------------------------------------------------------------------------------------
# Form <-> conditions

def _kinds(account_id):
    return {value: kind for value, _, kind, _ in segments.field_choices(account_id)}


def _split(text):
    return [part.strip() for part in re.split(r"[,\n]", text or "") if part.strip()]


def _number(text):
    text = (text or "").strip().replace(",", "")
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def _value_from_form(kind, op, raw):
    if op in segments.VALUELESS_OPS:
        return None
    if op in ("within_days", "not_within_days"):
        return _number(raw)
    if op in segments.LIST_OPS:
        items = _split(raw)
        return [_number(item) for item in items] if kind == "number" else items
    if kind == "number":
        return _number(raw)
    if kind == "boolean":
        return {"true": True, "false": False}.get((raw or "").strip().lower(), raw)
    return (raw or "").strip() if kind != "text" else (raw or "")


def value_for_form(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _form_tree(form):
    """{parent path: sorted child indexes} of the builder's nodes, from one pass over the posted keys
    (a path is the tuple of indexes: "r-2-1" -> (2, 1)). A form with more nodes or deeper nesting than a
    segment may have is refused as soon as the key that crosses the cap is seen, so a huge posted form
    costs one scan, never a scan per node."""
    children, count = {}, 0
    for key in form.keys():
        match = NODE_KEY.fullmatch(key) if key.endswith("-kind") else None
        if match is None or not match.group(1):
            continue
        path = tuple(int(part) for part in match.group(1)[1:].split("-"))
        if len(path) > segments.MAX_DEPTH:
            issue = f"Groups may be nested at most {segments.MAX_DEPTH} levels deep."
            raise ValidationError(issue, [{"field": "conditions", "issue": issue}])
        count += 1
        if count > segments.MAX_CONDITIONS:
            issue = f"A segment may have at most {segments.MAX_CONDITIONS} conditions."
            raise ValidationError(issue, [{"field": "conditions", "issue": issue}])
        children.setdefault(path[:-1], set()).add(path[-1])
    return {parent: sorted(indexes) for parent, indexes in children.items()}


def _node_from_form(form, node_id, path, tree, kinds):
    kind = form.get(f"{node_id}-kind", "group")
    if kind == "group" or not path:
        children = [_node_from_form(form, f"{node_id}-{index}", path + (index,), tree, kinds)
                    for index in tree.get(path, ())]
        return {"match": "any" if form.get(f"{node_id}-match") == "any" else "all", "conditions": children}
    if kind == "event":
        node = {"event": form.get(f"{node_id}-event", ""), "op": form.get(f"{node_id}-op", "has")}
        if form.get(f"{node_id}-campaign"):
            node["campaign_id"] = form.get(f"{node_id}-campaign")
        if (form.get(f"{node_id}-days") or "").strip():
            node["within_days"] = _number(form.get(f"{node_id}-days"))
        return node
    field = form.get(f"{node_id}-field", "")
    field_kind = kinds.get(field)
    op = form.get(f"{node_id}-op", "")
    if field_kind and op not in segments.OPS_BY_KIND[field_kind]:
        op = _default_op(field_kind)
    node = {"field": field, "op": op}
    value = _value_from_form(field_kind, op, form.get(f"{node_id}-value", ""))
    if op not in segments.VALUELESS_OPS:
        node["value"] = value
    return node


def _default_op(kind):
    return {"text": "contains", "tags": "contains_any", "number": "gt", "date": "after", "datetime": "within_days",
            "boolean": "eq", "choice": "eq", "status": "eq"}.get(kind, segments.OPS_BY_KIND[kind][0])


def conditions_from_form(form, account_id):
    """The condition document of a posted builder form; a ValidationError when the form holds more nodes
    or deeper groups than a segment may have."""
    return _node_from_form(form, "r", (), _form_tree(form), _kinds(account_id))


def _find(node, node_id):
    """(parent, index) of a node id in the tree ("r-2-1": root.conditions[2].conditions[1])."""
    parts = [int(p) for p in node_id.split("-")[1:]]
    parent, index = None, None
    current = node
    for part in parts:
        if "conditions" not in current or part >= len(current["conditions"]):
            return None, None
        parent, index, current = current, part, current["conditions"][part]
    return parent, index


def _get(node, node_id):
    parent, index = _find(node, node_id)
    if node_id == "r":
        return node
    return parent["conditions"][index] if parent is not None else None


def _count_nodes(group):
    return sum(1 + (_count_nodes(child) if "conditions" in child else 0) for child in group["conditions"])


def apply_action(conditions, action):
    match = ACTION.match(action or "")
    if not match:
        return conditions
    verb, node_id = match.groups()
    if verb == "remove":
        parent, index = _find(conditions, node_id)
        if parent is not None:
            del parent["conditions"][index]
        return conditions
    group = _get(conditions, node_id)
    if group is None or "conditions" not in group or _count_nodes(conditions) >= segments.MAX_CONDITIONS:
        return conditions  # the builder offers no more than a segment may hold
    if verb == "add-rule":
        group["conditions"].append(dict(NEW_RULE))
    elif verb == "add-event":
        group["conditions"].append(dict(NEW_EVENT))
    elif verb == "add-group" and node_id.count("-") < segments.MAX_DEPTH - 1:
        group["conditions"].append({"match": "any", "conditions": [dict(NEW_RULE)]})
    return conditions


# --------------------------------------------------------------------------------------------------
# Rendering helpers

def _campaigns(account_id):
    return segments.recent_campaigns(account_id)


def builder_context(account_id, conditions, errors=None):
    fields = segments.field_choices(account_id)
    return {
        "conditions": conditions,
        "builtin_fields": [f for f in fields if not f[0].startswith("custom.")],
        "custom_field_choices": [f for f in fields if f[0].startswith("custom.")],
        "field_kinds": {value: kind for value, _, kind, _ in fields},
        "field_options": {value: options for value, _, _, options in fields},
        "ops_by_kind": segments.OPS_BY_KIND,
        "op_label": segments.op_label,
        "events": segments.EVENT_LABELS,
        "campaigns": _campaigns(account_id),
        "value_for_form": value_for_form,
        "errors": errors or {},
        "max_depth": segments.MAX_DEPTH,
    }


def live_context(account_id, conditions):
    """Count and preview of conditions, or the problem that stops counting."""
    try:
        count = segments.count_matching(account_id, conditions)
        preview = segments.preview(account_id, conditions, limit=10)
        return {"live_count": count, "preview": preview, "live_error": None}
    except ValidationError as exc:
        issue = exc.details[0] if exc.details else {"issue": exc.message}
        return {"live_count": None, "preview": [], "live_error": issue.get("issue")}


def _page(template, segment=None, conditions=None, values=None, errors=None, status=200):
    acct = current_user.account
    can_write = current_user.can("contacts:write")
    if conditions is None:
        conditions = segment.conditions if segment is not None else dict(segments.EMPTY_CONDITIONS, conditions=[])
    context = builder_context(acct.id, conditions, errors)
    static = segment is not None and segment.type == "static"
    context.update({"live_count": None, "preview": [], "live_error": None} if static
                   else live_context(acct.id, conditions))
    members = None
    if static:
        members = paginate(segments.members_query(acct.id, segment.id), request.args.get("page"), per_page=50)
    description = segments.describe(acct.id, conditions) if segment is not None else []
    return render(template, status=status, segment=segment, values=values or {}, can_write=can_write,
                  members=members, description=description, account=acct, local_time=local_time, **context)


# --------------------------------------------------------------------------------------------------
# Views

@bp.get("/")
@login_required
@require_permission("contacts:read")
def index():
    acct = current_user.account
    results = paginate(segments.segments_query(acct.id), request.args.get("page"), per_page=50)
    return render("segments/index.html", results=results, account=acct, local_time=local_time,
                  can_write=current_user.can("contacts:write"))


@bp.route("/new", methods=["GET", "POST"])
@login_required
@require_permission("contacts:write")
def new():
    if request.method == "GET":
        return _page("segments/form.html", values={"type": "dynamic"})
    acct = current_user.account
    values = {"name": request.form.get("name", ""), "type": request.form.get("type", "dynamic")}
    try:
        conditions = conditions_from_form(request.form, acct.id)
    except ValidationError as exc:
        return _page("segments/form.html", values=values, errors=field_errors(exc), status=422)
    if request.form.get("action"):  # a builder button without htmx
        return _page("segments/form.html", conditions=apply_action(conditions, request.form["action"]), values=values)
    try:
        segment = segments.create_segment(current_user, values["name"], values["type"],
                                          conditions if values["type"] == "dynamic" else None)
    except DomainError as exc:
        db.session.rollback()
        return _page("segments/form.html", conditions=conditions, values=values, errors=field_errors(exc), status=422)
    flash(f"Segment “{segment.name}” created: {segment.contact_count:,} contacts.", "success")
    return redirect(url_for("segments.edit", segment_id=segment.id))


@bp.route("/<uuid:segment_id>", methods=["GET", "POST"])
@login_required
@require_permission("contacts:read")
def edit(segment_id):
    acct = current_user.account
    segment = segments.get_segment(acct.id, segment_id)
    if request.method == "GET":
        segments.refresh_count(segment)
        return _page("segments/form.html", segment=segment, values={"name": segment.name, "type": segment.type})
    if not current_user.can("contacts:write"):
        return render("errors/403.html", status=403)
    values = {"name": request.form.get("name", ""), "type": segment.type}
    try:
        conditions = conditions_from_form(request.form, acct.id) if segment.type == "dynamic" else None
    except ValidationError as exc:
        return _page("segments/form.html", segment=segment, values=values, errors=field_errors(exc), status=422)
    if request.form.get("action") and conditions is not None:
        return _page("segments/form.html", segment=segment, values=values,
                     conditions=apply_action(conditions, request.form["action"]))
    try:
        segments.update_segment(current_user, segment.id, name=values["name"], conditions=conditions)
    except DomainError as exc:
        db.session.rollback()
        segment = segments.get_segment(acct.id, segment_id)
        return _page("segments/form.html", segment=segment, conditions=conditions, values=values,
                     errors=field_errors(exc), status=422)
    flash(f"Segment saved: {segment.contact_count:,} contacts.", "success")
    return redirect(url_for("segments.edit", segment_id=segment.id))


@bp.post("/<uuid:segment_id>/delete")
@login_required
@require_permission("contacts:write")
def delete(segment_id):
    segment = segments.get_segment(current_user.account_id, segment_id)
    name = segment.name
    segments.delete_segment(current_user, segment.id)
    flash(f"Segment “{name}” deleted. Its contacts are unchanged.", "success")
    return redirect(url_for("segments.index"))


@bp.post("/builder")
@login_required
@require_permission("contacts:write")
def builder():
    """Re-render the builder from the posted form, after an add/remove button or a field/operator change."""
    acct = current_user.account
    try:
        conditions = conditions_from_form(request.form, acct.id)
    except ValidationError as exc:
        empty = dict(segments.EMPTY_CONDITIONS, conditions=[])
        return render("segments/_builder.html", status=422, **builder_context(acct.id, empty, field_errors(exc)))
    action = request.form.get("action")
    if action:
        conditions = apply_action(conditions, action)
    context = builder_context(acct.id, conditions)
    if action:  # the rule set changed without a change event: refresh the count too
        context.update(live_context(acct.id, conditions))
    return render("segments/_builder.html", oob_live=bool(action), **context)


@bp.post("/count")
@login_required
@require_permission("contacts:read")
def count():
    """The live count and preview of the conditions being edited (not saved)."""
    acct = current_user.account
    try:
        conditions = conditions_from_form(request.form, acct.id)
    except ValidationError as exc:
        return render("segments/_live.html", live_count=None, preview=[], live_error=exc.message)
    return render("segments/_live.html", **live_context(acct.id, conditions))


@bp.post("/<uuid:segment_id>/members")
@login_required
@require_permission("contacts:write")
def add_members(segment_id):
    emails = _split(request.form.get("emails", "").replace(";", ","))
    try:
        if not emails:
            raise ValidationError("Enter one or more email addresses.", [{"field": "emails", "issue": "Required."}])
        added = segments.add_members(current_user, segment_id, emails=emails)
    except ValidationError as exc:
        db.session.rollback()
        flash(exc.message, "error")
        return redirect(url_for("segments.edit", segment_id=segment_id))
    skipped = len(set(e.lower() for e in emails)) - added
    message = f"Added {added:,} contact{'s' if added != 1 else ''}."
    if skipped > 0:
        message += f" {skipped:,} skipped (already members, or not contacts of this account)."
    flash(message, "success" if added else "warning")
    return redirect(url_for("segments.edit", segment_id=segment_id))


@bp.post("/<uuid:segment_id>/members/remove")
@login_required
@require_permission("contacts:write")
def remove_member(segment_id):
    try:
        removed = segments.remove_members(current_user, segment_id, request.form.getlist("contact_id"))
    except ValidationError as exc:
        db.session.rollback()
        flash(exc.message, "error")
        return redirect(url_for("segments.edit", segment_id=segment_id))
    flash(f"Removed {removed:,} contact{'s' if removed != 1 else ''} from the segment.", "success")
    return redirect(url_for("segments.edit", segment_id=segment_id))
