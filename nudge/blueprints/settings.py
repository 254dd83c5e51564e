"""Settings: account, team (and invitation acceptance), API clients, audit log."""
import datetime as dt
import functools
import zoneinfo
from collections import OrderedDict

from flask import Blueprint, abort, current_app, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from nudge.blueprints.common import (auth_limit, auth_rate_limits, client_ip, field_errors, paginate, render,
                                     require_permission, with_toast)
from nudge.config import PLAN_RATE_LIMITS
from nudge.errors import Conflict, NotFound, ValidationError
from nudge import tasks
from nudge.extensions import htmx, limiter
from nudge.models import ROLES
from nudge.services import accounts, audit, permissions
from nudge.services import team as team_service
from nudge.services import api_clients as clients_service
from nudge.services.security import hash_token

bp = Blueprint("settings", __name__)

# The spec's scope table (section 1), one line each.
SCOPE_DESCRIPTIONS = {
    "campaigns:read": "View campaign data — for analytics tools.",
    "campaigns:write": "Create and modify campaigns — for content management.",
    "contacts:read": "Access contact information — for CRM integration.",
    "contacts:write": "Manage contacts — for import tools.",
    "automations:execute": "Trigger workflows — for event systems.",
    "analytics:read": "Access reports — for BI dashboards.",
    "account:admin": "Full access, including every scope above — for account management.",
}

ROLE_DESCRIPTIONS = {
    "owner": "Everything, including account settings and resetting members' two-factor authentication.",
    "admin": "Campaigns, contacts, automations, reports, team, API clients and the audit log.",
    "marketer": "Campaigns, contacts, automations and reports.",
    "viewer": "Read-only: campaigns, contacts and reports.",
}

ACTION_GROUP_LABELS = {
    "login": "Sign-in", "logout": "Sign-in", "mfa": "Two-factor authentication", "password": "Password",
    "account": "Account", "team": "Team", "api_client": "API clients",
}


@functools.lru_cache(maxsize=1)
def timezones():
    return tuple(sorted(zoneinfo.available_timezones()))


def local_time(value, tz):
    """A naive-UTC timestamp in the account's time zone."""
    if value is None:
        return None
    try:
        zone = zoneinfo.ZoneInfo(tz or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = dt.timezone.utc
    return value.replace(tzinfo=dt.timezone.utc).astimezone(zone)


@bp.context_processor
def _helpers():
    return {"local_time": local_time, "ROLES": ROLES, "ROLE_DESCRIPTIONS": ROLE_DESCRIPTIONS}


# --- Account -------------------------------------------------------------------------------------

@bp.route("/account", methods=["GET", "POST"])
@login_required
def account():
    acct = current_user.account
    if request.method == "GET":
        return _account_page(acct)
    if not current_user.can("account:write"):
        abort(403)
    changes = {field: request.form.get(field, "") for field in accounts.SETTINGS_FIELDS}
    try:
        accounts.update_settings(current_user, acct, changes, ip=client_ip())
    except ValidationError as exc:
        return _account_page(acct, values=changes, errors=field_errors(exc), status=422)
    if htmx:
        return with_toast(_account_page(acct), "Settings saved")
    flash("Settings saved", "success")
    return redirect(url_for(".account"), 303)


def _account_page(acct, values=None, errors=None, status=200):
    values = values or {field: getattr(acct, field) or "" for field in accounts.SETTINGS_FIELDS}
    return render("settings/account.html", "settings/_account_form.html", status=status,
                  account=acct, values=values, errors=errors or {}, timezones=timezones(),
                  can_edit=current_user.can("account:write"),
                  rate_limit=PLAN_RATE_LIMITS.get(acct.plan_type),
                  emails_this_month=accounts.emails_sent_this_month(acct.id))


# --- Team ----------------------------------------------------------------------------------------

@bp.get("/team")
@login_required
@require_permission("team:read")
def team():
    return _team_page()


def _team_context(**extra):
    account_id = current_user.account_id
    members = team_service.list_members(account_id)
    invitations = team_service.list_invitations(account_id)
    owners = sum(1 for m in members if m.role == "owner")
    context = dict(members=members, invitations=invitations, owner_count=owners,
                   labels={m.id: m.name or m.email for m in members},
                   grantable_roles=_grantable_roles(), can_write=current_user.can("team:write"),
                   can_manage=_can_manage, is_expired=team_service.is_expired,
                   invite_values={"email": "", "role": "marketer"}, invite_errors={}, invite_link=None,
                   account=current_user.account, confirm=None, scope_descriptions=SCOPE_DESCRIPTIONS)
    context.update(extra)
    return context


def _team_page(status=200, **extra):
    return make_response(render_template("settings/team.html", **_team_context(**extra)), status)


def _grantable_roles():
    return [r for r in ROLES if r != "owner" or current_user.role == "owner"]


def _can_manage(member):
    """Whether the signed-in member may change this member's role or remove them."""
    return (current_user.can("team:write") and member.id != current_user.id
            and (member.role != "owner" or current_user.role == "owner"))


def _sent(response):
    """An invite or resend that went through (an email was queued), for the mail limits to count."""
    return response.status_code < 400


def _invitation_mail_limits(per_invitation=False):
    """Flask-Limiter limits on the POSTs that email an invitation (AUTH_RATE_LIMITS invite_mail_*): per
    account, and for a resend per invitation too. Over either: 429 with Retry-After."""
    def decorator(view):
        limited = limiter.limit(lambda: auth_limit("invite_mail_account"),
                                key_func=lambda: f"account:{current_user.account_id}", methods=["POST"],
                                scope="invite-mail-account", deduct_when=_sent)(view)
        if per_invitation:
            limited = limiter.limit(lambda: auth_limit("invite_mail_resend"),
                                    key_func=lambda: f"invitation:{request.view_args.get('invitation_id')}",
                                    methods=["POST"], scope="invite-mail-resend", deduct_when=_sent)(limited)
        return limited
    return decorator


def _mail_invitation(invitation, token):
    tasks.mail_invitation(str(invitation.id), team_service.seal_token(token))


@bp.post("/team/invitations")
@login_required
@require_permission("team:write")
@_invitation_mail_limits()
def team_invite():
    values = {"email": request.form.get("email", ""), "role": request.form.get("role", "")}
    try:
        invitation, token = team_service.invite_member(current_user, values["email"], values["role"], ip=client_ip())
    except (ValidationError, Conflict) as exc:
        errors = field_errors(exc)
        if htmx:
            return make_response(render_template("settings/_invite.html", **_team_context(
                invite_values=values, invite_errors=errors)), 422)
        return _team_page(422, invite_values=values, invite_errors=errors)
    _mail_invitation(invitation, token)
    return _invitation_sent(invitation, token, f"Invitation emailed to {invitation.email}")


@bp.post("/team/invitations/<uuid:invitation_id>/resend")
@login_required
@require_permission("team:write")
@_invitation_mail_limits(per_invitation=True)
def team_resend_invitation(invitation_id):
    invitation, token = team_service.resend_invitation(current_user, invitation_id, ip=client_ip())
    _mail_invitation(invitation, token)
    return _invitation_sent(invitation, token, f"New invitation emailed to {invitation.email}", resent=True)


def _invitation_sent(invitation, token, toast, **extra):
    """The invite card with the link shown once (the fallback when the email does not arrive)."""
    extra.update(invite_link=team_service.invitation_link(token), invited=invitation)
    if htmx:
        response = make_response(render_template("settings/_invite.html", oob_invitations=True,
                                                 **_team_context(**extra)))
        return with_toast(response, toast)
    return _team_page(**extra)


@bp.post("/team/invitations/<uuid:invitation_id>/revoke")
@login_required
@require_permission("team:write")
def team_revoke_invitation(invitation_id):
    invitation = team_service.revoke_invitation(current_user, invitation_id, ip=client_ip())
    flash(f"Invitation for {invitation.email} revoked. The link no longer works.", "success")
    return redirect(url_for(".team"), 303)


def _revocations():
    """The confirm step's choices: (API client ids, invitation ids) to revoke."""
    return {"revoke_clients": request.form.getlist("revoke_clients"),
            "revoke_invitations": request.form.getlist("revoke_invitations")}


def _confirm_step(action, created, role=None):
    """Ask first: what the member created (API clients, invitations), each offered for revoking."""
    extra = dict(confirm={"action": action, "created": created, "role": role})
    if htmx:
        return make_response(render_template("settings/_member_confirm.html", **_team_context(**extra)))
    return _team_page(**extra)


def _back_to_team():
    """After a change: the team page (htmx follows HX-Redirect, so the flash shows there too)."""
    if htmx:
        response = make_response("", 204)
        response.headers["HX-Redirect"] = url_for(".team")
        return response
    return redirect(url_for(".team"), 303)


@bp.post("/team/<uuid:user_id>/role")
@login_required
@require_permission("team:write")
def team_change_role(user_id):
    role = request.form.get("role", "")
    member = team_service.get_member(current_user.account_id, user_id)
    if role in ROLES and team_service.is_demotion(member.role, role) and not request.form.get("confirmed"):
        created = team_service.created_by_member(current_user, user_id)
        if created:
            return _confirm_step("role", created, role)
    try:
        member = team_service.change_role(current_user, user_id, role, ip=client_ip(), **_revocations())
    except (ValidationError, Conflict) as exc:
        flash(exc.message, "error")
    else:
        flash(f"{member.name or member.email} is now {'an' if member.role in ('owner', 'admin') else 'a'} "
              f"{member.role}.", "success")
    return _back_to_team()


@bp.post("/team/<uuid:user_id>/remove")
@login_required
@require_permission("team:write")
def team_remove(user_id):
    if not request.form.get("confirmed"):
        created = team_service.created_by_member(current_user, user_id)
        if created:
            return _confirm_step("remove", created)
    try:
        member = team_service.remove_member(current_user, user_id, ip=client_ip(), **_revocations())
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        flash(f"{member.name or member.email} was removed from the team.", "success")
    return _back_to_team()


@bp.post("/team/<uuid:user_id>/reset-mfa")
@login_required
@require_permission("team:write")
def team_reset_mfa(user_id):
    from nudge.services import mfa
    mfa.reset_mfa(current_user, user_id, ip=client_ip())
    member = team_service.get_member(current_user.account_id, user_id)
    flash(f"Two-factor authentication reset for {member.name or member.email}. "
          "They will set it up again when they next sign in.", "success")
    return redirect(url_for(".team"), 303)


def _invitation_key():
    """The invitation a join form is for (its token's hash, never the token), as the rate limits' target."""
    token = (request.view_args or {}).get("token") or ""
    return "invitation:" + hash_token(token[:200])[:32]


@bp.route("/team/join/<token>", methods=["GET", "POST"])
@auth_rate_limits("invitation", _invitation_key)
def accept_invite(token):
    """Public: the invited person chooses a name and password and joins the account."""
    invitation = team_service.find_invitation(token)
    if invitation is None:
        return _invalid_invitation()
    context = dict(invitation=invitation, account=team_service.invitation_account(invitation), token=token,
                   values={"name": ""}, errors={}, taken=team_service.email_taken(invitation.email))
    if request.method == "GET" or context["taken"]:
        return make_response(render_template("settings/accept_invite.html", **context),
                             409 if context["taken"] else 200)
    context["values"] = {"name": request.form.get("name", "")}
    try:
        user = team_service.accept_invitation(token, name=request.form.get("name", ""),
                                      password=request.form.get("password", ""), ip=client_ip())
    except NotFound:
        return _invalid_invitation()
    except Conflict:
        context["taken"] = True
        return make_response(render_template("settings/accept_invite.html", **context), 409)
    except ValidationError as exc:
        context["errors"] = field_errors(exc)
        return make_response(render_template("settings/accept_invite.html", **context), 422)
    flash(f"Welcome to {context['account'].name}! You are signed in as {user.email}.", "success")
    from nudge.blueprints.auth import start_session
    return start_session(user)


def _invalid_invitation():
    return make_response(render_template("settings/invite_invalid.html", message=team_service.INVALID_INVITATION), 404)


# --- API clients ---------------------------------------------------------------------------------

@bp.get("/api-clients")
@login_required
@require_permission("api_clients:read")
def api_clients():
    return render("settings/api_clients.html", "settings/_api_clients_table.html", **_clients_context())


def _clients_context(**extra):
    account_id = current_user.account_id
    grantable = clients_service.grantable_scopes(current_user)
    context = dict(clients=clients_service.list_api_clients(account_id),
                   labels={m.id: m.name or m.email for m in team_service.list_members(account_id)},
                   scopes=[(s, SCOPE_DESCRIPTIONS.get(s, "")) for s in permissions.SCOPES if s in grantable],
                   withheld=[s for s in permissions.SCOPES if s not in grantable],
                   effective_scopes=clients_service.effective_scopes,
                   can_write=current_user.can("api_clients:write"),
                   values={"name": "", "scopes": []}, errors={}, created=None,
                   base_url=current_app.config["BASE_URL"].rstrip("/"))
    context.update(extra)
    return context


@bp.post("/api-clients")
@login_required
@require_permission("api_clients:write")
def api_client_create():
    values = {"name": request.form.get("name", ""), "scopes": request.form.getlist("scopes")}
    try:
        client, secret = clients_service.create_api_client(current_user, name=values["name"],
                                                           scopes=values["scopes"], ip=client_ip())
    except ValidationError as exc:
        context = _clients_context(values=values, errors=field_errors(exc))
        return render("settings/api_clients.html", "settings/_api_client_create.html", status=422, **context)
    context = _clients_context(created={"client": client, "secret": secret})
    if htmx:
        response = make_response(render_template("settings/_api_client_create.html", oob_table=True, **context))
        return with_toast(response, f"API client “{client.name}” created")
    return make_response(render_template("settings/api_clients.html", **context), 201)


@bp.post("/api-clients/<uuid:client_pk>/revoke")
@login_required
@require_permission("api_clients:write")
def api_client_revoke(client_pk):
    client = clients_service.revoke_api_client(current_user, client_pk, ip=client_ip())
    message = f"API client “{client.name}” revoked. Its tokens no longer work."
    if htmx:
        labels = {m.id: m.name or m.email for m in team_service.list_members(current_user.account_id)}
        response = make_response(render_template("settings/_api_client_row.html", client=client, labels=labels,
                                                 can_write=True, effective_scopes=clients_service.effective_scopes))
        return with_toast(response, message)
    flash(message, "success")
    return redirect(url_for(".api_clients"), 303)


# --- Audit log -----------------------------------------------------------------------------------

def action_groups():
    """[(group label, [(value, label), ...])] for the filter's <select>, from audit.ACTIONS."""
    groups = OrderedDict()
    by_prefix = OrderedDict()
    for action in audit.ACTIONS:
        by_prefix.setdefault(action.split(".", 1)[0], []).append(action)
    for prefix, actions in by_prefix.items():
        options = groups.setdefault(ACTION_GROUP_LABELS.get(prefix, prefix.replace("_", " ").title()), [])
        if len(actions) > 1:
            options.append((f"{prefix}.*", f"Any {prefix}.* action"))
        options.extend((a, a) for a in actions)
    return list(groups.items())


def _action_filter_values():
    return {value for _, options in action_groups() for value, _ in options}


def _local_day_start(text, tz):
    """The UTC instant (naive) at which a YYYY-MM-DD day starts in the account's time zone."""
    try:
        day = dt.date.fromisoformat((text or "").strip())
    except ValueError:
        return None
    try:
        zone = zoneinfo.ZoneInfo(tz or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = dt.timezone.utc
    return dt.datetime.combine(day, dt.time(), zone).astimezone(dt.timezone.utc).replace(tzinfo=None)


@bp.get("/audit-log")
@login_required
@require_permission("audit:read")
def audit_log():
    acct = current_user.account
    args = request.args
    filters = {
        "action": args.get("action", "") if args.get("action", "") in _action_filter_values() else "",
        "actor": args.get("actor", "").strip()[:255],
        "date_from": args.get("date_from", "").strip(),
        "date_to": args.get("date_to", "").strip(),
    }
    since = _local_day_start(filters["date_from"], acct.timezone)
    until = _local_day_start(filters["date_to"], acct.timezone)
    if until is not None:
        until += dt.timedelta(days=1)  # the "to" day is included
    filters["date_from"] = filters["date_from"] if since else ""
    filters["date_to"] = filters["date_to"] if until else ""
    query = audit.list_entries(acct.id, action=filters["action"] or None, actor=filters["actor"] or None,
                               since=since, until=until)
    results = paginate(query, args.get("page"), per_page=50)
    active = {k: v for k, v in filters.items() if v}
    return render("settings/audit_log.html", "settings/_audit_results.html", account=acct, results=results,
                  filters=filters, active_filters=active, action_groups=action_groups(),
                  summarize=summarize_meta)


def summarize_meta(meta, limit=120):
    """A one-line "key: value" summary of an entry's metadata."""
    parts = []
    for key, value in sorted((meta or {}).items()):  # JSONB does not keep key order
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        parts.append(f"{key}: {value}")
    text = "; ".join(parts)
    return text if len(text) <= limit else text[:limit - 1] + "…"
