"""The dashboard home: where a new user starts and what to do next."""
from flask import Blueprint
from flask_login import current_user, login_required

from nudge.blueprints.common import render
from nudge.services import accounts, api_clients, campaigns, contacts, team

bp = Blueprint("dashboard", __name__)


@bp.get("/")
@login_required
def index():
    account = current_user.account
    steps = getting_started_steps(account)
    return render("dashboard/index.html", account=account, steps=steps,
                  emails_this_month=accounts.emails_sent_this_month(account.id),
                  done=sum(1 for s in steps if s["done"]))


def getting_started_steps(account):
    """The set-up checklist a new account sees on its dashboard."""
    return [
        {"label": "Turn on two-factor authentication", "done": current_user.mfa_enabled,
         "endpoint": "auth.security", "help": "Protect your subscribers' data with an authenticator app."},
        {"label": "Add your postal address and default sender", "done": bool(account.postal_address),
         "endpoint": "settings.account", "help": "Anti-spam laws (CAN-SPAM, CASL) require a physical address in every email."},
        {"label": "Import your contacts", "done": contacts.has_contacts(account.id),
         "endpoint": "imports.new", "help": "Bring in a CSV from your shop or your old email tool; map its columns to fields."},
        {"label": "Send your first campaign", "done": campaigns.has_sent_a_campaign(account.id),
         "endpoint": "campaigns.new", "help": "Pick a design, write the email, send a test to yourself, then send it."},
        {"label": "Invite a teammate", "done": team.member_count(account.id) > 1 or team.pending_invitation_count(account.id) > 0,
         "endpoint": "settings.team", "help": "Give marketers, admins or read-only viewers their own sign-in."},
        {"label": "Create an API client", "done": len(api_clients.list_api_clients(account.id)) > 0,
         "endpoint": "settings.api_clients", "help": "Connect your shop, CRM or scripts through the JSON API."},
    ]
