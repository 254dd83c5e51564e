"""Tracking: signed per-message tokens, the links of a campaign's content rewritten once per campaign, and
what opens, clicks and unsubscribes do to messages, contacts, events and the campaign's aggregates.

One signature per message (not per link): a token is the message id, the campaign id and a truncated HMAC
of both, and a click URL adds the link's index into the campaign's stored link list (cached per process,
so a redirect reads nothing from the database). Tampering with the index can only
lead to another link of the same email; tampering with the token gets a 404. No open redirect is possible:
the target always comes from the campaign's own content.

Keys: the first of NUDGE_TRACKING_KEYS signs, every one listed verifies (rotation without breaking the links
in mailboxes); unset, the one key is derived from NUDGE_SECRET_KEY as it always was."""
import base64
import functools
import hashlib
import hmac
import html as html_text
import re
import uuid

import sqlalchemy as sa
from flask import current_app

from nudge.extensions import db
from nudge.models import Campaign, Contact, EmailEvent, Message
from nudge.models.types import utcnow
from nudge.services import events, suppressions
from nudge.services.addresses import same_address
from nudge.services.contacts import keep_unsubscribed_when_restored
from nudge.services.rendering import PREVIEW_PATHS

MAC_BYTES = 12
TOKEN = re.compile(r"^[A-Za-z0-9_-]{59}$")
LINK_CACHE_SIZE = 512
# href="…" of <a> tags whose target is a plain http(s) URL (personalised URLs with merge tags are not tracked).
LINK = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"'{}<>\s]+)\2""", re.I)
BODY_END = re.compile(r"</body\s*>", re.I)
OPEN_PIXEL = ('<img src="{{ open_url }}" width="1" height="1" alt="" '
              'style="display:block;width:1px;height:1px;border:0;opacity:0" />')
# In a rendered email: the open pixel's <img> and the click URLs (token, link index) of any base URL.
SENT_OPEN_PIXEL = re.compile(r"""<img\b[^>]*?\bsrc\s*=\s*["'][^"']*/t/o/[A-Za-z0-9_-]{59}\.gif["'][^>]*>""", re.I)
SENT_CLICK_URL = re.compile(r"""(["'])[^"'\s]*/t/c/([A-Za-z0-9_-]{59})/(\d+)\1""")
# A link to a recipient's own page in a sent email (HTML or text): the base URL and the page's letter.
SENT_RECIPIENT_URL = re.compile(r"""([^"'\s<>]*?)/t/([upv])/[A-Za-z0-9_-]{59}(?![A-Za-z0-9_-])""")
RECIPIENT_PAGES = {"u": "unsubscribe_url", "p": "preferences_url", "v": "view_in_browser_url"}


def _derived(secret):
    """The HMAC key of one secret: how tracking keys have always been derived from NUDGE_SECRET_KEY."""
    return hashlib.sha256(b"nudge-tracking:" + (secret.encode() if isinstance(secret, str) else secret)).digest()


@functools.lru_cache(maxsize=8)
def _derived_keys(entries):
    return tuple(_derived(entry) for entry in entries)


def tracking_keys():
    """Every key a tracking token may be signed with, the signing one first: NUDGE_TRACKING_KEYS, else the
    one derived from NUDGE_SECRET_KEY (so rotating the secret key with the old one listed here keeps links
    already sent working)."""
    entries = current_app.config.get("TRACKING_KEYS") or [current_app.config["SECRET_KEY"]]
    return _derived_keys(tuple(entries))


def signing_key():
    """The key new tracking tokens are signed with; senders keep it per campaign."""
    return tracking_keys()[0]


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _as_bytes(value):
    return value.bytes if isinstance(value, uuid.UUID) else uuid.UUID(str(value)).bytes


def token_for(message_id, campaign_id, key=None):
    """The signed token of one message (59 URL-safe characters)."""
    raw = _as_bytes(message_id) + _as_bytes(campaign_id)
    mac = hmac.new(key or signing_key(), raw, hashlib.sha256).digest()[:MAC_BYTES]
    return _b64(raw + mac)


def ids_from(token):
    """(message id, campaign id) of a token, or None when it is malformed or its signature is wrong."""
    if not token or not TOKEN.match(token):
        return None
    data = base64.urlsafe_b64decode(token + "=")
    raw, mac = data[:32], data[32:]
    if not any(hmac.compare_digest(hmac.new(key, raw, hashlib.sha256).digest()[:MAC_BYTES], mac)
               for key in tracking_keys()):
        return None
    return uuid.UUID(bytes=raw[:16]), uuid.UUID(bytes=raw[16:])


def urls_for(token, base_url):
    """The per-recipient URLs a rendered email needs (merge tags of the same names)."""
    return {
        "open_url": f"{base_url}/t/o/{token}.gif",
        "click_base": f"{base_url}/t/c/{token}",
        "unsubscribe_url": f"{base_url}/t/u/{token}",
        "preferences_url": f"{base_url}/t/p/{token}",
        "view_in_browser_url": f"{base_url}/t/v/{token}",
    }


def prepare_html(html):
    """(html, links): every plain http(s) link replaced by {{ click_base }}/<index> (one index per distinct
    URL) and the open pixel added before </body>. Runs once per campaign, not per recipient.

    links holds the URLs themselves, where the href writes them as HTML (& as &amp;): the click redirect
    leads to what a browser would have opened."""
    links = []
    index_of = {}

    def replace(match):
        url = html_text.unescape(match.group(3))
        if url not in index_of:
            index_of[url] = len(links)
            links.append(url)
        return f"{match.group(1)}{match.group(2)}{{{{ click_base }}}}/{index_of[url]}{match.group(2)}"

    html = LINK.sub(replace, html)
    if BODY_END.search(html):
        html = BODY_END.sub(lambda m: OPEN_PIXEL + m.group(0), html, count=1)
    else:
        html += OPEN_PIXEL
    return html, links


def without_tracking(html):
    """A sent email's HTML for the people who sent it (the Outbox): without the open pixel, with each
    tracked link leading straight to its target, so that looking at the message or following its links
    records nothing for its recipient (links of a token that does not verify stay as they are: 404), and
    with the recipient's own pages (unsubscribe, preferences, view in browser) replaced by the preview ones,
    so that nothing an operator clicks there changes the recipient's subscription."""
    html = inert_recipient_links(SENT_OPEN_PIXEL.sub("", html))

    def target(match):
        ids = ids_from(match.group(2))
        url = link_target(ids[1], int(match.group(3))) if ids else None
        if url is None:
            return match.group(0)
        return match.group(1) + html_text.escape(url, quote=True) + match.group(1)

    return SENT_CLICK_URL.sub(target, html)


def inert_recipient_links(text):
    """A sent email's HTML or text with every link to its recipient's own pages (/t/u/, /t/p/, /t/v/ and their
    token) replaced by the preview page of the same kind on the same base URL: the page says it is a preview
    and changes nothing (the view-in-browser copy would carry the live links again)."""
    return SENT_RECIPIENT_URL.sub(lambda m: m.group(1) + PREVIEW_PATHS[RECIPIENT_PAGES[m.group(2)]], text)


# --------------------------------------------------------------------------------------------------
# What tracking does

def message_for(message_id):
    return db.session.get(Message, message_id) if message_id else None


_links_cache = {}


def campaign_links(campaign_id):
    """A campaign's tracked links; they never change once it is sent, so each process reads them once."""
    links = _links_cache.get(campaign_id)
    if links is None:
        links = db.session.scalar(sa.select(Campaign.links).where(Campaign.id == campaign_id))
        if links is None:
            return []
        if len(_links_cache) >= LINK_CACHE_SIZE:
            _links_cache.pop(next(iter(_links_cache)))
        _links_cache[campaign_id] = links
    return links


def link_target(campaign_id, index):
    """The URL behind link number index of a campaign, or None."""
    links = campaign_links(campaign_id)
    return links[index] if 0 <= index < len(links) else None


def _first_time(column, message_id, when):
    """Set a first-open/first-click timestamp once; True when this call set it."""
    result = db.session.execute(sa.update(Message).where(Message.id == message_id, column.is_(None))
                                .values({column: when}))
    return result.rowcount == 1


def _bump(campaign_id, **counts):
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign_id).values(
        {name: getattr(Campaign, name) + amount for name, amount in counts.items()}))


def record_open(message_id, *, ip=None, user_agent=None, when=None):
    """An open: an email.opened event, and the unique-open count the first time."""
    message = message_for(message_id)
    if message is None:
        return False
    when = when or utcnow()
    if _first_time(Message.opened_at, message.id, when):
        _bump(message.campaign_id, opened_count=1)
    events.emit(message.account_id, "email.opened", contact_id=message.contact_id, campaign_id=message.campaign_id,
                data={"message_id": str(message.id)}, ip=ip, user_agent=user_agent)
    db.session.commit()
    return True


def record_click(message_id, url, *, ip=None, user_agent=None, when=None):
    """A click: an email.clicked event and the unique-click count; a click proves an open too."""
    message = message_for(message_id)
    if message is None:
        return False
    when = when or utcnow()
    if _first_time(Message.clicked_at, message.id, when):
        _bump(message.campaign_id, clicked_count=1)
    if _first_time(Message.opened_at, message.id, when):
        _bump(message.campaign_id, opened_count=1)
    events.emit(message.account_id, "email.clicked", contact_id=message.contact_id, campaign_id=message.campaign_id,
                data={"message_id": str(message.id), "url": url}, ip=ip, user_agent=user_agent)
    db.session.commit()
    return True


def unsubscribe(message_id, *, source="link", ip=None, user_agent=None):
    """Unsubscribe the message's recipient for good and count it on the campaign once: their contact, or,
    when the contact was deleted or purged since the email left, the address the email went to.
    Returns that address, or None when the token's message is gone."""
    from nudge.services.contacts import change_status_for_unsubscribe
    message = _locked_message(message_id)
    if message is None:
        return None
    contact = contact_for(message)
    first = contact is None or not _unsubscribed_before(message)
    if contact is not None and contact.status != "deleted":
        changed = contact.status != "unsubscribed"
        if changed:
            change_status_for_unsubscribe(contact, campaign_id=message.campaign_id, source=source)
        address = contact.email
    else:
        changed = _unsubscribe_address(message, contact, source)
        address = message.email
    if changed and first:
        _bump(message.campaign_id, unsubscribed_count=1)
    db.session.commit()
    return address


def _locked_message(message_id):
    """The message, its row locked until the commit on PostgreSQL: two unsubscribes of one recipient at once
    (the one-click POST and the page's button) then run one after the other, so the second sees the first's
    event and the campaign counts the recipient once. SQLite writes one transaction at a time anyway."""
    if not message_id:
        return None
    return db.session.scalar(sa.select(Message).where(Message.id == message_id).with_for_update()
                             .execution_options(populate_existing=True))


def _unsubscribed_before(message):
    """Whether the message's contact already unsubscribed from this campaign (and subscribed again since, from
    the preferences page): the campaign's Unsubscribed count is of recipients, so it counts them once."""
    return db.session.scalar(sa.select(sa.exists().where(
        EmailEvent.campaign_id == message.campaign_id, EmailEvent.event_type == "contact.unsubscribed",
        EmailEvent.contact_id == message.contact_id))) or False


def _unsubscribe_address(message, contact, source):
    """The recipient's contact is deleted (restorable) or purged: suppress the address the message went to, so
    neither a later import of it nor a restore mails it again. The token names the message, and the message
    row keeps its address after its contact is purged (contact_id is set null), so no URL carries an address.
    True when the address was not suppressed yet."""
    if contact is not None:
        keep_unsubscribed_when_restored(contact, campaign_id=message.campaign_id, source=source)
    return suppressions.suppress_address(message.account_id, message.email, "unsubscribed",
                                         note=f"Unsubscribed from an email ({source}) after the contact was deleted.")


def recipient_status(message):
    """The subscription the recipient's pages show: their contact's status while the contact exists; once it is
    deleted or purged, "unsubscribed" when the address is suppressed, else "removed"."""
    contact = contact_for(message)
    if contact is not None and contact.status != "deleted":
        return contact.status
    return "unsubscribed" if suppressions.is_suppressed(message.account_id, message.email) else "removed"


def resubscribe(message_id):
    """A recipient who unsubscribed themselves subscribes again from the preferences page. Bounced or
    complained addresses, and ones the team suppressed, stay suppressed. Returns the contact or None."""
    from nudge.models import Suppression
    from nudge.services.contacts import change_status_for_resubscribe
    message = message_for(message_id)
    contact = db.session.get(Contact, message.contact_id) if message and message.contact_id else None
    if contact is None or contact.status != "unsubscribed":
        return None
    reason = db.session.scalar(sa.select(Suppression.reason).where(Suppression.account_id == contact.account_id,
                                                                   same_address(Suppression.email, contact.email)))
    if reason not in (None, "unsubscribed"):
        return None
    db.session.execute(sa.delete(Suppression).where(Suppression.account_id == contact.account_id,
                                                    same_address(Suppression.email, contact.email)))
    change_status_for_resubscribe(contact, campaign_id=message.campaign_id)
    db.session.commit()
    return contact


def contact_for(message):
    return db.session.get(Contact, message.contact_id) if message.contact_id else None


def sender_name(message):
    """Who the recipient knows the email from: the campaign's From name, else the account's name."""
    from nudge.models import Account
    name = db.session.scalar(sa.select(Campaign.from_name).where(Campaign.id == message.campaign_id))
    return name or db.session.scalar(sa.select(Account.name).where(Account.id == message.account_id))


def account_for(message):
    from nudge.models import Account
    return db.session.get(Account, message.account_id)


def browser_copy(message_id):
    """The email as its recipient got it (re-rendered from the campaign's content), or None."""
    from nudge.services import sending
    message = message_for(message_id)
    if message is None:
        return None
    return sending.render_for_browser(message)


def record(kind, message_id, *, url=None, ip=None, user_agent=None, at=None):
    """Record an open or a click handed over by the tracking endpoints."""
    import datetime as dt
    when = dt.datetime.fromisoformat(at) if at else None
    if kind == "open":
        return record_open(message_id, ip=ip, user_agent=user_agent, when=when)
    if kind == "click":
        return record_click(message_id, url, ip=ip, user_agent=user_agent, when=when)
    raise ValueError(f"unknown tracking event {kind!r}")
