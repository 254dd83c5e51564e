"""Settings → Sending: the account's sending domains (ownership, SPF, DKIM, DMARC) and verified senders, its
own email provider, auto-pause thresholds, a test email, and where bounces and complaints come in.

Each section is its own form that swaps itself (htmx) and also works as a plain form post. Secrets are never
rendered back: the page only says which ones are saved.
"""
from flask import Blueprint, current_app, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from nudge.blueprints.common import client_ip, field_errors, render, require_permission, with_toast
from nudge.errors import DomainError, ValidationError
from nudge.extensions import db, htmx
from nudge.services import bounces, sending, sending_domains
from nudge.services import sending_settings as service

bp = Blueprint("sending_settings", __name__)

# section -> (its form fields, its fragment, its success message)
SECTIONS = {
    "provider": (("provider",) + tuple(f for fields in service.PROVIDER_FIELDS.values() for f in fields),
                 "sending_settings/_provider.html", "Sending provider saved"),
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
        test_result=None, test_error=None, test_from=(from_email, from_name), me=current_user.email,
        chain=service.account_providers(account_id, "test", 1, config, from_email=from_email)[0],
        min_sample=sending.MIN_SAMPLE, bounce_hooks=_bounce_hooks(config),
        bounce_counts=bounces.recent_counts(account_id), **_verification_context(from_email),
    )
    context.update(extra)
    return context


def _verification_context(from_email):
    """The sending domains and single senders, and what the default From's status is."""
    return dict(domains=[sending_domains.describe_domain(row) for row in sending_domains.list_domains(current_user)],
                senders=sending_domains.list_senders(current_user), domain_errors={}, sender_errors={},
                domain_values={}, sender_values={}, check_labels=sending_domains.CHECK_LABELS,
                verification_required=sending_domains.verification_required(),
                from_problem=sending_domains.from_problem(current_user.account_id, from_email),
                max_domains=sending_domains.MAX_DOMAINS, opened=None, key_errors={})


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


@bp.post("/pause")
@login_required
@require_permission("sending:write")
def save_pause():
    return _save("pause")


@bp.post("/test")
@login_required
@require_permission("sending:write")
def send_test():
    """Send one real email to the signed-in member through the account's providers; show the outcome inline
    (or why it was refused: an unverified From, the hourly test cap, the monthly limit)."""
    try:
        result = service.send_test_email(current_user, current_user.account_id)
    except DomainError as exc:
        db.session.rollback()
        return render("sending_settings/index.html", "sending_settings/_test.html", status=422,
                      **_context(test_error=exc.message))
    return render("sending_settings/index.html", "sending_settings/_test.html", **_context(test_result=result))


# --------------------------------------------------------------------------------------------------
# Sending domains and single senders

def _domains_section(status=200, message=None, **extra):
    """The domains card (its own fragment), with a toast after a change."""
    response = render("sending_settings/index.html", "sending_settings/_domains.html", status=status,
                      **_context(**extra))
    return with_toast(response, message) if (message and htmx) else response


def _after_change(message, **extra):
    if htmx:
        return _domains_section(message=message, **extra)
    flash(message, "success")
    return redirect(url_for(".index") + "#sending-domains", 303)


def _errors_on(field, exc):
    """{field: message} of a refused add: a ValidationError's own fields, else the message on the field."""
    return field_errors(exc) if isinstance(exc, ValidationError) else {field: exc.message}


def _refused(exc, **extra):
    db.session.rollback()
    if not htmx:
        flash(exc.message, "error")
        return redirect(url_for(".index") + "#sending-domains", 303)
    return _domains_section(status=422, **extra)


@bp.post("/domains")
@login_required
@require_permission("sending:write")
def add_domain():
    name = request.form.get("domain", "")
    try:
        row = sending_domains.add_domain(current_user, name, ip=client_ip())
    except DomainError as exc:
        return _refused(exc, domain_errors=_errors_on("domain", exc), domain_values={"domain": name})
    return _after_change(f"{row.domain} added: publish its records, then check it", opened=str(row.id))


@bp.post("/domains/<uuid:domain_id>/check")
@login_required
@require_permission("sending:write")
def check_domain(domain_id):
    row = sending_domains.check_domain(current_user, domain_id)
    message = f"{row.domain} is verified" if row.verified else f"{row.domain} is not verified yet"
    if htmx:
        domain = sending_domains.describe_domain(row)
        return with_toast(make_response(render_template("sending_settings/_domain.html", domain=domain, opened=domain["id"],
                                                        check_labels=sending_domains.CHECK_LABELS, key_errors={})),
                          message, "success" if row.verified else "warning")
    flash(message, "success" if row.verified else "warning")
    return redirect(url_for(".index") + f"#domain-{row.id}", 303)


@bp.post("/domains/<uuid:domain_id>/key")
@login_required
@require_permission("sending:write")
def domain_key(domain_id):
    data = {field: request.form[field] for field in ("dkim_selector", "dkim_private_key", "dkim_key_action")
            if field in request.form}
    try:
        row = sending_domains.set_domain_key(current_user, domain_id, data, ip=client_ip())
    except ValidationError as exc:
        db.session.rollback()
        domain = sending_domains.describe_domain(sending_domains.get_domain(current_user, domain_id))
        return render("sending_settings/index.html", "sending_settings/_domain.html", status=422,
                      **_context(domain=domain, opened=domain["id"], key_errors=field_errors(exc)))
    return _after_change(f"New DKIM key for {row.domain}: publish its record", opened=str(row.id))


@bp.post("/domains/<uuid:domain_id>/delete")
@login_required
@require_permission("sending:write")
def remove_domain(domain_id):
    row = sending_domains.get_domain(current_user, domain_id, "sending:write")
    name = row.domain
    sending_domains.remove_domain(current_user, row.id, ip=client_ip())
    return _after_change(f"{name} removed")


@bp.post("/senders")
@login_required
@require_permission("sending:write")
def add_sender():
    email = request.form.get("email", "")
    try:
        row = sending_domains.add_sender(current_user, email, ip=client_ip())
    except DomainError as exc:
        return _refused(exc, sender_errors=_errors_on("email", exc), sender_values={"email": email})
    return _after_change(f"A confirmation link was mailed to {row.email}")


@bp.post("/senders/<uuid:sender_id>/resend")
@login_required
@require_permission("sending:write")
def resend_sender(sender_id):
    try:
        row = sending_domains.resend_confirmation(current_user, sender_id)
    except DomainError as exc:
        return _refused(exc, sender_errors={"email": exc.message})
    return _after_change(f"The confirmation link was mailed to {row.email} again")


@bp.post("/senders/<uuid:sender_id>/delete")
@login_required
@require_permission("sending:write")
def remove_sender(sender_id):
    row = sending_domains.get_sender(current_user, sender_id, "sending:write")
    email = row.email
    sending_domains.remove_sender(current_user, row.id, ip=client_ip())
    return _after_change(f"{email} removed")


@bp.route("/senders/confirm/<token>", methods=["GET", "POST"])
def confirm_sender(token):
    """The link mailed to a single sender (no sign-in: holding the mailbox is the proof). GET only shows a
    button, so a mail scanner that follows links confirms nothing."""
    try:
        row = sending_domains.sender_for_token(token)
        if request.method == "POST":
            row = sending_domains.confirm_sender(token, ip=client_ip())
    except ValidationError as exc:
        db.session.rollback()
        return render_template("sending_settings/confirm_sender.html", error=exc.message, sender=None), 400
    return render_template("sending_settings/confirm_sender.html", sender=row, error=None)
