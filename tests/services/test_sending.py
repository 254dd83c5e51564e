"""The sending pipeline through a real SMTP server on loopback (aiosmtpd): one correct, compliant,
personalised message per mailable recipient; tracking and unsubscribe links that work; failures recorded;
failover; pause, resume, cancel; a dead worker's claims resumed without skipping or repeating anyone."""
import asyncio
import datetime as dt
import email
import email.policy
import re

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from nudge.extensions import db
from nudge.models import Campaign, Contact, EmailEvent, Message, Suppression
from nudge.models.types import utcnow
from nudge.services import campaigns, sending, suppressions
from tests.delivery.conftest import RecordingHandler, SMTPServer, free_port

CONTENT = """<!doctype html><html><body>
<p>Hi {{ contact.first_name | default("there") }},</p>
<p>Our <a href="https://shop.example/spring?utm=1">spring collection</a> is here.
 Also <a href="https://shop.example/blog">the blog</a> and <a href="https://shop.example/spring?utm=1">again</a>.</p>
<p>{{ account.postal_address }} · <a href="{{ unsubscribe_url }}">Unsubscribe</a> ·
 <a href="{{ view_in_browser_url }}">View in browser</a></p>
</body></html>"""


@pytest.fixture
def smtp():
    handler = RecordingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, loop=asyncio.new_event_loop())
    controller.start()
    yield SMTPServer(controller, handler, port)
    controller.stop()


@pytest.fixture
def app(make_app, smtp, tmp_path):
    """The app of these tests (make_account and the other fixtures use it): mail goes to the SMTP server."""
    return make_app(SMTP_URL=f"smtp://127.0.0.1:{smtp.port}", PROVIDERS_SMALL=["smtp"], PROVIDERS_BULK=["smtp"],
                    OUTBOX_DIR=str(tmp_path / "outbox"), BASE_URL="https://mail.shop.example")


@pytest.fixture
def shop(app, make_account):
    account, owner = make_account()
    account.postal_address = "1 Market Street\nSpringfield"
    account.default_from_email = "news@shop.example"
    db.session.commit()
    return account, owner


def add_contacts(account, *specs):
    contacts = []
    for spec in specs:
        email_address, status, name = (spec + (None, None))[:3] if isinstance(spec, tuple) else (spec, "active", None)
        contacts.append(Contact(account_id=account.id, email=email_address, status=status or "active",
                                first_name=name))
    db.session.add_all(contacts)
    db.session.commit()
    return contacts


def new_campaign(owner, audience=None, **fields):
    data = {"name": "Spring", "subject": "Spring is here, {{ contact.first_name | default('friend') }}",
            "from_email": "news@shop.example", "from_name": "Shop News", "content_html": CONTENT,
            "audience": audience or {"all": True}}
    data.update(fields)
    return campaigns.create_campaign(owner, data)


def received(smtp):
    """{recipient: [parsed message, ...]} of everything the SMTP server accepted."""
    by_rcpt = {}
    for item in smtp.messages:
        parsed = email.message_from_bytes(item.content, policy=email.policy.default)
        for rcpt in item.rcpt_tos:
            by_rcpt.setdefault(rcpt, []).append(parsed)
    return by_rcpt


def html_of(message):
    return message.get_body(preferencelist=("html",)).get_content()


def test_every_mailable_contact_gets_exactly_one_personalised_compliant_email(shop, smtp, make_account):
    account, owner = shop
    add_contacts(account, ("ann@example.org", "active", "Ann"), ("bob@example.org", "active", "Bob"),
                 "cat@example.org", ("dan@example.org", "unsubscribed"), ("eve@example.org", "bounced"))
    gone = add_contacts(account, "gus@example.org")[0]
    gone.deleted_at, gone.status = utcnow(), "deleted"
    suppressions.suppress(account.id, ["fay@example.org"], "manual")
    add_contacts(account, "fay@example.org")
    other, _ = make_account()
    add_contacts(other, "zed@example.org")
    db.session.commit()
    campaign = new_campaign(owner)

    campaigns.send_now(owner, campaign.id)

    arrived = received(smtp)
    assert sorted(arrived) == ["ann@example.org", "bob@example.org", "cat@example.org"]
    assert all(len(copies) == 1 for copies in arrived.values())
    ann = arrived["ann@example.org"][0]
    assert ann["Subject"] == "Spring is here, Ann" and arrived["cat@example.org"][0]["Subject"] == "Spring is here, friend"
    assert "Hi Ann," in html_of(ann) and "Hi there," in html_of(arrived["cat@example.org"][0])
    assert "1 Market Street, Springfield" in html_of(ann)
    assert ann.get_body(preferencelist=("plain",)).get_content().startswith("Hi Ann,")
    # Only what the product processes: the RFC 8058 one-click URL, no mailto: (no mailbox is read).
    assert re.fullmatch(r"<https://mail\.shop\.example/t/u/[A-Za-z0-9_-]{59}>", ann["List-Unsubscribe"])
    assert ann["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    ids = {copies[0]["Message-ID"] for copies in arrived.values()}
    assert len(ids) == 3 and all(i.endswith("@shop.example>") for i in ids)
    assert ann["X-Nudge-Message-Id"]
    assert "https://shop.example/spring" not in html_of(ann)  # links go through the click redirect
    assert len(re.findall(r"https://mail\.shop\.example/t/c/[A-Za-z0-9_-]{59}/0", html_of(ann))) == 2
    assert re.search(r"https://mail\.shop\.example/t/o/[A-Za-z0-9_-]{59}\.gif", html_of(ann))

    db.session.refresh(campaign)
    assert (campaign.status, campaign.recipient_count, campaign.sent_count, campaign.failed_count) == ("sent", 3, 3, 0)
    assert campaign.sent_at is not None
    sent_events = db.session.scalar(sa.select(sa.func.count()).select_from(EmailEvent).where(
        EmailEvent.campaign_id == campaign.id, EmailEvent.event_type == "email.sent"))
    assert sent_events == 3


def _token_urls(message):
    html = html_of(message)
    return {"click": re.search(r"https://mail\.shop\.example(/t/c/[^\"']+/0)", html).group(1),
            "open": re.search(r"https://mail\.shop\.example(/t/o/[^\"']+\.gif)", html).group(1),
            "view": re.search(r"https://mail\.shop\.example(/t/v/[^\"']+)\"", html).group(1),
            "unsubscribe": re.search(r"<https://mail\.shop\.example(/t/u/[^>]+)>", message["List-Unsubscribe"]).group(1)}


def test_tracking_links_record_opens_clicks_and_unsubscribes(shop, smtp, app):
    account, owner = shop
    ann = add_contacts(account, ("ann@example.org", "active", "Ann"))[0]
    campaign = new_campaign(owner)
    campaigns.send_now(owner, campaign.id)
    urls = _token_urls(received(smtp)["ann@example.org"][0])
    web = app.test_client()

    pixel = web.get(urls["open"])
    pixel.close()  # as a WSGI server does once the response is sent: then the event is queued
    assert pixel.status_code == 200 and pixel.mimetype == "image/gif" and "no-store" in pixel.headers["Cache-Control"]
    click = web.get(urls["click"])
    click.close()
    assert click.status_code == 302 and click.headers["Location"] == "https://shop.example/spring?utm=1"
    web.get(urls["click"]).close()
    tampered = urls["click"].replace("/t/c/", "/t/c/x", 1)[:-2] + "/0"
    assert web.get(tampered).status_code == 404
    assert web.get(urls["click"][:-1] + "9").status_code == 404  # no such link in this email

    db.session.refresh(campaign)
    assert (campaign.opened_count, campaign.clicked_count) == (1, 1)
    clicks = db.session.scalars(sa.select(EmailEvent).where(EmailEvent.event_type == "email.clicked")).all()
    assert len(clicks) == 2 and clicks[0].event_data["url"] == "https://shop.example/spring?utm=1"

    view = web.get(urls["view"])
    assert view.status_code == 200 and "Hi Ann," in view.get_data(as_text=True)
    assert "script-src" not in view.headers["Content-Security-Policy"]

    page = web.get(urls["unsubscribe"])
    assert page.status_code == 200 and "ann@example.org" in page.get_data(as_text=True)
    db.session.refresh(ann)
    assert ann.status == "active"  # a link scanner following the link unsubscribes nobody
    one_click = web.post(urls["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200
    db.session.refresh(ann)
    db.session.refresh(campaign)
    assert ann.status == "unsubscribed" and campaign.unsubscribed_count == 1
    assert db.session.scalar(sa.select(Suppression.reason).where(Suppression.email == "ann@example.org")) == "unsubscribed"
    again = web.post(urls["unsubscribe"])
    assert again.status_code == 200 and "You are unsubscribed" in again.get_data(as_text=True)
    assert "Shop News" in again.get_data(as_text=True)  # the From name the recipient knows
    db.session.refresh(campaign)
    assert campaign.unsubscribed_count == 1

    preferences = urls["unsubscribe"].replace("/t/u/", "/t/p/")
    assert "Subscribe again" in web.get(preferences).get_data(as_text=True)
    back = web.post(preferences, data={"action": "subscribe"})
    assert "You are subscribed again" in back.get_data(as_text=True)
    db.session.refresh(ann)
    assert ann.status == "active"
    assert db.session.scalar(sa.select(Suppression.reason).where(Suppression.email == "ann@example.org")) is None


def test_a_link_with_several_query_parameters_redirects_to_the_url_as_written(shop, smtp, app):
    """In HTML an href writes & as &amp;: the redirect and the click's record carry the real URL."""
    account, owner = shop
    add_contacts(account, ("ann@example.org", "active", "Ann"))
    content = CONTENT.replace('href="https://shop.example/blog"',
                              'href="https://shop.example/blog?utm_source=news&amp;utm_medium=email&#38;x=1"')
    campaign = new_campaign(owner, content_html=content)
    campaigns.send_now(owner, campaign.id)
    html = html_of(received(smtp)["ann@example.org"][0])
    blog = re.search(r"https://mail\.shop\.example(/t/c/[A-Za-z0-9_-]{59}/1)", html).group(1)

    click = app.test_client().get(blog)
    click.close()
    assert click.status_code == 302
    assert click.headers["Location"] == "https://shop.example/blog?utm_source=news&utm_medium=email&x=1"
    event = db.session.scalars(sa.select(EmailEvent).where(EmailEvent.event_type == "email.clicked")).one()
    assert event.event_data["url"] == "https://shop.example/blog?utm_source=news&utm_medium=email&x=1"


def test_the_outbox_shows_a_message_without_tracking_it(shop, smtp, app, login):
    """Looking at a sent message in the Outbox, or following its links there, records nothing for its
    recipient: the open pixel is left out and tracked links lead straight to their targets."""
    account, owner = shop
    add_contacts(account, ("ann@example.org", "active", "Ann"))
    content = CONTENT.replace('href="https://shop.example/blog"', 'href="https://shop.example/blog?a=1&amp;b=2"')
    campaign = new_campaign(owner, content_html=content)
    app.config.update(PROVIDERS_SMALL=["outbox"], PROVIDERS_BULK=["outbox"])
    campaigns.send_now(owner, campaign.id)
    web = app.test_client()
    login(web, owner)
    name = re.search(r'href="/outbox/([^"/]+)"', web.get("/outbox/").get_data(as_text=True)).group(1)

    html = web.get(f"/outbox/{name}/html").get_data(as_text=True)
    assert "Hi Ann," in html
    assert "/t/o/" not in html and "/t/c/" not in html
    assert 'href="https://shop.example/spring?utm=1"' in html
    assert 'href="https://shop.example/blog?a=1&amp;b=2"' in html
    assert "/t/u/" not in html and 'href="https://mail.shop.example/u/preview"' in html  # the preview page
    db.session.refresh(campaign)
    assert (campaign.opened_count, campaign.clicked_count) == (0, 0)


def test_a_rejected_recipient_is_failed_with_the_reason_and_can_be_resent(shop, smtp):
    account, owner = shop
    add_contacts(account, "ann@example.org", "nobody@example.org")
    smtp.handler.reject["nobody@example.org"] = "554 5.7.1 <nobody@example.org>: policy rejection"
    campaign = new_campaign(owner)
    campaigns.send_now(owner, campaign.id)
    db.session.refresh(campaign)
    assert (campaign.status, campaign.sent_count, campaign.failed_count, campaign.bounced_count) == ("sent", 1, 1, 0)
    failed = db.session.scalars(sending.failed_messages_query(account.id, campaign.id)).one()
    assert failed.email == "nobody@example.org" and "policy rejection" in failed.error

    del smtp.handler.reject["nobody@example.org"]
    assert sending.retry_failed(campaign.id) == 1
    db.session.refresh(campaign)
    assert (campaign.status, campaign.sent_count, campaign.failed_count) == ("sent", 2, 0)
    assert sorted(received(smtp)) == ["ann@example.org", "nobody@example.org"]


def test_an_unknown_mailbox_is_a_hard_bounce_counted_on_the_campaign_and_suppressed(shop, smtp):
    account, owner = shop
    ann, nobody = add_contacts(account, "ann@example.org", "nobody@example.org")
    smtp.handler.reject["nobody@example.org"] = "550 5.1.1 <nobody@example.org>: mailbox unavailable"
    campaign = new_campaign(owner)
    campaigns.send_now(owner, campaign.id)
    db.session.refresh(campaign)
    assert (campaign.status, campaign.sent_count, campaign.failed_count, campaign.bounced_count) == ("sent", 1, 1, 1)
    db.session.refresh(nobody)
    db.session.refresh(ann)
    assert (nobody.status, ann.status) == ("bounced", "active")
    assert suppressions.is_suppressed(account.id, "nobody@example.org")
    bounce = db.session.scalars(sa.select(EmailEvent).where(EmailEvent.event_type == "email.bounced")).one()
    assert (bounce.contact_id, bounce.campaign_id) == (nobody.id, campaign.id)
    assert bounce.event_data["type"] == "hard" and "mailbox unavailable" in bounce.event_data["reason"]
    assert sending.retry_failed(campaign.id) == 0     # a bounced address is never mailed again


def test_failover_to_the_next_provider_when_the_first_is_down(app, shop, tmp_path):
    account, owner = shop
    app.config.update(SMTP_URL=f"smtp://127.0.0.1:{free_port()}", PROVIDERS_SMALL=["smtp", "outbox"])
    add_contacts(account, "ann@example.org", "bob@example.org")
    campaign = new_campaign(owner)
    campaigns.send_now(owner, campaign.id)
    providers = db.session.scalars(sa.select(Message.provider).where(Message.campaign_id == campaign.id)).all()
    assert providers == ["outbox", "outbox"]
    assert len(list((tmp_path / "outbox" / str(account.id)).glob("*.eml"))) == 2


def test_pause_resume_and_cancel(shop, smtp, monkeypatch):
    account, owner = shop
    add_contacts(account, *[f"c{n}@example.org" for n in range(5)])
    campaign = new_campaign(owner)
    monkeypatch.setattr(sending, "enqueue_workers", lambda campaign_id, count=None: None)  # no worker yet
    campaigns.send_now(owner, campaign.id)
    campaigns.pause(owner, campaign.id)
    assert sending.deliver_chunk(campaign.id) == "stopped" and smtp.messages == []
    monkeypatch.undo()
    campaigns.resume(owner, campaign.id)
    db.session.refresh(campaign)
    assert campaign.status == "sent" and len(smtp.messages) == 5

    second = new_campaign(owner, name="Second")
    monkeypatch.setattr(sending, "enqueue_workers", lambda campaign_id, count=None: None)
    campaigns.send_now(owner, second.id)
    campaigns.cancel(owner, second.id)
    assert sending.deliver_chunk(second.id) == "stopped"
    statuses = set(db.session.scalars(sa.select(Message.status).where(Message.campaign_id == second.id)))
    assert statuses == {"cancelled"} and len(smtp.messages) == 5


def test_a_dead_workers_claims_are_resent_and_nobody_is_skipped_or_repeated(shop, smtp, monkeypatch):
    account, owner = shop
    add_contacts(account, *[f"c{n}@example.org" for n in range(30)])
    campaign = new_campaign(owner)
    monkeypatch.setattr(sending, "enqueue_workers", lambda campaign_id, count=None: None)
    campaigns.send_now(owner, campaign.id)
    claimed = sending.claim(campaign.id, limit=10)  # a worker claims a batch, then dies before sending
    assert len(claimed) == 10
    long_ago = utcnow() - dt.timedelta(minutes=5)
    db.session.execute(sa.update(Message).where(Message.id.in_(claimed)).values(claimed_at=long_ago))
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign.id).values(updated_at=long_ago))
    db.session.commit()
    monkeypatch.undo()

    assert sending.resume_stalled() == [campaign.id]

    arrived = received(smtp)
    assert len(arrived) == 30 and all(len(copies) == 1 for copies in arrived.values())
    db.session.refresh(campaign)
    assert campaign.status == "sent" and campaign.sent_count == 30


def test_a_batchs_bookkeeping_landing_after_the_campaign_ended_counts_nothing_twice(shop, monkeypatch):
    # A sending thread's results are committed; the campaign is cancelled (which recounts) or finishes
    # (which repairs events and recounts) before that batch's events and counters are written. Then they
    # are: the counters stay exact and every sent message has one email.sent event.
    account, owner = shop
    add_contacts(account, *[f"b{n}@example.org" for n in range(8)])
    monkeypatch.setattr(sending, "enqueue_workers", lambda campaign_id, count=None: None)
    for ending in ("cancel", "finish"):
        campaign = new_campaign(owner, name=f"Ends by {ending}")
        campaigns.send_now(owner, campaign.id)
        count = 8 if ending == "finish" else 3
        ids = sending.claim(campaign.id, limit=count)
        recorder = sending.Recorder()
        for message_id in ids:
            recorder.sent(message_id, "smtp", None)
        recorder.close()
        if ending == "cancel":
            campaigns.cancel(owner, campaign.id)
        else:
            assert sending._finish(campaign.id) is True
        sending.record_batch(campaign.id, ids, count, 0)       # the batch's bookkeeping, late
        db.session.refresh(campaign)
        assert campaign.sent_count == count and campaign.delivered_count == count
        events = db.session.scalar(sa.select(sa.func.count()).select_from(EmailEvent).where(
            EmailEvent.campaign_id == campaign.id, EmailEvent.event_type == "email.sent"))
        assert events == count


def test_smtp_mail_goes_out_in_waves_over_several_connections_and_the_outbox_one_at_a_time(shop, smtp, app,
                                                                                            tmp_path):
    from nudge.delivery.outbox import count_outbox
    account, owner = shop
    add_contacts(account, *[f"w{n}@example.org" for n in range(20)])
    app.config["SEND_CONNECTIONS"] = 4
    campaigns.send_now(owner, new_campaign(owner).id)
    arrived = received(smtp)
    assert len(arrived) == 20 and all(len(copies) == 1 for copies in arrived.values())
    assert smtp.connections == 4        # one sending task here (tasks run inline), four connections

    # A provider that cannot overlap connections (the outbox, an HTTP API) is used one email at a time.
    app.config.update(SMTP_URL=None, PROVIDERS_SMALL=["outbox"], PROVIDERS_BULK=["outbox"])
    assert sending._senders(account.id, 20)[0].overlaps_connections is False
    assert len(sending._senders(account.id, 20)) == 1
    campaign = new_campaign(owner, name="To the outbox")
    campaigns.send_now(owner, campaign.id)
    db.session.refresh(campaign)
    assert campaign.status == "sent" and campaign.sent_count == 20
    assert count_outbox(str(tmp_path / "outbox"), account.id) == 20 and len(received(smtp)) == 20


def test_an_empty_audience_or_missing_footer_blocks_sending(shop):
    account, owner = shop
    campaign = new_campaign(owner, content_html="<p>No footer here</p>")
    add_contacts(account, "ann@example.org")
    with pytest.raises(Exception) as caught:
        campaigns.send_now(owner, campaign.id)
    assert "unsubscribe" in str(caught.value).lower()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0


def test_test_sends_go_out_at_once_with_a_test_subject(shop, smtp):
    account, owner = shop
    campaign = new_campaign(owner)
    results = sending.send_test(owner, campaign.id, ["me@shop.example"])
    assert results == [{"email": "me@shop.example", "status": "sent", "error": None}]
    message = received(smtp)["me@shop.example"][0]
    assert message["Subject"] == "[Test] Spring is here, Alex" and "Hi Alex," in html_of(message)


def test_per_domain_rate_limits_space_out_a_domains_emails(shop, smtp, app):
    account, owner = shop
    app.config["DOMAIN_RATE_LIMITS"] = {"slow.example": 5.0}
    add_contacts(account, *[f"c{n}@slow.example" for n in range(10)], "fast@example.org")
    campaign = new_campaign(owner)
    campaigns.send_now(owner, campaign.id)
    sent_at = db.session.scalars(sa.select(Message.sent_at).where(
        Message.campaign_id == campaign.id, Message.email.like("%@slow.example")).order_by(Message.sent_at)).all()
    assert len(sent_at) == 10 and len(received(smtp)) == 11
    # 5 per second with a one-second burst: the last five wait for tokens (load can only stretch this).
    assert (sent_at[-1] - sent_at[0]).total_seconds() >= 0.7


def test_campaign_mail_is_signed_with_its_from_domains_own_key_verified_against_dns(shop, smtp, app, dns_zone):
    """Each domain signs with its own key: dkimpy verifies the delivered mail against the record the test DNS
    server publishes, and the other domain's key would not verify it."""
    import dkim

    from nudge.delivery import dnscheck
    from nudge.services import sending_domains
    account, owner = shop
    shop_domain = sending_domains.add_domain(owner, "shop.example")
    other = sending_domains.add_domain(owner, "other.example")
    for row in (shop_domain, other):
        dns_zone.publish(*sending_domains.dkim_record(row))
    resolver = dnscheck.make_resolver([("127.0.0.1", dns_zone.port)], timeout=2)

    def dnsfunc(name, timeout=5):
        return "".join(dnscheck.txt_records(resolver, name.decode().rstrip("."))).encode()

    add_contacts(account, ("ann@example.org", "active", "Ann"))
    campaigns.send_now(owner, new_campaign(owner).id)
    campaigns.send_now(owner, new_campaign(owner, from_email="news@other.example").id)
    by_from = {b"news@shop.example": None, b"news@other.example": None}
    for message in smtp.messages:
        for sender in by_from:
            if b"From: Shop News <" + sender + b">" in message.content:
                by_from[sender] = message.content
    shop_raw, other_raw = by_from[b"news@shop.example"], by_from[b"news@other.example"]
    assert b"d=shop.example" in shop_raw and f"s={shop_domain.dkim_selector}".encode() in shop_raw
    assert b"d=other.example" in other_raw
    assert dkim.verify(shop_raw, dnsfunc=dnsfunc) and dkim.verify(other_raw, dnsfunc=dnsfunc)
    dns_zone.publish(*sending_domains.dkim_record(shop_domain)[:1], sending_domains.dkim_record(other)[1])
    assert not dkim.verify(shop_raw, dnsfunc=dnsfunc)


def test_a_bounced_address_cannot_subscribe_again_from_the_preferences_page(shop, smtp, app):
    account, owner = shop
    ann = add_contacts(account, ("ann@example.org", "active", "Ann"))[0]
    campaign = new_campaign(owner)
    campaigns.send_now(owner, campaign.id)
    preferences = _token_urls(received(smtp)["ann@example.org"][0])["unsubscribe"].replace("/t/u/", "/t/p/")
    ann.status = "unsubscribed"
    suppressions.suppress(account.id, ["ann@example.org"], "hard_bounce")
    db.session.commit()
    answer = app.test_client().post(preferences, data={"action": "subscribe"})
    assert "cannot be subscribed again" in answer.get_data(as_text=True)
    db.session.refresh(ann)
    assert ann.status == "unsubscribed"


def test_a_click_still_redirects_when_the_job_queue_is_down(shop, smtp, app, monkeypatch, caplog):
    from nudge import tasks
    account, owner = shop
    add_contacts(account, ("ann@example.org", "active", "Ann"))
    campaign = new_campaign(owner)
    campaigns.send_now(owner, campaign.id)
    urls = _token_urls(received(smtp)["ann@example.org"][0])

    def queue_down(*args, **kwargs):
        raise ConnectionError("the job queue is unreachable")
    monkeypatch.setattr(tasks, "record_tracking_event", queue_down)
    click = app.test_client().get(urls["click"])
    click.close()  # runs the enqueue, which fails and is logged
    assert click.status_code == 302 and click.headers["Location"] == "https://shop.example/spring?utm=1"
    pixel = app.test_client().get(urls["open"])
    pixel.close()
    assert pixel.status_code == 200
    db.session.refresh(campaign)
    assert (campaign.opened_count, campaign.clicked_count) == (0, 0)
    assert "could not queue the click event" in caplog.text and "could not queue the open event" in caplog.text


def _claimed_campaign(shop, monkeypatch, count):
    """A sending campaign whose `count` recipients are all claimed (as a worker holds them mid-send)."""
    account, owner = shop
    add_contacts(account, *[f"g{n}@example.org" for n in range(count)])
    campaign = new_campaign(owner)
    monkeypatch.setattr(sending, "enqueue_workers", lambda campaign_id, count=None: None)
    campaigns.send_now(owner, campaign.id)
    return campaign, sending.claim(campaign.id, limit=count)


def test_results_recorded_by_many_sending_threads_at_once_all_land(shop, app, monkeypatch):
    import threading
    campaign, ids = _claimed_campaign(shop, monkeypatch, 40)
    shares = [ids[i::8] for i in range(8)]
    errors = []

    def record(share):
        with app.app_context():
            recorder = sending.Recorder()
            try:
                for position, message_id in enumerate(share):
                    if position == 0:
                        recorder.failed(message_id, "smtp", "550 no such user")
                    else:
                        recorder.sent(message_id, "smtp", f"queue-{message_id.hex[:8]}")
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                recorder.close()
                db.session.remove()
    threads = [threading.Thread(target=record, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    rows = db.session.execute(sa.select(Message.id, Message.status, Message.provider_message_id, Message.sent_at,
                                        Message.error).where(Message.campaign_id == campaign.id)).all()
    first_of_share = {share[0] for share in shares}
    assert len(rows) == 40
    for message_id, status, queue_id, sent_at, error in rows:
        if message_id in first_of_share:
            assert (status, error, sent_at) == ("failed", "550 no such user", None)
        else:
            assert (status, queue_id, error) == ("sent", f"queue-{message_id.hex[:8]}", None) and sent_at


def test_a_failed_group_write_is_raised_in_every_waiting_thread_and_the_next_one_lands(shop, app, monkeypatch):
    if not sending.is_postgres():
        pytest.skip("the group commit is PostgreSQL's; SQLite records through the session")
    campaign, ids = _claimed_campaign(shop, monkeypatch, 3)
    recorder = sending.Recorder()
    try:
        with pytest.raises(RuntimeError, match="could not be recorded"):
            recorder.sent(ids[0], "smtp", "x" * 300)          # longer than provider_message_id allows
        recorder.sent(ids[1], "smtp", "fine")
    finally:
        recorder.close()
    statuses = dict(db.session.execute(sa.select(Message.id, Message.status).where(Message.id.in_(ids))).all())
    assert statuses == {ids[0]: "sending", ids[1]: "sent", ids[2]: "sending"}


def _split_snapshot(shop, monkeypatch, recipients, first_part):
    """A draft to `recipients` contacts whose snapshot will take its first `first_part` before the rest,
    with workers started between the parts as on a real queue; returns (owner, campaign)."""
    account, owner = shop
    add_contacts(account, *[f"s{n}@example.org" for n in range(recipients)])
    monkeypatch.setattr(sending, "FIRST_PART", first_part)
    monkeypatch.setattr(sending, "_tasks_run_inline", lambda: False)
    return owner, new_campaign(owner)


def test_the_workers_start_on_the_first_part_of_a_large_snapshot_and_finish_after_the_rest(shop, smtp, monkeypatch):
    owner, campaign = _split_snapshot(shop, monkeypatch, 12, 5)
    seen_at_start = []

    def first_workers(campaign_id, count=None):
        # What a worker finds when it starts: the first part queued, the snapshot not yet complete. It
        # sends what is there and does not mark the campaign sent.
        queued = db.session.scalar(sa.select(sa.func.count()).select_from(Message)
                                   .where(Message.campaign_id == campaign_id))
        seen_at_start.append((queued, sending.snapshot_complete(campaign_id)))
        seen_at_start.append(sending.deliver_chunk(campaign_id, seconds=0.3))
    monkeypatch.setattr(sending, "enqueue_workers", first_workers)

    campaigns.send_now(owner, campaign.id)

    assert seen_at_start == [(5, False), "more"]
    assert len(received(smtp)) == 5
    db.session.refresh(campaign)
    assert campaign.status == "sending" and campaign.recipient_count == 12
    assert sending.deliver_chunk(campaign.id) == "done"
    arrived = received(smtp)
    assert len(arrived) == 12 and all(len(copies) == 1 for copies in arrived.values())
    db.session.refresh(campaign)
    assert campaign.status == "sent" and campaign.sent_count == 12


def test_a_worker_whose_claim_found_nothing_just_before_the_rest_of_the_snapshot_landed_keeps_sending(
        shop, smtp, monkeypatch):
    # The rest of the snapshot commits between a worker's empty claim and its look at whether the snapshot
    # is complete: it must not take "complete and nothing claimed" for "done" and leave the rest unsent.
    owner, campaign = _split_snapshot(shop, monkeypatch, 10, 4)
    rest_of_snapshot = sending.complete_snapshot
    monkeypatch.setattr(sending, "complete_snapshot", lambda campaign_id, workers_started=False: 0)
    monkeypatch.setattr(sending, "enqueue_workers", lambda campaign_id, count=None: None)
    campaigns.send_now(owner, campaign.id)           # the first part only, no worker yet
    claim_batch = sending.claim_batch
    claims = []

    def claim_then_the_rest_lands(content, limit=sending.BATCH):
        rows = claim_batch(content, limit)
        claims.append(len(rows))
        if len(claims) == 2:                        # the first part is sent: this claim came back empty
            rest_of_snapshot(content.campaign_id, workers_started=True)
        return rows
    monkeypatch.setattr(sending, "claim_batch", claim_then_the_rest_lands)

    assert sending.deliver_chunk(campaign.id, seconds=5) == "done"
    assert claims[:2] == [4, 0] and sum(claims) == 10
    arrived = received(smtp)
    assert len(arrived) == 10 and all(len(copies) == 1 for copies in arrived.values())
    db.session.refresh(campaign)
    assert campaign.status == "sent" and campaign.sent_count == 10


def test_a_snapshot_whose_process_died_between_its_parts_is_completed_and_sent(shop, smtp, monkeypatch):
    owner, campaign = _split_snapshot(shop, monkeypatch, 9, 4)
    monkeypatch.setattr(sending, "enqueue_workers", lambda campaign_id, count=None: None)

    def process_dies(campaign_id, workers_started=False):
        raise SystemExit("killed")
    monkeypatch.setattr(sending, "complete_snapshot", process_dies)
    with pytest.raises(SystemExit):
        campaigns.send_now(owner, campaign.id)
    monkeypatch.undo()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)
                             .where(Message.campaign_id == campaign.id)) == 4
    assert sending.resume_stalled() == []      # not stale yet: its process may still be inserting

    long_ago = utcnow() - sending.SNAPSHOT_STALE - dt.timedelta(minutes=1)
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign.id).values(updated_at=long_ago))
    db.session.commit()
    assert sending.resume_stalled() == [campaign.id]

    arrived = received(smtp)
    assert len(arrived) == 9 and all(len(copies) == 1 for copies in arrived.values())
    db.session.refresh(campaign)
    assert campaign.status == "sent" and campaign.recipient_count == 9
