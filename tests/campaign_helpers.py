"""Shared helpers of the campaign tests (services, API, views): contacts, ready-to-send campaigns, and a
recording stand-in for the sending pipeline's entry points where a test checks what campaigns hands over."""
import datetime as dt

from nudge.extensions import db
from nudge.models import Campaign, Contact, Message
from nudge.models.types import utcnow
from nudge.services import campaigns

READY_HTML = ("<html><body><p>Hello {{ contact.first_name | default('there') }}</p>"
              "<p>{{ account.postal_address }}</p><p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>"
              "</body></html>")


def add_contacts(account, *emails, status="active", tags=None, first_name=None, deleted=False):
    """Contacts of an account, committed; returns them in order."""
    made = []
    for email in emails:
        contact = Contact(account_id=account.id, email=email, status="deleted" if deleted else status, tags=tags,
                          first_name=first_name)
        if deleted:
            contact.deleted_at = dt.datetime(2030, 1, 1)
            contact.status_before_delete = status
        made.append(contact)
    db.session.add_all(made)
    db.session.commit()
    return made


def ready_campaign(owner, account, **data):
    """A draft that passes the checklist: postal address on the account, raw HTML content with the
    unsubscribe link and the address, everyone as the audience."""
    if not account.postal_address:
        account.postal_address = "1 Main Street, Springfield"
        db.session.commit()
    values = {"name": "May news", "subject": "Hello {{ contact.first_name }}", "content_html": READY_HTML,
              "audience": {"all": True}}
    values.update(data)
    return campaigns.create_campaign(owner, values)


class FakePipeline:
    """Records the calls campaigns makes into nudge/services/sending.py."""

    def __init__(self):
        self.calls = []

    def start_send(self, campaign_id):
        self.calls.append(("start_send", campaign_id))
        return 0

    def enqueue_workers(self, campaign_id, count=None):
        self.calls.append(("enqueue_workers", campaign_id))

    def cancel_queued(self, campaign_id):
        self.calls.append(("cancel_queued", campaign_id))
        return 0

    def retry_failed(self, campaign_id):
        self.calls.append(("retry_failed", campaign_id))
        return 2

    def send_test(self, actor, campaign_id, emails, contact_id=None):
        self.calls.append(("send_test", campaign_id, list(emails), contact_id))
        return [{"email": email, "status": "sent", "error": None} for email in emails]

    def names(self):
        return [call[0] for call in self.calls]


def fake_pipeline(monkeypatch):
    """Swap the sending pipeline for a recorder (for tests about what campaigns hands over)."""
    fake = FakePipeline()
    monkeypatch.setattr(campaigns, "_pipeline", lambda: fake)
    return fake


SENT_HTML = ("<html><body><p>Hello {{{{ contact.email }}}}</p><p><a href=\"{link}\">Shop</a></p>"
             "<p><a href=\"{{{{ unsubscribe_url }}}}\">Unsubscribe</a></p></body></html>")


def sent_message(account, contact, *, link="https://shop.example/spring"):
    """A sent campaign with one tracked link and its message to contact, as the sending pipeline leaves them
    (the rows only: no mail leaves). Returns (campaign, message)."""
    campaign = Campaign(account_id=account.id, name="Spring", subject="Spring", from_email="news@shop.example",
                        from_name="Shop News", content_html=SENT_HTML.format(link=link), links=[link], status="sent",
                        started_at=utcnow(), sent_at=utcnow(), recipient_count=1, sent_count=1)
    db.session.add(campaign)
    db.session.flush()
    message = Message(account_id=account.id, campaign_id=campaign.id, contact_id=contact.id, email=contact.email,
                      status="sent", sent_at=utcnow())
    db.session.add(message)
    db.session.commit()
    return campaign, message
