"""Settings → Sending: the account's own email provider, DKIM key, auto-pause thresholds, a test email, and
where bounces and complaints come in.

Each section is its own form that swaps itself (htmx) and also works as a plain form post. Secrets are never
rendered back: the page only says which ones are saved.
"""
from flask import Blueprint, current_app, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from nudge.blueprints.common import client_ip, field_errors, render, require_permission, with_toast
from nudge.errors import ValidationError
from nudge.extensions import htmx
from nudge.services import bounces, sending
from nudge.services import sending_settings as service

bp = Blueprint("sending_settings", __name__)

# section -> (its form fields, its fragment, its success message)
SECTIONS = {
    "provider": (("provider",) + tuple(f for fields in service.PROVIDER_FIELDS.values() for f in fields),
                 "sending_settings/_provider.html", "Sending provider saved"),
    "dkim": (service.DKIM_FIELDS, "sending_settings/_dkim.html", "DKIM settings saved"),
    "pause": (service.PAUSE_FIELDS, "sending_settings/_pause.html", "Auto-pause thresholds saved"),
}


def _context(**extra):
    """Everything the page's sections render from; extra overrides one section's values/errors/result."""
    account_id = current_user.account_id
    config = current_app.config
    described = service.describe(service.get_settings(account_id))
    from_email, from_name = service.sender_address(account_id)
    context = dict(
        settings=described, values=dict(described["fields"]), errors={}, section=None,
        provider_choices=[(p, service.PROVIDER_LABELS[p]) for p in service.PROVIDERS],
        tls_modes=service.SMTP_TLS_MODES, default_ports=service.SMTP_DEFAULT_PORTS,
        allowed_ports=service.relay_policy(config).ports,
        server_providers=service.server_providers(config), server_orders=service.server_orders(config),
        defaults={key: service.percent_text(value) for key, value in service.default_thresholds().items()},
        test_result=None, test_from=(from_email, from_name), me=current_user.email,
        chain=service.account_providers(account_id, "test", 1, config)[0], min_sample=sending.MIN_SAMPLE,
        from_aligned=(not described["fields"]["dkim_domain"]
                      or service.aligned(described["fields"]["dkim_domain"], from_email)),
        bounce_hooks=_bounce_hooks(config), bounce_counts=bounces.recent_counts(account_id),
    )
    context.update(extra)
    return context


def _bounce_hooks(config):
    """The webhook addresses to give the providers (from NUDGE_BASE_URL)."""
    base = config["BASE_URL"]
    return {"ses": f"{base}/hooks/ses", "sendgrid": f"{base}/hooks/sendgrid",
            "sendgrid_key_set": bool(config.get("SENDGRID_WEBHOOK_PUBLIC_KEY")),
            "ses_topics_set": bool(config.get("SES_SNS_TOPICS"))}


@bp.get("/")
@login_required
@require_permission("sending:read")
def index():
    return render("sending_settings/index.html", **_context())


@bp.get("/provider-fields")
@login_required
@require_permission("sending:read")
def provider_fields():
    """The fields of the provider chosen in the select (htmx swaps them in on change)."""
    context = _context()
    chosen = request.args.get("provider", "")
    if chosen not in service.PROVIDERS:
        chosen = ""
    if chosen != context["settings"]["provider"]:
        context["values"] = {"provider": chosen}
        context["settings"] = dict(context["settings"], saved_secrets=set())
    else:
        context["values"]["provider"] = chosen
    return render_template("sending_settings/_provider_fields.html", **context)


def _save(section):
    fields, fragment, message = SECTIONS[section]
    data = {field: request.form[field] for field in fields if field in request.form}
    if section == "provider":
        data.setdefault("provider", "")
    try:
        service.update_settings(current_user, current_user.account_id, data, ip=client_ip())
    except ValidationError as exc:
        # The form comes back as typed, minus every secret (they are never rendered into the page).
        values = {k: v for k, v in data.items() if k not in service.SECRET_FIELDS and k != "dkim_private_key"}
        context = _context(section=section, errors=field_errors(exc))
        context["values"].update(values)
        if section == "provider" and values.get("provider") != context["settings"]["provider"]:
            context["settings"] = dict(context["settings"], saved_secrets=set())
        return render("sending_settings/index.html", fragment, status=422, **context)
    if htmx:
        return with_toast(make_response(render_template(fragment, **_context(section=section))), message)
    flash(message, "success")
    return redirect(url_for(".index"), 303)


@bp.post("/provider")
@login_required
@require_permission("sending:write")
def save_provider():
    return _save("provider")


@bp.post("/dkim")
@login_required
@require_permission("sending:write")
def save_dkim():
    return _save("dkim")


@bp.post("/pause")
@login_required
@require_permission("sending:write")
def save_pause():
    return _save("pause")


@bp.post("/test")
@login_required
@require_permission("sending:write")
def send_test():
    """Send one real email to the signed-in member through the account's providers; show the outcome inline."""
    result = service.send_test_email(current_user, current_user.account_id)
    return render("sending_settings/index.html", "sending_settings/_test.html", **_context(test_result=result))
