"""Campaigns in the dashboard: the list, the wizard (each step saves, going back loses nothing), the
review checklist, send and schedule, the campaign page's live progress and counts, failed recipients,
and what viewers and other accounts may see."""
import datetime as dt
import html as html_lib
import re
import uuid

import pytest
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import Campaign, Message
from nudge.services import campaigns, email_doc, segments, templates
from tests.campaign_helpers import add_contacts, fake_pipeline, ready_campaign

HTMX = {"HX-Request": "true"}


@pytest.fixture
def owner_client(app, make_account, login):
    account, owner = make_account(name="Corner Shop")
    client = app.test_client()
    login(client, owner)
    return client, account, owner


def text(response):
    return response.get_data(as_text=True)


def campaign_id_from(location):
    return uuid.UUID(re.search(r"/campaigns/([0-9a-f-]{36})/", location).group(1))


def test_the_list_starts_empty_then_filters(owner_client):
    client, account, owner = owner_client
    html = text(client.get("/campaigns/"))
    assert "No campaigns yet" in html and "Create your first campaign" in html
    assert 'href="/campaigns/"' in text(client.get("/"))  # in the navigation

    campaigns.create_campaign(owner, {"name": "Spring sale", "subject": "Flowers"})
    sent = campaigns.create_campaign(owner, {"name": "Winter news"})
    db.session.execute(sa.update(Campaign).where(Campaign.id == sent.id).values(
        status="sent", started_at=dt.datetime(2030, 1, 1), sent_at=dt.datetime(2030, 1, 1, 1), recipient_count=1200,
        sent_count=1200, opened_count=300, clicked_count=45))
    db.session.commit()
    html = text(client.get("/campaigns/"))
    assert "Spring sale" in html and "Winter news" in html
    assert 'class="badge badge-draft">Draft' in html and 'class="badge badge-sent">Sent' in html
    assert "1,200" in html and "25.0%" in html and "3.8%" in html

    fragment = text(client.get("/campaigns/?q=flow", headers=HTMX))
    assert fragment.startswith('\n<div id="campaign-results">') or 'id="campaign-results"' in fragment[:200]
    assert "Spring sale" in fragment and "Winter news" not in fragment and "<html" not in fragment
    filtered = text(client.get("/campaigns/?status=sent"))
    assert "Winter news" in filtered and "Spring sale" not in filtered


def test_the_wizard_saves_each_step_and_going_back_loses_nothing(owner_client):
    client, account, owner = owner_client
    add_contacts(account, "a@x.example", tags=["vip"])
    add_contacts(account, "b@x.example", tags=["beta"])
    add_contacts(account, "c@x.example", status="unsubscribed", tags=["vip"])
    segment = segments.create_segment(owner, "Betas", "dynamic", {"match": "all", "conditions": [
        {"field": "tags", "op": "contains_any", "value": ["beta"]}]})

    form = text(client.get("/campaigns/new"))
    assert 'value="Corner Shop"' in form and f'value="{account.email}"' in form  # the default sender
    invalid = client.post("/campaigns/new", data={"name": "", "subject": "Hi", "from_name": "Shop",
                                                  "from_email": "not-an-address"})
    assert invalid.status_code == 422
    assert 'id="campaign-from_email-error"' in text(invalid) and 'value="not-an-address"' in text(invalid)

    created = client.post("/campaigns/new", data={"name": "Launch", "subject": "Hi {{ contact.first_name }}",
                                                  "from_name": "Shop", "from_email": "news@shop.example",
                                                  "go": "next"})
    assert created.status_code == 303 and created.headers["Location"].endswith("/audience")
    campaign_id = campaign_id_from(created.headers["Location"])

    count = client.get(f"/campaigns/{campaign_id}/audience/count?mode=custom&tags=vip", headers=HTMX)
    assert re.search(r"<strong[^>]*>1</strong>\s*contact would", text(count))
    back = client.post(f"/campaigns/{campaign_id}/audience",
                       data={"mode": "custom", "segments": [str(segment.id)], "tags": "vip", "go": "back"})
    assert back.status_code == 303 and back.headers["Location"].endswith("/details")
    campaign = campaigns.get_campaign(account.id, campaign_id)
    assert campaign.audience == {"segments": [str(segment.id)], "exclude_segments": [], "tags": ["vip"]}
    details = text(client.get(f"/campaigns/{campaign_id}/details"))
    assert 'value="Launch"' in details and 'value="news@shop.example"' in details
    audience = text(client.get(f"/campaigns/{campaign_id}/audience"))
    assert 'value="custom" checked' in audience and 'value="vip"' in audience
    assert re.search(rf'value="{segment.id}"\s+checked', audience)
    assert re.search(r"<strong[^>]*>2</strong>\s*contacts would", audience)


def test_content_step_gives_the_campaign_its_own_template(owner_client):
    client, account, owner = owner_client
    campaign = campaigns.create_campaign(owner, {"name": "Designed"})
    page = text(client.get(f"/campaigns/{campaign.id}/content"))
    assert "Choose a design" in page and "Starter designs" in page
    design = templates.list_gallery()[0]
    response = client.post(f"/campaigns/{campaign.id}/content", data={"start": "gallery", "copy_of": str(design.id)})
    assert response.status_code == 303
    template = campaigns.campaign_template(campaigns.get_campaign(account.id, campaign.id))
    assert template.category == campaigns.CAMPAIGN_CATEGORY
    page = text(client.get(f"/campaigns/{campaign.id}/content"))
    assert f'href="/templates/{template.id}/edit"' in page and "Open the editor" in page
    assert f'src="/campaigns/{campaign.id}/preview"' in page
    preview = client.get(f"/campaigns/{campaign.id}/preview")
    assert preview.status_code == 200 and "sandbox" in preview.headers["Content-Security-Policy"]

    missing = client.post(f"/campaigns/{campaign.id}/content", data={"start": "template", "template_id": ""})
    assert missing.status_code == 422 and "Choose the design" in text(missing)


def test_review_blocks_sending_until_the_checklist_is_clear(owner_client, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    client, account, owner = owner_client
    add_contacts(account, "a@x.example", "b@x.example")
    campaign = campaigns.create_campaign(owner, {"name": "Not ready", "subject": "Hi",
                                                 "audience": {"all": True}})
    html = text(client.get(f"/campaigns/{campaign.id}/review"))
    assert "readiness-blocking" in html and "no postal address" in html
    assert f'href="/campaigns/{campaign.id}/content">Fix it' in html and 'href="/settings/account"' in html
    assert re.search(r'<button type="submit" class="btn btn-primary" disabled[^>]*>Send now', html)
    refused = client.post(f"/campaigns/{campaign.id}/send")
    assert refused.status_code == 422 and "cannot be sent yet" in text(refused)
    assert pipeline.calls == []

    ready = ready_campaign(owner, account, name="Ready")
    html = text(client.get(f"/campaigns/{ready.id}/review"))
    assert "Everything required is in place" in html and "<strong>2</strong> contacts now" in html
    assert 'data-confirm="Send “Ready” to 2 contacts now?' in html
    response = client.post(f"/campaigns/{ready.id}/send")
    assert response.status_code == 303 and response.headers["Location"] == f"/campaigns/{ready.id}"
    assert pipeline.calls == [("start_send", ready.id)]
    # A campaign that is no longer a draft is not editable: its steps lead to its page.
    assert client.get(f"/campaigns/{ready.id}/details").headers["Location"] == f"/campaigns/{ready.id}"


def test_schedule_from_the_review_in_the_accounts_time_zone(owner_client, monkeypatch):
    fake_pipeline(monkeypatch)
    client, account, owner = owner_client
    account.timezone = "Asia/Tokyo"
    db.session.commit()
    add_contacts(account, "a@x.example")
    campaign = ready_campaign(owner, account)
    response = client.post(f"/campaigns/{campaign.id}/schedule", data={"scheduled_at": "2099-03-01T09:30"})
    assert response.status_code == 303
    db.session.refresh(campaign)
    assert (campaign.status, campaign.scheduled_at) == ("scheduled", dt.datetime(2099, 3, 1, 0, 30))
    page = text(client.get(f"/campaigns/{campaign.id}"))
    assert "2099 at 09:30" in page and "Asia/Tokyo" in page and "Unschedule and edit" in page

    past = ready_campaign(owner, account, name="Past")
    response = client.post(f"/campaigns/{past.id}/schedule", data={"scheduled_at": "2001-01-01T09:00"})
    assert response.status_code == 422 and "Must be in the future" in text(response)


def test_send_a_test_from_the_review(owner_client, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    client, account, owner = owner_client
    campaign = ready_campaign(owner, account)
    ok = client.post(f"/campaigns/{campaign.id}/test", data={"emails": "me@x.example, you@x.example"}, headers=HTMX)
    assert ok.status_code == 200 and text(ok).count("badge-success") == 2
    bad = client.post(f"/campaigns/{campaign.id}/test", data={"emails": "me@x.example, nope"}, headers=HTMX)
    assert bad.status_code == 422 and 'id="campaign-test-error"' in text(bad)
    assert len(pipeline.calls) == 1


def test_the_campaign_page_polls_while_sending_and_shows_counts_after(owner_client, monkeypatch):
    fake_pipeline(monkeypatch)
    client, account, owner = owner_client
    add_contacts(account, "a@x.example")
    campaign = ready_campaign(owner, account)
    campaigns.send_now(owner, campaign.id)
    started = campaign.started_at
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign.id).values(recipient_count=0, sent_count=12))
    db.session.commit()
    page = text(client.get(f"/campaigns/{campaign.id}"))   # the first recipients leave while the rest are listed
    assert "12 sent · preparing the recipient list" in page and "of 0" not in page

    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign.id).values(
        recipient_count=1000, sent_count=600, failed_count=4, started_at=started - dt.timedelta(minutes=2)))
    db.session.commit()

    page = text(client.get(f"/campaigns/{campaign.id}"))
    assert 'hx-trigger="every 2s"' in page and "Sending…" in page
    assert "604 of 1,000" in page and "396" in page and "emails/min" in page and "left" in page
    assert "Pause" in page and "Cancel campaign" in page
    polled = client.get(f"/campaigns/{campaign.id}/progress", headers=HTMX)
    assert polled.status_code == 200 and 'id="campaign-header" hx-swap-oob="true"' in text(polled)

    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign.id).values(
        status="sent", sent_count=996, delivered_count=990, opened_count=250, clicked_count=40,
        unsubscribed_count=3, bounced_count=6, sent_at=started + dt.timedelta(minutes=3)))
    db.session.commit()
    polled = client.get(f"/campaigns/{campaign.id}/progress", headers=HTMX)
    assert polled.status_code == 286
    html = text(polled)
    assert "every 2s" not in html and "Results" in html
    assert "990" in html and "99.4%" in html and "25.1%" in html and "4.0%" in html and "0.6%" in html


def test_an_automatic_pause_says_why(owner_client, monkeypatch):
    fake_pipeline(monkeypatch)
    client, account, owner = owner_client
    add_contacts(account, "a@x.example")
    campaign = ready_campaign(owner, account)
    campaigns.send_now(owner, campaign.id)
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign.id).values(
        status="paused", paused_reason="12% of the last 200 emails bounced (the limit is 10%)."))
    db.session.commit()
    page = text(client.get(f"/campaigns/{campaign.id}"))
    assert "Paused automatically" in page and "12% of the last 200 emails bounced" in page and "Resume" in page
    response = client.post(f"/campaigns/{campaign.id}/resume")
    assert response.status_code == 303
    db.session.refresh(campaign)
    assert (campaign.status, campaign.paused_reason) == ("sending", None)


def test_failed_recipients_are_listed_and_can_be_resent(owner_client, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    client, account, owner = owner_client
    contact = add_contacts(account, "a@x.example")[0]
    campaign = ready_campaign(owner, account)
    campaigns.send_now(owner, campaign.id)
    db.session.add(Message(account_id=account.id, campaign_id=campaign.id, contact_id=contact.id,
                           email="a@x.example", status="failed", attempts=1,
                           error="550 5.1.1 mailbox unavailable"))
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign.id).values(status="sent", failed_count=1))
    db.session.commit()
    page = text(client.get(f"/campaigns/{campaign.id}/failed"))
    assert "a@x.example" in page and "550 5.1.1 mailbox unavailable" in page and "Re-send failed" in page
    response = client.post(f"/campaigns/{campaign.id}/retry-failed")
    assert response.status_code == 303
    assert pipeline.names()[-1] == "retry_failed"


def test_status_actions_from_the_campaign_page(owner_client, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    client, account, owner = owner_client
    add_contacts(account, "a@x.example")
    campaign = ready_campaign(owner, account)
    campaigns.send_now(owner, campaign.id)
    client.post(f"/campaigns/{campaign.id}/pause")
    client.post(f"/campaigns/{campaign.id}/cancel")
    db.session.refresh(campaign)
    assert campaign.status == "cancelled" and pipeline.names() == ["start_send", "cancel_queued"]
    refused = client.post(f"/campaigns/{campaign.id}/resume", follow_redirects=True)
    assert "cannot be resumed" in text(refused)
    copy = client.post(f"/campaigns/{campaign.id}/duplicate")
    assert copy.status_code == 303
    copy_id = campaign_id_from(copy.headers["Location"])
    assert campaigns.get_campaign(account.id, copy_id).status == "draft"
    deleted = client.post(f"/campaigns/{copy_id}/delete")
    assert deleted.headers["Location"] == "/campaigns/"


def test_viewers_read_and_other_accounts_see_nothing(app, owner_client, make_user, make_account, login):
    client, account, owner = owner_client
    campaign = ready_campaign(owner, account)
    viewer = make_user(account, role="viewer")
    viewer_client = app.test_client()
    login(viewer_client, viewer)
    listing = text(viewer_client.get("/campaigns/"))
    assert "May news" in listing and "Create campaign" not in listing
    page = text(viewer_client.get(f"/campaigns/{campaign.id}"))
    assert "May news" in page and "Duplicate" not in page and "Delete" not in page
    assert viewer_client.get("/campaigns/new").status_code == 403
    assert viewer_client.post(f"/campaigns/{campaign.id}/send").status_code == 403
    assert viewer_client.get(f"/campaigns/{campaign.id}/review").status_code == 403

    _, stranger = make_account()
    stranger_client = app.test_client()
    login(stranger_client, stranger)
    assert stranger_client.get(f"/campaigns/{campaign.id}").status_code == 404
    assert stranger_client.get(f"/campaigns/{campaign.id}/preview").status_code == 404
    assert stranger_client.post(f"/campaigns/{campaign.id}/delete").status_code == 404
    assert "May news" not in text(stranger_client.get("/campaigns/"))


def test_a_runaway_stored_version_is_refused_by_test_send_and_preview(owner_client):
    """Content saved before the render limits existed still cannot run away: the real test send renders
    it and stops at the limit before anything is sent."""
    from nudge.models import TemplateVersion
    from nudge.services import rendering
    client, account, owner = owner_client
    campaign = ready_campaign(owner, account)
    runaway = ('{% for a in "x" * 200 %}{% for b in "x" * 200 %}{% endfor %}{% endfor %}'
               "<p>{{ account.postal_address }} <a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>")
    version = campaigns.current_content(campaign).version
    if version is not None:
        db.session.execute(sa.update(TemplateVersion).where(TemplateVersion.id == version.id)
                           .values(content_html=runaway, content_text=runaway))
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign.id)
                       .values(content_html=runaway, content_text=runaway))
    db.session.commit()
    rendering._versions.clear()
    response = client.post(f"/campaigns/{campaign.id}/test", data={"emails": "me@x.example"}, headers=HTMX)
    assert response.status_code == 422 and "Loops may run at most 10,000 times in one email" in text(response)
    preview = client.get(f"/campaigns/{campaign.id}/preview")
    assert preview.status_code == 400 and "Loops may run at most" in text(preview)
    assert client.get(f"/campaigns/{campaign.id}").status_code == 200  # the app carries on


def test_review_blocks_an_unknown_merge_tag_and_shows_the_subject_as_a_contact_sees_it(owner_client, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    client, account, owner = owner_client
    add_contacts(account, "a@x.example")
    campaign = ready_campaign(owner, account, subject="{{ contact.firstname }}, hello from {{ account.name }}")
    page = html_lib.unescape(text(client.get(f"/campaigns/{campaign.id}/review")))
    assert "Ready" not in re.sub(r"<[^>]+>", "", page.split("<h2>Summary</h2>")[0]).split("Checklist")[1]
    assert ("The subject: {{ contact.firstname }} is not a merge tag and would be blank: did you mean "
            "contact.first_name?") in page
    assert f'href="/campaigns/{campaign.id}/details">Fix it' in page
    assert re.search(r'<button type="submit" class="btn btn-primary" disabled[^>]*>Send now', page)
    assert re.search(r'class="inbox-subject">, hello from Corner Shop<', page)  # the blank it would send
    refused = client.post(f"/campaigns/{campaign.id}/test", data={"emails": "me@x.example"}, headers=HTMX)
    assert refused.status_code == 422 and "did you mean contact.first_name?" in html_lib.unescape(text(refused))
    assert client.post(f"/campaigns/{campaign.id}/send").status_code == 422 and pipeline.calls == []

    campaigns.update_campaign(owner, campaign.id,
                              {"subject": "{{ contact.first_name }}, hello from {{ account.name }}"})
    page = html_lib.unescape(text(client.get(f"/campaigns/{campaign.id}/review")))
    assert "Everything required is in place" in page
    assert re.search(r'class="inbox-subject">Alex, hello from Corner Shop<', page)
    assert "As a sample contact, Alex Sample, sees it" in page


def test_review_shows_the_preheader_as_a_contact_sees_it(owner_client):
    client, account, owner = owner_client
    doc = email_doc.new_document()
    doc["settings"]["preheader"] = "Hi {{ contact.first_name }}, 20% off this week"
    design = templates.create_template(owner, account.id, name="Design", content_json=doc)
    campaign = ready_campaign(owner, account, content_html=None, template_id=str(design.id))
    page = html_lib.unescape(text(client.get(f"/campaigns/{campaign.id}/review")))
    assert '<span class="inbox-preheader">Hi Alex, 20% off this week</span>' in page
